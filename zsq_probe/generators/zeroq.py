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

Initialisation: ``init="gaussian"`` (default) draws N(0, 1) pixels; ``init="uniform"`` reproduces the
ZeroQ code's start, ``(randint(0, 255) - 127.5) / 5418.75`` (a small uniform; the code divides by the
variance of U(-128, 127), not its std).  All draws come from the given ``torch.Generator``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn as nn

from zsq_probe.errors import UserError
from zsq_probe.generators.common import check_batch_size, check_image_shape, check_rng

EPS = 1e-6


def _mean_std(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample, per-channel spatial mean and std (unbiased variance + EPS) of a (B, C, ...) tensor."""
    flat = x.reshape(x.shape[0], x.shape[1], -1)
    correction = 1 if flat.shape[2] > 1 else 0
    return flat.mean(dim=2), torch.sqrt(flat.var(dim=2, correction=correction) + EPS)


def _own_loss(target: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """ZeroQ's L2 loss: ||target - value||^2 / batch, target (C,) broadcast over value (B, C)."""
    return (target - value).pow(2).sum() / value.shape[0]


class ZeroQStatisticsLoss:
    """Context manager: records per-image BN-input statistics of ``teacher``; :meth:`loss` is ZeroQ's loss."""

    def __init__(self, teacher: nn.Module):
        self.layers = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers:
            raise UserError("ZeroQ: the teacher has no BatchNorm2d layer; distilled data needs BN statistics")
        if any(m.running_mean is None or m.running_var is None for m in self.layers):
            raise UserError("ZeroQ: every BatchNorm2d of the teacher must track running statistics")
        self._stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles: list = []

    def _hook(self, index: int):
        def hook(module, inputs):
            self._stats[index] = _mean_std(inputs[0])
        return hook

    def __enter__(self) -> "ZeroQStatisticsLoss":
        self._handles = [m.register_forward_pre_hook(self._hook(i)) for i, m in enumerate(self.layers)]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def clear(self) -> None:
        self._stats.clear()

    def loss(self, images: torch.Tensor | None = None) -> torch.Tensor:
        """Sum over recorded BN layers (+ the input term when ``images`` is given)."""
        if not self._stats:
            raise UserError("ZeroQ: no teacher forward pass was recorded inside the ZeroQStatisticsLoss block")
        total = 0.0
        for i in sorted(self._stats):
            mean, std = self._stats[i]
            bn = self.layers[i]
            total = total + _own_loss(bn.running_mean.to(mean.dtype), mean)
            total = total + _own_loss(torch.sqrt(bn.running_var.to(std.dtype) + EPS), std)
        if images is not None:
            mean, std = _mean_std(images)
            total = total + _own_loss(torch.zeros_like(mean[0]), mean) + _own_loss(torch.ones_like(std[0]), std)
        return total


def _teacher_device(teacher: nn.Module):
    for t in list(teacher.parameters()) + list(teacher.buffers()):
        return t.device
    return torch.device("cpu")


def distill_zeroq(teacher: nn.Module, num_images: int, image_shape: Sequence[int], batch_size: int, *,
                  iterations: int = 500, lr: float = 0.5, generator: torch.Generator, device=None,
                  progress: Callable[[int, int, float], None] | None = None, init: str = "gaussian",
                  patience: int = 100, min_lr: float = 1e-4):
    """ZeroQ's distilled data: ``(images (num_images, C, H, W), history)``.

    ``num_images`` are made in batches of ``batch_size`` (the last may be smaller), each optimised
    on its own for ``iterations`` steps.  ``history`` is a list of rows
    ``{"batch", "iteration", "loss", "lr"}`` (the loss before that iteration's step).
    ``progress(batch, iteration, loss)`` is called every iteration if given.  The teacher's mode
    is restored and its parameters receive no gradient.
    """
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
    shape = check_image_shape(image_shape, 1, who)
    rng = check_rng(generator, who)
    device = torch.device(device) if device is not None else _teacher_device(teacher)

    stats = ZeroQStatisticsLoss(teacher)
    was_training = teacher.training
    teacher.eval()
    images, history = [], []
    try:
        with stats:
            for b, start in enumerate(range(0, num_images, batch_size)):
                n = min(batch_size, num_images - start)
                if init == "gaussian":
                    x0 = torch.randn((n, *shape), generator=rng, device=rng.device)
                else:
                    x0 = (torch.randint(0, 255, (n, *shape), generator=rng, device=rng.device).float() - 127.5) / 5418.75
                x = x0.to(device).requires_grad_(True)
                opt = torch.optim.Adam([x], lr=float(lr))
                sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="min", factor=0.1, patience=patience,
                                                                   min_lr=min_lr)
                for it in range(iterations):
                    stats.clear()
                    try:
                        teacher(x)
                    except RuntimeError as e:
                        if it == 0 and b == 0:
                            raise UserError(f"{who}: the teacher cannot run on images of shape {tuple(shape)}: {e}") from e
                        raise
                    loss = stats.loss(x)
                    (grad,) = torch.autograd.grad(loss, [x])  # images only: no gradient reaches the teacher
                    value = float(loss.detach())
                    history.append({"batch": b, "iteration": it, "loss": value, "lr": opt.param_groups[0]["lr"]})
                    if progress is not None:
                        progress(b, it, value)
                    x.grad = grad
                    opt.step()
                    sched.step(value)
                images.append(x.detach())
    finally:
        teacher.train(was_training)
    return torch.cat(images), history
