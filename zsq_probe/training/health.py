"""Health checks: an observer, on in every run, that says when a student has collapsed or its activation ranges
cannot work — one warning line per check and epoch, recorded in the metrics table (`health`,
`health_range_ratio`) and in summary.json (`health`).  `on_collapse=stop` ends the run after the epoch's
checkpoint and summary (`CollapseError`, exit 1; `--resume` continues).

Why these checks (issue 32): a 40-iteration GDFQ run on CIFAR-10 with the reference's bias-corrected range rule
froze ranges ~10x wider than the real activations (first block [0, 48.9] against at most 4.93 on real test
images), every 4-bit activation quantised to 0 and the student sat at 10.00 % for 8 epochs with exit 0.  Each
threshold below says what it separates; docs/real-data.md gives the values of healthy runs beside it.

The checks read the student; they never change it: the probe-batch and real-image passes run inside
`preserved_state` (modes, BN statistics and activation ranges as found) and draw from the probe stream.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from zsq_probe.errors import ComputeError
from zsq_probe.events import MetricsRow, Observer, ProbeContext, StepEvent
from zsq_probe.module_state import preserved_state
from zsq_probe.quantization.quantizer import QuantizedActivation
from zsq_probe.quantization.range_rules import BIAS_CORRECTED_SETTLE_UPDATES, bias_corrected_range_factor

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig

log = logging.getLogger(__name__)

# A trained 10-class student spreads its predictions over the classes (~10 % each on CIFAR-10's test split);
# one class for >= 90 % of a batch means its output no longer depends on the input.
ONE_CLASS_SHARE = 0.9
# Mean softmax entropy within 5 % of ln C: a near-uniform output (a collapsed student's val CE ~ ln C).
ENTROPY_RATIO = 0.95
# Top-1 within 2 points of chance (1/C): the student has learnt nothing.
CHANCE_MARGIN = 0.02
# A student activation range wider than 4x the teacher's on real images: at 4 bits a step then exceeds a quarter
# of the real range (>= 1/4 of the codes unused at best); the collapsed run's first block was ~10x.
RANGE_RATIO = 4.0
# Ranges that freeze while the generator's BNS loss (the BN-statistics mismatch, GDFQ's loss) is above half its
# highest value in the run's first epoch were calibrated on samples whose statistics are still far from the
# teacher's.  Measured against that peak, not the first epoch's mean: on the digits default the BNS falls from 0.92
# (the first step) to ~0.2 within 4 steps and stays there (epoch means 0.228, 0.199, 0.202 in a run that reaches
# 92 % top-1), so "half the first epoch's mean" tripped on every healthy digits run; and not the first step: on
# CIFAR-10 with a trained ResNet-20 the BNS first rises (0.33 at step 1, epoch means 0.372, 0.158, 0.132), so
# "half the first step" sat at 48 % for a healthy 83.5 % run.
BNS_SETTLED = 0.5
REAL_BATCHES = 2  # validation batches the teacher's real-image ranges are taken from (once per run)
PROBE_BATCH = 256  # probe-batch size for the prediction checks on epochs without validation

CHECKS = ("one_class", "max_entropy", "chance_top1", "wide_ranges", "unsettled_ranges")
FIX = {
    "one_class": "check the activation ranges (health_range_ratio, range_ema, act_range_epochs) and the lr",
    "max_entropy": "check the activation ranges (health_range_ratio, range_ema, act_range_epochs) and the lr",
    "chance_top1": "check the activation ranges (health_range_ratio, range_ema, act_range_epochs) and the lr",
    "wide_ranges": (
        "use range_ema=plain, or more range updates (act_range_epochs x iters_per_epoch >= "
        f"{BIAS_CORRECTED_SETTLE_UPDATES} for range_ema=bias-corrected); for a diagnostic run, calibrate on real "
        "data (zsq-probe eval)"
    ),
    "unsettled_ranges": "raise act_range_epochs (and warmup_epochs) so the generator settles before the ranges freeze",
}


# the prediction checks' advice for a full-precision student (the KD baseline) trained from random initialisation
FROM_SCRATCH = "a student trained from random initialisation starts there: judge it after more steps (epochs, lr)"


class CollapseError(ComputeError):
    """on_collapse=stop: a health check tripped; the epoch's checkpoint and summary.json are written, the
    command line exits 1, and `--resume` continues the run."""


@dataclass(frozen=True)
class Finding:
    """One tripped check of one epoch."""

    check: str
    detail: str
    fix: str = ""  # what to do, when not FIX[check]

    def line(self, epoch: int) -> str:
        """The warning line: the epoch, what was measured and what to do."""
        return f"health check {self.check} at epoch {epoch}: {self.detail}; {self.fix or FIX[self.check]}"


def unsettled_range_warning(cfg: RunConfig, iterations: int) -> str | None:
    """The loud line for range_ema=bias-corrected ranges that freeze before the rule settles.

    Args:
        cfg: The run's config.
        iterations: Iterations per epoch.

    Returns:
        The warning, or None when the ranges settle in time, follow another rule or the student is not quantised.
    """
    if cfg.quant.full_precision or cfg.quant.range_ema != "bias-corrected" or cfg.dataset.source == "zeroq":
        return None
    updates = cfg.quant.act_range_epochs * iterations
    if updates >= BIAS_CORRECTED_SETTLE_UPDATES:
        return None
    return (
        f"range_ema=bias-corrected freezes the activation ranges after {updates} updates (act_range_epochs="
        f"{cfg.quant.act_range_epochs} x {iterations} iterations), but the reference's rule needs "
        f"{BIAS_CORRECTED_SETTLE_UPDATES} to settle within 1 %: a steady range would read "
        f"{bias_corrected_range_factor(updates):.3g}x too wide and the student will likely sit at chance; use "
        f"range_ema=plain (the default for such runs) or act_range_epochs x iters_per_epoch >= "
        f"{BIAS_CORRECTED_SETTLE_UPDATES}"
    )


def settling_ranges(cfg: RunConfig, epoch: int, iterations: int) -> str:
    """Why the student is not judged at the end of `epoch`: range_ema=bias-corrected whose ranges have had fewer
    than BIAS_CORRECTED_SETTLE_UPDATES updates yet but will have them before they freeze (a steady range reads
    1283x too wide after 40 updates and 1.3x after 120: measured on CIFAR-10, a 4 x 40 schedule sat at 10 % after
    epochs 1-2 and reached 79.9 % after epoch 3).

    Args:
        cfg: The run's config.
        epoch: The epoch just trained, counted from 1.
        iterations: Iterations per epoch.

    Returns:
        The reason, or '' when the student is judged.
    """
    q = cfg.quant
    if q.full_precision or q.range_ema != "bias-corrected" or epoch > q.act_range_epochs:
        return ""
    done, total = epoch * iterations, q.act_range_epochs * iterations
    if done >= BIAS_CORRECTED_SETTLE_UPDATES or total < BIAS_CORRECTED_SETTLE_UPDATES:
        return ""
    return (
        f"not judged: the bias-corrected activation ranges have had {done} of the {BIAS_CORRECTED_SETTLE_UPDATES} "
        f"updates they need to settle (a steady range reads {bias_corrected_range_factor(done):.3g}x too wide now); "
        f"they settle before freezing after epoch {q.act_range_epochs}"
    )


class HealthCheck(Observer):
    """Judges the student at every epoch end (after validation); see the module docstring for the checks.

    Args:
        cfg: The run's config.
    """

    name = "health"

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        self.teacher_width: dict[str, float] = {}  # quantised activation -> the teacher's range on real images
        self.classes = 0
        self.first_bns = float("nan")  # the generator's highest BNS loss in the first epoch (checkpointed)
        self.findings: list[Finding] = []  # the last epoch's

    # ---- observer hooks
    def on_train_start(self, ctx: ProbeContext) -> None:
        """Measure the teacher's activation ranges on real images, when the run has them."""
        if ctx.quant_layers and ctx.real_loader is not None and not self.teacher_width:
            self.teacher_width = teacher_real_ranges(ctx, REAL_BATCHES)

    def on_step(self, ctx: ProbeContext, event: StepEvent) -> None:
        """Note the number of classes (the teacher's logits) and the first epoch's highest BNS loss."""
        self.classes = int(event.teacher_logits.shape[-1])
        bns = float(event.losses.get("bns", float("nan")))
        if event.epoch == 1 and math.isfinite(bns) and not bns <= self.first_bns:  # NaN-aware max
            self.first_bns = bns

    def on_epoch_end(self, ctx: ProbeContext, epoch: int, metrics: MetricsRow) -> None:
        """Run the checks, log one line per tripped check and record them in the metrics row.  While the
        reference's bias-corrected ranges are still settling on a schedule that lets them settle before they
        freeze (`settling_ranges`), the student is judged only once they have: its blow-up is transient there."""
        ratio, layer, widths = self.range_ratio(ctx)
        settling = settling_ranges(self.cfg, epoch, ctx.iterations_per_epoch)
        if settling:
            log.info(f"health checks at epoch {epoch}: {settling}")
        findings = [] if settling else self.prediction_findings(ctx, epoch, metrics)
        if ratio > RANGE_RATIO and not settling:
            student_w, teacher_w = widths
            findings.append(
                Finding(
                    "wide_ranges",
                    f"the activation range of {layer} is {ratio:.3g}x the teacher's on real images "
                    f"({student_w:.3g} vs {teacher_w:.3g}; > {RANGE_RATIO:g}x), so at {self.cfg.quant.a_bits} bits "
                    f"most real activations fall on one code",
                )
            )
        findings += self.bns_findings(epoch, metrics)
        for f in findings:
            log.warning(f.line(epoch))
        metrics["health"] = ",".join(f.check for f in findings)
        metrics["health_range_ratio"] = ratio
        self.findings = findings

    def state_dict(self) -> dict[str, object]:
        """The first epoch's highest BNS loss (the unsettled-ranges check compares against it after a resume)."""
        return {"first_bns": self.first_bns}

    def load_state_dict(self, state: dict[str, object]) -> None:
        """Restore `state_dict`."""
        value = state.get("first_bns", float("nan"))
        self.first_bns = float(value) if isinstance(value, (int, float)) else float("nan")

    # ---- the checks
    def prediction_findings(self, ctx: ProbeContext, epoch: int, metrics: MetricsRow) -> list[Finding]:
        """One class, near-uniform output and chance top-1: on validation when this epoch validated, else on
        the epoch's probe batch."""
        share, entropy = _float(metrics.get("val_top_class_share")), _float(metrics.get("val_entropy_ratio"))
        where = "validation images"
        if not math.isfinite(share):
            share, entropy = probe_batch_predictions(ctx, epoch, PROBE_BATCH)
            where = "probe batch"
        found: list[Finding] = []
        fix = FROM_SCRATCH if self.cfg.quant.full_precision else ""
        if share >= ONE_CLASS_SHARE:
            found.append(Finding("one_class", f"the student predicts one class for {share:.1%} of the {where}", fix))
        if entropy >= ENTROPY_RATIO:
            found.append(
                Finding(
                    "max_entropy", f"its mean output entropy on the {where} is {entropy:.1%} of ln C (uniform)", fix
                )
            )
        top1 = _float(metrics.get("val_top1"))
        if self.classes and math.isfinite(top1) and top1 <= 1 / self.classes + CHANCE_MARGIN:
            found.append(
                Finding(
                    "chance_top1",
                    f"validation top-1 {top1:.2%} is within 2 points of chance ({1 / self.classes:.1%})",
                    fix,
                )
            )
        return found

    def range_ratio(self, ctx: ProbeContext) -> tuple[float, str, tuple[float, float]]:
        """(widest student range over the teacher's on real images, that layer, (student, teacher) widths); NaN
        without real data or ranges."""
        worst, layer, widths = float("nan"), "", (float("nan"), float("nan"))
        if not self.teacher_width:
            return worst, layer, widths
        for name, module in ctx.student.named_modules():
            if not isinstance(module, QuantizedActivation) or name not in self.teacher_width:
                continue
            q = module.quantizer
            if not q.is_initialized:
                continue
            width = float(q.range_max - q.range_min)
            ratio = width / max(self.teacher_width[name], 1e-12)
            if not ratio <= worst:  # NaN-aware max (the first layer replaces NaN)
                worst, layer, widths = ratio, name, (width, self.teacher_width[name])
        return worst, layer, widths

    def bns_findings(self, epoch: int, metrics: MetricsRow) -> list[Finding]:
        """Ranges freezing after this epoch while the generator's BNS loss is above half its first-epoch peak."""
        bns = _float(metrics.get("loss_bns"))
        freezes_now = epoch == self.cfg.quant.act_range_epochs and not self.cfg.quant.full_precision
        if not (freezes_now and math.isfinite(bns) and math.isfinite(self.first_bns) and self.first_bns > 0):
            return []
        ratio = bns / self.first_bns
        if ratio <= BNS_SETTLED:
            return []
        return [
            Finding(
                "unsettled_ranges",
                f"the activation ranges freeze after this epoch while the generator's BNS loss ({bns:.4g}, the "
                f"epoch's mean) is {ratio:.0%} of its highest value in the first epoch ({self.first_bns:.4g}; > "
                f"{BNS_SETTLED:.0%})",
            )
        ]


