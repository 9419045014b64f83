"""Fig. 6: real vs synthetic samples, one per class; the one figure that reads a checkpoint.

For each run trained with a generator: the generator is rebuilt from the run's config
(`zsq_probe.generators.build_generator`, no teacher needed), loaded from the checkpoint's
`generator` state (default: the last checkpoint) and asked for one sample per class; the real row
holds the first test image of each class (`zsq_probe.data.datasets.load_dataset(..., split="test")`).  Both
are de-normalised with the data set's mean/std.  At most 10 classes are shown (10 spread-out classes
of a larger label set, fixed seed, as the paper does for ImageNet).  One figure per distinct generator: runs
whose generator state dicts are bit-identical (same fingerprint, e.g. the same seed and a generator loss that
does not involve the student) share one grid, and its caption names them all.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from zsq_probe import generators
from zsq_probe.analysis.epochs import epoch_list
from zsq_probe.data.datasets import get_spec
from zsq_probe.errors import UserError, one_line
from zsq_probe.plots import runs as R
from zsq_probe.plots.style import drawing
from zsq_probe.rundir.store import PathArg, RunDir, load_checkpoint_file
from zsq_probe.teachers.metadata import dataset_for_teacher, teacher_input_size

if TYPE_CHECKING:  # matplotlib and torchvision load when the figure is drawn, not with this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

    from zsq_probe.data.datasets import DatasetSpec

log = logging.getLogger(__name__)

MAX_CLASSES = 10
SEED = 0
CLASS_NAMES = {
    "cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
    "digits": [str(i) for i in range(10)],
}


class NoSamples(Exception):
    """This run has no generator checkpoint to sample from; str(exc) says why."""


@dataclass
class Samples:
    """One run's images: `real` (None when the test split is missing, `real_note` says why) and
    `synthetic`, each (classes, H, W[, 3]) in [0, 1]."""

    run: RunDir
    epoch: int
    data: str
    generator: str
    classes: list[int]
    names: list[str]
    real: NDArray[np.float64] | None
    synthetic: NDArray[np.float64]
    grayscale: bool
    real_note: str | None = None


def show_classes(num_classes: int) -> list[int]:
    """The classes a samples figure shows: all of them, or MAX_CLASSES of them picked with a fixed seed."""
    if num_classes <= MAX_CLASSES:
        return list(range(num_classes))
    return sorted(np.random.RandomState(SEED).choice(num_classes, MAX_CLASSES, replace=False).tolist())


def build_generator(
    kind: str, num_classes: int, image_shape: Sequence[int], cfg: Mapping[str, Any], state: Mapping[str, Any]
) -> nn.Module:
    """The run's generator with the checkpoint's weights; NoSamples(reason) when it cannot be rebuilt."""
    options: dict[str, object] = {}
    if kind == "qimera":
        emb = state.get("label_emb.weight")
        if emb is None:
            raise NoSamples("Qimera generator state has no label_emb.weight; rebuilding it needs the teacher")
        # the embedding's values come from the checkpoint, so no teacher is needed for its shape
        options = {
            "embedding_init": "random",
            "embedding_dim": int(emb.shape[1]),
            "mix_prob": cfg.get("qimera_mix_prob"),
            "mix_k": cfg.get("qimera_mix_k"),
        }
    elif kind == "arc":
        options = {"model_name": cfg.get("teacher")}
    try:
        gen = generators.build_generator(kind, num_classes, tuple(image_shape), teacher=None, **options)
    except (TypeError, ValueError) as e:  # UserError is a ValueError
        raise NoSamples(
            f"cannot rebuild the {kind!r} generator without the teacher ({one_line(e, None, with_type=False)})"
        ) from None
    try:
        gen.load_state_dict(state)
    except RuntimeError as e:
        raise NoSamples(
            f"the checkpoint's generator weights do not fit a {kind!r} generator ({one_line(e, 120, with_type=False)})"
        ) from None
    return gen.eval()


def synthetic(gen: nn.Module, classes: Sequence[int]) -> NDArray[np.float32]:
    """One generated image per class in `classes` (fixed seed), as an array (N, C, H, W)."""
    rng = torch.Generator().manual_seed(SEED)
    dim = int(getattr(gen, "latent_dim", 100))
    z = torch.randn((len(classes), dim), generator=rng)
    with torch.no_grad():
        x: torch.Tensor = gen(z, torch.tensor(classes, dtype=torch.long))
    images: NDArray[np.float32] = x.float().cpu().numpy()
    return images


def real(
    data: str, root: PathArg | None, classes: Collection[int], image_size: int | None = None
) -> NDArray[np.float32]:
    """The first test image of each class (NaN where a class has none), at the teacher's input size."""
    from zsq_probe.data.datasets import load_dataset  # torchvision: the samples figure only (zsq_probe.plots)

    ds = load_dataset(data, root, split="test", image_size=image_size)
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = [int(ds[i][1]) for i in range(len(ds))]  # type: ignore[arg-type]  # map-style: sized
    first: dict[int, int] = {}
    for i, t in enumerate(targets):
        t = int(t)
        if t in classes and t not in first:
            first[t] = i
            if len(first) == len(classes):
                break
    images: NDArray[np.float32] = np.stack(
        [ds[first[c]][0].numpy() if c in first else np.full_like(ds[0][0].numpy(), np.nan) for c in classes]
    )
    return images


