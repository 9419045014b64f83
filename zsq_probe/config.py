"""Run configuration: one dataclass, named presets, data-set defaults, JSON in/out and `--set key=value`.

Resolution order (later wins): dataclass defaults -> data-set scale (paper §5.1 hyper-parameters for
CIFAR / ImageNet, a small scale for the embedded digits default) -> preset (the paper's table rows) ->
command-line flags -> `--set` overrides.  `validate` turns every bad value into a one-line UserError.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import typing
from dataclasses import dataclass, field

from zsq_probe.errors import UserError

CONFIG_SCHEMA_VERSION = 1

# The built-in probes (zsq_probe.probes; probes of your own join them with register_probe).
PROBE_NAMES = ("cosine", "inter_epoch", "crossings", "hessian", "slice")


@dataclass
class RunConfig:
    # what is trained
    preset: str = "gdfq"
    method: str = "gdfq"  # label written into every parquet row ("gdfq", "ait", "kd", ...)
    teacher: str = "digits"
    weights: str | None = None  # explicit teacher weights file; else pytorchcv's cache
    weights_root: str | None = None  # pytorchcv cache folder (default ~/.torch/models)
    download: bool = False
    data: str | None = None  # data set name; derived from the teacher when None
    data_root: str | None = None
    seed: int = 0
    device: str = "cpu"

    # quantised student (DESIGN.md "Quantisation"); full_precision=True for the KD baseline student
    w_bits: int = 4
    a_bits: int = 4
    full_precision_student: bool = False
    student_init: str = "teacher"  # "teacher" (ZQ: quantised copy) or "random" (KD baseline, paper §3.1)

    # schedule
    epochs: int = 400
    iters_per_epoch: int = 200  # 0 = one pass over the real training set (KD baseline)
    batch_size: int = 200
    warmup_epochs: int = 4  # generator-only epochs: the student does not step (GDFQ)
    act_range_epochs: int = 4  # activation ranges follow the EMA in these epochs, frozen after
    lr_milestones: list[int] = field(default_factory=lambda: [100, 200, 300])
    lr_gamma: float = 0.1

    # data source for the student
    source: str = "generator"  # "generator" (ZQ), "real" (KD baseline), "zeroq" (fixed distilled set)

    # student optimiser
    optimizer: str = "sgd"  # sgd (Nesterov) | adam | rmsprop
    lr: float = 1e-4
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 1e-4

    # loss = kd_weight * KL(s/T || t/T) * T^2 + ce_weight * CE(s, y)   (DESIGN.md; KLDiv reduction='mean')
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    temperature: float = 20.0
    label_smoothing: float = 0.0

    # generator (GDFQ: CE + bns_weight * BNS, Adam)
    generator: str = "gdfq"  # gdfq | qimera | arc | none
    gen_lr: float = 1e-3
    gen_beta1: float = 0.5
    gen_beta2: float = 0.999
    bns_weight: float = 0.1
    # Qimera: None = the official scripts' value for the teacher and bits (generators.QIMERA_DEFAULTS),
    # else mix probability 0.4, K = 2, embedding from the teacher's last layer (DESIGN.md)
    qimera_mix_prob: float | None = None
    qimera_mix_k: int | None = None
    qimera_embedding_init: str | None = None  # teacher | random
    zeroq_images: int = 0  # size of the ZeroQ distilled set (source="zeroq"); 0 = batch_size * 10
    zeroq_iterations: int = 500

    # gradient inundation (paper §4.2)
    gi: bool = False
    gi_p: float = 1e-3
    gi_p_milestones: list[int] = field(default_factory=lambda: [100, 200, 300])
    gi_p_gamma: float = 0.1
    gi_warmup_cap: float = 128.0

    # validation and checkpoints
    val_every: int = 1
    val_batch_size: int = 200
    val_max_batches: int = 0  # 0 = the whole test split
    checkpoint_every: int = 1  # epochs; the last epoch is always checkpointed
    keep_checkpoints: bool = True  # keep every checkpoint (post-hoc probes need them)
    on_nonfinite: str = "stop"  # stop | skip

    # probes (issue: probes); names of probes switched on, cadence and probe-batch size
    probes: list[str] = field(default_factory=list)
    probe_every_steps: int = 10  # cosine / inter-epoch gradients every N student steps
    hessian_every_epochs: int = 20  # hessian and slice probes every N epochs (and at the last epoch): 20 points in 400
    hessian_batch_size: int = 200  # the probe batch (fixed size, drawn from the probe's own stream)
    # sized so the whole probe suite at this cadence stays near 10 % of training (benchmarks/probe_overhead.py)
    hessian_vectors: int = 10  # Hutchinson probe vectors
    hessian_top_k: int = 3
    slq_runs: int = 2
    slq_steps: int = 16
    slice_points: int = 21
    slice_directions: list[str] = field(default_factory=lambda: ["eigenvector"])  # + random, filter
    slice_scalings: list[str] = field(default_factory=lambda: ["gradient"])  # + unit
    probe_scopes: list[str] = field(default_factory=lambda: ["model"])  # + block, layer (cosine, trace)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


FIELD_TYPES = typing.get_type_hints(RunConfig)
FIELD_NAMES = [f.name for f in dataclasses.fields(RunConfig)]

# Paper §5.1 and DESIGN.md: hyper-parameters per data-set family.  Digits is the embedded default:
# same recipe, scaled down to run on 2 CPU cores in minutes.
DATASET_SCALES: dict[str, dict] = {
    "cifar": dict(epochs=400, iters_per_epoch=200, batch_size=200, warmup_epochs=4, act_range_epochs=4,
                  lr_milestones=[100, 200, 300], gi_p=1e-3, gi_p_milestones=[100, 200, 300],
                  lr=1e-4, val_batch_size=200, hessian_batch_size=200),
    "imagenet": dict(epochs=400, iters_per_epoch=200, batch_size=16, warmup_epochs=50, act_range_epochs=4,
                     lr_milestones=[100, 200, 300], gi_p=1e-4, gi_p_milestones=[100, 200, 300],
                     lr=1e-4, val_batch_size=100, hessian_batch_size=64),
    "digits": dict(epochs=12, iters_per_epoch=25, batch_size=64, warmup_epochs=2, act_range_epochs=2,
                   lr_milestones=[6, 9], gi_p=1e-3, gi_p_milestones=[6, 9], lr=1e-3,
                   val_batch_size=300, hessian_batch_size=200, hessian_every_epochs=3, probe_every_steps=5,
                   hessian_vectors=8, slq_runs=1, slq_steps=16, hessian_top_k=3, w_bits=3, a_bits=3),
}


def dataset_family(data: str) -> str:
    if data.startswith("cifar"):
        return "cifar"
    if data == "digits":
        return "digits"
    return "imagenet"


# The paper's rows (Tab. 2 / 3 / 1).  `lr_scale` multiplies the data-set learning rate.
PRESETS: dict[str, dict] = {
    "gdfq": dict(method="gdfq", kd_weight=1.0, ce_weight=1.0, gi=False,
                 help="GDFQ: CE + KL, SGD-Nesterov (Tab. 2 baseline)"),
    "kl-only": dict(method="kl-only", kd_weight=1.0, ce_weight=0.0, gi=False, weight_decay=0.0,
                    help="KL-only (paper §4.1, Tab. 2)"),
    "ait": dict(method="ait", kd_weight=1.0, ce_weight=0.0, gi=True, weight_decay=0.0,
                help="AIT = KL-only + gradient inundation (paper §4)"),
    "baseline+gi": dict(method="baseline+gi", kd_weight=1.0, ce_weight=1.0, gi=True, weight_decay=0.0,
                        help="GDFQ loss (CE + KL) + GI (Tab. 2)"),
    "ce-only+gi": dict(method="ce-only+gi", kd_weight=0.0, ce_weight=1.0, gi=True, weight_decay=0.0,
                       help="CE-only + GI (Tab. 2)"),
    "ce-only": dict(method="ce-only", kd_weight=0.0, ce_weight=1.0, gi=False, help="CE-only (Tab. 2, Tab. 9)"),
    "kl-only-high-lr": dict(method="kl-only-high-lr", kd_weight=1.0, ce_weight=0.0, gi=False, weight_decay=0.0,
                            lr_scale=100.0, help="KL-only with 100x learning rate (Tab. 2, Fig. 4)"),
    "ait-adam": dict(method="ait-adam", kd_weight=1.0, ce_weight=0.0, gi=True, optimizer="adam", weight_decay=0.0,
                     help="AIT with GI on Adam (Tab. 3)"),
    "ait-rmsprop": dict(method="ait-rmsprop", kd_weight=1.0, ce_weight=0.0, gi=True, optimizer="rmsprop",
                        weight_decay=0.0, help="AIT with GI on RMSProp (Tab. 3)"),
    "gdfq-adam": dict(method="gdfq-adam", kd_weight=1.0, ce_weight=1.0, gi=False, optimizer="adam",
                      help="GDFQ loss with Adam (Tab. 3)"),
    "gdfq-rmsprop": dict(method="gdfq-rmsprop", kd_weight=1.0, ce_weight=1.0, gi=False, optimizer="rmsprop",
                         help="GDFQ loss with RMSProp (Tab. 3)"),
    "kd": dict(method="kd", kd_weight=1.0, ce_weight=1.0, gi=False, source="real", generator="none",
               full_precision_student=True, student_init="random", warmup_epochs=0, act_range_epochs=0,
               weight_decay=5e-4, lr_scale=None, kd_lr=0.05, iters_per_epoch=0,
               help="KD baseline (paper §3.1): real data, random FP student of the teacher's architecture, CE + KL"),
    "qimera": dict(method="qimera", generator="qimera", kd_weight=1.0, ce_weight=1.0, gi=False,
                   help="Qimera generator (superposed embeddings), GDFQ loss (Tab. 1)"),
    "qimera+ait": dict(method="qimera+ait", generator="qimera", kd_weight=1.0, ce_weight=0.0, gi=True,
                       weight_decay=0.0, help="Qimera + AIT (Tab. 1)"),
    "arc": dict(method="arc", generator="arc", kd_weight=1.0, ce_weight=1.0, gi=False,
                help="ARC (AutoReCon) searched generator, GDFQ loss (Tab. 1)"),
    "arc+ait": dict(method="arc+ait", generator="arc", kd_weight=1.0, ce_weight=0.0, gi=True, weight_decay=0.0,
                    help="ARC + AIT (Tab. 1)"),
    "zeroq": dict(method="zeroq", generator="none", source="zeroq", epochs=0, gi=False,
                  help="ZeroQ: distilled data calibrates activation ranges, no fine-tuning (Tab. 1)"),
}

_PRESET_META = {"help", "lr_scale", "kd_lr"}
PAPER_LR = 1e-4  # the student learning rate AIT uses everywhere (paper §5.1)


def preset_overrides(name: str, data: str) -> dict:
    """Field overrides of a preset for a data set (meta keys resolved)."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}{_close(name, PRESETS)}; `zsq-probe presets` lists them")
    spec = dict(PRESETS[name])
    spec.pop("help", None)
    lr_scale = spec.pop("lr_scale", None)
    kd_lr = spec.pop("kd_lr", None)
    family = dataset_family(data)
    lr = DATASET_SCALES[family]["lr"]
    if name in ("gdfq", "gdfq-adam", "gdfq-rmsprop") and family == "imagenet":
        lr = 1e-6  # GDFQ's ImageNet learning rate (DESIGN.md); AIT uses 1e-4 everywhere
    if kd_lr is not None:
        lr = kd_lr  # real-data self-distillation trains a randomly initialised student from scratch
    if lr_scale:
        lr = PAPER_LR * lr_scale  # "x100 lr" is relative to the paper's 1e-4 on every data set
    spec["lr"] = lr
    if name == "kd" and family == "digits":
        spec["lr_milestones"] = [8, 11]
    return spec