def _float(value: object) -> float:
    return float(value) if isinstance(value, (int, float)) else float("nan")


@torch.no_grad()
def teacher_real_ranges(ctx: ProbeContext, batches: int) -> dict[str, float]:
    """The width (max - min) of the teacher's output at each of the student's quantised activations, over the
    first `batches` real validation batches (the same module names: the student is a quantised copy).

    Args:
        ctx: The run's context (teacher, student, real images, device).
        batches: How many validation batches to read.

    Returns:
        Quantised activation name -> the teacher's width there (layers the teacher lacks are left out).
    """
    names = [n for n, m in ctx.student.named_modules() if isinstance(m, QuantizedActivation)]
    lo: dict[str, float] = {}
    hi: dict[str, float] = {}

    def record(name: str) -> Callable[[nn.Module, tuple[Any, ...], torch.Tensor], None]:
        def hook(_module: nn.Module, _inputs: tuple[Any, ...], output: torch.Tensor) -> None:
            lo[name] = min(lo.get(name, math.inf), float(output.amin()))
            hi[name] = max(hi.get(name, -math.inf), float(output.amax()))

        return hook

    handles = []
    for name in names:
        try:
            handles.append(ctx.teacher.get_submodule(name).register_forward_hook(record(name)))
        except AttributeError:  # a teacher of another layout: that layer is not compared
            continue
    try:
        with preserved_state(ctx.teacher, mode="eval"):
            for i, (x, _) in enumerate(ctx.real_loader or ()):
                if i >= batches:
                    break
                ctx.teacher(x.to(ctx.device))
    finally:
        for h in handles:
            h.remove()
    return {n: hi[n] - lo[n] for n in hi}


@torch.no_grad()
def probe_batch_predictions(ctx: ProbeContext, epoch: int, size: int) -> tuple[float, float]:
    """(share of the most often predicted class, mean entropy / ln C) of the student on the epoch's probe batch."""
    batch = ctx.probe_batch(epoch, size)
    with preserved_state(ctx.student, mode="eval"):
        logits = ctx.student(batch.inputs.to(ctx.device)).float()
    log_p = F.log_softmax(logits, dim=1)
    classes = logits.shape[1]
    share = float(torch.bincount(logits.argmax(1), minlength=classes).max()) / logits.shape[0]
    entropy = float(-(log_p.exp() * log_p).sum(1).mean()) / math.log(classes) if classes > 1 else float("nan")
    return share, entropy
