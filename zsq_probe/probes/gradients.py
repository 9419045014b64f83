"""Gradient arithmetic the cosine and inter-epoch probes share: per-parameter products of two gradients and the
cosine rows (model, block and layer scopes) made from them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import cast

import torch

from zsq_probe.probes.base import Row, grouped_indices


def gradient_products(g_ce: Sequence[torch.Tensor], g_kl: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-parameter-tensor [<g_ce, g_kl>, |g_ce|^2, |g_kl|^2] as a (3, P) float64 CPU tensor (one sync)."""
    rows = torch.stack([torch.stack([(a * b).sum(), (a * a).sum(), (b * b).sum()]) for a, b in zip(g_ce, g_kl)])
    return rows.t().double().cpu()


def cosine_rows(products: torch.Tensor, names: list[str], scopes: Sequence[str]) -> list[Row]:
    """Cosine, norms and angle for the whole model and for each requested block/layer group."""
    out: list[Row] = []
    for scope in scopes:
        for group, idx in grouped_indices(names, scope).items():
            dot, nce2, nkl2 = (float(products[r, idx].sum()) for r in range(3))
            nce, nkl = math.sqrt(nce2), math.sqrt(nkl2)
            cos = dot / (nce * nkl) if nce > 0 and nkl > 0 else float("nan")
            angle = math.degrees(math.acos(max(-1.0, min(1.0, cos)))) if cos == cos else float("nan")
            out.append(
                {
                    "scope": scope,
                    "group": group,
                    "cosine": cos,
                    "grad_norm_ce": nce,
                    "grad_norm_kl": nkl,
                    "angle_deg": angle,
                }
            )
    return out


def column_mean(rows: list[Row], column: str) -> float:
    """The mean of a float column over rows (of `cosine_rows`)."""
    return sum(cast(float, r[column]) for r in rows) / len(rows)
