"""ARC / AutoReCon generator (Zhu et al., IJCAI 2021): a searched three-cell generator.

What is faithful (facts from the AutoReCon generator shipped with the AIT code, and docs/reference.md#arc):

* search space of AdversarialNAS (Gao et al., CVPR 2020): three up-cells, each with two up edges
  ``{nearest, bilinear}`` (x2 interpolation -> CBN -> LeakyReLU(0.2) -> conv1x1), five normal edges
  ``{none, skip_connect, conv_1x1, conv_3x3, conv_5x5, dil_conv_3x3, dil_conv_5x5}`` (CBN -> LeakyReLU(0.2)
  -> conv; dilated convs have dilation 2), and, from the second cell on, six cross-cell edges
  ``{none, nearest, bilinear}`` that carry the previous cell's three inner nodes up x2 into this
  cell's two inner nodes;
* cell DAG: ``n0 = up0(x)``, ``n1 = up1(x)``, ``n2 = c0(n0) + c1(n1) [+ cross0..2(prev n0, n1, n2)]``,
  ``n3 = c2(n0) + c3(n1) + c4(n2) [+ cross3..5(prev n0, n1, n2)]``; output ``n3``;
* z (latent 100) split into three chunks (L//3, L//3, the rest), each through its own Linear to a
  64-channel map at H/8, H/4 and H/2; chunk 1 is the first cell's input, chunks 2 and 3 are added
  to the first and second cells' outputs; labels enter only through the class-conditional BNs
  (affine-free BN with per-class gamma/beta; eps 0.8);
* output: CBN -> LeakyReLU(0.2) -> conv3x3 64->C -> Tanh -> BN(C, affine=False); trained like GDFQ;
* the searched genotypes per teacher (:data:`ARC_GENOTYPES`) are the one-hot architecture matrices
  published with the AIT code's AutoReCon backbone, written out as operation names.

What is approximated: the reference builds every cell's conditional BN with 1000 classes regardless of
the data set (AutoReCon_AIT/model_generator.py:64,84,115,122,141,148; its to-RGB BN uses ``nclass``, line
303, as ours); we use ``num_classes``.  Harmless for outputs: gamma/beta rows start at 1/0 and a row is
only read (and only gets a gradient, so Adam never moves it) for a label that occurs, and labels are
below ``num_classes``; only the state dict's shapes and the count of generator parameters differ.  A cross edge
``none`` outputs zeros without computing the (discarded) up-sampling branch the reference multiplies
by 0.  The architecture search itself is not implemented: unknown teachers get the ``"default"``
genotype (the one searched for ResNet-20/CIFAR-10).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

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

UP_OPS = ("nearest", "bilinear")
NORMAL_OPS = ("none", "skip_connect", "conv_1x1", "conv_3x3", "conv_5x5", "dil_conv_3x3", "dil_conv_5x5")
CROSS_OPS = ("none", "nearest", "bilinear")
CBN_EPS = 0.8


def _cell(up: Sequence[str], ops: Sequence[str], cross: Sequence[str] | None = None) -> dict[str, list[str] | None]:
    return {"up": list(up), "ops": list(ops), "cross": None if cross is None else list(cross)}


_D5, _D3, _C5, _C3, _C1 = "dil_conv_5x5", "dil_conv_3x3", "conv_5x5", "conv_3x3", "conv_1x1"
_N, _B = "nearest", "bilinear"

# Searched genotypes, keyed by pytorchcv teacher name.  Per cell: two up edges, five normal edges
# (c0..c4 in the DAG of the module docstring), six cross edges (cells 2 and 3).
ARC_GENOTYPES: dict[str, dict[str, Any]] = {
    "resnet20_cifar10": {
        "cells": [
            _cell([_N, _N], [_D5, "none", _D5, _D3, _C5]),
            _cell([_N, _N], [_D5, _D5, _C3, _D3, _D5], ["none", "none", _B, "none", "none", _N]),
            _cell([_B, _N], [_D5, _D5, _C1, _C5, _D3], [_N, _N, _N, _B, _B, _B]),
        ]
    },
    "resnet20_cifar100": {
        "cells": [
            _cell([_B, _N], [_D5, _D5, _D5, "none", _C5]),
            _cell([_N, _N], [_D5, _C5, _C1, _D3, _D5], ["none", _B, _N, "none", "none", _N]),
            _cell([_N, _N], [_D5, _D3, _C5, _C5, _D5], ["none", _B, _N, _N, _B, _B]),
        ]
    },
    "resnet18": {
        "cells": [
            _cell([_B, _B], [_D5, _D5, _D5, _D5, _D5]),
            _cell([_B, _B], [_D5, _D5, _D5, _D5, _D3], [_N, _B, _N, _B, _B, _N]),
            _cell([_B, _B], [_D5, _D5, _C5, _D3, _D3], [_B, _B, _N, _N, _B, _N]),
        ]
    },
    "resnet50": {
        "cells": [
            _cell([_B, _B], [_D5, _D5, _D5, _D5, _D5]),
            _cell([_B, _B], [_D5, _D5, _C3, _C1, _C1], [_B, _B, _B, _N, _N, _B]),
            _cell([_B, _B], [_D3, _D5, _D5, _C5, _D3], [_N, _N, _N, _N, _B, _B]),
        ]
    },
    "mobilenetv2_w1": {
        "cells": [
            _cell([_B, _B], [_D5, _D5, _C5, _D5, _D5]),
            _cell([_B, _B], [_C5, _D5, _C1, _C1, _C1], [_B, _B, _N, _B, _B, _B]),
            _cell([_N, _B], [_C3, _D5, _C5, _D5, _D3], [_B, _N, _B, _B, _B, _N]),
        ]
    },
}
ARC_GENOTYPES["default"] = ARC_GENOTYPES["resnet20_cifar10"]


def check_genotype(genotype: object) -> dict[str, Any]:
    """Validate a genotype dict ``{"cells": [3 x {"up": [2], "ops": [5], "cross": None | [6]}]}``.

    Args:
        genotype: The value to check.

    Returns:
        `genotype`.

    Raises:
        UserError: It is not such a dict, or names an operation outside UP_OPS, NORMAL_OPS or CROSS_OPS.
    """
    bad = UserError(
        "ARC genotype must be {'cells': [three cells]}, each {'up': 2 of "
        + str(UP_OPS)
        + ", 'ops': 5 of "
        + str(NORMAL_OPS)
        + ", 'cross': None for the first cell, else 6 of "
        + str(CROSS_OPS)
        + "}"
    )
    if (
        not isinstance(genotype, dict)
        or not isinstance(genotype.get("cells"), (list, tuple))
        or len(genotype["cells"]) != 3
    ):
        raise bad
    for i, cell in enumerate(genotype["cells"]):
        if not isinstance(cell, dict):
            raise bad
        up, ops, cross = cell.get("up"), cell.get("ops"), cell.get("cross")
        if not isinstance(up, (list, tuple)) or len(up) != 2 or any(u not in UP_OPS for u in up):
            raise bad
        if not isinstance(ops, (list, tuple)) or len(ops) != 5 or any(o not in NORMAL_OPS for o in ops):
            raise bad
        if i == 0 and cross is not None:
            raise bad
        if i > 0 and (
            not isinstance(cross, (list, tuple)) or len(cross) != 6 or any(c not in CROSS_OPS for c in cross)
        ):
            raise bad
    return genotype


class _Zero(nn.Module):
    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(x)


class _ZeroUp(nn.Module):
    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(x.shape[0], x.shape[1], 2 * x.shape[2], 2 * x.shape[3])


class _Identity(nn.Module):
    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return x


class _ConvOp(nn.Module):
    """CBN -> LeakyReLU(0.2) -> conv (kernel k, dilation d, 'same' padding)."""

    def __init__(self, ch: int, k: int, dilation: int, num_classes: int) -> None:
        super().__init__()
        self.bn = CategoricalConditionalBatchNorm2d(num_classes, ch, eps=CBN_EPS)  # reference: 1000 rows (see top)
        self.act = nn.LeakyReLU(0.2)
        self.conv = nn.Conv2d(ch, ch, k, padding=dilation * (k - 1) // 2, dilation=dilation)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(self.act(self.bn(x, labels)))
        return out


class _UpOp(nn.Module):
    """x2 interpolation (nearest/bilinear) -> CBN -> LeakyReLU(0.2) -> conv1x1."""

    def __init__(self, ch: int, mode: str, num_classes: int) -> None:
        super().__init__()
        self.mode = mode
        self.bn = CategoricalConditionalBatchNorm2d(num_classes, ch, eps=CBN_EPS)  # reference: 1000 rows (see top)
        self.act = nn.LeakyReLU(0.2)
        self.conv = nn.Conv2d(ch, ch, 1)

    def forward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.conv(self.act(self.bn(upsample2(x, self.mode), labels)))
        return out


def _normal_op(name: str, ch: int, num_classes: int) -> nn.Module:
    if name == "none":
        return _Zero()
    if name == "skip_connect":
        return _Identity()
    kind, size = name.rsplit("_", 1)
    return _ConvOp(ch, int(size[0]), 2 if kind == "dil_conv" else 1, num_classes)


def _cross_op(name: str, ch: int, num_classes: int) -> nn.Module:
    return _ZeroUp() if name == "none" else _UpOp(ch, name, num_classes)


class _Cell(nn.Module):
    def __init__(self, spec: dict[str, Any], ch: int, num_classes: int) -> None:
        super().__init__()
        self.ups = nn.ModuleList(_UpOp(ch, u, num_classes) for u in spec["up"])
        self.ops = nn.ModuleList(_normal_op(o, ch, num_classes) for o in spec["ops"])
        cross = spec["cross"]
        self.cross = None if cross is None else nn.ModuleList(_cross_op(c, ch, num_classes) for c in cross)

    def forward(
        self, x: torch.Tensor, labels: torch.Tensor, prev: Sequence[torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        n0: torch.Tensor = self.ups[0](x, labels)
        n1: torch.Tensor = self.ups[1](x, labels)
        c = self.ops
        n2: torch.Tensor = c[0](n0, labels) + c[1](n1, labels)
        if self.cross is not None:
            assert prev is not None, "a cell with cross edges needs the previous cell's nodes"
            n2 = n2 + sum(self.cross[i](prev[i], labels) for i in range(3))
        n3: torch.Tensor = c[2](n0, labels) + c[3](n1, labels) + c[4](n2, labels)
        if self.cross is not None:
            assert prev is not None, "a cell with cross edges needs the previous cell's nodes"
            n3 = n3 + sum(self.cross[3 + i](prev[i], labels) for i in range(3))
        return n0, n1, n2, n3


class ARCGenerator(nn.Module):
    """AutoReCon's searched generator.  ``forward(z, labels)`` -> ``(B, C, H, W)``; H, W multiples of 8.

    ``genotype``: a genotype dict or a key of :data:`ARC_GENOTYPES`; if omitted, ``model_name`` (the
    teacher's pytorchcv name) selects the searched genotype, falling back to ``"default"``.

    Args:
        num_classes: The teacher's number of classes.
        image_shape: The (C, H, W) to draw; H and W multiples of 8.
        latent_dim: The latent size (>= 3: it is split into three chunks).
        genotype: A genotype dict, a key of ARC_GENOTYPES, or None (chosen by `model_name`).
        model_name: The teacher's pytorchcv name, choosing the genotype when `genotype` is None.
        channels: The channels of every cell.

    Raises:
        UserError: An argument is out of its range or the genotype is unknown or malformed.
    """

    label_kind = "hard"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        latent_dim: int = 100,
        genotype: dict[str, Any] | str | None = None,
        model_name: str | None = None,
        channels: int = 64,
    ) -> None:
        super().__init__()
        who = "ARC generator"
        self.num_classes = check_num_classes(num_classes, who)
        self.image_shape = check_image_shape(image_shape, 8, who)
        if isinstance(latent_dim, bool) or not isinstance(latent_dim, int) or latent_dim < 3:
            raise UserError(
                f"{who}: latent_dim must be an int >= 3 (it is split into three chunks), got {latent_dim!r}"
            )
        if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
            raise UserError(f"{who}: channels must be a positive int, got {channels!r}")
        if genotype is None:
            self.genotype_name = model_name if model_name in ARC_GENOTYPES else "default"
            genotype = ARC_GENOTYPES[self.genotype_name]
        elif isinstance(genotype, str):
            if genotype not in ARC_GENOTYPES:
                raise UserError(f"{who}: unknown genotype {genotype!r}; known: {', '.join(sorted(ARC_GENOTYPES))}")
            self.genotype_name = genotype
            genotype = ARC_GENOTYPES[genotype]
        else:
            self.genotype_name = "custom"
        self.genotype = check_genotype(genotype)
        self.latent_dim = latent_dim
        third = latent_dim // 3
        self.chunks = (third, third, latent_dim - 2 * third)
        c, h, w = self.image_shape
        self.channels = channels
        self.grids = [(h // 8 * 2**i, w // 8 * 2**i) for i in range(3)]  # H/8, H/4, H/2
        self.linears = nn.ModuleList(nn.Linear(d, channels * gh * gw) for d, (gh, gw) in zip(self.chunks, self.grids))
        self.cells = nn.ModuleList(_Cell(spec, channels, self.num_classes) for spec in self.genotype["cells"])
        self.rgb_bn = CategoricalConditionalBatchNorm2d(self.num_classes, channels, eps=CBN_EPS)
        self.rgb_act = nn.LeakyReLU(0.2)
        self.rgb_conv = nn.Conv2d(channels, c, 3, padding=1)
        self.out_bn = nn.BatchNorm2d(c, affine=False)

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
        who = "ARC generator"
        z = check_latent(z, self.latent_dim, who)
        labels = check_hard_labels(labels, z.shape[0], self.num_classes, who)
        parts = torch.split(z, list(self.chunks), dim=1)
        inj = [lin(p).view(z.shape[0], self.channels, *g) for lin, p, g in zip(self.linears, parts, self.grids)]
        nodes = self.cells[0](inj[0], labels)
        nodes = self.cells[1](nodes[3] + inj[1], labels, prev=nodes[:3])
        nodes = self.cells[2](nodes[3] + inj[2], labels, prev=nodes[:3])
        out = self.rgb_conv(self.rgb_act(self.rgb_bn(nodes[3], labels)))
        images: torch.Tensor = self.out_bn(torch.tanh(out))
        return images

    def sample(
        self, batch_size: int, generator: torch.Generator, device: Device = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """N(0, 1) latents then uniform hard labels, both from `generator` (`common.latents_and_labels`: its
        arguments, returns and errors)."""
        return latents_and_labels(self.latent_dim, self.num_classes, batch_size, generator, device, "ARC sample")
