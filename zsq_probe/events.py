"""What the training loop publishes and what observers (probes) may see.

The trainer calls four hook points on each `Observer` (train start, epoch start, every step, epoch end)
and hands it a `ProbeContext`: the student, the teacher, the trained parameters, `probe_batch()` and the
run store — never the trainer itself.  A post-hoc run builds the same context from a checkpoint, so a
probe's measurement of a checkpoint is one code path online and post hoc.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypedDict

import torch

from zsq_probe.quantization.losses import student_terms
from zsq_probe.seeds import PROBE_BATCH_STREAM, epoch_seed

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig
    from zsq_probe.quantization.quantizer import QuantConv2d, QuantLinear
    from zsq_probe.rundir.store import RunDir

MetricsRow = dict[str, object]  # one row of the metrics table (column -> value): what `on_epoch_end` receives


class GIStep(TypedDict):
    """What gradient inundation did at one student step (zsq_probe.quantization.gi), per quantised layer."""

    kappa: dict[str, float]  # the kappa applied
    changed: dict[str, int]  # integer codes changed
    flags: dict[str, str]  # flagged layers only: cap | nonfinite | nograd


@dataclass
class StepEvent:
    """What observers see after every iteration (tensors are detached)."""

    epoch: int
    step: int  # iteration within the epoch, from 0
    global_step: int
    inputs: torch.Tensor  # the student's batch
    labels: torch.Tensor  # hard labels (class indices) or soft labels (B, C)
    teacher_logits: torch.Tensor
    student_logits: torch.Tensor | None
    losses: dict[str, float]  # the loss terms of this iteration (zsq_probe.training.loop.METRIC_TERMS)
    student_stepped: bool
    term_grads: dict[str, list[torch.Tensor]] | None = None  # {"kl": [...], "ce": [...]} per student param
    gi: GIStep | None = None  # when gradient inundation is on


@dataclass
class ProbeBatch:
    """A fixed-size batch drawn from a probe's own random stream (same batch online and post hoc)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor
    source: str  # generator | real | zeroq
    seed: int

    @property
    def size(self) -> int:
        """The number of samples."""
        return int(self.inputs.shape[0])


@dataclass
class ProbeContext:
    """The narrow view of a run a probe gets, online or post hoc."""

    cfg: RunConfig
    run: RunDir  # the run store
    student: torch.nn.Module
    teacher: torch.nn.Module
    param_names: list[str]
    params: list[torch.nn.Parameter]
    quant_layers: dict[str, QuantConv2d | QuantLinear]  # the student's quantised layers by name ({}: a float one)
    device: torch.device
    iterations_per_epoch: int
    draw_probe_batch: Callable[[int, int], ProbeBatch]  # (seed, size) -> batch from the run's data source
    origin: str = "online"  # online | posthoc
    load_checkpoint: Callable[[int], None] | None = None  # post hoc: load that epoch's student (and source)
    checkpoint_epochs: list[int] = field(default_factory=list)  # post hoc: the run's checkpoint epochs
    real_loader: Iterable[tuple[torch.Tensor, torch.Tensor]] | None = None  # validation images, when the run has them

    def probe_batch(self, epoch: int, size: int) -> ProbeBatch:
        """The epoch's probe batch, from the probe stream (seeded by run seed and epoch)."""
        return self.draw_probe_batch(epoch_seed(self.cfg.seed, epoch, PROBE_BATCH_STREAM), size)

    def loss_terms(
        self, inputs: torch.Tensor, labels: torch.Tensor, teacher_logits: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(student logits, KL, CE) of the current student, unweighted."""
        return student_terms(
            self.student, inputs, labels, teacher_logits, self.cfg.temperature, self.cfg.label_smoothing
        )


class Observer:
    """A plug-in that watches training.  Probes subclass this; the trainer never knows which exist."""

    name = "observer"

    def wants_term_gradients(self, epoch: int, step: int) -> bool:
        """Whether this step should compute the per-term gradients (`StepEvent.term_grads`) for this observer."""
        return False

    def on_train_start(self, ctx: ProbeContext) -> None:
        """Called once before the first epoch (of a fresh or a resumed run)."""

    def on_epoch_start(self, ctx: ProbeContext, epoch: int) -> None:
        """Called before the first iteration of `epoch`."""

    def on_step(self, ctx: ProbeContext, event: StepEvent) -> None:
        """Called after every iteration."""

    def on_epoch_end(self, ctx: ProbeContext, epoch: int, metrics: MetricsRow) -> None:
        """Called after the last iteration of `epoch` with the epoch's metrics row."""

    def state_dict(self) -> dict[str, object]:
        """What the observer needs to resume (saved in each checkpoint)."""
        return {}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore what `state_dict` returned."""
