"""The Hessian probe (paper §3.2): traces of the CE and KL Hessians separately (Fig. 2b, 9), their signed top
eigenvalues and SLQ eigenvalue density (Fig. 2d), every `hessian_every_epochs` epochs (the measurement:
`zsq_probe.probes.curvature.curvature`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from zsq_probe.events import MetricsRow, ProbeContext
from zsq_probe.hessian.operator import NonFiniteHessianError
from zsq_probe.module_state import preserved_state
from zsq_probe.probe_registry import BUILTIN_PROBES
from zsq_probe.probes.base import Probe
from zsq_probe.probes.curvature import TopEigenpairs, curvature, curvature_seed, skip_nonfinite_epoch, warn_small_batch

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig


class HessianProbe(Probe):
    """Traces, signed top eigenvalues and SLQ density of the CE and KL Hessians (`curvature`) every
    `hessian_every_epochs` epochs; its latest eigenvectors are kept for the slice probe (`eigenpairs_at`)."""

    name = "hessian"
    tables = BUILTIN_PROBES["hessian"].tables  # declared once, in the registry
    posthoc_tables = BUILTIN_PROBES["hessian"].posthoc_tables

    def __init__(self, cfg: RunConfig, origin: str = "online") -> None:
        super().__init__(cfg, origin)
        self.last: TopEigenpairs | None = None  # the latest measurement (None after a skipped epoch)

    def on_epoch_end(self, ctx: ProbeContext, epoch: int, metrics: MetricsRow) -> None:
        """Measure at the probed epochs; write the epoch's rows."""
        if self.every_epoch(epoch):
            self.measure_checkpoint(ctx, epoch)
        self.flush(ctx.run, epoch)

    def measure_checkpoint(self, ctx: ProbeContext, epoch: int) -> None:
        """Measure the student on the epoch's probe batch (a non-finite Hessian skips the epoch, with a warning)."""
        batch = ctx.probe_batch(epoch, self.cfg.probing.batch_size)
        warn_small_batch(batch.size)
        seed = curvature_seed(self.cfg, epoch)

        try:
            with preserved_state(ctx.student):
                rows, top = curvature(ctx.student, ctx.param_names, batch, self.cfg, seed)
        except NonFiniteHessianError as e:
            skip_nonfinite_epoch("hessian", epoch, e)
            self.last = None
            return
        for table, rs in rows.items():
            for r in rs:
                self.emit(table, epoch=epoch, origin=self.origin, **r)
        self.last = TopEigenpairs(epoch, batch, top)

    def eigenpairs_at(self, epoch: int) -> TopEigenpairs | None:
        """The latest measurement when it is of `epoch`; else None."""
        return self.last if self.last is not None and self.last.epoch == epoch else None
