"""Teachers: any pytorchcv classification model, or the embedded ``digits`` ResNet.

Weights are never downloaded unless ``download=True`` (the CLI's ``--download``):

* pytorchcv models: the weight file is looked up exactly where pytorchcv looks,
  ``{root}/{name}-{error}-{sha1[:8]}.pth`` with the suffix from pytorchcv's own
  ``get_model_name_suffix_data(name)``; ``root`` defaults to ``~/.torch/models``
  (pytorchcv's default -- it does not read ``$TORCH_HOME``, though its docstrings say so).
  A file whose sha1 differs from pytorchcv's record is loaded with a warning; its sha256 is
  recorded.
* the AIT paper's files: the reference code ships its own copy of pytorchcv's model store
  (:data:`PAPER_WEIGHT_FILES`). For every paper teacher but one that is today's file; for
  ``resnet18`` it is the older ``resnet18-0982-0126861b.pth`` (pytorchcv v0.0.153, 71.47 %
  top-1, the paper's number) where today's pytorchcv expects ``resnet18-0896-77a56f15.pth``
  (v0.0.478, 73.06 %). Both are looked up in the same folder under pytorchcv's naming; the
  paper's is preferred when both are there, and ``--download`` fetches the paper's. Which
  file was used, its release and which file the paper used are recorded in
  :class:`TeacherInfo` (``weights_file``, ``weights_release``, ``paper_weights_file``).
* explicit weights (``weights=PATH``): a state dict, or a dict holding one under
  ``"state_dict"`` or ``"model"``; loaded with ``torch.load(weights_only=True)``, strictly.
* ``digits``: a small pytorchcv ``CIFARResNet`` trained on first use on the digits train
  split and cached under :func:`cache_dir` ``/teachers/``.

Accuracies are in percent throughout.  pytorchcv is imported where a pytorchcv teacher is looked up, not with
this module: the digits teacher needs none of its model zoo, which takes seconds to import, and its model store
patched in tests is read at call time.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import inspect
import os
import pickle
import re
import shutil
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import torch
import torch.nn as nn

from zsq_probe.data.cache import cache_dir
from zsq_probe.data.datasets import DATASETS
from zsq_probe.errors import UserError, one_line
from zsq_probe.rundir.safe_pickle import sniff_file
from zsq_probe.teachers.digits import (
    DIGITS_ARCH,
    DIGITS_MIN_TOP1,
    DIGITS_TRAIN,
    digits_architecture,
    digits_teacher,
    digits_teacher_path,
    evaluate_top1,
)
from zsq_probe.teachers.metadata import dataset_for_teacher

if TYPE_CHECKING:
    from zsq_probe.rundir.store import PathArg

__all__ = [
    "TeacherInfo",
    "PAPER_TEACHER_TOP1",
    "PYTORCHCV_IN1K_TOP1",
    "WeightFile",
    "PAPER_WEIGHT_FILES",
    "teacher_weight_files",
    "known_weight_file",
    "comparison_top1",
    "TEACHER_NAMES_HINT",
    "DIGITS_ARCH",
    "DIGITS_TRAIN",
    "DIGITS_MIN_TOP1",
    "cache_dir",
    "pytorchcv_root",
    "pytorchcv_weight_file",
    "published_accuracy",
    "build_architecture",
    "load_teacher",
    "check_published_accuracy",
    "evaluate_top1",
    "digits_teacher_path",
]

# Teacher top-1 (%) reported in the AIT paper.
PAPER_TEACHER_TOP1: dict[str, float] = {
    "resnet20_cifar10": 93.89,
    "resnet20_cifar100": 70.33,
    "resnet18": 71.47,
    "resnet50": 77.73,
    "mobilenetv2_w1": 73.03,
    # appendix C (Tab. 7): InceptionV3, SqueezeNext, ShuffleNet
    "inceptionv3": 79.00,
    "sqnxt23_w2": 69.39,
    "shufflenet_g1_w1": 65.07,
}

# pytorchcv's ImageNet-1k weight files carry the top-5 error in their name (resnet18-0896-...
# = 8.96 % top-5 error); their top-1 comes from pytorchcv's README table (top-1 error
# 26.94 / 22.28 / 26.97 %). CIFAR weight files carry the top-1 error.
PYTORCHCV_IN1K_TOP1: dict[str, float] = {
    "resnet18": 73.06,
    "resnet50": 77.72,
    "mobilenetv2_w1": 73.03,
    "inceptionv3": 79.56,  # inceptionv3-0533 (v0.0.552): 20.44 % top-1 error
    "sqnxt23_w2": 69.38,  # 30.62
    "shufflenet_g1_w1": 65.07,  # 34.93
}

_DEFAULT_PYTORCHCV_ROOT = os.path.join("~", ".torch", "models")


@dataclass(frozen=True)
class WeightFile:
    """One pytorchcv weight release of a model: ``{name}-{error}-{sha1[:8]}.pth`` (pytorchcv's naming)."""

    name: str  # pytorchcv model name
    error: str  # the four digits in the file name: top-1 error (CIFAR) or top-5 error (ImageNet), x100
    sha1: str  # of the file's content (pytorchcv checks it)
    release: str  # imgclsmob release tag the file is published under
    top1: float | None  # top-1 (%) pytorchcv publishes for this file (CIFAR: under pytorchcv's normalisation)
    top5: float | None = None

    @property
    def file_name(self) -> str:
        """The file's name under pytorchcv's naming."""
        return f"{self.name}-{self.error}-{self.sha1[:8]}.pth"


# The files the AIT reference code loads: its bundled pytorchcv model store
# (iamkanghyunchoi/ait GDFQ_AIT/pytorchcv/models/model_store.py lines 38, 43, 198, 239, 240; the same rows in
# Qimera_AIT/ and AutoReCon_AIT/).  Top-1/top-5: imgclsmob's pytorch/README.md tables for those files
# (ResNet-18 v0.0.153: 28.53 / 9.82 % error).  Only resnet18 differs from today's pytorchcv.
# Tab. 7's teachers (appendix C; the reference code ships no config for them): the rows of the same store
# (lines 158, 166, 212) whose published top-1 is closest to the paper's FP32 column -- 2.0-SqNxt-23 69.38 %
# (paper 69.39), ShuffleNet x1.0 (g=1) 65.07 % (65.07), InceptionV3 v0.0.92 78.88 % (79.00; today's
# pytorchcv file inceptionv3-0533, v0.0.552, reaches 79.56 %).  Only inceptionv3 differs from today's file.
PAPER_WEIGHT_FILES: dict[str, WeightFile] = {
    "resnet20_cifar10": WeightFile(
        "resnet20_cifar10", "0597", "9b0024ac4c2f374cde2c5052e0d0344a75871cdb", "v0.0.163", 94.03
    ),
    "resnet20_cifar100": WeightFile(
        "resnet20_cifar100", "2964", "a5322afed92fa96cb7b3453106f73cf38e316151", "v0.0.180", 70.36
    ),
    "resnet18": WeightFile("resnet18", "0982", "0126861b4cd7f7b14196b1e01827da688f8bab6d", "v0.0.153", 71.47, 90.18),
    "resnet50": WeightFile("resnet50", "0633", "b00d1c8e52aa7a2badc705b1545aaf6ccece6ce9", "v0.0.329", 77.72, 93.67),
    "mobilenetv2_w1": WeightFile(
        "mobilenetv2_w1", "0887", "13a021bca5b679b76156829743f7182da42e8bb6", "v0.0.213", 73.03, 91.13
    ),
    "inceptionv3": WeightFile(
        "inceptionv3", "0565", "cf4061800bc1dc3b090920fc9536d8ccc15bb86e", "v0.0.92", 78.88, 94.35
    ),
    "sqnxt23_w2": WeightFile(
        "sqnxt23_w2", "1100", "b9bb7302824f89f16e078f0a506e3a8c0ad9c74e", "v0.0.240", 69.38, 89.00
    ),
    "shufflenet_g1_w1": WeightFile(
        "shufflenet_g1_w1", "1389", "4cfb65a30761fe548e0b5afbb5d89793ec41e4e9", "v0.0.223", 65.07, 86.11
    ),
}


@dataclass
class TeacherInfo:
    """Where a teacher's weights came from and what accuracy they should reach (percent)."""

    name: str
    dataset: str
    num_classes: int
    weights_path: str | None
    weights_sha256: str | None
    published_top1: float | None
    source: str  # "pytorchcv-cache" | "explicit" | "embedded"
    published_top5: float | None = None
    paper_top1: float | None = None
    # the weight file's fingerprint: its name (with weights_sha256 above) and, for a known pytorchcv file,
    # its release and whether its content matches that release's sha1 record
    weights_file: str | None = None
    weights_release: str | None = None
    weights_record_match: bool | None = None
    paper_weights_file: str | None = None  # the file the AIT paper's reference code loads (None: not a paper teacher)
    module_class: str | None = None  # the teacher module's class name (a module of your own: what cfg.teacher names)

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------- helpers


def _hashes(path: Path) -> tuple[str, str]:
    """(sha1, sha256) of a file's content, in one pass."""
    sha1, sha256 = hashlib.sha1(), hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            sha1.update(chunk)
            sha256.update(chunk)
    return sha1.hexdigest(), sha256.hexdigest()


def pytorchcv_root(root: PathArg | None = None) -> Path:
    """The folder pytorchcv keeps weight files in.

    Args:
        root: The folder (``~`` expanded); None for pytorchcv's default.

    Returns:
        ``root`` or ``~/.torch/models``, expanded.
    """
    return Path(root if root is not None else _DEFAULT_PYTORCHCV_ROOT).expanduser()


@functools.lru_cache(maxsize=1)
def _pytorchcv_models() -> dict[str, Callable[..., nn.Module]]:
    """Pytorchcv's model names -> the function that builds each: the public functions its model_provider module
    re-exports from pytorchcv.models (the names `get_model` accepts; no private table of pytorchcv is read)."""
    import pytorchcv.model_provider as provider  # on first use (module docstring)

    return {
        name: fn
        for name, fn in vars(provider).items()
        if not name.startswith("_") and inspect.isfunction(fn) and fn.__module__.startswith("pytorchcv.models.")
    }


@functools.lru_cache(maxsize=1)
def _metainfo() -> dict[str, tuple[str, str, str, str, str]]:
    """Pytorchcv's model_metainfos.csv: name -> (weights, error, sha1, release tag, test data set)."""
    from pytorchcv.models.common import model_store  # on first use (module docstring)

    rows = model_store.load_csv(model_store.get_model_metainfos_file_path())
    return {r[0]: (r[1], r[2], r[3], r[4], r[7]) for r in rows[1:] if len(r) >= 8}


def _check_name(name: str) -> str:
    """Normalise and validate a teacher name; unknown names -> UserError with close matches."""
    key = str(name).strip().lower()
    if key == "digits":
        return key
    models = _pytorchcv_models()
    if key not in models:
        close = difflib.get_close_matches(key, list(models) + ["digits"], n=5, cutoff=0.6)
        hint = f"close matches: {', '.join(close)}" if close else "see pytorchcv's model list"
        raise UserError(
            f"unknown teacher {name!r}: not a pytorchcv model name ({hint}); or use the embedded teacher 'digits'"
        )
    dataset_for_teacher(key)  # SVHN / segmentation / detection names -> UserError
    info = _metainfo().get(key)
    if info is not None and info[4] not in ("in1k", "cf"):
        raise UserError(
            f"teacher {name!r} is a pytorchcv model for {info[4]!r}, not an ImageNet or CIFAR "
            f"classifier: zsq-probe needs a CIFAR-10/100 or ImageNet classification model"
        )
    return key


def pytorchcv_weight_file(name: str) -> str:
    """Pytorchcv's file name for a model's pretrained weights, e.g. ``resnet20_cifar10-0597-9b0024ac.pth``."""
    from pytorchcv.models.common.model_store import get_model_name_suffix_data  # on first use (module docstring)

    key = _check_name(name)
    try:
        error, sha1, _tag = get_model_name_suffix_data(key)
    except ValueError:
        raise UserError(f"pytorchcv publishes no pretrained weights for {key!r}: pass --weights FILE") from None
    return f"{key}-{error}-{sha1[:8]}.pth"


def published_accuracy(name: str) -> tuple[float | None, float | None]:
    """(top-1, top-5) in percent that pytorchcv publishes for its current weight file of ``name``.

    CIFAR files carry the top-1 error in their name (resnet20_cifar10-0597 -> 94.03 % top-1);
    ImageNet files carry the top-5 error (resnet18-0896 -> 91.04 % top-5), their top-1 comes
    from :data:`PYTORCHCV_IN1K_TOP1` where known.
    """
    key = str(name).strip().lower()
    info = _metainfo().get(key)
    if info is None or not re.fullmatch(r"\d{4}", info[1]):
        return None, None
    acc = round(100.0 - int(info[1]) / 100.0, 2)
    if info[4] == "cf":
        return acc, None
    return PYTORCHCV_IN1K_TOP1.get(key), acc


# --------------------------------------------------------------------------- architectures


def build_architecture(name: str) -> nn.Module:
    """A randomly initialised model of the teacher's architecture (train mode).

    Initialisation draws from torch's global RNG: call ``torch.manual_seed`` first for a
    reproducible model. No weights are loaded or downloaded.

    Args:
        name: ``"digits"`` or a pytorchcv classification model name.

    Returns:
        The model.

    Raises:
        UserError: An unknown or unsupported name.
    """
    key = _check_name(name)
    if key == "digits":
        return digits_architecture()
    from pytorchcv.model_provider import get_model  # on first use (module docstring)

    net: nn.Module = get_model(key, pretrained=False)
    return net


# --------------------------------------------------------------------------- weight files


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise UserError(f"weights file {path} not found: check the path given to --weights")
    try:
        with warnings.catch_warnings():  # a plain pickle's protocol note would be a second stderr line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - every failure is one line naming what the file is
        raise UserError(_unloadable_weights_message(path, exc)) from None
    if isinstance(obj, dict):
        for key in ("state_dict", "model"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        kind = f"a dict with keys {', '.join(map(str, list(obj)[:5]))}" if isinstance(obj, dict) else type(obj).__name__
        raise UserError(
            f"weights file {path} holds {kind}, not a state dict (parameter name -> tensor): "
            f"save torch.save(model.state_dict(), path), or a dict with it under 'state_dict'"
        )
    if all(str(k).startswith("module.") for k in obj):  # saved from DataParallel
        obj = {str(k)[len("module.") :]: v for k, v in obj.items()}
    return obj


def _unloadable_weights_message(path: Path, exc: BaseException) -> str:
    """One line for a weights file torch.load(weights_only=True) refused or could not read."""
    kind = sniff_file(path)
    m = re.search(r"GLOBAL ([\w.]+)", str(exc))
    names = f" (it names {m.group(1)})" if m else ""
    if kind == "pickle":
        return (
            f"weights file {path} is a pickled (non-weights-only) file{names}, which zsq-probe refuses to load "
            f"for safety (unpickling can run code from the file): if you trust its source, convert it once "
            f"with torch.save(pickle.load(open(path, 'rb')), new_path) -- for a pickled model, save its "
            f".state_dict() -- and pass --weights new_path"
        )
    if isinstance(exc, pickle.UnpicklingError) and re.search(r"global", str(exc), re.IGNORECASE):
        return (
            f"weights file {path} holds Python objects besides tensors{names} and was refused (loaded with "
            f"weights_only=True, which never runs code from a file): re-save it as "
            f"torch.save(model.state_dict(), path)"
        )
    if kind in ("unknown", "empty"):
        what = "is empty" if kind == "empty" else "is corrupt or not a PyTorch file (unreadable)"
        return f"weights file {path} {what}: save it with torch.save(model.state_dict(), path)"
    return (
        f"weights file {path} is corrupt or not a PyTorch file ({one_line(exc, limit=160)}): "
        f"save it with torch.save(model.state_dict(), path)"
    )


def _load_into(net: nn.Module, state: dict[str, torch.Tensor], path: Path, name: str, ignore_extra: bool) -> None:
    """Strict load with a one-line UserError naming the first mismatching key."""
    own = net.state_dict()
    if ignore_extra:  # pytorchcv's own loader drops entries the model does not have
        state = {k: v for k, v in state.items() if k in own}
    problems = []
    for key, ref in own.items():
        if key not in state:
            if not key.endswith("num_batches_tracked"):  # absent from pre-0.4.1 files; BN fills it
                problems.append(f"{key} missing from the file")
        elif tuple(state[key].shape) != tuple(ref.shape):
            problems.append(f"{key} has shape {tuple(state[key].shape)} in the file, {tuple(ref.shape)} in the model")
    problems += [f"{key} is not in the model" for key in state if key not in own]
    if problems:
        more = f" (and {len(problems) - 1} more mismatches)" if len(problems) > 1 else ""
        raise UserError(
            f"weights file {path} does not fit teacher {name}: {problems[0]}{more}; "
            f"is the file for another model or data set?"
        )
    try:
        net.load_state_dict(state, strict=False)
    except Exception as exc:  # noqa: BLE001 - any mismatch is one line naming the file
        raise UserError(f"weights file {path} could not be loaded into {name} ({one_line(exc)})") from None


def teacher_weight_files(name: str) -> list[WeightFile]:
    """The pytorchcv weight files known for a teacher, in the order they are looked for: the AIT paper's
    (:data:`PAPER_WEIGHT_FILES`) first, then today's pytorchcv file when it is another one."""
    from pytorchcv.models.common.model_store import get_model_name_suffix_data  # on first use (module docstring)

    key = _check_name(name)
    files = [PAPER_WEIGHT_FILES[key]] if key in PAPER_WEIGHT_FILES else []
    try:
        error, sha1, tag = get_model_name_suffix_data(key)
    except ValueError:
        error = None
    if error is not None and not any(f.sha1 == sha1 for f in files):
        top1, top5 = published_accuracy(key)
        files.append(WeightFile(key, error, sha1, tag, top1, top5))
    if not files:
        raise UserError(f"pytorchcv publishes no pretrained weights for {key!r}: pass --weights FILE")
    return files


def known_weight_file(name: str, file_name: str) -> WeightFile | None:
    """The :class:`WeightFile` a file name denotes for teacher ``name`` (pytorchcv's naming), or None."""
    try:
        return next((f for f in teacher_weight_files(name) if f.file_name == file_name), None)
    except UserError:
        return None


def _fetch(url: str, path: Path, timeout: float = 60.0) -> None:
    """Download `url` to `path` (through a temporary file beside it, renamed when complete)."""
    partial = path.with_name(path.name + ".partial")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as f:
            shutil.copyfileobj(response, f)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


def _download_release(wf: WeightFile, folder: Path) -> Path:
    """Fetch a weight file that today's pytorchcv no longer lists, the way pytorchcv fetches its own:
    ``{imgclsmob}/releases/download/{release}/{file}.zip`` (pytorchcv's public repository URL; our own few lines
    of urllib, not its private downloader), unzipped into ``folder``."""
    from pytorchcv.models.common import model_store  # on first use (module docstring)

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wf.file_name
    archive = folder / (wf.file_name + ".zip")
    url = f"{model_store.imgclsmob_repo_url}/releases/download/{wf.release}/{wf.file_name}.zip"
    _fetch(url, archive)
    try:
        with zipfile.ZipFile(archive) as zf:
            if wf.file_name not in zf.namelist():
                raise OSError(f"{archive.name} holds no {wf.file_name}")
            zf.extract(wf.file_name, folder)  # only the expected member
    finally:
        archive.unlink(missing_ok=True)
    return path


def _pytorchcv_cached(
    net: nn.Module, key: str, root: PathArg | None, download: bool
) -> tuple[Path, str, WeightFile, bool]:
    """Load a known pytorchcv weight file for ``key`` from pytorchcv's folder into ``net``;
    (path, sha256, which file, whether its sha1 matches the release's record)."""
    files = teacher_weight_files(key)
    folder = pytorchcv_root(root)
    found = [(f, folder / f.file_name) for f in files if (folder / f.file_name).is_file()]
    if found:
        wf, path = found[0]
    else:
        names = " or ".join(_describe_file(key, f, files) for f in files)
        if not download:
            raise UserError(
                f"pretrained weights for {key} not found: expected {names} in {folder}; place the file there "
                f"(or pass --weights FILE); no download is attempted unless --download is given"
            )
        wf = files[0]
        try:
            if wf.sha1 == _current_sha1(key):
                from pytorchcv.models.common.model_store import get_model_file  # on first use (module docstring)

                path = Path(get_model_file(key, local_model_store_dir_path=str(folder)))
            else:
                path = _download_release(wf, folder)
        except Exception as exc:  # noqa: BLE001 - any network or file failure is one line naming the file
            raise UserError(
                f"downloading pytorchcv weights {wf.file_name} into {folder} failed ({one_line(exc)}); "
                f"place the file there yourself"
            ) from None
    sha1, sha256 = _hashes(path)
    if sha1 != wf.sha1:
        warnings.warn(
            f"{path}: content differs from pytorchcv's record (sha1 {sha1[:8]}, expected "
            f"{wf.sha1[:8]}); loading it anyway (an older weight release?), sha256 {sha256[:12]}",
            stacklevel=3,
        )
    _load_into(net, _read_state_dict(path), path, key, ignore_extra=True)
    return path, sha256, wf, sha1 == wf.sha1


def _current_sha1(key: str) -> str | None:
    from pytorchcv.models.common.model_store import get_model_name_suffix_data  # on first use (module docstring)

    try:
        sha1: str = get_model_name_suffix_data(key)[1]
    except ValueError:
        return None
    return sha1


def _describe_file(key: str, wf: WeightFile, files: list[WeightFile]) -> str:
    """A file name; where a teacher has two known files, also whose it is, its release and top-1."""
    if len(files) < 2:
        return wf.file_name
    who = "the AIT paper's" if PAPER_WEIGHT_FILES.get(key) == wf else "today's pytorchcv"
    acc = f", {wf.top1:.2f}% top-1" if wf.top1 is not None else ""
    return f"{wf.file_name} ({who}, release {wf.release}{acc})"


# --------------------------------------------------------------------------- public API


class _CommonInfo(TypedDict):
    """The TeacherInfo fields every way of loading a teacher sets alike."""

    name: str
    dataset: str
    num_classes: int
    paper_top1: float | None
    paper_weights_file: str | None


def load_teacher(
    name: str, weights: PathArg | None = None, root: PathArg | None = None, download: bool = False
) -> tuple[nn.Module, TeacherInfo]:
    """A pretrained teacher in eval mode and where it came from.

    Args:
        name: ``"digits"`` (embedded, trained on first use and cached) or any pytorchcv classification model name.
        weights: An explicit state-dict file (strict load).
        root: Pytorchcv's weight folder (default ``~/.torch/models``; unused for digits).
        download: Let pytorchcv fetch a missing weight file (never otherwise).

    Returns:
        (the teacher in eval mode, where its weights came from).

    Raises:
        UserError: An unknown or unsupported name, weights that are missing, unreadable or do not fit, or a
            teacher whose number of classes is not its data set's.
    """
    key = _check_name(name)
    dataset = dataset_for_teacher(key)
    num_classes = DATASETS[dataset].num_classes
    common: _CommonInfo = {
        "name": key,
        "dataset": dataset,
        "num_classes": num_classes,
        "paper_top1": PAPER_TEACHER_TOP1.get(key),
        "paper_weights_file": PAPER_WEIGHT_FILES[key].file_name if key in PAPER_WEIGHT_FILES else None,
    }
    if weights is not None:
        net, info = _explicit_teacher(key, Path(weights).expanduser(), common)
    elif key == "digits":
        net, info = _embedded_teacher(common)
    else:
        net, info = _cached_teacher(key, root, download, common)
    out = getattr(net, "num_classes", num_classes)
    if out != num_classes:
        raise UserError(f"teacher {key} predicts {out} classes but its data set {dataset} has {num_classes}")
    net.eval()
    return net, info


def _explicit_teacher(key: str, path: Path, common: _CommonInfo) -> tuple[nn.Module, TeacherInfo]:
    """The teacher with the state dict in `path` (strict); a file pytorchcv knows brings its accuracies."""
    net = build_architecture(key)
    _load_into(net, _read_state_dict(path), path, key, ignore_extra=False)
    sha1, sha256 = _hashes(path)
    wf = known_weight_file(key, path.name) if key != "digits" else None
    info = TeacherInfo(
        weights_path=str(path),
        weights_sha256=sha256,
        published_top1=wf.top1 if wf is not None else None,
        source="explicit",
        published_top5=wf.top5 if wf is not None else None,
        weights_file=path.name,
        weights_release=wf.release if wf else None,
        weights_record_match=(sha1 == wf.sha1) if wf else None,
        **common,
    )
    return net, info


def _embedded_teacher(common: _CommonInfo) -> tuple[nn.Module, TeacherInfo]:
    """The embedded digits teacher (trained on first use and cached) with its own test top-1."""
    net, meta, path = digits_teacher()
    info = TeacherInfo(
        weights_path=str(path),
        weights_sha256=_hashes(path)[1],
        published_top1=float(meta["test_top1"]),
        source="embedded",
        published_top5=None,
        weights_file=path.name,
        **common,
    )
    return net, info


def _cached_teacher(
    key: str, root: PathArg | None, download: bool, common: _CommonInfo
) -> tuple[nn.Module, TeacherInfo]:
    """A pytorchcv teacher with its weight file from pytorchcv's folder (fetched there with `download`)."""
    net = build_architecture(key)
    path, sha256, wf, match = _pytorchcv_cached(net, key, root, download)
    info = TeacherInfo(
        weights_path=str(path),
        weights_sha256=sha256,
        published_top1=wf.top1,
        source="pytorchcv-cache",
        published_top5=wf.top5,
        weights_file=path.name,
        weights_release=wf.release,
        weights_record_match=match,
        **common,
    )
    return net, info


_CIFAR = ("cifar10", "cifar100")


def comparison_top1(info: TeacherInfo, normalization: str = "reference") -> tuple[float, str, bool] | None:
    """The top-1 (%) a measured accuracy should be compared with: (value, where it comes from, like for like?).

    Like for like: on CIFAR, pytorchcv's published numbers hold under its own normalisation and the AIT
    paper's under the reference's (``normalization``); a paper number holds only for the paper's weight
    file (:data:`PAPER_WEIGHT_FILES`: not for today's resnet18 file).  ImageNet and digits normalise the
    same way under both options.  When only an unlike number exists it is returned with ``False``."""
    cifar = info.dataset in _CIFAR
    if info.source == "embedded" and info.published_top1 is not None:
        return info.published_top1, "at training time", True
    candidates = []  # (value, label, normalisation it holds under or None when it does not matter)
    if info.published_top1 is not None:
        release = f" for {info.weights_file}" if info.weights_file else ""
        candidates.append((info.published_top1, f"published by pytorchcv{release}", "pytorchcv" if cifar else None))
    other_release = (
        info.paper_weights_file is not None
        and info.weights_file is not None
        and info.weights_file != info.paper_weights_file
        and known_weight_file(info.name, info.weights_file) is not None
    )
    if info.paper_top1 is not None and not other_release:
        candidates.append((info.paper_top1, "in the AIT paper", "reference" if cifar else None))
    if not candidates:
        return None
    like = [c for c in candidates if c[2] in (None, normalization)]
    if like:
        value, label, _ = like[0]
        return value, label, True
    value, label, norm = candidates[0]
    return value, f"{label} (under {norm} normalisation)", False


def check_published_accuracy(
    info: TeacherInfo, measured_top1: float, tolerance: float = 1.0, normalization: str = "reference"
) -> str | None:
    """A one-line warning when the measured top-1 (percent, measured under ``normalization``) is more than
    ``tolerance`` points away from the matching published one (:func:`comparison_top1`); None when close
    or unknown."""
    ref = comparison_top1(info, normalization)
    if ref is None:
        return None
    value, what, like = ref
    gap = float(measured_top1) - value
    if abs(gap) <= tolerance:
        return None
    note = ""
    if info.paper_top1 is not None and value != info.paper_top1:
        note = f" (the AIT paper reports {info.paper_top1:.2f}%"
        note += (
            f" with {info.paper_weights_file})"
            if info.paper_weights_file and info.paper_weights_file != info.weights_file
            else ")"
        )
    elif info.published_top1 is not None and value != info.published_top1 and info.dataset in _CIFAR:
        note = f" (pytorchcv publishes {info.published_top1:.2f}% under its own normalisation)"
    unlike = "" if like else f"; measured under {normalization} normalisation, so expect a small offset"
    data = f"{info.dataset} ({normalization} normalisation)" if info.dataset in _CIFAR else info.dataset
    return (
        f"teacher {info.name}: measured top-1 {float(measured_top1):.2f}% on {data} differs from "
        f"{value:.2f}% {what}{note} by {gap:+.2f} points{unlike}: check the data folder, normalisation and "
        f"weights file {info.weights_path}"
    )


def _teacher_names_hint() -> str:
    examples = ["digits", "resnet20_cifar10", "resnet20_cifar100", "resnet18", "resnet50", "mobilenetv2_w1"]
    listed = ", ".join(f"{n} ({dataset_for_teacher(n)})" for n in examples)
    return (
        f"teachers and the data set each expects: {listed}; any pytorchcv classification model works: "
        f"*_cifar10 -> cifar10, *_cifar100 -> cifar100, other names -> imagenet (SVHN models unsupported); "
        f"digits is embedded and needs no download"
    )


TEACHER_NAMES_HINT = _teacher_names_hint()
