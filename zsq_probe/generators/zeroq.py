"""ZeroQ distilled data (Cai et al., CVPR 2020): images optimised to match the teacher's BN statistics.

Facts (docs/reference.md#zeroq; ZeroQ's published ``distill_data.py``):

* no generator: a batch of images is optimised directly with Adam (lr 0.5) for 500 iterations,
  with ``ReduceLROnPlateau`` on the loss (factor 0.1, patience 100, min_lr 1e-4);
* loss = sum over BN layers of ``||mu - running_mean||^2 / B + ||sigma - sqrt(running_var + eps)||^2 / B``
  where ``mu``/``sigma`` are each image's per-channel spatial mean/std of the BN *input*
  (std from the unbiased variance, ``eps = 1e-6``; the reference hooks the conv before each BN,
  we hook the BN input itself, which is the same tensor whenever a conv feeds the BN), plus the same
  term pulling each image's per-channel pixel mean/std to 0/1;
* the teacher is in eval mode and only the images receive gradients.

Initialisation: ``init="uniform"`` (default) reproduces the ZeroQ code's start,
``(randint(0, 255) - 127.5) / 5418.75`` (a small uniform; the code divides by the variance of
U(-128, 127), not its std; classification/utils/data_utils.py:39-41), bit for bit: the reference draws
image by image from the global generator, one call for the batch draws the same numbers;
``init="gaussian"`` draws N(0, 1) pixels (this package's earlier default).  All draws come from the given
``torch.Generator``.

Calibration (:func:`calibrate_running_minmax`): the reference (classification/uniform_test.py:75-89,
utils/quantization_utils/quant_modules.py:50-75, utils/train_utils.py:51-63) distils ONE batch of 32 images
(uniform_test.py:48-50, distill_data.py:56) and runs it through the quantised model with every activation
range a running min/max that starts at 0 (``x_min = min(x_min, batch min)``, ``x_max = max(x_max, batch
max)``), each activation quantised with the range already widened by its own batch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TypedDict, cast

import torch
import torch.nn as nn
from torch.types import Device
from torch.utils.hooks import RemovableHandle

from zsq_probe.errors import UserError
from zsq_probe.generators.common import check_batch_size, check_image_shape, check_rng, running_stats
from zsq_probe.quantization.quantizer import ActivationQuantizer, activation_quantizers

EPS = 1e-6
REFERENCE_IMAGES = 32  # ZeroQ's uniform_test.py --batch_size default, one batch (distill_data.py num_batch=1)
CALIBRATION_RULES = ("minmax", "ema")


class DistillRecord(TypedDict):
    """One row of `distill_zeroq`'s history (the run's ``zeroq_distillation`` table)."""

    batch: int
    iteration: int
    loss: float  # before that iteration's step
    lr: float


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel spatial mean and std (unbiased variance + EPS) of a (B, C, ...) tensor."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    correction = 1 if flat.shape[2] > 1 else 0
    return flat.mean(dim=2), torch.sqrt(flat.var(dim=2, correction=correction) + EPS)


def _own_loss(target: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """ZeroQ's L2 loss: ||target - value||^2 / batch, target (C,) broadcast over value (B, C)."""
    loss: torch.Tensor = (target - value).norm() ** 2 / value.shape[
        0
    ]  # norm()**2 as distill_data.py:35 (same rounding)
    return loss


