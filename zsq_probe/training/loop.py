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
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from tqdm.auto import tqdm

from zsq_probe.config import keeps_checkpoint
from zsq_probe.events import ProbeContext, StepEvent
from zsq_probe.quantization.losses import student_terms, term_gradients
from zsq_probe.quantization.quantizer import activation_ranges_frozen, set_activation_ranges_frozen
from zsq_probe.rundir.atomic import fault_point
from zsq_probe.rundir.store import epoch_key
from zsq_probe.teachers.accuracy import Predictions, predictions_on
from zsq_probe.training import checkpoint
from zsq_probe.training.errors import NonFiniteError
from zsq_probe.training.health import CollapseError, HealthCheck, unsettled_range_warning
from zsq_probe.training.schedule import gi_share, student_lr
from zsq_probe.training.sources import NonFinite, all_finite, check_iterations, first_nonfinite

log = logging.getLogger(__name__)

METRIC_TERMS = ("kl", "kl_scaled", "ce", "student", "generator_ce", "bns", "generator")

__all__ = ["METRIC_TERMS", "NonFiniteError", "STOP_SIGNALS", "Trainer", "TrainingInterrupted", "stop_on_signals"]


SKIP_WARN_SHARE = 0.1  # on_nonfinite=skip: a warning when at least this share of an epoch's steps was skipped


def params_finite(student) -> torch.Tensor:
    """A device flag (no host sync): whether every parameter and floating buffer (activation ranges) is finite."""
    params = list(student.parameters()) + [b for b in student.buffers() if b.is_floating_point()]
    if not params:
        return torch.tensor(True)
    return torch.stack([torch.isfinite(p.detach()).all() for p in params]).all()


