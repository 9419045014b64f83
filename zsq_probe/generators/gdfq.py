"""GDFQ generator (Xu et al., ECCV 2020), as used by GDFQ, AIT and (its body) Qimera.

Facts (docs/reference.md#generator-architecture):

* CIFAR variant: ``z ~ N(0,1)^100`` multiplied elementwise by a learned ``Embedding(C, 100)`` of
  the label; Linear -> 128 x H/4 x W/4; BN(128); up x2 (nearest); conv3x3 128->128;
  BN(128, eps=0.8); LeakyReLU(0.2); up x2; conv3x3 128->64; BN(64, eps=0.8); LeakyReLU(0.2);
  conv3x3 64->C; Tanh; BN(C, affine=False).
* ImageNet variant: no embedding (the Linear sees z alone), Linear -> 128 x H/4 x W/4 (56 x 56 for
  224), and the three BNs before the output are class-conditional (per-class gamma/beta; the first
  with eps=1e-5, the other two with eps=0.8).  The last BN(C, affine=False) stays plain.

``variant="auto"`` picks the ImageNet variant for images larger than 64 pixels a side.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.types import Device

from zsq_probe.errors import UserError
from zsq_probe.generators.common import (
    CategoricalConditionalBatchNorm2d,
    check_hard_labels,
    check_image_shape,
    check_latent,
    check_num_classes,
    latents_and_labels,
    upsample2,
)

VARIANTS = ("auto", "cifar", "imagenet")


def resolve_variant(variant: str, image_shape: Sequence[int], who: str) -> str:
    """The generator layout: 'cifar' or 'imagenet' as given, or by image size for 'auto' (over 64 px: imagenet)."""
    if variant not in VARIANTS:
        raise UserError(f"{who}: variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    if variant == "auto":
        return "imagenet" if max(int(image_shape[1]), int(image_shape[2])) > 64 else "cifar"
    return variant


class GDFQBody(nn.Module):
    """Linear -> 128 x H/4 x W/4 -> BN -> up -> conv/BN/LReLU -> up -> conv/BN/LReLU -> conv -> Tanh -> BN.

    ``conditional=True`` swaps the three BNs before the output conv for class-conditional ones
    (GDFQ's ImageNet generator).  Shared with Qimera, which feeds it a different input vector.

    Args:
        in_dim: The size of the input vector.
        num_classes: The number of classes (for the conditional BNs).
        image_shape: The (C, H, W) to draw; H and W multiples of 4.
        conditional: Use class-conditional BNs.
    """

    bn0: nn.Module  # CategoricalConditionalBatchNorm2d when conditional, else nn.BatchNorm2d
    bn1: nn.Module
    bn2: nn.Module

    def __init__(self, in_dim: int, num_classes: int, image_shape: tuple[int, int, int], conditional: bool) -> None:
        super().__init__()
        c, h, w = image_shape
        self.init_hw = (h // 4, w // 4)
        self.conditional = conditional
        self.l1 = nn.Linear(in_dim, 128 * self.init_hw[0] * self.init_hw[1])
        if conditional:
            self.bn0 = CategoricalConditionalBatchNorm2d(num_classes, 128)
            self.bn1 = CategoricalConditionalBatchNorm2d(num_classes, 128, eps=0.8)
            self.bn2 = CategoricalConditionalBatchNorm2d(num_classes, 64, eps=0.8)
        else:
            self.bn0 = nn.BatchNorm2d(128)
            self.bn1 = nn.BatchNorm2d(128, eps=0.8)
            self.bn2 = nn.BatchNorm2d(64, eps=0.8)
        self.conv1 = nn.Conv2d(128, 128, 3, stride=1, padding=1)
        self.conv2 = nn.Conv2d(128, 64, 3, stride=1, padding=1)
        self.conv3 = nn.Conv2d(64, c, 3, stride=1, padding=1)
        self.act = nn.LeakyReLU(0.2)
        self.out_bn = nn.BatchNorm2d(c, affine=False)

    def _bn(self, bn: nn.Module, x: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        out: torch.Tensor = bn(x, cond) if self.conditional else bn(x)
        return out

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Images from the generator input.

        Args:
            x: The generator input (B, in_dim).
            cond: The labels of the conditional BNs (ImageNet layout); None without them.

        Returns:
            Images (B, C, H, W).
        """
        out = self.l1(x).view(x.shape[0], 128, *self.init_hw)
        out = self._bn(self.bn0, out, cond)
        out = self.conv1(upsample2(out))
        out = self.act(self._bn(self.bn1, out, cond))
        out = self.conv2(upsample2(out))
        out = self.act(self._bn(self.bn2, out, cond))
        images: torch.Tensor = self.out_bn(torch.tanh(self.conv3(out)))
        return images


class GDFQGenerator(nn.Module):
    """GDFQ's conditional generator.  ``forward(z, labels)`` -> images ``(B, C, H, W)``.

    ``z``: ``(B, latent_dim)``; ``labels``: LongTensor ``(B,)`` of hard class labels.
    ``sample(batch_size, generator, device)`` draws ``z ~ N(0,1)`` then uniform labels, both from
    the given ``torch.Generator`` only.

    Args:
        num_classes: The teacher's number of classes.
        image_shape: The (C, H, W) to draw; H and W multiples of 4.
        latent_dim: The latent size.
        variant: "cifar", "imagenet" or "auto" (by image size: `resolve_variant`).

    Raises:
        UserError: An argument is out of its range.
    """

    label_kind = "hard"

    def __init__(
        self, num_classes: int, image_shape: Sequence[int], latent_dim: int = 100, variant: str = "auto"
    ) -> None:
        super().__init__()
        who = "GDFQ generator"
        self.num_classes = check_num_classes(num_classes, who)
        self.image_shape = check_image_shape(image_shape, 4, who)
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 1:
            raise UserError(f"{who}: latent_dim must be a positive int, got {latent_dim!r}")
        self.latent_dim = latent_dim
        self.variant = resolve_variant(variant, self.image_shape, who)
        conditional = self.variant == "imagenet"
        # CIFAR: z * Embedding(label); ImageNet: z alone, labels enter through the conditional BNs.
        self.label_emb = None if conditional else nn.Embedding(self.num_classes, latent_dim)
        self.body = GDFQBody(latent_dim, self.num_classes, self.image_shape, conditional=conditional)

    def forward(self, z: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Images from latents and hard labels.

        Args:
            z: Latents (B, latent_dim).
            labels: Hard labels (B,).

        Returns:
            Images (B, C, H, W).

        Raises:
            UserError: `z` or `labels` has the wrong shape, or a label is out of range.
        """
        who = "GDFQ generator"
        z = check_latent(z, self.latent_dim, who)
        labels = check_hard_labels(labels, z.shape[0], self.num_classes, who)
        images: torch.Tensor = (
            self.body(z * self.label_emb(labels)) if self.label_emb is not None else self.body(z, labels)
        )
        return images

    def sample(
        self, batch_size: int, generator: torch.Generator, device: Device = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """N(0, 1) latents then uniform hard labels, both from `generator` (`common.latents_and_labels`: its
        arguments, returns and errors)."""
        return latents_and_labels(self.latent_dim, self.num_classes, batch_size, generator, device, "GDFQ sample")