class ZeroQStatisticsLoss:
    """Context manager: records per-image BN-input statistics of ``teacher``; :meth:`loss` is ZeroQ's loss.

    Args:
        teacher: The model whose BatchNorm2d layers are matched.

    Raises:
        UserError: The teacher has no BatchNorm2d, or one of them tracks no running statistics.
    """

    def __init__(self, teacher: nn.Module) -> None:
        self.layers = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers:
            raise UserError("ZeroQ: the teacher has no BatchNorm2d layer; distilled data needs BN statistics")
        if any(m.running_mean is None or m.running_var is None for m in self.layers):
            raise UserError("ZeroQ: every BatchNorm2d of the teacher must track running statistics")
        self._stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles: list[RemovableHandle] = []

    def _hook(self, index: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...]], None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            self._stats[index] = _mean_std(inputs[0])

        return hook

    def __enter__(self) -> ZeroQStatisticsLoss:
        self._handles = [m.register_forward_pre_hook(self._hook(i)) for i, m in enumerate(self.layers)]
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def clear(self) -> None:
        """Forget the statistics recorded so far (before the next forward pass)."""
        self._stats.clear()

    def loss(self, images: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over recorded BN layers (+ the input term when ``images`` is given)."""
        if not self._stats:
            raise UserError("ZeroQ: no teacher forward pass was recorded inside the ZeroQStatisticsLoss block")
        # summed apart, then added, as distill_data.py:122-146 (same rounding)
        mean_loss: torch.Tensor | float = 0.0
        std_loss: torch.Tensor | float = 0.0
        for i in sorted(self._stats):
            mean, std = self._stats[i]
            running_mean, running_var = running_stats(self.layers[i], "ZeroQ")
            mean_loss = mean_loss + _own_loss(running_mean.to(mean.dtype), mean)
            std_loss = std_loss + _own_loss(torch.sqrt(running_var.to(std.dtype) + EPS), std)
        if images is not None:
            mean, std = _mean_std(images)
            mean_loss = mean_loss + _own_loss(torch.zeros_like(mean[0]), mean)
            std_loss = std_loss + _own_loss(torch.ones_like(std[0]), std)
        return cast(torch.Tensor, mean_loss + std_loss)  # a tensor: at least one layer was recorded


def _teacher_device(teacher: nn.Module) -> torch.device:
    for t in list(teacher.parameters()) + list(teacher.buffers()):
        return t.device
    return torch.device("cpu")


def distill_zeroq(
    teacher: nn.Module,
    num_images: int,
    image_shape: Sequence[int],
    batch_size: int,
    *,
    iterations: int = 500,
    lr: float = 0.5,
    generator: torch.Generator,
    device: Device = None,
    progress: Callable[[int, int, float], None] | None = None,
    init: str = "uniform",
    patience: int = 100,
    min_lr: float = 1e-4,
) -> tuple[torch.Tensor, list[DistillRecord]]:
    """ZeroQ's distilled data; the teacher's mode is restored and its parameters receive no gradient.

    Args:
        teacher: The model whose BN statistics the images match.
        num_images: How many images to make, in batches of `batch_size` (the last may be smaller).
        image_shape: Their (C, H, W).
        batch_size: How many are optimised together (each batch on its own).
        iterations: Adam steps per batch.
        lr: Adam's starting learning rate.
        generator: The stream the starting images are drawn from.
        device: Where the images are optimised; None: the teacher's device.
        progress: Called as ``progress(batch, iteration, loss)`` every iteration.
        init: The starting images: "uniform" (ZeroQ's code) or "gaussian" (module docstring).
        patience: ReduceLROnPlateau's patience.
        min_lr: ReduceLROnPlateau's smallest learning rate.

    Returns:
        (images (num_images, C, H, W), history: one row per batch and iteration).

    Raises:
        UserError: An argument is out of its range, or the teacher cannot run on images of `image_shape`.
    """
    who = "ZeroQ"
    _check_distill_args(teacher, num_images, batch_size, iterations, lr, init)
    shape = check_image_shape(image_shape, 1, who)
    rng = check_rng(generator, who)
    device = torch.device(device) if device is not None else _teacher_device(teacher)
    stats = ZeroQStatisticsLoss(teacher)
    was_training = teacher.training
    teacher.eval()
    images: list[torch.Tensor] = []
    history: list[DistillRecord] = []
    try:
        with stats:
            for b, start in enumerate(range(0, num_images, batch_size)):
                x = _initial_images(min(batch_size, num_images - start), shape, rng, init).to(device)
                history += _optimise_batch(teacher, stats, x, b, iterations, lr, patience, min_lr, progress)
                images.append(x.detach())
    finally:
        teacher.train(was_training)
    return torch.cat(images), history


def _optimise_batch(
    teacher: nn.Module,
    stats: ZeroQStatisticsLoss,
    x: torch.Tensor,
    b: int,
    iterations: int,
    lr: float,
    patience: int,
    min_lr: float,
    progress: Callable[[int, int, float], None] | None,
) -> list[DistillRecord]:
    """Optimise the images `x` (batch `b`) in place with Adam and ReduceLROnPlateau; its history rows."""
    opt = torch.optim.Adam([x.requires_grad_(True)], lr=float(lr))
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=patience, min_lr=min_lr)
    history: list[DistillRecord] = []
    for it in range(iterations):
        value = _distill_step(teacher, stats, x, opt, first=it == 0 and b == 0)
        history.append({"batch": b, "iteration": it, "loss": value, "lr": opt.param_groups[0]["lr"]})
        if progress is not None:
            progress(b, it, value)
        opt.step()
        sched.step(value)
    return history


def _check_distill_args(
    teacher: object, num_images: object, batch_size: object, iterations: object, lr: object, init: object
) -> None:
    """UserError for a distill_zeroq argument out of its range."""
    who = "ZeroQ"
    if not isinstance(teacher, nn.Module):
        raise UserError(f"{who}: the teacher must be a torch.nn.Module")
    if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
        raise UserError(f"{who}: num_images must be a positive int, got {num_images!r}")
    check_batch_size(batch_size, who)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise UserError(f"{who}: iterations must be an int >= 0, got {iterations!r}")
    if not (isinstance(lr, (int, float)) and lr > 0):
        raise UserError(f"{who}: lr must be a positive number, got {lr!r}")
    if init not in ("gaussian", "uniform"):
        raise UserError(f"{who}: init must be 'gaussian' or 'uniform', got {init!r}")


def _initial_images(n: int, shape: tuple[int, ...], rng: torch.Generator, init: str) -> torch.Tensor:
    """The start of a batch of ``n`` images, drawn on the generator's device (module docstring)."""
    if init == "gaussian":
        return torch.randn((n, *shape), generator=rng, device=rng.device)
    return (torch.randint(0, 255, (n, *shape), generator=rng, device=rng.device).float() - 127.5) / 5418.75


def _distill_step(
    teacher: nn.Module, stats: ZeroQStatisticsLoss, x: torch.Tensor, opt: torch.optim.Optimizer, first: bool
) -> float:
    """The loss of the images ``x`` (returned) and its gradient in ``x.grad``, ready for the optimiser's step;
    `first`: the first pass, where a teacher that cannot take the images' shape is the user's error."""
    stats.clear()
    try:
        teacher(x)
    except RuntimeError as e:
        if first:
            raise UserError(f"ZeroQ: the teacher cannot run on images of shape {tuple(x.shape[1:])}: {e}") from e
        raise
    loss = stats.loss(x)
    (grad,) = torch.autograd.grad(loss, [x])  # images only: no gradient reaches the teacher
    x.grad = grad
    return float(loss.detach())


def calibrate_running_minmax(model: nn.Module, batches: Iterable[torch.Tensor | Sequence[torch.Tensor]]) -> int:
    """ZeroQ's calibration: every activation range = running min/max over ``batches``, starting from 0.

    Mirrors the reference's ``QuantAct`` (quant_modules.py:50-75): before quantising, each quantiser's range
    becomes ``[min(lo, batch min), max(hi, batch max)]`` with ``lo = hi = 0`` at the start, so the range
    always contains 0 and never shrinks.  The model runs in eval mode under no_grad; afterwards the ranges
    are frozen and the train/eval flags restored.  (Kept here rather than in
    :mod:`zsq_probe.quantization.quantizer`, whose own calibration is the training EMA.)

    Args:
        model: The quantised model.
        batches: Input batches, or tuples or lists whose first entry is the input.

    Returns:
        The number of batches.

    Raises:
        UserError: The model has no activation quantisers, or `batches` is empty.
    """
    quantizers = list(activation_quantizers(model).values())
    if not quantizers:
        raise UserError("ZeroQ calibration: the model has no activation quantisers (was it quantised?)")
    modes = {m: m.training for m in model.modules()}

    def widen(q: ActivationQuantizer, inputs: tuple[torch.Tensor, ...]) -> None:
        x = inputs[0].detach()
        q.range_min.copy_(torch.minimum(q.range_min, x.amin().to(q.range_min.dtype)))
        q.range_max.copy_(torch.maximum(q.range_max, x.amax().to(q.range_max.dtype)))

    for q in quantizers:  # start from 0 and quantise with the running range (frozen: no EMA update)
        q.reset_range()
        q.set_frozen(True)
        q.initialized.fill_(True)
        q._initialized = True
    handles = [q.register_forward_pre_hook(widen) for q in quantizers]
    count = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                count += 1
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    if count == 0:
        raise UserError("ZeroQ calibration got no batches")
    return count
