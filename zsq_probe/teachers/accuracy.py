"""Accuracy of a classifier on a labelled loader, and the `eval` job (FP vs quantised top-1)."""

from __future__ import annotations

import copy
import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

import torch
import torch.nn as nn
import torch.nn.functional as F

from zsq_probe.data.datasets import (
    check_normalization,
    load_dataset,
    make_loader,
)
from zsq_probe.errors import UserError
from zsq_probe.quantization.quantizer import calibrate_activation_ranges, quantization_spec, quantize_model
from zsq_probe.teachers.loader import TeacherInfo, check_published_accuracy, comparison_top1, load_teacher
from zsq_probe.teachers.metadata import dataset_for_teacher, teacher_input_size

if TYPE_CHECKING:
    from torch.utils.data import DataLoader

    from zsq_probe.data.datasets import DatasetSpec
    from zsq_probe.rundir.store import PathArg

# batches of (images, class indices): a DataLoader over (image, label) items
LabelledBatches: TypeAlias = Iterable[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class Predictions:
    """What a classifier did on a labelled loader: top-1 in [0, 1], mean CE against the hard labels, the share
    of samples given the most often predicted class, and the mean entropy of its softmax over ln C (1.0: the
    uniform output of a student that says nothing).  NaN when the loader gave no sample."""

    top1: float
    ce: float
    top_class_share: float
    entropy_ratio: float


@torch.no_grad()
def predictions_on(
    model: nn.Module, loader: LabelledBatches, device: str | torch.device = "cpu", max_batches: int = 0
) -> Predictions:
    """:class:`Predictions` of `model` over the loader.

    The model is evaluated in eval mode and put back in the mode it was found in.

    Args:
        model: The classifier.
        loader: Batches of (images, class indices).
        device: Where the batches go (the model's device).
        max_batches: Read only the first this many batches (0: all).

    Returns:
        Top-1, CE and the spread of the predictions (NaN when the loader gave no sample).
    """
    was_training = model.training
    model.eval()
    correct, total, ce_sum, entropy_sum = 0, 0, 0.0, 0.0
    counts: torch.Tensor | None = None
    try:
        for i, (x, y) in enumerate(loader):
            if max_batches and i >= max_batches:
                break
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)  # pinned loaders: async
            logits = model(x)
            log_p = F.log_softmax(logits.float(), dim=1)
            ce_sum += F.nll_loss(log_p, y, reduction="sum").item()
            entropy_sum += -(log_p.exp() * log_p).sum().item()
            predicted = logits.argmax(1)
            correct += (predicted == y).sum().item()
            hist = torch.bincount(predicted, minlength=logits.shape[1]).cpu()
            counts = hist if counts is None else counts + hist
            total += y.numel()
    finally:
        model.train(was_training)
    if total == 0 or counts is None:
        nan = float("nan")
        return Predictions(nan, nan, nan, nan)
    classes = counts.numel()
    entropy_ratio = entropy_sum / total / math.log(classes) if classes > 1 else float("nan")
    return Predictions(correct / total, ce_sum / total, int(counts.max()) / total, entropy_ratio)


def top1_and_ce(
    model: nn.Module, loader: LabelledBatches, device: str | torch.device = "cpu", max_batches: int = 0
) -> tuple[float, float]:
    """Top-1 accuracy and cross-entropy of `model` over the loader (`predictions_on`).

    The model is evaluated in eval mode and put back in the mode it was found in.

    Args:
        model: The classifier.
        loader: Batches of (images, class indices).
        device: Where the batches go (the model's device).
        max_batches: Read only the first this many batches (0: all).

    Returns:
        (top-1 accuracy in [0, 1], mean cross-entropy against the hard labels).
    """
    result = predictions_on(model, loader, device, max_batches)
    return result.top1, result.ce


def sha256_of(path: PathArg | None) -> str | None:
    """The SHA-256 of a file.

    Args:
        path: The file (None or "": none).

    Returns:
        The hex digest, or None when there is no such file.
    """
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class _EvalInputs(NamedTuple):
    """What `evaluate_quantized` measures: the record's teacher and data labels, the model and its data."""

    teacher: str
    data: str
    model: nn.Module
    info: TeacherInfo
    spec: DatasetSpec
    test: DataLoader[Any]
    calib: DataLoader[Any]  # shuffled train images


def evaluate_quantized(
    teacher: str | nn.Module,
    weights: PathArg | None = None,
    weights_root: PathArg | None = None,
    data: str | None = None,
    data_root: PathArg | None = None,
    w_bits: int = 4,
    a_bits: int = 4,
    calib_batches: int = 4,
    batch_size: int = 200,
    max_batches: int = 0,
    device: str | torch.device = "cpu",
    download: bool = False,
    seed: int = 0,
    normalization: str = "reference",
    data_spec: DatasetSpec | None = None,
    name: str | None = None,
) -> dict[str, Any]:
    """FP and quantised top-1 of a teacher; activation ranges calibrated on `calib_batches` train batches.

    Args:
        teacher: A name (`load_teacher`), or a module of your own with `data_spec` and `name`.
        weights: A named teacher's explicit state-dict file.
        weights_root: Pytorchcv's weight folder.
        data: A named teacher's data set (default: the one it was trained on).
        data_root: Where that data set is.
        w_bits: Weight bits of the quantised model.
        a_bits: Activation bits of the quantised model.
        calib_batches: Train batches the activation ranges are calibrated on.
        batch_size: Images per batch.
        max_batches: Test batches read (0: all; with fewer, no published-accuracy warning).
        device: Where the models run.
        download: Let missing weights and data be downloaded.
        seed: Seeds the loaders' order.
        normalization: "reference" (the AIT/GDFQ code's CIFAR statistics) or "pytorchcv" (imgclsmob's), named in
            the result with its constants; the published-accuracy warning compares with the number that holds
            under it (loader.comparison_top1).
        data_spec: A module's data: `train` (calibration) and `val` (top-1).
        name: Labels a module (default: its class name).

    Returns:
        The record: top-1 and CE of both models, the weights, normalisation, quantisation and the comparison.

    Raises:
        UserError: An unknown teacher, data set or normalisation, missing weights or data, or a module without
            both data sets.
    """
    normalization = check_normalization(normalization)
    if isinstance(teacher, nn.Module):
        inputs = _module_eval_inputs(teacher, data_spec, name, batch_size, seed)
    else:
        model, info = load_teacher(teacher, weights=weights, root=weights_root, download=download)
        data = data or dataset_for_teacher(teacher)
        spec, test, calib = _eval_loaders(teacher, data, data_root, download, normalization, batch_size, seed)
        inputs = _EvalInputs(teacher, data, model, info, spec, test, calib)
    return _eval_record(inputs, w_bits, a_bits, calib_batches, batch_size, max_batches, device, normalization)


