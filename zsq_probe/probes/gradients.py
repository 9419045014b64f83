"""Gradient probes: cos(grad CE, grad KL) (paper §3.1, Fig. 1, 5b, 7, 8) and the inter-epoch cosine of
the epoch-mean grad KL (paper §3.2, Fig. 3a).  Both use the per-term gradients the trainer already
computed for the step; neither runs a forward of its own during training."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

import torch

from zsq_probe.events import MetricsRow, ProbeContext, StepEvent
from zsq_probe.module_state import preserved_state
from zsq_probe.probes.base import Probe, Row, grouped_indices
from zsq_probe.quantization.losses import term_gradients

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig


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


def checkpoint_cosine(ctx: ProbeContext, epoch: int) -> tuple[list[Row], int]:
    """cos(grad CE, grad KL) of the current student on the epoch's probe batch (the same batch a post-hoc
    probe of this checkpoint draws); modes and buffers are put back."""
    batch = ctx.probe_batch(epoch, ctx.cfg.probing.batch_size)
    with preserved_state(ctx.student), torch.enable_grad():
        _, kl, ce = ctx.loss_terms(batch.inputs, batch.labels, batch.teacher_logits)
        grads = term_gradients(kl, ce, ctx.params)
    return cosine_rows(gradient_products(grads["ce"], grads["kl"]), ctx.param_names, ctx.cfg.probing.scopes), batch.size


class CosineProbe(Probe):
    """cos(grad CE, grad KL) at every `probe_every_steps` step, its epoch mean, and at each checkpoint on the
    epoch's probe batch (also post hoc)."""

    name = "cosine"
    tables = ("cosine",)
    posthoc_tables = ("cosine",)

    def __init__(self, cfg: RunConfig, origin: str = "online") -> None:
        super().__init__(cfg, origin)
        self.step_rows: list[Row] = []

    def wants_term_gradients(self, epoch: int, step: int) -> bool:
        """Every `probe_every_steps` step."""
        return self.every_step(step)

    def on_epoch_start(self, ctx: ProbeContext, epoch: int) -> None:
        """Start the epoch's step rows afresh."""
        self.step_rows = []

    def on_step(self, ctx: ProbeContext, event: StepEvent) -> None:
        """The step's cosines from the gradients the trainer computed (no forward of its own)."""
        if event.term_grads is None:
            return
        products = gradient_products(event.term_grads["ce"], event.term_grads["kl"])
        for r in cosine_rows(products, ctx.param_names, self.cfg.probing.scopes):
            row = dict(
                epoch=event.epoch,
                step=event.step,
                global_step=event.global_step,
                statistic="step",
                origin=self.origin,
                batch_size=int(event.inputs.shape[0]),
                **r,
            )
            self.step_rows.append(row)
            self.emit("cosine", **row)

    def on_epoch_end(self, ctx: ProbeContext, epoch: int, metrics: MetricsRow) -> None:
        """The epoch means per group, the checkpoint's cosines (when the student stepped), and the epoch's part."""
        by_group: dict[tuple[object, object], list[Row]] = {}
        for r in self.step_rows:
            by_group.setdefault((r["scope"], r["group"]), []).append(r)
        for (scope, group), rows in by_group.items():
            self.emit(
                "cosine",
                epoch=epoch,
                step=-1,
                global_step=-1,
                statistic="epoch_mean",
                origin=self.origin,
                scope=scope,
                group=group,
                cosine=_mean(rows, "cosine"),
                grad_norm_ce=_mean(rows, "grad_norm_ce"),
                grad_norm_kl=_mean(rows, "grad_norm_kl"),
                angle_deg=_mean(rows, "angle_deg"),
                batch_size=rows[0]["batch_size"],
            )
        if metrics.get("student_stepped"):
            self.measure_checkpoint(ctx, epoch)
        self.flush(ctx.run, epoch)

    def measure_checkpoint(self, ctx: ProbeContext, epoch: int) -> None:
        """cos(grad CE, grad KL) of the student on the epoch's probe batch."""
        rows, size = checkpoint_cosine(ctx, epoch)
        for r in rows:
            self.emit(
                "cosine",
                epoch=epoch,
                step=-1,
                global_step=-1,
                statistic="checkpoint",
                origin=self.origin,
                batch_size=size,
                **r,
            )


def _mean(rows: list[Row], column: str) -> float:
    """The mean of a float column over rows (of `cosine_rows`)."""
    return sum(cast(float, r[column]) for r in rows) / len(rows)


class InterEpochProbe(Probe):
    """Cosine between this epoch's mean grad KL and the previous epoch's.  The running sum lives on the
    training device during the epoch; the epoch means are kept on the CPU (float64)."""

    name = "inter_epoch"
    tables = ("inter_epoch",)

    def __init__(self, cfg: RunConfig, origin: str = "online") -> None:
        super().__init__(cfg, origin)
        self.previous: torch.Tensor | None = None
        self.previous_epoch: int | None = None
        self.sum: torch.Tensor | None = None
        self.count = 0

    def wants_term_gradients(self, epoch: int, step: int) -> bool:
        """Every `probe_every_steps` step."""
        return self.every_step(step)

    def on_epoch_start(self, ctx: ProbeContext, epoch: int) -> None:
        """Start the epoch's running sum afresh."""
        self.sum, self.count = None, 0

    def on_step(self, ctx: ProbeContext, event: StepEvent) -> None:
        """Add the step's grad KL to the running sum."""
        if event.term_grads is None:
            return
        flat = torch.cat([g.reshape(-1) for g in event.term_grads["kl"]]).detach()
        self.sum = flat.clone() if self.sum is None else self.sum.add_(flat)
        self.count += 1

    def on_epoch_end(self, ctx: ProbeContext, epoch: int, metrics: MetricsRow) -> None:
        """The cosine of this epoch's mean grad KL with the previous epoch's; write the epoch's part."""
        if self.count and self.sum is not None:
            mean = (self.sum / self.count).double().cpu()
            norm = float(mean.norm())
            if self.previous is not None:
                prev_norm = float(self.previous.norm())
                denom = norm * prev_norm
                cos = float(mean @ self.previous) / denom if denom > 0 else float("nan")
                self.emit(
                    "inter_epoch",
                    epoch=epoch,
                    cosine=cos,
                    grad_norm=norm,
                    previous_grad_norm=prev_norm,
                    steps_averaged=self.count,
                )
            self.previous, self.previous_epoch = mean, epoch
        self.sum = None
        self.flush(ctx.run, epoch)

    def state_dict(self) -> dict[str, object]:
        """The previous epoch's mean grad KL (a resumed run continues the cosine chain)."""
        return {} if self.previous is None else {"previous": self.previous, "previous_epoch": self.previous_epoch}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what `state_dict` returned."""
        previous, previous_epoch = state.get("previous"), state.get("previous_epoch")
        self.previous = previous if isinstance(previous, torch.Tensor) else None
        self.previous_epoch = previous_epoch if isinstance(previous_epoch, int) else None
