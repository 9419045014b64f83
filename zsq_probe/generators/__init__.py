"""Synthetic-data sources for zero-shot quantisation: GDFQ, Qimera and ARC generators; ZeroQ distilled data.

Every generator is an ``nn.Module`` with ``num_classes``, ``image_shape`` (C, H, W), ``latent_dim``,
``label_kind`` ("hard" or "soft"), ``forward(z, labels) -> (B, C, H, W)`` and
``sample(batch_size, generator, device) -> (z, labels)`` that draws only from the given
``torch.Generator``.  GDFQ and ARC sample hard labels ``(B,)``; Qimera samples soft labels
``(B, num_classes)`` (see :mod:`zsq_probe.generators.qimera`).

``BNStatisticsLoss`` is GDFQ's BN-statistics loss (also used for Qimera and ARC);
``distill_zeroq`` makes ZeroQ's distilled images.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch.nn as nn

from zsq_probe.errors import UserError
from zsq_probe.generators.arc import ARC_GENOTYPES, ARCGenerator
from zsq_probe.generators.bns import BNStatisticsLoss
from zsq_probe.generators.common import CategoricalConditionalBatchNorm2d, crop_to
from zsq_probe.generators.gdfq import GDFQGenerator
from zsq_probe.generators.qimera import QIMERA_DEFAULTS, QimeraGenerator, SlotLatent, teacher_class_weights
from zsq_probe.generators.zeroq import ZeroQStatisticsLoss, distill_zeroq

GENERATORS: dict[str, type[nn.Module]] = {"gdfq": GDFQGenerator, "qimera": QimeraGenerator, "arc": ARCGenerator}

__all__ = [
    "ARC_GENOTYPES",
    "ARCGenerator",
    "BNStatisticsLoss",
    "CategoricalConditionalBatchNorm2d",
    "GENERATORS",
    "GDFQGenerator",
    "QIMERA_DEFAULTS",
    "QimeraGenerator",
    "SlotLatent",
    "ZeroQStatisticsLoss",
    "UPSAMPLING",
    "build_generator",
    "crop_to",
    "generator_image_shape",
    "distill_zeroq",
    "teacher_class_weights",
]


# each generator's total upsampling: it draws images whose sides are multiples of this
UPSAMPLING = {"gdfq": 4, "qimera": 4, "arc": 8}


def generator_image_shape(kind: str, image_shape: Sequence[int]) -> tuple[int, int, int]:
    """The shape a generator of `kind` draws for a teacher expecting `image_shape`.

    Each side is rounded up to the generator's upsampling multiple (InceptionV3's 299 -> 300); its samples are
    centre-cropped back (`crop_to`).  A side that already is a multiple is kept, so every other teacher is
    unchanged.

    Args:
        kind: The generator's name (a key of GENERATORS; another name: no rounding).
        image_shape: The teacher's (C, H, W).

    Returns:
        The (C, H, W) the generator draws.
    """
    m = UPSAMPLING.get(kind, 1)
    c, h, w = (int(s) for s in image_shape)
    return c, -(-h // m) * m, -(-w // m) * m


def build_generator(
    kind: str, num_classes: int, image_shape: Sequence[int], teacher: nn.Module | None = None, **options: Any
) -> nn.Module:
    """Build a generator.

    Args:
        kind: "gdfq", "qimera" or "arc".
        num_classes: The teacher's number of classes.
        image_shape: The (C, H, W) to draw.
        teacher: Qimera's class embedding comes from it; the other generators ignore it.
        **options: Keyword arguments of the generator's constructor.
            gdfq: latent_dim=100, variant="auto"|"cifar"|"imagenet".
            qimera: mix_prob, mix_k, preset (a key of QIMERA_DEFAULTS), preset_bits, embedding_init,
            embedding_dim, freeze_embedding, noise_scale, variant.
            arc: latent_dim=100, genotype, model_name (teacher name selecting ARC_GENOTYPES), channels=64.

    Returns:
        The generator.

    Raises:
        UserError: `kind` is unknown or an option is not one its constructor takes.
    """
    if kind not in GENERATORS:
        raise UserError(f"unknown generator {kind!r}; choose one of {', '.join(GENERATORS)}")
    cls = GENERATORS[kind]
    accepted = [
        p
        for p in inspect.signature(cls).parameters  # the constructor's, without self
        if p not in ("num_classes", "image_shape", "teacher")
    ]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise UserError(
            f"generator {kind!r} does not take option(s) {', '.join(unknown)}; it takes: {', '.join(accepted)}"
        )
    if kind == "qimera":
        return cls(num_classes, image_shape, teacher=teacher, **options)
    return cls(num_classes, image_shape, **options)
