"""The cosine probe (paper §3.1, Fig. 1, 5b, 7, 8): cos(grad CE, grad KL) per step, per epoch and per
parameter group, from the per-term gradients the trainer already computed for the step (no forward of its own
during training); post hoc, on each checkpoint's probe batch."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from zsq_probe.events import MetricsRow, ProbeContext, StepEvent
from zsq_probe.module_state import preserved_state
from zsq_probe.probe_registry import BUILTIN_PROBES
from zsq_probe.probes.base import Probe, Row
from zsq_probe.probes.gradients import column_mean, cosine_rows, gradient_products
from zsq_probe.quantization.losses import term_gradients

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig


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
    tables = BUILTIN_PROBES["cosine"].tables  # declared once, in the registry
    posthoc_tables = BUILTIN_PROBES["cosine"].posthoc_tables

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
                cosine=column_mean(rows, "cosine"),
                grad_norm_ce=column_mean(rows, "grad_norm_ce"),
                grad_norm_kl=column_mean(rows, "grad_norm_kl"),
                angle_deg=column_mean(rows, "angle_deg"),
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
