"""The training loop: zero-shot quantisation (GDFQ / KL-only / AIT and the other generators) and the
real-data KD baseline, with four hook points for observers (probes).

One epoch = `iters_per_epoch` iterations.  Per iteration the batch source hands over a batch (a generator
takes its own step on CE + BNS first), then — after the warm-up epochs — the student takes a step on
kd_weight * KL * T^2 + ce_weight * CE (paper Eq. 5-6; docs/reference.md).  Epochs count from 1;
checkpoint epoch-0000 is the state before training.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TypedDict

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from zsq_probe.config import keeps_checkpoint
from zsq_probe.events import GIStep, MetricsRow, Observer, ProbeContext, StepEvent
from zsq_probe.quantization.gi import GradientInundation
from zsq_probe.quantization.losses import student_terms, term_gradients
from zsq_probe.quantization.quantizer import activation_ranges_frozen, set_activation_ranges_frozen
from zsq_probe.rundir.atomic import fault_point
from zsq_probe.rundir.store import epoch_key
from zsq_probe.teachers.accuracy import Predictions, predictions_on
from zsq_probe.training import checkpoint
from zsq_probe.training.errors import NonFiniteError
from zsq_probe.training.health import CollapseError, HealthCheck, unsettled_range_warning
from zsq_probe.training.schedule import gi_share, student_lr
from zsq_probe.training.sources import (
    Batch,
    DistilledSource,
    NonFinite,
    all_finite,
    check_iterations,
    first_nonfinite,
)

if TYPE_CHECKING:
    from typing import TypeAlias

    from zsq_probe.rundir.store import CheckpointState, PathArg, RunDir
    from zsq_probe.training.parts import RunParts

    # what signal.signal returns: a handler, SIG_DFL / SIG_IGN, or None (a handler not set from Python)
    _SignalHandler: TypeAlias = Callable[[int, FrameType | None], Any] | int | None
    # Trainer.student_step: (logits, loss terms, per-term gradients, GI step, non-finite or None)
    StudentStep: TypeAlias = tuple[
        torch.Tensor, dict[str, torch.Tensor], dict[str, list[torch.Tensor]] | None, GIStep | None, NonFinite | None
    ]

log = logging.getLogger(__name__)

METRIC_TERMS = ("kl", "kl_scaled", "ce", "student", "generator_ce", "bns", "generator")

__all__ = ["METRIC_TERMS", "NonFiniteError", "STOP_SIGNALS", "Trainer", "TrainingInterrupted", "stop_on_signals"]


SKIP_WARN_SHARE = 0.1  # on_nonfinite=skip: a warning when at least this share of an epoch's steps was skipped


def params_finite(student: nn.Module) -> torch.Tensor:
    """A device flag (no host sync): whether every parameter and floating buffer (activation ranges) is finite.

    Args:
        student: The model to check.

    Returns:
        A 0-d bool tensor (on the model's device; a CPU True for a model without any).
    """
    params = list(student.parameters()) + [b for b in student.buffers() if b.is_floating_point()]
    if not params:
        return torch.tensor(True)
    return torch.stack([torch.isfinite(p.detach()).all() for p in params]).all()


# Signals that stop training gracefully: the epoch under way finishes, its checkpoint is written, then
# TrainingInterrupted is raised (a second signal stops at once, losing only that epoch).  Cluster jobs (SLURM
# preemption and time-outs, Ray node loss) send these; a resume continues bit for bit from the checkpoint.
STOP_SIGNALS: tuple[str, ...] = ("SIGTERM", "SIGUSR1")


class StopState(TypedDict):
    """What `stop_on_signals` shares with the loop: the stop signal received (None: none yet), and the last
    epoch whose checkpoint is written and the run folder (for TrainingInterrupted's message)."""

    signal: str | None
    epoch: int
    path: Path | None


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal (SIGTERM/SIGUSR1) after writing the checkpoint of `epoch` (or, on a
    second signal, at once: the epoch under way is lost).  Resume the run to continue.  A KeyboardInterrupt,
    so the command line reports it like Ctrl-C and callers that catch Exception do not swallow it.

    Args:
        signame: The signal's name ("SIGTERM").
        epoch: The last epoch whose checkpoint is written.
        path: The run folder (named in the message), if known.
    """

    def __init__(self, signame: str, epoch: int, path: PathArg | None = None) -> None:
        self.signame, self.epoch, self.path = signame, epoch, path
        where = f" ({path})" if path else ""
        super().__init__(f"stopped by {signame} after the checkpoint of epoch {epoch}{where}; resume to continue")


@contextlib.contextmanager
def stop_on_signals(names: Iterable[str] | None = None) -> Iterator[StopState]:
    """While inside: the signals `names` set `state["signal"]` instead of killing the process; a second one
    raises TrainingInterrupted at once.  Installed only in the main thread (signal handlers can only be set
    there; elsewhere nothing changes); the previous handlers come back after.

    Args:
        names: Signal names (default STOP_SIGNALS, read when entered); those this platform lacks are skipped.

    Yields:
        The shared state; the caller keeps its "epoch" and "path" current.

    Raises:
        TrainingInterrupted: From the handler, on the second signal.
    """
    state: StopState = {"signal": None, "epoch": 0, "path": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    found = [getattr(signal, n, None) for n in (names if names is not None else STOP_SIGNALS)]
    wanted: list[signal.Signals] = [s for s in dict.fromkeys(found) if s is not None]

    def handler(signum: int, frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if state["signal"] is not None:  # the second signal: stop now (the epoch under way is lost)
            raise TrainingInterrupted(name, state["epoch"], state["path"])
        state["signal"] = name
        log.warning(f"{name} received: stopping after this epoch's checkpoint (send it again to stop at once)")

    previous: dict[signal.Signals, _SignalHandler] = {}
    try:
        for s in wanted:
            previous[s] = signal.signal(s, handler)
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


class EpochSchedule(TypedDict):
    """What `Trainer.start_epoch` set for an epoch (the metrics row records it)."""

    lr: float  # the student's learning rate
    gen_lr: float  # the batch source's own (NaN: none)
    gi_p: float  # GI's p (NaN: GI off)
    act_ranges_frozen: bool


class Trainer:
    """Trains a built run (`RunParts`) into its run folder, calling each observer's hooks.

    Args:
        parts: The run, built for training (`build_run(cfg)`: with the student's optimiser).
        run: The run folder it writes.
        observers: The probes and other observers, called in order after the health check (HealthCheck).
        progress: A progress bar per epoch on stderr (off by default).

    Raises:
        UserError: `iters_per_epoch=0` with a batch source that has no epoch length of its own.
    """

    def __init__(
        self, parts: RunParts, run: RunDir, observers: Iterable[Observer] = (), progress: bool = False
    ) -> None:
        self.parts, self.cfg, self.run = parts, parts.cfg, run
        self.health = HealthCheck(self.cfg)  # on in every run: the first observer, so the others see its columns
        self.observers: list[Observer] = [self.health, *observers]
        self.progress = progress
        self.epoch, self.global_step = 0, 0  # epochs completed, iterations done
        self.skipped_total = 0  # on_nonfinite=skip: updates skipped by this trainer (resumes count afresh)
        self.iterations = check_iterations(self.cfg, parts.source)
        self.context = ProbeContext(
            cfg=self.cfg,
            run=run,
            student=parts.student,
            teacher=parts.teacher,
            param_names=parts.param_names,
            params=parts.params,
            quant_layers=parts.quant_layers,
            device=parts.device,
            iterations_per_epoch=self.iterations,
            draw_probe_batch=parts.source.draw,
            real_loader=parts.val_loader,
        )

    @property
    def optimizer(self) -> torch.optim.Optimizer | GradientInundation:
        """The student's optimiser (RuntimeError for a run built without one, for probes only)."""
        return checkpoint.training_optimizer(self.parts)

    # ------------------------------------------------------------------ the run
    def fit(self) -> dict[str, object]:
        """Train the remaining epochs.  SIGTERM/SIGUSR1 (STOP_SIGNALS) stop it after the epoch under way and its
        checkpoint, never mid-epoch (TrainingInterrupted), so a resume continues bit for bit.  A signal during the
        last epoch stops it the same way, before summary.json (the resume writes it); one that arrives later,
        while the summary is written, still ends in TrainingInterrupted: a stop signal always means a stop.

        Returns:
            The run summary (RUN/summary.json).

        Raises:
            TrainingInterrupted: A stop signal arrived (after the epoch's checkpoint, or at once on a second one).
            NonFiniteError: A loss, gradient or weight became inf/NaN (unless on_nonfinite=skip skips the step).
            CollapseError: A health check tripped under on_collapse=stop.
        """
        with stop_on_signals() as stop:
            stop["epoch"], stop["path"] = self.epoch, self.run.path
            summary = self.train_epochs(stop)
            if stop["signal"]:
                raise TrainingInterrupted(stop["signal"], self.epoch, self.run.path)
            return summary

    def train_epochs(self, stop: StopState) -> dict[str, object]:
        """`fit` under its signal handlers (`stop`: what `stop_on_signals` yields): the remaining epochs, each
        with its checkpoint when the cadence, the last epoch or a stop signal asks for one, then the summary."""
        warning = unsettled_range_warning(self.cfg, self.iterations)
        if warning and self.epoch < self.cfg.quant.act_range_epochs:  # before the ranges freeze
            log.warning(warning)
        for o in self.observers:
            o.on_train_start(self.context)
        if self.epoch == 0 and not self.run.checkpoints():
            self.save_checkpoint(0)
        if self.cfg.dataset.source == "zeroq" and self.cfg.epochs == 0:
            return self.calibrate_only()
        for epoch in range(self.epoch + 1, self.cfg.epochs + 1):
            row = self.run_epoch(epoch)
            for o in self.observers:
                o.on_epoch_end(self.context, epoch, row)
            self.run.write_part("metrics", [row], epoch_key(epoch))
            self.epoch = epoch
            log.info(epoch_line(row))
            if epoch % self.cfg.checkpoint_every == 0 or epoch == self.cfg.epochs or stop["signal"]:
                self.save_checkpoint(epoch)
            stop["epoch"] = epoch
            if self.health.findings and self.cfg.on_collapse == "stop":
                self.stop_on_collapse(epoch)
            if stop["signal"]:  # the last epoch too: the summary waits for the resume
                raise TrainingInterrupted(stop["signal"], epoch, self.run.path)
        return self.write_summary()

    def stop_on_collapse(self, epoch: int) -> None:
        """on_collapse=stop: the epoch's checkpoint (if the cadence skipped it) and summary.json, then stop.

        Args:
            epoch: The epoch just trained.

        Raises:
            CollapseError: Always, naming the tripped checks.
        """
        if epoch not in self.run.checkpoints():
            self.save_checkpoint(epoch)
        self.write_summary()
        checks = ", ".join(f.check for f in self.health.findings)
        raise CollapseError(
            f"stopped after epoch {epoch}: health check(s) {checks} tripped (on_collapse=stop); checkpoint and "
            f"summary.json written; --resume continues (add --set on_collapse=warn --force to train on regardless)"
        )

    # ------------------------------------------------------------------ one epoch
    def start_epoch(self, epoch: int) -> EpochSchedule:
        """Set the epoch's schedules and modes.

        Args:
            epoch: The epoch about to run, counted from 1.

        Returns:
            The values the metrics row records.
        """
        cfg, parts, optimizer = self.cfg, self.parts, self.optimizer
        lr, p = student_lr(cfg, epoch), gi_share(cfg, epoch)
        for g in optimizer.param_groups:
            g["lr"] = lr
        if cfg.inundation.enabled:
            gi = inundated(optimizer)
            gi.p = p
            gi.warmup = epoch == cfg.warmup_epochs + 1  # κ capped in the first student epoch
        frozen = epoch > cfg.quant.act_range_epochs
        if parts.quant_layers:
            set_activation_ranges_frozen(parts.student, frozen)
        parts.student.train(parts.student_train_mode)
        parts.source.start_epoch(epoch)
        return {
            "lr": lr,
            "gen_lr": parts.source.lr(epoch),
            "gi_p": p if cfg.inundation.enabled else float("nan"),
            "act_ranges_frozen": frozen,
        }

    def run_epoch(self, epoch: int) -> MetricsRow:
        """Train one epoch (`iters_per_epoch` steps; the student steps after the warm-up epochs).

        Args:
            epoch: The epoch, counted from 1.

        Returns:
            Its metrics row: the epoch means of the loss terms, the schedule's values and validation.

        Raises:
            NonFiniteError: A loss, gradient or weight became inf/NaN (unless on_nonfinite=skip skips the step).
        """
        t0 = time.perf_counter()
        schedule = self.start_epoch(epoch)
        stepping = epoch > self.cfg.warmup_epochs  # warm-up epochs train the generator only (GDFQ)
        for o in self.observers:
            o.on_epoch_start(self.context, epoch)
        totals = EpochTotals()
        bar = EpochProgress(self.iterations, f"epoch {epoch}/{self.cfg.epochs} {self.cfg.method}", self.progress)
        for step in range(self.iterations):
            values, skipped = self.train_step(epoch, step, stepping)
            totals.add(values, skipped)
            fault_point(f"step:{epoch}:{step}")  # test-only fault injection (zsq_probe.rundir.store)
            bar.step(step, values)
        bar.close()
        row = self.epoch_row(epoch, stepping, schedule, totals)
        if totals.skipped_steps:
            self.skipped_total += totals.skipped_steps
            log_skipped_steps(epoch, totals.skipped_steps, self.iterations)
        validate_now = self.parts.val_loader is not None and (
            epoch % self.cfg.val_every == 0 or epoch == self.cfg.epochs
        )
        val = self.measure_val() if validate_now else Predictions(*[float("nan")] * 4)
        row.update(
            val_top1=val.top1,
            val_ce=val.ce,
            val_top_class_share=val.top_class_share,
            val_entropy_ratio=val.entropy_ratio,
        )
        row["wall_time_s"] = time.perf_counter() - t0
        return row

    def train_step(self, epoch: int, step: int, stepping: bool) -> tuple[dict[str, float], bool]:
        """One iteration: a batch, the student's step (or, in the warm-up, its forward pass), one host sync of
        the loss terms and the observers' `on_step`.

        Args:
            epoch: The epoch, counted from 1.
            step: The iteration within the epoch, from 0.
            stepping: Whether the student steps (False in the warm-up epochs).

        Returns:
            (loss terms as floats, whether the update was skipped under on_nonfinite=skip).

        Raises:
            NonFiniteError: A loss, gradient or weight became inf/NaN (unless on_nonfinite=skip skips the step).
        """
        batch = self.parts.source.next_batch()
        skipped = batch.nonfinite is not None and self.on_nonfinite(epoch, step, batch.nonfinite)
        want_terms = stepping and any(o.wants_term_gradients(epoch, step) for o in self.observers)
        gi: GIStep | None = None
        term_grads: dict[str, list[torch.Tensor]] | None = None
        if stepping:
            s_logits, terms, term_grads, gi, nonfinite = self.student_step(batch, want_terms)
            skipped = (nonfinite is not None and self.on_nonfinite(epoch, step, nonfinite)) or skipped
        else:  # the student only runs forward (its activation ranges follow the EMA)
            s_logits, terms = self.student_forward(batch)
        # weights and activation ranges: a device flag that rides on the loss terms' one host sync
        values, params_ok = synced_values({**batch.terms, **terms}, params_finite(self.parts.student))
        if not params_ok:
            self.on_poisoned_parameters(epoch, step)
        self.global_step += 1
        if self.observers:
            event = StepEvent(
                epoch,
                step,
                self.global_step,
                batch.inputs,
                batch.labels,
                batch.teacher_logits,
                s_logits,
                values,
                stepping and not skipped,
                None if skipped else term_grads,
                gi,
            )
            for o in self.observers:
                o.on_step(self.context, event)
        return values, skipped

    def epoch_row(self, epoch: int, stepping: bool, schedule: EpochSchedule, totals: EpochTotals) -> MetricsRow:
        """The epoch's metrics row before validation: what ran, the loss means and the schedule's values.

        Args:
            epoch: The epoch, counted from 1.
            stepping: Whether the student stepped.
            schedule: What `start_epoch` set.
            totals: The epoch's loss sums and skipped steps.

        Returns:
            The row.
        """
        row: MetricsRow = {
            "run": self.run.name,
            "method": self.cfg.method,
            "preset": self.cfg.preset,
            "epoch": epoch,
            "iterations": self.iterations,
            "student_stepped": stepping,
            "act_ranges_frozen": schedule["act_ranges_frozen"],
        }
        row.update({f"loss_{k}": v for k, v in totals.means().items()})
        row.update(
            lr=schedule["lr"], gen_lr=schedule["gen_lr"], gi_p=schedule["gi_p"], skipped_steps=totals.skipped_steps
        )
        return row

    # ------------------------------------------------------------------ one student step
    def loss_terms(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The student's logits, KL to the teacher and CE to the labels on `batch` (zsq_probe.quantization.losses).

        Args:
            batch: The training batch.

        Returns:
            (logits, KL, CE), unweighted.
        """
        return student_terms(
            self.parts.student,
            batch.inputs,
            batch.labels,
            batch.teacher_logits,
            self.cfg.temperature,
            self.cfg.label_smoothing,
        )

    def student_forward(self, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The warm-up's forward pass without a step.

        Args:
            batch: The training batch.

        Returns:
            (logits, loss terms).
        """
        with torch.no_grad():
            s_logits, kl, ce = self.loss_terms(batch)
        return s_logits, {"kl": kl, "kl_scaled": kl * self.cfg.temperature**2, "ce": ce}

    def student_step(self, batch: Batch, want_terms: bool) -> StudentStep:
        """One optimiser step (none when the loss or a gradient is inf/NaN).

        Args:
            batch: The training batch.
            want_terms: Compute the per-term gradients (an observer wants them this step).

        Returns:
            (logits, loss terms, per-term grads or None, GI step or None, what was non-finite or None).
        """
        cfg, opt, params = self.cfg, self.optimizer, self.parts.params
        s_logits, kl, ce = self.loss_terms(batch)
        kl_scaled = kl * cfg.temperature**2
        loss = cfg.kd_weight * kl_scaled + cfg.ce_weight * ce
        terms = {"kl": kl.detach(), "kl_scaled": kl_scaled.detach(), "ce": ce.detach(), "student": loss.detach()}
        opt.zero_grad(set_to_none=True)
        term_grads = None
        if want_terms:
            # per-term gradients from one forward: the cosine probes need both, the step needs their sum
            term_grads = term_gradients(kl, ce, params)
            w_kl, w_ce = cfg.kd_weight * cfg.temperature**2, cfg.ce_weight
            for p, gk, gc in zip(params, term_grads["kl"], term_grads["ce"]):
                p.grad = w_kl * gk + w_ce * gc
        else:
            torch.autograd.backward(loss)  # Tensor.backward, which torch leaves unannotated
        if not all_finite(loss, params):  # one host sync for the loss and every gradient
            opt.zero_grad(set_to_none=True)
            weighted = {n: t for n, t, w in (("KL term", kl, cfg.kd_weight), ("CE term", ce, cfg.ce_weight)) if w}
            what = first_nonfinite(loss, weighted, "student loss") or "gradient of the student loss"
            return s_logits.detach(), terms, None, None, NonFinite(what, loss, {"kl": kl, "ce": ce})
        opt.step()
        gi: GIStep | None = None
        if cfg.inundation.enabled:
            inundation = inundated(opt)
            gi = {
                "kappa": dict(inundation.last_kappa),
                "changed": dict(inundation.last_changed_codes),
                "flags": dict(inundation.last_flags),
            }
        return s_logits.detach(), terms, term_grads, gi, None

    def on_nonfinite(self, epoch: int, step: int, bad: NonFinite) -> bool:
        """on_nonfinite=skip: True (the update was skipped; counted in skipped_steps).  Else stop the run.

        Args:
            epoch: The epoch, counted from 1.
            step: The iteration within the epoch.
            bad: What was non-finite.

        Returns:
            True (on_nonfinite=skip).

        Raises:
            NonFiniteError: on_nonfinite=stop (the default).
        """
        if self.cfg.on_nonfinite == "skip":
            return True
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in bad.terms.items())
        kept = self.kept_checkpoint()
        raise NonFiniteError(
            f"non-finite {bad.what} at epoch {epoch}, step {step} (global step "
            f"{self.global_step + 1}; loss={float(bad.loss.detach()):.4g}, {values}); stopped, "
            f"{kept}; to skip such steps resume with --set on_nonfinite=skip --force"
        )

    def kept_checkpoint(self) -> str:
        """Which checkpoint a stopped run keeps (for the error message)."""
        cps = self.run.checkpoints()
        # checkpoints are only written with finite parameters (save_checkpoint), so the last one is good
        return (
            f"the last checkpoint {cps[max(cps)]} (finite parameters) is kept" if cps else "no checkpoint was written"
        )

    def on_poisoned_parameters(self, epoch: int, step: int) -> None:
        """A step made a weight or an activation range inf/NaN: it cannot be skipped any more, so the run stops
        (in skip mode too) before anything of this epoch is written.

        Args:
            epoch: The epoch, counted from 1.
            step: The iteration within the epoch.

        Raises:
            NonFiniteError: Always.
        """
        raise NonFiniteError(
            f"the student's weights or activation ranges became non-finite at epoch {epoch}, "
            f"step {step} (global step {self.global_step + 1}; lr={self.cfg.optim.lr:g}); stopped, "
            f"{self.kept_checkpoint()}; lower the learning rate (or weight_decay/momentum) and "
            f"resume with --force"
        )

    # ------------------------------------------------------------------ evaluation and the end of a run
    def measure_val(self) -> Predictions:
        """The student's top-1, CE and prediction spread on the validation loader, its activation ranges held.

        Raises:
            TypeError: The run has no validation loader.
        """
        parts, loader = self.parts, self.parts.val_loader
        if loader is None:
            raise TypeError("measure_val needs a run with validation data")
        if parts.quant_layers:
            with activation_ranges_frozen(parts.student):  # test data must not move the ranges
                return predictions_on(parts.student, loader, parts.device, self.cfg.val_max_batches)
        return predictions_on(parts.student, loader, parts.device, self.cfg.val_max_batches)

    def calibrate_only(self) -> dict[str, object]:
        """ZeroQ's own baseline: activation ranges calibrated on the distilled data, no fine-tuning.

        Returns:
            The run summary (RUN/summary.json).

        Raises:
            TypeError: The run's batch source is not ZeroQ's distilled set.
        """
        parts, source = self.parts, self.parts.source
        if not isinstance(source, DistilledSource):
            raise TypeError(f"calibrate_only needs ZeroQ's distilled data (source=zeroq), not {source.name}")
        if parts.quant_layers:  # zeroq_calibration: ZeroQ's running min/max (default) or the training EMA
            source.calibrate(parts.student)
        nan = float("nan")
        val = self.measure_val() if parts.val_loader is not None else Predictions(nan, nan, nan, nan)
        row: MetricsRow = {
            "run": self.run.name,
            "method": self.cfg.method,
            "preset": self.cfg.preset,
            "epoch": 0,
            "iterations": 0,
            "student_stepped": False,
            "act_ranges_frozen": True,
            **{f"loss_{k}": nan for k in METRIC_TERMS},
            "lr": nan,
            "gen_lr": nan,
            "gi_p": nan,
            "skipped_steps": 0,
            "val_top1": val.top1,
            "val_ce": val.ce,
            "val_top_class_share": val.top_class_share,
            "val_entropy_ratio": val.entropy_ratio,
            "wall_time_s": 0.0,
        }
        self.health.on_epoch_end(self.context, 0, row)
        self.run.write_part("zeroq_distillation", source.history, epoch_key(0))
        self.run.write_part("metrics", [row], epoch_key(0))
        self.save_checkpoint(0)
        log.info(epoch_line(row))
        return self.write_summary()

    def write_summary(self) -> dict[str, object]:
        """Write RUN/summary.json (zsq_probe.training.checkpoint.write_summary) and return it."""
        return checkpoint.write_summary(self.run, self.parts, self.epoch)

    def save_checkpoint(self, epoch: int) -> None:
        """Write the checkpoint of `epoch`.

        Args:
            epoch: The epoch it is written for (0: before training).

        Raises:
            NonFiniteError: A weight is inf/NaN (nothing is written).
        """
        state = checkpoint.training_state(self.parts, self.epoch, self.global_step, self.observers)
        checkpoint.check_finite_state(state, epoch)
        self.run.save_checkpoint(epoch, state, keep=partial(keeps_checkpoint, self.cfg))

    def load_state_dict(self, state: CheckpointState) -> None:
        """Continue from a checkpoint's state: models, optimiser, RNG, observers, epoch and step counters.

        Args:
            state: The checkpoint's state.

        Raises:
            UserError: The checkpoint does not fit this run's models.
        """
        self.epoch, self.global_step = checkpoint.restore_training_state(self.parts, state, self.observers)


def inundated(optimizer: torch.optim.Optimizer | GradientInundation) -> GradientInundation:
    """The student's optimiser of a run with cfg.inundation.enabled: GI-wrapped (`build_optimizer`).

    Args:
        optimizer: The run's optimiser.

    Returns:
        `optimizer`.

    Raises:
        TypeError: It is not wrapped in gradient inundation.
    """
    if not isinstance(optimizer, GradientInundation):
        raise TypeError(f"inundation.enabled needs a GradientInundation optimiser, not {type(optimizer).__name__}")
    return optimizer


def synced_values(terms: dict[str, torch.Tensor], flag: torch.Tensor) -> tuple[dict[str, float], bool]:
    """The loss terms as floats and a device flag as a bool, in one host sync (one stacked tensor to the host);
    the sync only reads values, it does not touch the training math.

    Args:
        terms: Loss terms (0-d tensors).
        flag: A 0-d bool tensor.

    Returns:
        (the terms as floats, the flag).
    """
    flat = [v.detach().float().reshape(()) for v in terms.values()]
    flat.append(flag.float().reshape(()).to(flat[0].device) if flat else flag.float())
    synced = torch.stack(flat).tolist()
    ok = synced.pop() == 1.0
    return dict(zip(terms, synced)), ok


@dataclass
class EpochTotals:
    """Running sums of an epoch's loss terms; a skipped step's NaN/inf does not enter the means."""

    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRIC_TERMS, 0.0))
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(METRIC_TERMS, 0))
    skipped_steps: int = 0

    def add(self, values: dict[str, float], skipped: bool) -> None:
        """Count one step's loss terms (the finite ones) and whether its update was skipped.

        Args:
            values: The step's loss terms (keys among METRIC_TERMS).
            skipped: Whether its update was skipped.
        """
        self.skipped_steps += skipped
        for k, v in values.items():
            if math.isfinite(v):
                self.sums[k] += v
                self.counts[k] += 1

    def means(self) -> dict[str, float]:
        """The epoch mean of each of METRIC_TERMS (NaN for a term no step had)."""
        return {k: self.sums[k] / self.counts[k] if self.counts[k] else float("nan") for k in METRIC_TERMS}