def resolve_config(preset: str, teacher: str = "digits", data: str | None = None,
                   flags: dict | None = None, overrides: list[str] | None = None) -> RunConfig:
    """Build the resolved config: defaults -> data-set scale -> preset -> flags -> --set overrides."""
    from zsq_probe.data import dataset_for_teacher

    data = data or dataset_for_teacher(teacher)
    values: dict = {}
    values.update(DATASET_SCALES[dataset_family(data)])
    values.update(preset_overrides(preset, data))
    values.update({k: v for k, v in (flags or {}).items() if v is not None})
    values.update(dict(parse_assignment(a) for a in (overrides or [])))
    values.update(preset=preset, teacher=values.get("teacher", teacher), data=values.get("data") or data)
    cfg = RunConfig(**values)
    validate(cfg)
    return cfg


def parse_assignment(text: str) -> tuple[str, object]:
    """`key=value` -> (key, typed value) using the RunConfig field type."""
    if "=" not in text:
        raise UserError(f"--set expects key=value, got {text!r}")
    key, raw = text.split("=", 1)
    key = key.strip()
    if key not in FIELD_TYPES:
        raise UserError(f"--set: unknown config key {key!r}{_close(key, FIELD_NAMES)}")
    return key, coerce(key, raw.strip())


def coerce(key: str, raw):
    """Convert a string (or JSON value) to the type of field `key`; one-line UserError when impossible."""
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
            return int(raw) if not isinstance(raw, str) else int(raw, 10)
        if base is float:
            if isinstance(raw, bool):
                raise ValueError
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        name = getattr(base, "__name__", str(base))
        raise UserError(f"config key {key!r} expects {name}, got {raw!r}") from None