PER_CLASS = 4  # synthetic samples per class: Fig. 6's class x sample grid


def stretch(images: NDArray[np.float64]) -> NDArray[np.float64]:
    """Each image's 1st-99th percentile stretched to [0, 1] (synthetic images are mostly saturated after
    de-normalisation; the stretch shows their structure; the caption says so)."""
    out = np.empty_like(images)
    for i, x in enumerate(images):
        lo, hi = np.nanpercentile(x, 1), np.nanpercentile(x, 99)
        out[i] = np.clip((x - lo) / (hi - lo), 0, 1) if hi > lo else x
    return out


def to_rgb(batch: NDArray[np.floating[Any]], spec: DatasetSpec) -> NDArray[np.float64]:
    """(B, C, H, W) normalised -> (B, H, W[, 3]) in [0, 1]."""
    mean = np.asarray(spec.mean, dtype=float)[None, :, None, None]
    std = np.asarray(spec.std, dtype=float)[None, :, None, None]
    x: NDArray[np.float64] = np.clip(batch * std + mean, 0.0, 1.0).transpose(0, 2, 3, 1)
    return x[..., 0] if x.shape[-1] == 1 else x


def class_names(data: str, classes: Iterable[int]) -> list[str]:
    """Display names of `classes` in data set `data` (the class index where none is known)."""
    names = CLASS_NAMES.get(data)
    return [names[c] if names and c < len(names) else str(c) for c in classes]


def generator_checkpoint(run: R.RunSource, epoch: int | None = None) -> tuple[int, dict[str, Any]]:
    """(epoch, generator state dict) of a run's checkpoint at `epoch` (default: the last).

    NoSamples when the run has no generator or checkpoint; UserError when `epoch` has no checkpoint.
    """
    run = R.open_run(run)
    cfg = R.config(run)
    if R.is_kd(run) or cfg.get("source", "generator") != "generator":
        raise NoSamples(f"no generator (method {R.method(run)}, source {cfg.get('source')})")
    kind = cfg.get("generator") or "gdfq"
    if (run.read_config_doc().get("teacher") or {}).get("source") == "module":
        raise NoSamples("the teacher is a module of your own: its data (DatasetSpec) is not stored with the run")
    if kind == "none":
        raise NoSamples("no generator (generator = none)")
    cps = run.checkpoints()
    if not cps:
        raise NoSamples("no checkpoints")
    e = max(cps) if epoch is None else epoch
    if e not in cps:
        raise UserError(f"fig6 {run.name}: no checkpoint for epoch {e} (has {epoch_list(sorted(cps))})")
    state = load_checkpoint_file(cps[e])
    if "generator" not in state:
        raise NoSamples(f"checkpoint {cps[e].name} has no generator state")
    return e, state["generator"]


