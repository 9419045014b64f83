"""The slice probe (paper §3.2, Fig. 2c): 1-D loss slices L(theta + k*e*delta) of the CE and KL losses along
the top Hessian eigenvector of each (and along random directions), every `hessian_every_epochs` epochs.  It
reuses the Hessian probe's batch and eigenvectors of the same epoch when that probe runs too."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

from zsq_probe.events import MetricsRow, ProbeBatch, ProbeContext
from zsq_probe.hessian import (
    HessianOperator,
)
from zsq_probe.hessian.operator import NonFiniteHessianError
from zsq_probe.module_state import preserved_state
from zsq_probe.probe_registry import BUILTIN_PROBES
from zsq_probe.probes.base import Probe, Row
from zsq_probe.probes.curvature import curvature_seed, loss_functions, skip_nonfinite_epoch, top_pairs, warn_small_batch
from zsq_probe.probes.hessian import HessianProbe
from zsq_probe.probes.surrogate import frozen_quantization, is_quantized
from zsq_probe.quantization.losses import LossFn

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig


SLICE_K_MAX = 0.5  # k in [-0.5, 0.5], the paper's Fig. 2c range


SLICE_LOSS_KINDS = ("surrogate", "requantized")  # for a quantised student; a float one gives "float"


@torch.no_grad()
def loss_along(
    student: nn.Module,
    fn: LossFn,
    inputs: torch.Tensor,
    target: torch.Tensor,
    direction: torch.Tensor,
    ks: Iterable[float],
    params: Sequence[torch.Tensor],
    surrogate: bool = False,
) -> list[float]:
    """fn(student(inputs), target) at theta + k*direction for each k.

    The student runs as the Hessian probe sees it, whatever its own mode: BN in eval mode (running
    statistics), activation ranges frozen, every buffer a private clone, so no forward here moves BN
    statistics or ranges.  `surrogate`: evaluate the straight-through surrogate of a quantised student, its
    quantisation offsets frozen at theta (zsq_probe.probes.surrogate; the loss whose Hessian the probe
    reports); else the student as it is (re-quantised at every point for a quantised one).  Parameters,
    flags and buffers are restored exactly."""
    saved = [p.detach().clone() for p in params]
    values = []
    quantization = frozen_quantization(student, inputs) if surrogate else contextlib.nullcontext()
    with preserved_state(student, mode="eval"), quantization:  # entered in this order, as nested blocks
        try:
            for k in ks:
                _shift(params, saved, direction, float(k))
                values.append(float(fn(student(inputs), target)))
        finally:
            for p, p0 in zip(params, saved):
                p.copy_(p0)
    return values


def _shift(params: Sequence[torch.Tensor], base: Sequence[torch.Tensor], direction: torch.Tensor, k: float) -> None:
    """Set ``params`` (in place) to ``base + k * direction``, the flat ``direction`` split in parameter order."""
    offset = 0
    for p, p0 in zip(params, base):
        n = p.numel()
        p.copy_(p0 + k * direction[offset : offset + n].view_as(p))
        offset += n


def random_direction(
    params: Sequence[torch.Tensor], generator: torch.Generator, filter_normalized: bool
) -> torch.Tensor:
    """A Gaussian direction: unit norm, or filter-normalised (Li et al. 2018: each output filter rescaled
    to the norm of the weights' filter; biases and BN parameters get no component)."""
    parts = []
    for p in params:
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        if filter_normalized:
            if p.dim() <= 1:
                d = torch.zeros_like(d)
            else:
                w = p.detach().double().cpu()
                dims = tuple(range(1, p.dim()))
                w_norm = torch.linalg.vector_norm(w, dim=dims, keepdim=True)
                d_norm = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
                d = d * (w_norm / d_norm.clamp_min(1e-12))
        parts.append(d.reshape(-1))
    flat = torch.cat(parts)
    if not filter_normalized:
        flat = flat / flat.norm()
    return flat.to(device=params[0].device, dtype=params[0].dtype)


def slice_delta(
    scaling: str, gradient_along: float, direction_norm: float, theta_norm: float, norm_fraction: float
) -> float:
    """The step scale delta of a slice theta + k*delta*d.

    'gradient': delta = grad L . d (the paper's Fig. 2c; differs between CE and KL); 'unit': delta = 1;
    'norm': |delta| * ||d|| = norm_fraction * ||theta||, the same parameter-norm length for every loss, signed
    like grad L . d so that k > 0 points uphill as with 'gradient'."""
    if scaling == "gradient":
        return gradient_along
    if scaling == "unit":
        return 1.0
    if scaling == "norm":
        if direction_norm == 0.0:
            return 0.0
        return float(np.copysign(norm_fraction * theta_norm / direction_norm, gradient_along))
    raise ValueError(f"unknown slice scaling {scaling!r}")


@dataclass(frozen=True)
class _Slicing:
    """What every slice of one measurement shares: the student and its parameters, the probe batch, the config
    and seed, the grid ``ks``, the loss kinds and ``||theta||``."""

    student: nn.Module
    params: Sequence[torch.Tensor]
    batch: ProbeBatch
    cfg: RunConfig
    seed: int
    ks: np.ndarray
    kinds: list[str]
    theta_norm: float


def _slice_directions(
    op: HessianOperator, sl: _Slicing, loss: str, top: dict[str, torch.Tensor] | None
) -> dict[str, torch.Tensor]:
    """The configured directions for `loss`: its top eigenvector (the Hessian probe's when given, else found
    here as that probe would), then a random and a filter-normalised one from a generator seeded with `seed`."""
    wanted = sl.cfg.probing.slice_directions
    directions: dict[str, torch.Tensor] = {}
    if "eigenvector" in wanted:
        if top is not None and loss in top:
            directions["eigenvector"] = top[loss]
        else:
            directions["eigenvector"] = top_pairs(op, sl.cfg, sl.seed).eigenvectors[0]
    rng = torch.Generator().manual_seed(sl.seed)
    if "random" in wanted:
        directions["random"] = random_direction(sl.params, rng, filter_normalized=False)
    if "filter" in wanted:
        directions["filter"] = random_direction(sl.params, rng, filter_normalized=True)
    return directions


def _direction_rows(
    sl: _Slicing, loss: str, fn: LossFn, target: torch.Tensor, name: str, d: torch.Tensor, gradient: torch.Tensor
) -> list[Row]:
    """The slices of `loss` along direction `d` (named `name`), for every scaling and loss kind."""
    p_cfg = sl.cfg.probing
    d = d.to(device=gradient.device, dtype=gradient.dtype)
    along = float(gradient.double() @ d.double())
    d_norm = float(d.double().norm())
    rows: list[Row] = []
    for scaling, kind in itertools.product(p_cfg.slice_scalings, sl.kinds):
        delta = slice_delta(scaling, along, d_norm, sl.theta_norm, p_cfg.slice_norm_fraction)
        values = loss_along(
            sl.student, fn, sl.batch.inputs, target, d * delta, sl.ks, sl.params, surrogate=kind == "surrogate"
        )
        rows += [
            {
                "loss": loss,
                "loss_kind": kind,
                "direction": name,
                "scaling": scaling,
                "delta": delta,
                "step_norm": abs(delta) * d_norm,
                "theta_norm": sl.theta_norm,
                "k": float(k),
                "loss_value": v,
                "probe_batch_size": sl.batch.size,
                "seed": sl.seed,
            }
            for k, v in zip(sl.ks, values)
        ]
    return rows


def slice_rows(
    student: nn.Module,
    params: Sequence[torch.Tensor],
    batch: ProbeBatch,
    cfg: RunConfig,
    seed: int,
    top: dict[str, torch.Tensor] | None,
) -> list[Row]:
    """Loss slices for CE and KL along each configured direction and scaling (paper Fig. 2c uses the top
    eigenvector of that loss's Hessian and delta = the gradient along it).

    Everything runs on the eval-mode student (BN running statistics, frozen activation ranges) the Hessian
    probe differentiates, whatever mode the student trains in.  A quantised student gives each slice as the
    straight-through surrogate (the loss whose Hessian the eigenvector and delta come from) and as the
    re-quantised loss (cfg.probing.slice_losses); a float student its one loss ('float')."""
    p_cfg = cfg.probing
    kinds = [k for k in SLICE_LOSS_KINDS if k in p_cfg.slice_losses] if is_quantized(student) else ["float"]
    theta_norm = float(torch.cat([p.detach().reshape(-1).double() for p in params]).norm())
    ks = np.linspace(-SLICE_K_MAX, SLICE_K_MAX, p_cfg.slice_points)
    sl = _Slicing(student, params, batch, cfg, seed, ks, kinds, theta_norm)
    rows: list[Row] = []
    for loss, (fn, target_name) in loss_functions(cfg).items():
        target = getattr(batch, target_name)
        with HessianOperator(student, fn, [(batch.inputs, target)], mode="eval") as op:
            gradient = op.gradient()
            directions = _slice_directions(op, sl, loss, top)
        for name, d in directions.items():
            rows += _direction_rows(sl, loss, fn, target, name, d, gradient)
    return rows


class SliceProbe(Probe):
    """1-D loss slices along the top Hessian eigenvector (and random directions) every `hessian_every_epochs`
    epochs.  It `needs` the Hessian probe: when that one runs too, the slice reuses its probe batch and
    eigenvectors of the same epoch (`TopEigenpairs`); else it computes the same eigenvectors itself (post hoc)."""

    name = "slice"
    tables = BUILTIN_PROBES["slice"].tables  # declared once, in the registry
    posthoc_tables = BUILTIN_PROBES["slice"].posthoc_tables
    needs = ("hessian",)

    def __init__(self, cfg: RunConfig, origin: str = "online") -> None:
        super().__init__(cfg, origin)
        self.hessian: HessianProbe | None = None

    def connect(self, provider: Probe) -> None:
        """Reuse the Hessian probe's batch and eigenvectors (`build_probes` hands it over)."""
        if not isinstance(provider, HessianProbe):
            raise TypeError(f"the slice probe reuses a HessianProbe, not {type(provider).__name__}")
        self.hessian = provider

    def on_epoch_end(self, ctx: ProbeContext, epoch: int, metrics: MetricsRow) -> None:
        """Measure at the probed epochs; write the epoch's rows."""
        if self.every_epoch(epoch):
            self.measure_checkpoint(ctx, epoch)
        self.flush(ctx.run, epoch)

    def measure_checkpoint(self, ctx: ProbeContext, epoch: int) -> None:
        """Slice the student's CE and KL losses (a non-finite Hessian skips the epoch, with a warning)."""
        shared = self.hessian.eigenpairs_at(epoch) if self.hessian is not None else None
        if shared is not None:  # same batch and eigenvectors the Hessian probe just computed
            batch, top = shared.batch, shared.vectors
        else:
            batch, top = ctx.probe_batch(epoch, self.cfg.probing.batch_size), None
            warn_small_batch(batch.size)

        try:
            with preserved_state(ctx.student, mode="eval"):  # the Hessian's student, whatever mode it trains in
                rows = slice_rows(ctx.student, ctx.params, batch, self.cfg, curvature_seed(self.cfg, epoch), top)
        except NonFiniteHessianError as e:
            skip_nonfinite_epoch("slice", epoch, e)
            return
        for r in rows:
            self.emit("slice", epoch=epoch, origin=self.origin, **r)
