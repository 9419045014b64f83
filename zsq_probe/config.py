"""Run configuration: a few nested, self-validating dataclasses, presets as data, JSON in/out and
`--set key=value`.

    RunConfig            what is trained, the schedule, the loss, validation and checkpoints
      .quant    QuantConfig      bits, full-precision or quantised student, activation-range epochs
      .optim    OptimizerConfig  the student's optimiser and its learning-rate schedule
      .inundation GIConfig       gradient inundation (paper §4.2)
      .dataset  DataConfig       data set, its root and where the student's batches come from
      .synthesis GeneratorConfig the generator (GDFQ / Qimera / ARC) or ZeroQ's distillation
      .probing  ProbeConfig      which probes run, how often and how big

Every field also has a flat key (`lr`, `gi_p`, `warmup_epochs`, `hessian_every_epochs`, ...: `FLAT_KEYS`), the
names `--set` and presets use; dotted keys (`optim.lr`) work too.

Presets and the data-set scales live in `zsq_probe.presets` (which resolves a config from them).  Every bad
value is a UserError naming it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import typing
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NoReturn, SupportsFloat, SupportsInt

from zsq_probe.errors import UserError, did_you_mean
from zsq_probe.probe_registry import probe_names

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

CONFIG_SCHEMA_VERSION = 2  # nested sections (version 1, one flat dict, was never released and is refused)
# the value of one field (what `RunConfig.get` returns and `coerce` makes of a string or JSON value)
ConfigValue = str | int | float | bool | list[int] | list[float] | list[str] | None


MAX_SEED = 2**63 - 1
MAX_LR = 1e3  # learning rates above it overflow float32 steps at once
MAX_BATCH_SIZE = 65_536  # images per batch; beyond it one batch alone needs more memory than any accelerator
ZEROQ_MAX_IMAGES = 1_000_000


def _check_device(device: str) -> None:
    import torch  # torch: not with zsq_probe.cli, which reads configs

    try:
        torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        _bad(f"device={device!r} (cpu, cuda, cuda:N, mps, ...)")


def device_available(device: str) -> None:
    """UserError unless this torch can use `device` now (a run's config may name a device of another machine, so
    this is checked where a command is about to compute, not when a config is read)."""
    import torch  # torch: not with zsq_probe.cli, which reads configs

    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise UserError(f"--device {device!r} is not a device name (cpu, cuda, cuda:N, mps, ...)") from None
    if dev.type == "cpu":
        return
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (dev.index or 0) >= count:
            raise UserError(f"--device {device}: this torch sees {count} CUDA device(s)")
        return
    backend = getattr(torch.backends, dev.type, None) or getattr(torch, dev.type, None)
    available = getattr(backend, "is_available", None)
    if available is None or not available():
        raise UserError(f"--device {device}: this torch ({torch.__version__}) has no usable {dev.type} device")


def usable_cpus() -> int:
    """The CPUs this process may run on (its affinity where the platform says, else the machine's count)."""
    if hasattr(os, "sched_getaffinity"):
        return max(len(os.sched_getaffinity(0)), 1)
    return os.cpu_count() or 1


def max_workers() -> int:
    """The most threads or data-loading workers a command takes: 4 x usable_cpus() (more only oversubscribes,
    and torch segfaults on a count such as 100000)."""
    return 4 * usable_cpus()


def _bad(msg: str) -> NoReturn:
    raise UserError(f"invalid config: {msg}")


def _at_least(obj: DataclassInstance, minimum: int, *names: str) -> None:
    for k in names:
        if getattr(obj, k) < minimum:
            _bad(f"{k}={getattr(obj, k)} (must be >= {minimum})")


def _finite(obj: DataclassInstance) -> None:
    """Every float (and list-of-float) field of a section is finite: inf/NaN never reach the training math."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        for x in v if isinstance(v, list) else [v]:
            if isinstance(x, float) and not math.isfinite(x):
                _bad(f"{f.name}={x} (must be a finite number)")


def _in_range(
    obj: DataclassInstance, name: str, low: float, high: float, *, low_open: bool = False, high_open: bool = False
) -> None:
    v = getattr(obj, name)
    ok_low = v > low if low_open else v >= low
    ok_high = v < high if high_open else v <= high
    if not (ok_low and ok_high):
        _bad(f"{name}={v} (must be in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'})")


def _one_of(value: object, choices: Sequence[str], what: str) -> None:
    if value not in choices:
        _bad(f"{what}={value!r} ({', '.join(map(str, choices[:-1]))} or {choices[-1]})")


@dataclass
class QuantConfig:
    """The student (docs/reference.md#quantisation); full_precision=True for the KD baseline student."""

    w_bits: int = 4
    a_bits: int = 4
    full_precision: bool = False
    student_init: str = "teacher"  # "teacher" (ZQ: quantised copy) or "random" (KD baseline, paper §3.1)
    act_range_epochs: int = 4  # activation ranges follow the EMA in these epochs, frozen after
    # activation-range EMA: "plain" (embedded digits default) | "bias-corrected" (the reference's QuantAct,
    # GDFQ_AIT/quantization_utils/quant_modules.py:87-89; default of the cifar/imagenet scales in presets.py)
    range_ema: str = "plain"

    def validate(self) -> None:
        """Check the section's values; the first bad one is a UserError naming it."""
        for k in ("w_bits", "a_bits"):
            if not isinstance(getattr(self, k), int) or not 2 <= getattr(self, k) <= 8:
                _bad(f"{k}={getattr(self, k)} (bits must be 2..8)")
        _one_of(self.student_init, ("teacher", "random"), "student_init")
        _one_of(self.range_ema, ("plain", "bias-corrected"), "range_ema")
        _at_least(self, 0, "act_range_epochs")


@dataclass
class OptimizerConfig:
    """The student's optimiser (sgd, adam, rmsprop, lars) and its learning-rate schedule."""

    name: str = "sgd"  # sgd (Nesterov) | adam | rmsprop | lars (zsq_probe.quantization.lars, You et al. 2017)
    lr: float = 1e-4
    momentum: float = 0.9  # SGD, RMSprop and LARS momentum
    nesterov: bool = True
    weight_decay: float = 1e-4
    lr_milestones: list[int] = field(default_factory=lambda: [100, 200, 300])
    lr_gamma: float = 0.1
    # Adam/RMSprop denominator epsilon; None = torch's default (Adam 1e-8, RMSprop 1e-8).  The Tab. 3 presets set
    # the reference's values (GDFQ/trainer.py:56-71: RMSprop eps=1.0, Adam eps=1e-5)
    eps: float | None = None
    rmsprop_alpha: float = 0.99  # RMSprop's square-average decay (torch default; the reference uses 0.9)
    lars_trust_coef: float = 1e-3  # LARS trust coefficient eta (You, Gitman, Ginsburg 2017)

    def validate(self) -> None:
        """Check the section's values; the first bad one is a UserError naming it."""
        _one_of(self.name, ("sgd", "adam", "rmsprop", "lars"), "optimizer")
        _finite(self)
        _in_range(self, "momentum", 0.0, 1.0, high_open=True)
        _in_range(self, "weight_decay", 0.0, 1.0)
        _in_range(self, "lr_gamma", 0.0, 1.0, low_open=True)
        if any(m < 0 for m in self.lr_milestones):
            _bad(f"lr_milestones={self.lr_milestones} (epochs, must be >= 0)")
        if not 0 < self.lr <= MAX_LR:
            _bad(f"lr={self.lr} (must be in (0, {MAX_LR:g}])")
        if self.eps is not None and not self.eps > 0:
            _bad(f"eps={self.eps} (must be > 0)")
        if not 0.0 <= self.rmsprop_alpha < 1.0:
            _bad(f"rmsprop_alpha={self.rmsprop_alpha} (in [0, 1))")
        if not self.lars_trust_coef > 0:
            _bad(f"lars_trust_coef={self.lars_trust_coef} (must be > 0)")


@dataclass
class GIConfig:
    """Gradient inundation (paper §4.2)."""

    enabled: bool = False
    p: float = 1e-3
    p_milestones: list[int] = field(default_factory=lambda: [100, 200, 300])
    p_gamma: float = 0.1
    warmup_cap: float = 128.0
    # κ search: "ours" (smallest κ found with frac >= p, zsq_probe/quantization/gi.py) | "reference" (the AIT code's
    # last midpoint, GDFQ_AIT/optimizer.py:204-233)
    rule: str = "ours"

    def validate(self) -> None:
        """Check the section's values; the first bad one is a UserError naming it."""
        _finite(self)
        _in_range(self, "p_gamma", 0.0, 1.0, low_open=True)
        if not self.warmup_cap > 0:
            _bad(f"gi_warmup_cap={self.warmup_cap} (must be > 0)")
        if any(m < 0 for m in self.p_milestones):
            _bad(f"gi_p_milestones={self.p_milestones} (epochs, must be >= 0)")
        if not 0.0 <= self.p <= 1.0:
            _bad(f"gi_p={self.p} (a share in [0, 1])")
        _one_of(self.rule, ("ours", "reference"), "gi_rule")


@dataclass
class DataConfig:
    """The data set, its root, where the student's batches come from, and the real-data loaders."""

    name: str | None = None  # data set name; derived from the teacher when None
    root: str | None = None
    source: str = "generator"  # "generator" (ZQ), "real" (KD baseline), "zeroq" (fixed distilled set)
    # real-image normalisation (zsq_probe.data.datasets): "reference" (the AIT/GDFQ code's CIFAR statistics, the paper's
    # protocol) | "pytorchcv" (imgclsmob's, which pytorchcv's published accuracies use); only CIFAR differs
    normalization: str = "reference"
    # real-data loaders (validation every epoch, the KD baseline's training data): worker processes and pinned
    # host memory for fast copies to a GPU.  Validation numbers do not depend on them; the KD baseline's
    # augmentation draws from the workers' seeds instead of torch's global stream when num_workers > 0
    num_workers: int = 0
    pin_memory: bool = False

    def validate(self) -> None:
        """Check the section's values; the first bad one is a UserError naming it."""
        _one_of(self.source, ("generator", "real", "zeroq"), "source")
        _one_of(self.normalization, ("reference", "pytorchcv"), "normalization")
        _at_least(self, 0, "num_workers")
        if self.num_workers > max_workers():
            _bad(
                f"num_workers={self.num_workers} (at most {max_workers()}: 4 x the {usable_cpus()} CPU(s) this "
                "process may use)"
            )


@dataclass
class GeneratorConfig:
    """GDFQ's generator: ce_weight * CE + bns_weight * BNS, Adam (docs/reference.md#generator); Qimera and ZeroQ
    options."""

    name: str = "gdfq"  # gdfq | qimera | arc | none
    lr: float = 1e-3
    beta1: float = 0.5
    beta2: float = 0.999
    bns_weight: float = 0.1
    ce_weight: float = 1.0  # the code's 1; paper Eq. 5 (1 - alpha) with alpha = 0.5 in the Fig. 1 recipe
    # Qimera: None = the official scripts' value for the teacher and bits (generators.QIMERA_DEFAULTS)
    qimera_mix_prob: float | None = None
    qimera_mix_k: int | None = None
    qimera_embedding_init: str | None = None  # teacher | random
    # ZeroQ (source="zeroq"); defaults = the reference (amirgholami/ZeroQ classification/uniform_test.py:48-50,
    # distill_data.py, utils/data_utils.py:39-41, quant_modules.py:70-75): one batch of 32 images from the
    # uniform start, activation ranges = running min/max from 0
    zeroq_images: int = 32  # size of the distilled set; 0 = batch_size * 10 (this package's earlier default)
    zeroq_batch_size: int = 0  # images optimised together; 0 = all zeroq_images in one batch (the reference)
    zeroq_iterations: int = 500
    zeroq_init: str = "uniform"  # uniform (reference) | gaussian (N(0, 1), earlier default)
    zeroq_calibration: str = "minmax"  # minmax (reference: running min/max from 0) | ema (the training EMA)

    def validate(self) -> None:
        """Check the section's values; the first bad one is a UserError naming it."""
        _one_of(self.name, ("gdfq", "qimera", "arc", "none"), "generator")
        _finite(self)
        for k in ("beta1", "beta2"):
            if not 0.0 <= getattr(self, k) < 1.0:
                _bad(f"gen_{k}={getattr(self, k)} (Adam's beta, in [0, 1))")
        for k in ("bns_weight", "ce_weight"):
            if not getattr(self, k) >= 0:
                _bad(f"{'gen_ce_weight' if k == 'ce_weight' else k}={getattr(self, k)} (must be >= 0)")
        # upper bounds: beyond them the distillation would allocate or loop for hours (a hang, not a run)
        for k, high in (
            ("zeroq_images", ZEROQ_MAX_IMAGES),
            ("zeroq_batch_size", ZEROQ_MAX_IMAGES),
            ("zeroq_iterations", 1_000_000),
        ):
            _in_range(self, k, 0, high)
        if not 0 < self.lr <= MAX_LR:
            _bad(f"gen_lr={self.lr} (must be in (0, {MAX_LR:g}])")
        if self.qimera_mix_prob is not None and not 0.0 <= self.qimera_mix_prob <= 1.0:
            _bad(f"qimera_mix_prob={self.qimera_mix_prob} (a probability)")
        if self.qimera_mix_k is not None and self.qimera_mix_k < 1:
            _bad(f"qimera_mix_k={self.qimera_mix_k} (must be >= 1)")
        if self.qimera_embedding_init not in (None, "teacher", "random"):
            _bad(f"qimera_embedding_init={self.qimera_embedding_init!r} (teacher or random)")
        if self.zeroq_images < 0 or self.zeroq_batch_size < 0:
            _bad(f"zeroq_images={self.zeroq_images}, zeroq_batch_size={self.zeroq_batch_size} (must be >= 0)")
        _one_of(self.zeroq_init, ("uniform", "gaussian"), "zeroq_init")
        _one_of(self.zeroq_calibration, ("minmax", "ema"), "zeroq_calibration")


# top-k eigenpairs by ARPACK (tol 1e-3) of the CE Hessian of the digits W3A3 GDFQ student (77,754 parameters, after a
# 20-iteration epoch), probe batch 200, one CPU thread, 1.5-1.7 s per product:
# k=3: 17 products, 25 s; k=10: 22, 57 s; k=20: 64, 111 s; k=50: 180, 425 s per loss (measured 2026-12-02 on this
# project's shared 2-core x86_64 machine). The probe runs it twice (CE, KL) per Hessian epoch, so past 50 an epoch
# would take well over 15 min without a word; 500 ran past 240 s without reaching its first trace (issue 24)
MAX_HESSIAN_TOP_K = 50
HUTCHPP_MIN_SAMPLES = 16  # zsq_probe.hessian.trace.DEFAULT_MIN_SAMPLES (not imported: config stays torch-free)
HUTCHINSON_MIN_SAMPLES = 30


@dataclass
class ProbeConfig:
    """Which probes run (names of zsq_probe.probe_registry), how often, and how big their measurements are."""

    probes: list[str] = field(default_factory=list)  # names of the probes switched on
    every_steps: int = 10  # cosine / inter-epoch gradients every N student steps
    hessian_every_epochs: int = 20  # hessian and slice probes every N epochs (and at the last epoch): 20 in 400
    batch_size: int = 200  # the probe batch (fixed size, drawn from the probe's own stream)
    # sized so the whole probe suite at this cadence stays near 10 % of training (benchmarks/probe_overhead.py)
    hessian_vectors: int = 10  # Hutchinson probe vectors (block / layer scopes; model scope with "hutchinson")
    # model-scope trace estimators: auto (exact where the model qualifies and batch x (classes - 1) <= 32 x
    # trace_max_products, else hutch++: zsq_probe.probes.curvature.auto_choice), hutch++ (adaptive, deflated by the
    # top eigenvectors), hutchinson, slq, exact
    trace_estimators: list[str] = field(default_factory=lambda: ["auto", "slq"])
    trace_rtol: float = 0.05  # adaptive stop: 95 % half-width <= trace_rtol * |trace|
    trace_max_products: int = 400  # product budget of one adaptive trace estimate
    density_sigma: str = "range"  # density smoothing: range (a fraction of the spectral range) | pyhessian
    density_sigma_fraction: float = 0.01
    hessian_top_k: int = 3
    slq_runs: int = 4  # independent SLQ runs: the density is their average, the trace interval is over runs
    slq_steps: int = 16
    slice_points: int = 21  # positions k in [-0.5, 0.5]
    slice_directions: list[str] = field(default_factory=lambda: ["eigenvector"])  # + random, filter
    # gradient: delta = grad L . e (paper Fig. 2c, per loss); norm: ||delta e|| = slice_norm_fraction * ||theta||,
    # one parameter-norm scale for CE and KL (Fig. 2c draws them on one axis); unit: delta = 1
    slice_scalings: list[str] = field(default_factory=lambda: ["gradient", "norm"])
    slice_norm_fraction: float = 0.01  # 'norm' scaling: displacement at k = 1 as a fraction of ||theta||
    # quantised students: the straight-through surrogate (the loss the Hessian describes) and/or the re-quantised
    # loss; float students always give their one loss
    slice_losses: list[str] = field(default_factory=lambda: ["surrogate", "requantized"])
    scopes: list[str] = field(default_factory=lambda: ["model"])  # + block, layer (cosine, trace)

    def _check_budgets(self) -> None:
        """The product budgets can pay for what the estimators must spend before their first stop check
        (found here, before anything is written, instead of mid-run): Hutch++ its `hessian_top_k` deflation
        products and 16 complement samples, Hutchinson 30 samples, block / layer Hutchinson 2 vectors."""
        hutchpp = {"hutch++", "auto"} & set(self.trace_estimators)  # auto may run Hutch++
        if hutchpp and self.trace_max_products < self.hessian_top_k + HUTCHPP_MIN_SAMPLES:
            _bad(
                f"trace_max_products={self.trace_max_products} cannot pay for Hutch++'s hessian_top_k="
                f"{self.hessian_top_k} deflation products and {HUTCHPP_MIN_SAMPLES} complement samples "
                f"(must be >= {self.hessian_top_k + HUTCHPP_MIN_SAMPLES})"
            )
        if "hutchinson" in self.trace_estimators and self.trace_max_products < HUTCHINSON_MIN_SAMPLES:
            _bad(
                f"trace_max_products={self.trace_max_products} cannot pay for Hutchinson's first "
                f"{HUTCHINSON_MIN_SAMPLES} samples (must be >= {HUTCHINSON_MIN_SAMPLES})"
            )
        scoped = [s for s in self.scopes if s != "model"]
        if scoped and self.hessian_vectors < 2:
            _bad(
                f"hessian_vectors={self.hessian_vectors} with scope(s) {', '.join(scoped)} (must be >= 2: "
                f"an interval needs two Hutchinson samples)"
            )

    def validate(self) -> None:
        """Check the section's values; the first bad one is a UserError naming it."""
        _finite(self)
        _at_least(
            self,
            1,
            "every_steps",
            "hessian_every_epochs",
            "batch_size",
            "hessian_vectors",
            "slq_runs",
            "slq_steps",
            "slice_points",
            "hessian_top_k",
        )
        # upper bounds: a probe this big would run (or allocate) for days — a hang, not a measurement
        for k, high in (
            ("slice_points", 10_001),
            ("hessian_top_k", MAX_HESSIAN_TOP_K),
            ("hessian_vectors", 100_000),
            ("slq_runs", 10_000),
            ("slq_steps", 10_000),
            ("batch_size", MAX_BATCH_SIZE),
            ("trace_max_products", 10_000_000),
        ):
            _in_range(self, k, 1, high)
        if not self.density_sigma_fraction > 0:
            _bad(f"density_sigma_fraction={self.density_sigma_fraction} (must be > 0)")
        for name in self.slice_directions:
            _one_of(name, ("eigenvector", "random", "filter"), "slice direction")
        for name in self.slice_scalings:
            _one_of(name, ("gradient", "norm", "unit"), "slice scaling")
        if not self.slice_norm_fraction > 0:
            _bad(f"slice_norm_fraction={self.slice_norm_fraction} (must be > 0)")
        if not self.slice_losses:
            _bad("slice_losses is empty (surrogate, requantized or both)")
        for name in self.slice_losses:
            _one_of(name, ("surrogate", "requantized"), "slice loss")
        for name in self.trace_estimators:
            _one_of(name, ("auto", "hutch++", "hutchinson", "slq", "exact"), "trace estimator")
        _one_of(self.density_sigma, ("range", "pyhessian"), "density_sigma")
        if not self.trace_rtol > 0:
            _bad(f"trace_rtol={self.trace_rtol} (must be > 0)")
        _at_least(self, 8, "trace_max_products")
        for name in self.scopes:
            _one_of(name, ("model", "block", "layer"), "probe scope")
        self._check_budgets()
        known = probe_names()  # the registry (zsq_probe.probe_registry): built-in and registered probes
        for name in self.probes:
            if name not in known:
                _bad(f"unknown probe {name!r}{did_you_mean(name, known)} (probes: {', '.join(known)})")


SECTIONS = {
    "quant": QuantConfig,
    "optim": OptimizerConfig,
    "inundation": GIConfig,
    "dataset": DataConfig,
    "synthesis": GeneratorConfig,
    "probing": ProbeConfig,
}


@dataclass
class RunConfig:
    """One run: what is trained, the schedule, the loss, validation and checkpoints, and the sections."""

    # what is trained
    preset: str = "gdfq"
    method: str = "gdfq"  # label written into every parquet row ("gdfq", "ait", "kd", ...)
    teacher: str = "digits"  # a pytorchcv name, "digits", or the label of a teacher module passed to train()
    weights: str | None = None  # explicit teacher weights file; else pytorchcv's cache
    weights_root: str | None = None  # pytorchcv cache folder (default ~/.torch/models)
    download: bool = False
    seed: int = 0
    device: str = "cpu"

    # schedule
    epochs: int = 400
    iters_per_epoch: int = 200  # 0 = one pass over the real training set (KD baseline)
    batch_size: int = 200
    warmup_epochs: int = 4  # generator-only epochs: the student does not step (GDFQ)

    # loss = kd_weight * KL(s/T || t/T) * T^2 + ce_weight * CE(s, y)   (docs/reference.md#losses)
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    temperature: float = 20.0
    label_smoothing: float = 0.0

    # validation and checkpoints
    val_every: int = 1
    val_batch_size: int = 200
    val_max_batches: int = 0  # 0 = the whole test split
    checkpoint_every: int = 1  # epochs; the last epoch is always checkpointed
    # which checkpoints stay once a later one is written: all | probed (the Hessian/slice cadence's epochs) | last
    keep_checkpoints: str = "all"
    on_nonfinite: str = "stop"  # stop | skip
    # a health check tripped (zsq_probe.training.health): warn (one line each, recorded) | stop (exit 1 after
    # the epoch's checkpoint and summary; --resume continues)
    on_collapse: str = "warn"

    quant: QuantConfig = field(default_factory=QuantConfig)
    optim: OptimizerConfig = field(default_factory=OptimizerConfig)
    inundation: GIConfig = field(default_factory=GIConfig)
    dataset: DataConfig = field(default_factory=DataConfig)
    synthesis: GeneratorConfig = field(default_factory=GeneratorConfig)
    probing: ProbeConfig = field(default_factory=ProbeConfig)

    def validate(self) -> None:
        """Check every section and the run's own values; the first bad one is a UserError naming it."""
        for name in SECTIONS:
            getattr(self, name).validate()
        _one_of(self.on_nonfinite, ("stop", "skip"), "on_nonfinite")
        _one_of(self.on_collapse, ("warn", "stop"), "on_collapse")
        _one_of(self.keep_checkpoints, KEEP_CHECKPOINTS, "keep_checkpoints")
        _finite(self)
        if not isinstance(self.seed, int) or not 0 <= self.seed <= MAX_SEED:
            _bad(f"seed={self.seed} (an integer in [0, 2**63 - 1])")
        _check_device(self.device)
        if self.dataset.source == "generator" and self.synthesis.name == "none":
            _bad("source=generator needs a generator (gdfq, qimera or arc)")
        if self.inundation.enabled and self.quant.full_precision:
            _bad("gi=true needs a quantised student (full_precision_student=false)")
        _at_least(self, 0, "warmup_epochs", "val_max_batches")
        _at_least(self, 1, "batch_size", "val_batch_size", "checkpoint_every", "val_every")
        # a ZeroQ run only calibrates (epochs=0); every other run trains at least one epoch
        _in_range(self, "epochs", 0 if self.dataset.source == "zeroq" else 1, 1_000_000)
        if self.iters_per_epoch < 0 or (self.iters_per_epoch == 0 and self.dataset.source != "real"):
            _bad(
                f"iters_per_epoch={self.iters_per_epoch} (must be >= 1; 0 = one pass over the real training set, "
                "source=real only)"
            )
        for k in ("batch_size", "val_batch_size"):
            _in_range(self, k, 1, MAX_BATCH_SIZE)
        _in_range(self, "iters_per_epoch", 0, 100_000_000)
        if not self.temperature > 0:
            _bad(f"temperature={self.temperature} (must be > 0)")
        if self.kd_weight < 0 or self.ce_weight < 0 or (self.kd_weight == 0 and self.ce_weight == 0):
            _bad(f"kd_weight={self.kd_weight}, ce_weight={self.ce_weight} (non-negative, not both zero)")
        if not 0.0 <= self.label_smoothing < 1.0:
            _bad(f"label_smoothing={self.label_smoothing} (in [0, 1))")

    # ---- flat keys
    def get(self, key: str) -> ConfigValue:
        """The value of a field by flat (`lr`) or dotted (`optim.lr`) key."""
        section, name = locate(key)
        value: ConfigValue = getattr(getattr(self, section) if section else self, name)
        return value

    def set(self, key: str, value: object) -> None:
        """Set a field by flat (`lr`) or dotted (`optim.lr`) key; the value is coerced to the field's type."""
        section, name = locate(key)
        setattr(getattr(self, section) if section else self, name, coerce(key, value))

    def flat(self) -> dict[str, ConfigValue]:
        """{flat key: value} — the view `--set`, presets and config diffs use."""
        return {k: self.get(k) for k in FLAT_KEYS}

    @classmethod
    def from_flat(cls, values: Mapping[str, object]) -> RunConfig:
        """A config from {flat or dotted key: value} (each coerced to its field's type) over the defaults."""
        cfg = cls()
        for k, v in values.items():
            cfg.set(k, v)
        return cfg

    def to_dict(self) -> dict[str, object]:
        """The nested config as plain data (what config.json holds under 'config')."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """`to_dict` as indented JSON with sorted keys."""
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


# flat key -> (section or "", field); a flat key is the field's name unless listed in _RENAMED
_RENAMED = {
    "full_precision_student": ("quant", "full_precision"),
    "optimizer": ("optim", "name"),
    "gi": ("inundation", "enabled"),
    "gi_p": ("inundation", "p"),
    "gi_p_milestones": ("inundation", "p_milestones"),
    "gi_p_gamma": ("inundation", "p_gamma"),
    "gi_warmup_cap": ("inundation", "warmup_cap"),
    "gi_rule": ("inundation", "rule"),
    "data": ("dataset", "name"),
    "data_root": ("dataset", "root"),
    "source": ("dataset", "source"),
    "generator": ("synthesis", "name"),
    "gen_lr": ("synthesis", "lr"),
    "gen_beta1": ("synthesis", "beta1"),
    "gen_beta2": ("synthesis", "beta2"),
    "gen_ce_weight": ("synthesis", "ce_weight"),
    "probe_every_steps": ("probing", "every_steps"),
    "hessian_batch_size": ("probing", "batch_size"),
    "probe_scopes": ("probing", "scopes"),
}
FLAT_KEYS: dict[str, tuple[str, str]] = {}
for _f in dataclasses.fields(RunConfig):
    if _f.name in SECTIONS:
        continue
    FLAT_KEYS[_f.name] = ("", _f.name)
for _section, _cls in SECTIONS.items():
    for _f in dataclasses.fields(_cls):
        _flat = next((k for k, v in _RENAMED.items() if v == (_section, _f.name)), _f.name)
        assert _flat not in FLAT_KEYS, _flat
        FLAT_KEYS[_flat] = (_section, _f.name)
FIELD_NAMES = list(FLAT_KEYS)
FIELD_TYPES = {k: typing.get_type_hints(SECTIONS[s] if s else RunConfig)[n] for k, (s, n) in FLAT_KEYS.items()}
_DOTTED = {f"{s}.{n}": k for k, (s, n) in FLAT_KEYS.items() if s}


def locate(key: str) -> tuple[str, str]:
    """(section or "", field name) of a flat or dotted key; UserError (with a suggestion) when unknown."""
    key = _DOTTED.get(key, key)
    if key not in FLAT_KEYS:
        raise UserError(f"unknown config key {key!r}{did_you_mean(key, FIELD_NAMES)}")
    return FLAT_KEYS[key]


def parse_assignment(text: str) -> tuple[str, ConfigValue]:
    """`key=value` -> (flat key, typed value) using the field's type."""
    if "=" not in text:
        raise UserError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = _DOTTED.get(key.strip(), key.strip())
    if key in NOT_SETTABLE:
        raise UserError(f"--set {key}=...: {NOT_SETTABLE[key]}")
    if key not in FIELD_TYPES:
        raise UserError(f"--set: unknown config key {key!r}{did_you_mean(key, FIELD_NAMES)}")
    return key, coerce(key, raw.strip())


# keys --set may not change: every row and the summary are labelled with them, and they must say what ran
NOT_SETTABLE = {
    "method": "the method label comes from --preset (`zsq-probe presets` lists them), not from --set",
    "preset": "the preset is chosen with --preset, not with --set",
}


def coerce(key: str, raw: object) -> ConfigValue:
    """Convert a string (or JSON value) to the type of field `key`; one-line UserError when impossible."""
    key = _DOTTED.get(key, key)
    tp = FIELD_TYPES[key]
    origin = typing.get_origin(tp)
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    optional = type(None) in typing.get_args(tp)
    if isinstance(raw, str) and optional and raw.lower() in ("none", "null", ""):
        return None
    if optional and raw is None:
        return None
    base = args[0] if optional and args else tp
    try:
        if typing.get_origin(base) is list or origin is list:
            inner = typing.get_args(base)[0]
            if isinstance(raw, list):
                return [inner(x) for x in raw]
            return [inner(x) for x in str(raw).replace(" ", "").split(",") if x != ""]
        if base is bool:
            if isinstance(raw, bool):
                return raw
            low = str(raw).lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if base is int:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            if isinstance(raw, str):
                return int(raw, 10)
            if isinstance(raw, SupportsInt):
                return int(raw)
            raise TypeError
        if base is float:
            if isinstance(raw, bool):
                raise ValueError
            if isinstance(raw, (str, SupportsFloat)):
                return float(raw)
            raise TypeError
        return str(raw)
    except (TypeError, ValueError):
        name = getattr(base, "__name__", str(base))
        raise UserError(f"config key {key!r} expects {name}, got {raw!r}") from None


KEEP_CHECKPOINTS = ("all", "probed", "last")


def curvature_epoch(cfg: RunConfig, epoch: int) -> bool:
    """Whether the Hessian and slice probes measure at `epoch`: every `hessian_every_epochs`, and the last."""
    return epoch % cfg.probing.hessian_every_epochs == 0 or epoch == cfg.epochs


def keeps_checkpoint(cfg: RunConfig, epoch: int) -> bool:
    """Whether `keep_checkpoints` keeps the checkpoint of `epoch` once a later one is written (the newest always
    stays): all; probed: the epochs the run's Hessian/slice cadence measures online (`curvature_epoch`, epochs >= 1:
    the untrained epoch-0 checkpoint is not one); last: none."""
    if cfg.keep_checkpoints == "probed":
        return epoch >= 1 and curvature_epoch(cfg, epoch)
    return cfg.keep_checkpoints == "all"


def validate(cfg: RunConfig) -> None:
    """Check every field of `cfg`; the first bad value is a UserError naming it."""
    cfg.validate()


def config_from_dict(d: Mapping[str, object]) -> RunConfig:
    """Rebuild a RunConfig from the nested sections of config.json (or a `--config` file).

    Args:
        d: The config: its sections (`quant`, `optim`, ...) and the top-level keys that belong to no section.

    Returns:
        The config (not yet validated).

    Raises:
        UserError: Unknown keys (a config of another version), or section keys given flat at the top level
            (version 1's one flat dict; this version reads version 2 only).
    """
    flat: dict[str, object] = {}
    unknown: list[str] = []
    sectioned = [k for k, v in d.items() if k not in SECTIONS and k in FLAT_KEYS and FLAT_KEYS[k][0]]
    if sectioned:
        raise UserError(
            f"config holds section keys at the top level ({', '.join(sorted(sectioned)[:3])}, ...): a version-1 "
            f"(flat) config; this zsq-probe reads config version {CONFIG_SCHEMA_VERSION} (nested sections) only"
        )
    for k, v in d.items():
        if k in SECTIONS and isinstance(v, dict):
            for name, value in v.items():
                dotted = f"{k}.{name}"
                if dotted in _DOTTED:
                    flat[_DOTTED[dotted]] = value
                else:
                    unknown.append(dotted)
        elif k in FLAT_KEYS:
            flat[k] = v
        else:
            unknown.append(k)
    if unknown:
        raise UserError(f"config has unknown keys {sorted(unknown)} (written by another zsq-probe version?)")
    return RunConfig.from_flat(flat)


def config_diff(
    old: RunConfig, new: RunConfig, ignore: Collection[str] = ("device",)
) -> dict[str, tuple[ConfigValue, ConfigValue]]:
    """{flat key: (old, new)} for every field that differs."""
    a, b = old.flat(), new.flat()
    return {k: (a[k], b[k]) for k in FIELD_NAMES if a[k] != b[k] and k not in ignore}
