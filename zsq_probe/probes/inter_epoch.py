"""The inter-epoch probe (paper §3.2, Fig. 3a): the cosine between consecutive epochs' mean KL gradients (how
far the KL direction turns from one epoch to the next), from the gradients the trainer already computed."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from zsq_probe.events import MetricsRow, ProbeContext, StepEvent
from zsq_probe.probe_registry import BUILTIN_PROBES
from zsq_probe.probes.base import Probe

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig


class InterEpochProbe(Probe):
    """Cosine between this epoch's mean grad KL and the previous epoch's.  The running sum lives on the
    training device during the epoch; the epoch means are kept on the CPU (float64)."""

    name = "inter_epoch"
    tables = BUILTIN_PROBES["inter_epoch"].tables  # declared once, in the registry

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