def validate(cfg: RunConfig) -> None:
    def bad(msg):
        raise UserError(f"invalid config: {msg}")

    for k in ("w_bits", "a_bits"):
        if not 2 <= getattr(cfg, k) <= 8:
            bad(f"{k}={getattr(cfg, k)} (bits must be 2..8)")
    if cfg.optimizer not in ("sgd", "adam", "rmsprop"):
        bad(f"optimizer={cfg.optimizer!r} (sgd, adam or rmsprop)")
    if cfg.generator not in ("gdfq", "qimera", "arc", "none"):
        bad(f"generator={cfg.generator!r} (gdfq, qimera, arc or none)")
    if cfg.source not in ("generator", "real", "zeroq"):
        bad(f"source={cfg.source!r} (generator, real or zeroq)")
    if cfg.source == "generator" and cfg.generator == "none":
        bad("source=generator needs a generator (gdfq, qimera or arc)")
    if cfg.student_init not in ("teacher", "random"):
        bad(f"student_init={cfg.student_init!r} (teacher or random)")
    if cfg.on_nonfinite not in ("stop", "skip"):
        bad(f"on_nonfinite={cfg.on_nonfinite!r} (stop or skip)")
    if not 0.0 <= cfg.gi_p <= 1.0:
        bad(f"gi_p={cfg.gi_p} (a share in [0, 1])")
    if cfg.gi and cfg.full_precision_student:
        bad("gi=true needs a quantised student (full_precision_student=false)")
    for k in ("epochs", "iters_per_epoch", "warmup_epochs", "act_range_epochs", "val_max_batches"):
        if getattr(cfg, k) < 0:
            bad(f"{k}={getattr(cfg, k)} (must be >= 0)")
    for k in ("batch_size", "val_batch_size", "checkpoint_every", "val_every", "probe_every_steps",
              "hessian_every_epochs", "hessian_batch_size", "hessian_vectors", "slq_runs", "slq_steps",
              "slice_points"):
        if getattr(cfg, k) < 1:
            bad(f"{k}={getattr(cfg, k)} (must be >= 1)")
    for k in ("lr", "gen_lr", "temperature"):
        if not getattr(cfg, k) > 0:
            bad(f"{k}={getattr(cfg, k)} (must be > 0)")
    if cfg.kd_weight < 0 or cfg.ce_weight < 0 or (cfg.kd_weight == 0 and cfg.ce_weight == 0):
        bad(f"kd_weight={cfg.kd_weight}, ce_weight={cfg.ce_weight} (non-negative, not both zero)")
    if not 0.0 <= cfg.label_smoothing < 1.0:
        bad(f"label_smoothing={cfg.label_smoothing} (in [0, 1))")
    if cfg.qimera_mix_prob is not None and not 0.0 <= cfg.qimera_mix_prob <= 1.0:
        bad(f"qimera_mix_prob={cfg.qimera_mix_prob} (a probability)")
    if cfg.qimera_mix_k is not None and cfg.qimera_mix_k < 1:
        bad(f"qimera_mix_k={cfg.qimera_mix_k} (must be >= 1)")
    if cfg.qimera_embedding_init not in (None, "teacher", "random"):
        bad(f"qimera_embedding_init={cfg.qimera_embedding_init!r} (teacher or random)")
    for name in cfg.slice_directions:
        if name not in ("eigenvector", "random", "filter"):
            bad(f"slice direction {name!r} (eigenvector, random or filter)")
    for name in cfg.slice_scalings:
        if name not in ("gradient", "unit"):
            bad(f"slice scaling {name!r} (gradient or unit)")
    for name in cfg.probe_scopes:
        if name not in ("model", "block", "layer"):
            bad(f"probe scope {name!r} (model, block or layer)")
    from zsq_probe.probes import probe_names  # built-in and user-registered probes

    known = probe_names()
    for name in cfg.probes:
        if name not in known:
            bad(f"unknown probe {name!r}{_close(name, known)} (probes: {', '.join(known)})")


def config_from_dict(d: dict) -> RunConfig:
    """Rebuild a RunConfig from config.json (unknown keys are an error: a different schema)."""
    unknown = sorted(set(d) - set(FIELD_NAMES))
    if unknown:
        raise UserError(f"config has unknown keys {unknown} (written by another zsq-probe version?)")
    return RunConfig(**{k: coerce(k, v) if v is not None else None for k, v in d.items()})


def config_diff(old: RunConfig, new: RunConfig, ignore=("device",)) -> dict:
    a, b = old.to_dict(), new.to_dict()
    return {k: (a[k], b[k]) for k in FIELD_NAMES if a[k] != b[k] and k not in ignore}


def _close(name: str, choices) -> str:
    m = difflib.get_close_matches(name, list(choices), n=3)
    return f" (did you mean {', '.join(m)}?)" if m else ""