def log_skipped_steps(epoch: int, skipped: int, iterations: int) -> None:
    """on_nonfinite=skip: note an epoch's skipped updates; a warning from SKIP_WARN_SHARE of its steps on.

    Args:
        epoch: The epoch.
        skipped: Its skipped updates.
        iterations: Its iterations.
    """
    share = skipped / max(iterations, 1)
    many = share >= SKIP_WARN_SHARE
    (log.warning if many else log.info)(
        f"epoch {epoch}: skipped {skipped} of {iterations} steps ({100 * share:.0f}%) with a "
        f"non-finite loss, gradient or batch (on_nonfinite=skip)"
        + ("; the student barely trained — lower lr / gen_lr or check the teacher" if many else "")
    )


class EpochProgress:
    """An epoch's progress bar (nothing when disabled): one tick per step, the losses every 10 steps.

    Args:
        total: The epoch's steps.
        desc: The bar's label.
        enabled: Whether to show it.
    """

    def __init__(self, total: int, desc: str, enabled: bool) -> None:
        self.total = total
        self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True) if enabled else None

    def step(self, step: int, values: dict[str, float]) -> None:
        """Tick for `step`, showing its losses on every 10th step and the last.

        Args:
            step: The iteration within the epoch, from 0.
            values: Its loss terms.
        """
        if self.bar is None:
            return
        self.bar.update(1)
        if step % 10 == 0 or step == self.total - 1:
            self.bar.set_postfix({k: f"{values[k]:.3g}" for k in ("kl_scaled", "ce") if k in values})

    def close(self) -> None:
        """Close the bar (it leaves no line behind)."""
        if self.bar is not None:
            self.bar.close()


def epoch_line(row: MetricsRow) -> str:
    """The log line of an epoch's metrics row: losses, validation and wall time.

    Args:
        row: The metrics row (method, epoch, loss means, validation, wall time).

    Returns:
        The line.
    """
    val = row.get("val_top1")
    val_s = (
        f"val top-1 {100 * val:6.2f}%  val CE {row['val_ce']:.4f}"
        if isinstance(val, (int, float)) and val == val
        else "no validation"
    )
    return (
        f"[{row['method']}] epoch {row['epoch']:>4}  KL*T^2 {row['loss_kl_scaled']:.4g}  CE {row['loss_ce']:.4g}  "
        f"{val_s}  ({row['wall_time_s']:.1f}s)"
    )