def fingerprint(state: Mapping[str, object]) -> str:
    """A short SHA-256 of a state dict (names, dtypes, shapes and bytes of every tensor, in name order): equal
    fingerprints mean bit-identical weights."""
    h = hashlib.sha256()
    for name in sorted(state):
        value = state[name]
        h.update(name.encode())
        if isinstance(value, torch.Tensor):
            t = value.detach().cpu().contiguous().reshape(-1)
            h.update(f"{t.dtype}{tuple(value.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        else:
            h.update(repr(value).encode())
    return h.hexdigest()[:12]


def load_samples(run: R.RunSource, epoch: int | None = None) -> Samples:
    """Real and synthetic images of a run at one of its checkpoints.

    Args:
        run: A run folder or RunDir.
        epoch: The checkpoint's epoch; default the last.

    Returns:
        The run's images: one real test image per class (None, with the reason, when the test split is missing)
        and PER_CLASS synthetic images per class.

    Raises:
        NoSamples: The run has no generator or no checkpoint, or its generator cannot be rebuilt.
        UserError: `run` is not a run, or `epoch` has no checkpoint.
    """
    # torchvision: the samples figure only (zsq_probe.plots)

    run = R.open_run(run)
    cfg = R.config(run)
    e, state = generator_checkpoint(run, epoch)
    kind = cfg.get("generator") or "gdfq"
    data = cfg.get("data") or dataset_for_teacher(cfg.get("teacher", "digits"))
    teacher = cfg.get("teacher", "digits")
    size = teacher_input_size(teacher) if data == dataset_for_teacher(teacher) else None
    spec = get_spec(data, image_size=size)  # the teacher's input size (InceptionV3: 299)
    classes = show_classes(spec.num_classes)
    gen = build_generator(kind, spec.num_classes, generators.generator_image_shape(kind, spec.image_shape), cfg, state)
    drawn = synthetic(gen, [c for _ in range(PER_CLASS) for c in classes])
    fake = stretch(to_rgb(generators.crop_to(drawn, spec.image_shape), spec))  # what the teacher saw (300 -> 299)
    true, real_note = None, None
    try:
        true = to_rgb(real(data, cfg.get("data_root"), classes, size), spec)
    except UserError as err:
        real_note = f"real {data} test split not available:\n{str(err)[:90]}"
    return Samples(
        run, e, data, kind, classes, class_names(data, classes), true, fake, spec.image_shape[0] == 1, real_note
    )


def draw_samples(axes: Sequence[Sequence[Axes]] | NDArray[np.object_], samples: Samples) -> None:
    """Draw real (top row) and synthetic images (PER_CLASS rows below) into `axes`, one column per class.

    Args:
        axes: A (1 + PER_CLASS) x len(samples.classes) grid of axes (rows of axes, or the array
            `Figure.subplots(..., squeeze=False)` returns).
        samples: What `load_samples` returns.
    """
    n = len(samples.classes)
    rows = len(axes)
    k = rows - 1
    cmap = "gray" if samples.grayscale else None
    for j in range(n):
        for i in range(rows):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            imgs = samples.real if i == 0 else samples.synthetic
            idx = j if i == 0 else (i - 1) * n + j
            if imgs is not None and idx < len(imgs):
                ax.imshow(imgs[idx], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.axis("off")
        axes[0][j].set_title(samples.names[j], fontsize=7)
    axes[0][0].set_ylabel("real", fontsize=7)
    for i in range(1, k + 1):
        axes[i][0].set_ylabel(f"synth. {i}", fontsize=7)
    if samples.real_note:
        ax = axes[0][n // 2]
        ax.text(0.5, 0.5, samples.real_note, transform=ax.transAxes, ha="center", va="center", fontsize=7, color="0.35")


CELL = 1.35  # inches per image at most: few classes do not make a tall figure (style.MAX_HEIGHT)


def samples_figure(run: R.RunSource, epoch: int | None = None, shared_with: Iterable[RunDir] = ()) -> Figure:
    """Fig. 6 for one generator: real vs synthetic images in a class x sample grid.

    The top row holds the first real test image of each class, the PER_CLASS rows below synthetic images per
    class from the run's generator checkpoint, each contrast-stretched (1st-99th percentile).

    Args:
        run: A run folder or RunDir.
        epoch: The checkpoint's epoch; default the last.
        shared_with: Further runs holding the same generator weights (named in the title and the caption).

    Returns:
        The figure, its caption recorded (`runs.describe`).

    Raises:
        NoSamples: The run has no generator or no checkpoint, or its generator cannot be rebuilt.
        UserError: `run` is not a run, or `epoch` has no checkpoint.
    """
    s = load_samples(run, epoch)
    n = len(s.classes)
    rows = 1 + PER_CLASS
    cell = min(7.0 / n, CELL)
    runs = [s.run, *shared_with]
    with drawing((7.0, cell * rows + 0.35), w_pad=0.0, h_pad=0.0, wspace=0.02, hspace=0.02) as fig:
        draw_samples(fig.subplots(rows, n, squeeze=False), s)
        methods = " = ".join(dict.fromkeys(R.method(r) for r in runs))
        same = " (one generator: identical weights)" if len(runs) > 1 else ""
        fig.suptitle(f"{methods}: real vs synthetic, epoch {s.epoch}{same}")
    return R.describe(fig, runs, samples_caption(s, runs))


def samples_caption(s: Samples, runs: Sequence[RunDir]) -> str:
    """Fig. 6's caption: what each row is, how the images are shown, and which runs share the generator."""
    real = "the first real test image of each class" if s.real is not None else "no real images (no test split)"
    text = (
        f"Top row: {real}; the {PER_CLASS} rows below: synthetic images per class from the {s.generator} generator "
        f"of run {s.run.name} at epoch {s.epoch} (fixed latent seed {SEED}), each contrast-stretched to its "
        "1st–99th percentile after de-normalisation."
    )
    if len(runs) > 1:
        names = ", ".join(r.name for r in runs)
        text += (
            f" The runs {names} hold bit-identical generator weights at this epoch (state-dict fingerprint "
            f"{fingerprint(generator_checkpoint(s.run, s.epoch)[1])}), so one grid stands for all of them."
        )
    return text


def samples_figures(runs: R.RunsArg, epoch: int | None = None) -> list[tuple[str, Figure]]:
    """Fig. 6, one figure per distinct generator (state-dict fingerprint) among the runs with a generator
    checkpoint (one seed per method): [(file stem, Figure)]; runs without one are logged; SkipFigure when no
    run has one."""
    groups: dict[str, list[RunDir]] = {}
    reasons: list[str] = []
    reps = R.representatives(R.open_runs(runs))  # one run per seed group
    labels = R.file_labels(reps)  # two runs in folders of the same name: two files
    for r in reps:
        try:
            e, state = generator_checkpoint(r, epoch)
        except NoSamples as err:
            reasons.append(f"{r.name}: {err}")
            continue
        groups.setdefault(f"{e}:{fingerprint(state)}", []).append(r)
    figs: list[tuple[str, Figure]] = []
    for members in groups.values():
        try:
            figs.append((f"fig6_samples_{labels[members[0].run_id]}", samples_figure(members[0], epoch, members[1:])))
        except NoSamples as err:
            reasons.append(f"{members[0].name}: {err}")
    if not figs:
        raise R.SkipFigure("no run has a generator checkpoint to sample from (" + "; ".join(reasons) + ")")
    for reason in reasons:
        log.warning("note: fig6 left out %s", reason)
    return figs