def _eval_record(
    inputs: _EvalInputs,
    w_bits: int,
    a_bits: int,
    calib_batches: int,
    batch_size: int,
    max_batches: int,
    device: str | torch.device,
    normalization: str,
) -> dict[str, Any]:
    """Measure the model and its quantised copy; `evaluate_quantized`'s record."""
    model = inputs.model.to(device).eval()
    fp_top1, fp_ce = top1_and_ce(model, inputs.test, device, max_batches)
    qmodel = quantize_model(model, w_bits, a_bits).to(device).eval()
    calibrate_activation_ranges(qmodel, _first_batches(inputs.calib, calib_batches, device))
    q_top1, q_ce = top1_and_ce(qmodel, inputs.test, device, max_batches)
    info, spec = inputs.info, inputs.spec
    ref = comparison_top1(info, normalization)
    return {
        "teacher": inputs.teacher,
        "data": inputs.data,
        "w_bits": w_bits,
        "a_bits": a_bits,
        "fp_top1": fp_top1,
        "quant_top1": q_top1,
        "fp_ce": fp_ce,
        "quant_ce": q_ce,
        "calib_batches": calib_batches,
        "calib_batch_size": batch_size,
        **_weights_record(info),
        "normalization": normalization,
        "normalization_mean": list(spec.mean),
        "normalization_std": list(spec.std),
        "quantization": quantization_spec(qmodel),
        "compared_top1": ref[0] if ref else None,
        "compared_with": ref[1] if ref else None,
        "warning": (
            check_published_accuracy(info, fp_top1 * 100.0, normalization=normalization) if not max_batches else None
        ),
    }


def _eval_loaders(
    teacher: str,
    data: str,
    data_root: PathArg | None,
    download: bool,
    normalization: str,
    batch_size: int,
    seed: int,
) -> tuple[DatasetSpec, DataLoader[Any], DataLoader[Any]]:
    """(the test split's DatasetSpec, its loader, a shuffled loader of the train split for calibration), at the
    input size the teacher expects."""
    size = teacher_input_size(teacher)  # 299 for InceptionV3 (pytorchcv's img_size), else the data set's own
    test_set = load_dataset(
        data, data_root, split="test", download=download, normalization=normalization, image_size=size
    )
    spec: DatasetSpec = test_set.spec  # type: ignore[attr-defined]  # load_dataset gives each data set its spec
    test = make_loader(test_set, batch_size, shuffle=False, seed=seed)
    calib = make_loader(
        load_dataset(data, data_root, split="train", download=download, normalization=normalization, image_size=size),
        batch_size,
        shuffle=True,
        seed=seed,
    )
    return spec, test, calib


def _module_eval_inputs(
    model: nn.Module, spec: DatasetSpec | None, name: str | None, batch_size: int, seed: int
) -> _EvalInputs:
    """A copy of the module, its TeacherInfo, the spec, a loader of spec.val and a shuffled loader of spec.train,
    for `evaluate_quantized` of a module of your own; UserError when the spec lacks either data set."""
    if spec is None or spec.train is None or spec.val is None:
        raise UserError(
            "a teacher module needs data_spec=DatasetSpec(..., train=..., val=...): calibration reads train, top-1 val"
        )
    info = TeacherInfo(
        name=name or type(model).__name__,
        dataset=spec.name,
        num_classes=spec.num_classes,
        weights_path=None,
        weights_sha256=None,
        published_top1=None,
        source="module",
        module_class=type(model).__name__,
    )
    test = make_loader(spec.val, batch_size, shuffle=False, seed=seed)
    calib = make_loader(spec.train, batch_size, shuffle=True, seed=seed)
    return _EvalInputs(info.name, spec.name, copy.deepcopy(model), info, spec, test, calib)


def _first_batches(loader: LabelledBatches, count: int, device: str | torch.device) -> list[torch.Tensor]:
    """The inputs of the loader's first `count` batches, on `device`."""
    batches: list[torch.Tensor] = []
    for i, (x, _) in enumerate(loader):
        if i >= count:
            break
        batches.append(x.to(device))
    return batches


def _weights_record(info: TeacherInfo) -> dict[str, object]:
    """Which weights the teacher has: file, checksum, source and the published top-1s they come with."""
    return {
        "weights_path": str(info.weights_path) if info.weights_path else None,
        "weights_sha256": info.weights_sha256 or sha256_of(info.weights_path),
        "weights_source": info.source,
        "published_top1": info.published_top1,
        "weights_file": info.weights_file,
        "weights_release": info.weights_release,
        "weights_record_match": info.weights_record_match,
        "paper_weights_file": info.paper_weights_file,
        "paper_top1": info.paper_top1,
    }