# Signals that stop training gracefully: the epoch under way finishes, its checkpoint is written, then
# TrainingInterrupted is raised (a second signal stops at once, losing only that epoch).  Cluster jobs (SLURM
# preemption and time-outs, Ray node loss) send these; a resume continues bit for bit from the checkpoint.
STOP_SIGNALS: tuple[str, ...] = ("SIGTERM", "SIGUSR1")


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal (SIGTERM/SIGUSR1) after writing the checkpoint of `epoch` (or, on a
    second signal, at once: the epoch under way is lost).  Resume the run to continue.  A KeyboardInterrupt,
    so the command line reports it like Ctrl-C and callers that catch Exception do not swallow it."""

    def __init__(self, signame: str, epoch: int, path=None):
        self.signame, self.epoch, self.path = signame, epoch, path
        where = f" ({path})" if path else ""
        super().__init__(f"stopped by {signame} after the checkpoint of epoch {epoch}{where}; resume to continue")


@contextlib.contextmanager
def stop_on_signals(names=None):
    """While inside: the signals `names` (default STOP_SIGNALS) set `state["signal"]` instead of killing the
    process; a second one raises TrainingInterrupted at once.  Installed only in the main thread (signal
    handlers can only be set there; elsewhere nothing changes); the previous handlers come back after."""
    state: dict[str, Any] = {"signal": None, "epoch": 0, "path": None}
    if threading.current_thread() is not threading.main_thread():
        yield state
        return
    found = [getattr(signal, n, None) for n in (names if names is not None else STOP_SIGNALS)]
    wanted: list[signal.Signals] = [s for s in dict.fromkeys(found) if s is not None]

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if state["signal"] is not None:  # the second signal: stop now (the epoch under way is lost)
            raise TrainingInterrupted(name, state["epoch"], state["path"])
        state["signal"] = name
        log.warning(f"{name} received: stopping after this epoch's checkpoint (send it again to stop at once)")

    previous = {}
    try:
        for s in wanted:
            previous[s] = signal.signal(s, handler)
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


class Trainer:
    """Trains a built run (`RunParts`) into its run folder, calling each observer's hooks; `progress`: a
    progress bar per epoch on stderr (off by default)."""

    def __init__(self, parts, run, observers=(), progress: bool = False):
        self.parts, self.cfg, self.run = parts, parts.cfg, run
        self.health = HealthCheck(self.cfg)  # on in every run: the first observer, so the others see its columns
        self.observers = [self.health, *observers]
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

    # ------------------------------------------------------------------ the run
    def fit(self) -> dict:
        """Train the remaining epochs.  SIGTERM/SIGUSR1 (STOP_SIGNALS) stop it after the epoch under way and its
        checkpoint, never mid-epoch (TrainingInterrupted), so a resume continues bit for bit.  A signal during the
        last epoch stops it the same way, before summary.json (the resume writes it); one that arrives later,
        while the summary is written, still ends in TrainingInterrupted: a stop signal always means a stop."""
        with stop_on_signals() as stop:
            stop["epoch"], stop["path"] = self.epoch, self.run.path
            summary = self.train_epochs(stop)
            if stop["signal"]:
                raise TrainingInterrupted(stop["signal"], self.epoch, self.run.path)
            return summary

    def train_epochs(self, stop: dict[str, Any]) -> dict:
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
        """on_collapse=stop: the epoch's checkpoint (if the cadence skipped it) and summary.json, then stop."""
        if epoch not in self.run.checkpoints():
            self.save_checkpoint(epoch)
        self.write_summary()
        checks = ", ".join(f.check for f in self.health.findings)
        raise CollapseError(
            f"stopped after epoch {epoch}: health check(s) {checks} tripped (on_collapse=stop); checkpoint and "
            f"summary.json written; --resume continues (add --set on_collapse=warn --force to train on regardless)"
        )

    # ------------------------------------------------------------------ one epoch
    def start_epoch(self, epoch: int) -> dict:
        """Set the epoch's schedules and modes; return the values the metrics row records."""
        cfg, parts = self.cfg, self.parts
        lr, p = student_lr(cfg, epoch), gi_share(cfg, epoch)
        for g in parts.optimizer.param_groups:
            g["lr"] = lr
        if cfg.inundation.enabled:
            parts.optimizer.p = p
            parts.optimizer.warmup = epoch == cfg.warmup_epochs + 1  # κ capped in the first student epoch
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

    def run_epoch(self, epoch: int) -> dict:
        """Train one epoch (`iters_per_epoch` steps; the student steps after the warm-up epochs) and return its
        metrics row: the epoch means of the loss terms, the schedule's values and validation."""
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
        the loss terms and the observers' `on_step`.  Returns (loss terms as floats, whether the update was
        skipped under on_nonfinite=skip)."""
        batch = self.parts.source.next_batch()
        skipped = batch.nonfinite is not None and self.on_nonfinite(epoch, step, batch.nonfinite)
        want_terms = stepping and any(o.wants_term_gradients(epoch, step) for o in self.observers)
        gi = term_grads = None
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

    def epoch_row(self, epoch: int, stepping: bool, schedule: dict, totals: EpochTotals) -> dict:
        """The epoch's metrics row before validation: what ran, the loss means and the schedule's values."""
        row = {
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
    def loss_terms(self, batch):
        """The student's logits, KL to the teacher and CE to the labels on `batch` (zsq_probe.quantization.losses)."""
        return student_terms(
            self.parts.student,
            batch.inputs,
            batch.labels,
            batch.teacher_logits,
            self.cfg.temperature,
            self.cfg.label_smoothing,
        )

    def student_forward(self, batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The warm-up's forward pass without a step; returns (logits, loss terms)."""
        with torch.no_grad():
            s_logits, kl, ce = self.loss_terms(batch)
        return s_logits, {"kl": kl, "kl_scaled": kl * self.cfg.temperature**2, "ce": ce}

    def student_step(self, batch, want_terms: bool):
        """One optimiser step; returns (logits, loss terms, per-term grads, GI info, non-finite or None)."""
        cfg, opt, params = self.cfg, self.parts.optimizer, self.parts.params
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
            loss.backward()
        if not all_finite(loss, params):  # one host sync for the loss and every gradient
            opt.zero_grad(set_to_none=True)
            weighted = {n: t for n, t, w in (("KL term", kl, cfg.kd_weight), ("CE term", ce, cfg.ce_weight)) if w}
            what = first_nonfinite(loss, weighted, "student loss") or "gradient of the student loss"
            return s_logits.detach(), terms, None, None, NonFinite(what, loss, {"kl": kl, "ce": ce})
        opt.step()
        gi = None
        if cfg.inundation.enabled:
            gi = {
                "kappa": dict(opt.last_kappa),
                "changed": dict(opt.last_changed_codes),
                "flags": dict(getattr(opt, "last_flags", {})),
            }
        return s_logits.detach(), terms, term_grads, gi, None

    def on_nonfinite(self, epoch: int, step: int, bad) -> bool:
        """on_nonfinite=skip: True (the update was skipped; counted in skipped_steps).  Else stop the run."""
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
        (in skip mode too) before anything of this epoch is written."""
        raise NonFiniteError(
            f"the student's weights or activation ranges became non-finite at epoch {epoch}, "
            f"step {step} (global step {self.global_step + 1}; lr={self.cfg.optim.lr:g}); stopped, "
            f"{self.kept_checkpoint()}; lower the learning rate (or weight_decay/momentum) and "
            f"resume with --force"
        )

    # ------------------------------------------------------------------ evaluation and the end of a run
    def measure_val(self) -> Predictions:
        """The student's top-1, CE and prediction spread on the validation loader, its activation ranges held."""
        parts = self.parts
        if parts.quant_layers:
            with activation_ranges_frozen(parts.student):  # test data must not move the ranges
                return predictions_on(parts.student, parts.val_loader, parts.device, self.cfg.val_max_batches)
        return predictions_on(parts.student, parts.val_loader, parts.device, self.cfg.val_max_batches)

    def calibrate_only(self) -> dict:
        """ZeroQ's own baseline: activation ranges calibrated on the distilled data, no fine-tuning."""
        parts = self.parts
        if parts.quant_layers:  # zeroq_calibration: ZeroQ's running min/max (default) or the training EMA
            parts.source.calibrate(parts.student)
        nan = float("nan")
        val = self.measure_val() if parts.val_loader is not None else Predictions(nan, nan, nan, nan)
        row = {
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
        self.run.write_part("zeroq_distillation", parts.source.history, epoch_key(0))
        self.run.write_part("metrics", [row], epoch_key(0))
        self.save_checkpoint(0)
        log.info(epoch_line(row))
        return self.write_summary()

    def write_summary(self) -> dict:
        """Write RUN/summary.json (zsq_probe.training.checkpoint.write_summary) and return it."""
        return checkpoint.write_summary(self.run, self.parts, self.epoch)

    def save_checkpoint(self, epoch: int) -> None:
        """Write the checkpoint of `epoch` (refused when a weight is inf/NaN: NonFiniteError)."""
        state = checkpoint.training_state(self.parts, self.epoch, self.global_step, self.observers)
        checkpoint.check_finite_state(state, epoch)
        self.run.save_checkpoint(epoch, state, keep=partial(keeps_checkpoint, self.cfg))

    def load_state_dict(self, state: dict) -> None:
        """Continue from a checkpoint's state: models, optimiser, RNG, observers, epoch and step counters."""
        self.epoch, self.global_step = checkpoint.restore_training_state(self.parts, state, self.observers)


def synced_values(terms: dict[str, torch.Tensor], flag: torch.Tensor) -> tuple[dict[str, float], bool]:
    """The loss terms as floats and a device flag as a bool, in one host sync (one stacked tensor to the host);
    the sync only reads values, it does not touch the training math."""
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
        """Count one step's loss terms (the finite ones) and whether its update was skipped."""
        self.skipped_steps += skipped
        for k, v in values.items():
            if math.isfinite(v):
                self.sums[k] += v
                self.counts[k] += 1

    def means(self) -> dict[str, float]:
        """The epoch mean of each of METRIC_TERMS (NaN for a term no step had)."""
        return {k: self.sums[k] / self.counts[k] if self.counts[k] else float("nan") for k in METRIC_TERMS}


def log_skipped_steps(epoch: int, skipped: int, iterations: int) -> None:
    """on_nonfinite=skip: note an epoch's skipped updates; a warning from SKIP_WARN_SHARE of its steps on."""
    share = skipped / max(iterations, 1)
    many = share >= SKIP_WARN_SHARE
    (log.warning if many else log.info)(
        f"epoch {epoch}: skipped {skipped} of {iterations} steps ({100 * share:.0f}%) with a "
        f"non-finite loss, gradient or batch (on_nonfinite=skip)"
        + ("; the student barely trained — lower lr / gen_lr or check the teacher" if many else "")
    )


class EpochProgress:
    """An epoch's progress bar (nothing when disabled): one tick per step, the losses every 10 steps."""

    def __init__(self, total: int, desc: str, enabled: bool):
        self.total = total
        self.bar = tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True) if enabled else None

    def step(self, step: int, values: dict[str, float]) -> None:
        """Tick for `step`, showing its losses on every 10th step and the last."""
        if self.bar is None:
            return
        self.bar.update(1)
        if step % 10 == 0 or step == self.total - 1:
            self.bar.set_postfix({k: f"{values[k]:.3g}" for k in ("kl_scaled", "ce") if k in values})

    def close(self) -> None:
        """Close the bar (it leaves no line behind)."""
        if self.bar is not None:
            self.bar.close()


def epoch_line(row: dict) -> str:
    """The log line of an epoch's metrics row: losses, validation and wall time."""
    val = row.get("val_top1")
    val_s = (
        f"val top-1 {100 * val:6.2f}%  val CE {row['val_ce']:.4f}"
        if val is not None and val == val
        else "no validation"
    )
    return (
        f"[{row['method']}] epoch {row['epoch']:>4}  KL*T^2 {row['loss_kl_scaled']:.4g}  CE {row['loss_ce']:.4g}  "
        f"{val_s}  ({row['wall_time_s']:.1f}s)"
    )
