"""Pieces shared by the generators: input checks, RNG-safe sampling, class-conditional BN.

Facts (docs/reference.md#generator-architecture): the trainer samples ``z ~ N(0, 1)`` and uniform
labels every iteration; every random number a generator draws comes from the
``torch.Generator`` the trainer passes in, never from the global RNG.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import torch
import torch.nn as nn
import torch.nn.functional as F
from numpy.typing import NDArray
from torch.types import Device

from zsq_probe.errors import UserError

ImageBatch = TypeVar("ImageBatch", torch.Tensor, NDArray[Any])
"""A batch of images as a tensor or a numpy array (`crop_to` returns the kind it gets)."""


def check_image_shape(image_shape: Sequence[int], multiple: int, who: str) -> tuple[int, int, int]:
    """Validate ``(C, H, W)``; H and W must be divisible by ``multiple`` (the generator's total upsampling).

    Args:
        image_shape: The shape to check.
        multiple: What H and W must be multiples of.
        who: Who checks, named in the message.

    Returns:
        (C, H, W) as ints.

    Raises:
        UserError: The shape is not three positive ints, or H or W is not a multiple of `multiple`.
    """
    try:
        shape = tuple(int(s) for s in image_shape)
    except (TypeError, ValueError):
        raise UserError(f"{who}: image_shape must be (channels, height, width), got {image_shape!r}") from None
    if len(shape) != 3 or min(shape) < 1:
        raise UserError(
            f"{who}: image_shape must be three positive ints (channels, height, width), got {image_shape!r}"
        )
    c, h, w = shape
    if h % multiple or w % multiple:
        raise UserError(
            f"{who}: height and width must be multiples of {multiple} (the generator upsamples "
            f"x{multiple} from a {multiple}-times smaller grid), got {h}x{w}"
        )
    return c, h, w


def check_num_classes(num_classes: object, who: str) -> int:
    """`num_classes` when it is a positive int.

    Args:
        num_classes: The value to check.
        who: Who checks, named in the message.

    Returns:
        `num_classes`.

    Raises:
        UserError: It is not a positive int (a bool is not one).
    """
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise UserError(f"{who}: num_classes must be a positive int, got {num_classes!r}")
    return num_classes


def check_batch_size(batch_size: object, who: str) -> int:
    """`batch_size` when it is a positive int.

    Args:
        batch_size: The value to check.
        who: Who checks, named in the message.

    Returns:
        `batch_size`.

    Raises:
        UserError: It is not a positive int (a bool is not one).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise UserError(f"{who}: batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def check_rng(generator: object, who: str) -> torch.Generator:
    """`generator` when it is a torch.Generator (the caller owns the random streams).

    Args:
        generator: The value to check.
        who: Who checks, named in the message.

    Returns:
        `generator`.

    Raises:
        UserError: It is not a torch.Generator.
    """
    if not isinstance(generator, torch.Generator):
        raise UserError(
            f"{who}: pass a torch.Generator (the trainer owns the random streams), got {type(generator).__name__}"
        )
    return generator


def randn(shape: Sequence[int], rng: torch.Generator, device: Device) -> torch.Tensor:
    """N(0,1) drawn on the generator's own device (so a CPU stream works for a CUDA run), then moved.

    Args:
        shape: The tensor's shape.
        rng: The stream to draw from.
        device: Where the result goes.

    Returns:
        A float tensor of `shape` on `device`.
    """
    return torch.randn(tuple(shape), generator=rng, device=rng.device).to(device)


def randint(high: int, shape: Sequence[int], rng: torch.Generator, device: Device) -> torch.Tensor:
    """Uniform integers in [0, high) of `shape`, drawn on the generator's device, then moved to `device`.

    Args:
        high: One past the largest value.
        shape: The tensor's shape.
        rng: The stream to draw from.
        device: Where the result goes.

    Returns:
        An int64 tensor of `shape` on `device`.
    """
    return torch.randint(0, high, tuple(shape), generator=rng, device=rng.device).to(device)


def latents_and_labels(
    latent_dim: int, num_classes: int, batch_size: int, generator: object, device: Device, who: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """N(0, 1) latents, then uniform hard labels, both from `generator` (what the GDFQ and ARC generators sample).

    Args:
        latent_dim: Latent width.
        num_classes: Label range.
        batch_size: How many to draw.
        generator: The stream to draw from.
        device: Where the results go; None: the generator's device.
        who: The caller, for the error messages.

    Returns:
        (z (batch_size, latent_dim), labels (batch_size,)).

    Raises:
        UserError: `batch_size` is not a positive int or `generator` is not a torch.Generator.
    """
    check_batch_size(batch_size, who)
    rng = check_rng(generator, who)
    device = device if device is not None else rng.device
    return randn((batch_size, latent_dim), rng, device), randint(num_classes, (batch_size,), rng, device)


def rand(shape: Sequence[int], rng: torch.Generator, device: Device) -> torch.Tensor:
    """Uniform [0, 1) values of `shape`, drawn on the generator's device, then moved to `device`.

    Args:
        shape: The tensor's shape.
        rng: The stream to draw from.
        device: Where the result goes.

    Returns:
        A float tensor of `shape` on `device`.
    """
    return torch.rand(tuple(shape), generator=rng, device=rng.device).to(device)


def check_hard_labels(labels: object, batch: int, num_classes: int, who: str) -> torch.Tensor:
    """`labels` when they are integer class labels (batch,) in [0, num_classes).

    Args:
        labels: The value to check.
        batch: The batch size the labels must match.
        num_classes: One past the largest label.
        who: Who checks, named in the message.

    Returns:
        The labels as int64.

    Raises:
        UserError: They are not an integer tensor of shape (batch,) with values in [0, num_classes).
    """
    if not isinstance(labels, torch.Tensor) or labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32):
        raise UserError(f"{who}: labels must be an integer tensor of shape ({batch},)")
    if labels.shape[0] != batch:
        raise UserError(f"{who}: {labels.shape[0]} labels for a batch of {batch} latent vectors")
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise UserError(
            f"{who}: labels must lie in [0, {num_classes - 1}], got [{int(labels.min())}, {int(labels.max())}]"
        )
    return labels.long()


def check_latent(z: object, latent_dim: int, who: str, allow_slots: bool = False) -> torch.Tensor:
    """`z` when it is a latent batch (batch, latent_dim) (or, with `allow_slots`, (batch, K, latent_dim)).

    Args:
        z: The value to check.
        latent_dim: The latent size its last dimension must have.
        who: Who checks, named in the message.
        allow_slots: Accept (batch, K, latent_dim) too.

    Returns:
        `z`.

    Raises:
        UserError: It is not a tensor of one of those shapes.
    """
    ok_dims = (2, 3) if allow_slots else (2,)
    if not isinstance(z, torch.Tensor) or z.dim() not in ok_dims or z.shape[-1] != latent_dim:
        want = f"(batch, {latent_dim})" + (f" or (batch, K, {latent_dim})" if allow_slots else "")
        got = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise UserError(f"{who}: z must have shape {want}, got {got}")
    return z


class CategoricalConditionalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d without its own affine, followed by a per-class scale and shift (GDFQ ImageNet generator).

    ``forward(x, labels)``: ``labels`` is either a LongTensor ``(B,)`` (each sample uses its class's
    gamma/beta) or a float tensor ``(B, num_classes)`` of mixing weights (gamma = weights @ Gamma,
    used by Qimera's superposed labels).  Gamma starts at 1 and beta at 0.

    Args:
        num_classes: The number of classes (rows of gamma and beta).
        num_features: The number of channels.
        eps: BatchNorm2d's epsilon.
        momentum: BatchNorm2d's running-statistics momentum.
    """

    def __init__(self, num_classes: int, num_features: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=False, track_running_stats=True)
        self.num_classes = num_classes
        self.gamma = nn.Embedding(num_classes, num_features)
        self.beta = nn.Embedding(num_classes, num_features)
        nn.init.ones_(self.gamma.weight)
        nn.init.zeros_(self.beta.weight)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Batch-normalise `x`, then scale and shift it by the gamma/beta of each sample's labels.

        Args:
            x: A batch (B, C, H, W).
            labels: Class labels (B,) or mixing weights (B, num_classes).

        Returns:
            The normalised, scaled and shifted batch (B, C, H, W).
        """
        out = super().forward(x)
        g: torch.Tensor
        b: torch.Tensor
        if labels.dim() == 1:
            g, b = self.gamma(labels), self.beta(labels)
        else:
            w = labels.to(out.dtype)
            g, b = w @ self.gamma.weight, w @ self.beta.weight
        return g[:, :, None, None] * out + b[:, :, None, None]


def running_stats(bn: nn.BatchNorm2d, who: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A BN layer's running mean and variance.

    Args:
        bn: The layer.
        who: Who asks, named in the message.

    Returns:
        (running mean, running variance).

    Raises:
        UserError: The layer tracks no running statistics.
    """
    if bn.running_mean is None or bn.running_var is None:
        raise UserError(f"{who}: a BatchNorm2d of the teacher ({bn}) tracks no running statistics")
    return bn.running_mean, bn.running_var


def upsample2(x: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """`x` upsampled by 2 in height and width."""
    return F.interpolate(x, scale_factor=2, mode=mode)


def crop_to(x: ImageBatch, image_shape: Sequence[int]) -> ImageBatch:
    """Centre-crop a batch (N, C, H, W) to `image_shape`'s (H, W).

    Args:
        x: The batch, a tensor or a numpy array.
        image_shape: The shape to crop to; only its last two entries (H, W) are used.

    Returns:
        The cropped batch (a view), or `x` itself when it already fits.
    """
    h, w = int(image_shape[-2]), int(image_shape[-1])
    top, left = (x.shape[-2] - h) // 2, (x.shape[-1] - w) // 2
    if top == 0 and left == 0 and x.shape[-2] == h and x.shape[-1] == w:
        return x
    return x[..., top : top + h, left : left + w]
