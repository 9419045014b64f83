"""Building a run from its config: teacher, student, batch source, optimiser, validation data.

`build_run` returns `RunParts`; the loop (`training.loop`) and the post-hoc probes (`posthoc`) both start
from it.  The order of construction is fixed: each step that draws from torch's global RNG re-seeds it
first, so the same config builds the same models.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from zsq_probe.config import validate
from zsq_probe.data.datasets import get_spec, load_dataset, make_loader
from zsq_probe.errors import UserError
from zsq_probe.generators import QIMERA_DEFAULTS, build_generator, generator_image_shape
from zsq_probe.quantization.gi import GradientInundation
from zsq_probe.quantization.lars import LARS
from zsq_probe.quantization.quantizer import quantize_model, quantized_layers
from zsq_probe.teachers.loader import TeacherInfo, build_architecture, load_teacher
from zsq_probe.teachers.metadata import dataset_for_teacher, teacher_input_size
from zsq_probe.training.checkpoint import first_nonfinite_tensor
from zsq_probe.training.parts import RunParts
from zsq_probe.training.sources import DistilledSource, GeneratorSource, RealDataSource

if TYPE_CHECKING:
    from torch.utils.data import DataLoader, Dataset

    from zsq_probe.config import RunConfig
    from zsq_probe.data.datasets import DatasetSpec
    from zsq_probe.quantization.gi import GradientInundation
    from zsq_probe.quantization.quantizer import QuantConv2d, QuantLinear
    from zsq_probe.teachers.loader import TeacherInfo
    from zsq_probe.training.sources import BatchSource

log = logging.getLogger(__name__)


def resolve_device(name: str) -> torch.device:
    """The torch device `name` names; a UserError for CUDA on a machine without it."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return device


def module_fingerprint(model: nn.Module) -> str:
    """sha256 over a module's state dict (names, shapes, dtypes, bytes): identifies a custom teacher."""
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _custom_teacher(
    model: nn.Module, cfg: RunConfig, spec: DatasetSpec | None
) -> tuple[nn.Module, TeacherInfo, DatasetSpec]:

    if not isinstance(model, nn.Module):
        raise TypeError(f"teacher must be a torch.nn.Module, got {type(model).__name__}")
    if spec is None:
        raise UserError(
            "a teacher passed as a module needs its data spec: pass data_spec=DatasetSpec(...) or "
            "name a data set in the config (data=cifar10, ...)"
        )
    info = TeacherInfo(
        name=cfg.teacher,
        dataset=spec.name,
        num_classes=spec.num_classes,
        weights_path=None,
        weights_sha256=module_fingerprint(model),
        published_top1=None,
        source="module",
        module_class=type(model).__name__,
    )
    return copy.deepcopy(model), info, spec


def build_run(
    cfg: RunConfig, teacher: nn.Module | None = None, data_spec: DatasetSpec | None = None, for_training: bool = True
) -> RunParts:
    """Everything a run needs.  `teacher`: a module to use instead of loading `cfg.teacher` (which then only
    labels the run); `data_spec`: its DatasetSpec when `cfg.dataset.name` names none.  `for_training=False` builds
    what probes need (no student optimiser, no validation data).

    The steps run in a fixed order (each one that draws from torch's global RNG re-seeds it first): the data
    spec, the teacher, the student, validation data, the batch source, the optimiser."""
    validate(cfg)
    device = resolve_device(cfg.device)
    spec, size = data_spec_for(cfg, teacher, data_spec)
    teacher, teacher_info, spec = build_teacher(cfg, teacher, spec, size, device)
    student, student_train_mode = build_student(cfg, teacher, teacher_info, device)
    param_names = [n for n, p in student.named_parameters() if p.requires_grad]
    params = [p for p in student.parameters() if p.requires_grad]
    layers = {} if cfg.quant.full_precision else quantized_layers(student)
    # the named data set when the spec is its own (real images: validation, KD training data); else None
    named = cfg.dataset.name if cfg.dataset.name is not None and spec.name == str(cfg.dataset.name).lower() else None
    val_loader = None
    if for_training and named is not None:
        val_loader = build_val_loader(cfg, named, size, device)
    elif for_training and spec.val is not None:  # data of your own (DatasetSpec.val)
        val_loader = validation_loader(cfg, spec.val, device)
    source = build_source(cfg, teacher, spec, named, size, device)
    optimizer = build_optimizer(cfg, params, layers) if for_training else None
    return RunParts(
        cfg,
        device,
        teacher,
        teacher_info,
        spec,
        student,
        student_train_mode,
        param_names,
        params,
        layers,
        source,
        optimizer,
        val_loader,
    )


def data_spec_for(
    cfg: RunConfig, teacher: nn.Module | None, data_spec: DatasetSpec | None
) -> tuple[DatasetSpec | None, int | None]:
    """(the data spec, the teacher's input size): `data_spec`, else that of `cfg.dataset.name` (None when the
    config names no data set: the teacher's own, once loaded).  The size is pytorchcv's img_size (299 for
    InceptionV3, else the data set's own; None for a teacher module).  A named teacher must match the data set."""
    if teacher is None:
        expected = dataset_for_teacher(cfg.teacher)
        if cfg.dataset.name and get_spec(cfg.dataset.name).name != expected:
            raise UserError(
                f"teacher {cfg.teacher} was trained on {expected}, not on --data {cfg.dataset.name}: drop "
                f"--data or pick a teacher for {cfg.dataset.name}"
            )
    norm = cfg.dataset.normalization  # real images only (validation, KD data): zsq_probe.data.datasets
    size = teacher_input_size(cfg.teacher) if teacher is None else None
    if data_spec is not None:
        return data_spec, size
    return (get_spec(cfg.dataset.name, norm, size) if cfg.dataset.name else None), size


def build_teacher(
    cfg: RunConfig, teacher: nn.Module | None, spec: DatasetSpec | None, size: int | None, device: torch.device
) -> tuple[nn.Module, TeacherInfo, DatasetSpec]:
    """(teacher, its info, the data spec): `cfg.teacher` loaded (global RNG seeded with the run's seed first)
    or a copy of the module `teacher`; frozen, in eval mode, on `device`.  A teacher with inf/NaN weights is
    refused before any run folder is written (it would poison every batch)."""
    torch.manual_seed(cfg.seed)
    if teacher is None:
        teacher, teacher_info = load_teacher(
            cfg.teacher, weights=cfg.weights, root=cfg.weights_root, download=cfg.download
        )
        spec = spec or get_spec(teacher_info.dataset, cfg.dataset.normalization, size)
    else:
        teacher, teacher_info, spec = _custom_teacher(teacher, cfg, spec)
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    bad = first_nonfinite_tensor(teacher.state_dict())
    if bad:
        raise UserError(f"teacher {cfg.teacher}: weight {bad} holds inf/NaN values (a damaged weights file?)")
    return teacher, teacher_info, spec


def build_student(
    cfg: RunConfig, teacher: nn.Module, teacher_info: TeacherInfo, device: torch.device
) -> tuple[nn.Module, bool]:
    """(student, whether it trains in train mode): a quantised (or full-precision) copy of the teacher, or of a
    freshly initialised architecture (`student_init=random`, the KD baseline: global RNG re-seeded first)."""
    if cfg.quant.student_init == "random":
        torch.manual_seed(cfg.seed)
        base = reinitialized(teacher) if teacher_info.source == "module" else build_architecture(cfg.teacher)
    else:
        base = teacher
    student = (
        base
        if cfg.quant.full_precision
        else quantize_model(base, cfg.quant.w_bits, cfg.quant.a_bits, range_ema=cfg.quant.range_ema)
    )
    if student is teacher:
        student = copy.deepcopy(teacher)
    student = student.to(device)
    for p in student.parameters():
        p.requires_grad_(True)
    student_train_mode = cfg.quant.student_init == "random"
    student.train(student_train_mode)
    return student, student_train_mode


def reinitialized(model: nn.Module) -> nn.Module:
    """A copy of `model` with every layer's parameters and buffers drawn afresh (`reset_parameters`, which resets
    BatchNorm's running statistics too): the KD baseline's random student for a teacher module of your own."""
    fresh = copy.deepcopy(model)
    for module in fresh.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh


def build_val_loader(cfg: RunConfig, name: str, size: int | None, device: torch.device) -> DataLoader[Any] | None:
    """The test split of the data set `name` for validation.

    Args:
        cfg: The run's config (data root, download, normalisation, loader settings).
        name: The data set's name.
        size: The teacher's input size (ImageNet), or None for the data set's own.
        device: Where the run trains (pinned memory on CUDA).

    Returns:
        The validation loader, or None (logged) when the split is not there.

    Raises:
        UserError: The split is not there and the run trains on real data or names a data root.
    """
    try:
        val = load_dataset(
            name,
            cfg.dataset.root,
            split="test",
            download=cfg.download,
            normalization=cfg.dataset.normalization,
            image_size=size,
        )
        return validation_loader(cfg, val, device)
    except UserError as e:
        if cfg.dataset.source == "real" or cfg.dataset.root is not None:  # a --data-root given is meant to be used
            raise
        log.info(f"note: no validation ({e})")
        return None


def validation_loader(cfg: RunConfig, dataset: Dataset[Any], device: torch.device) -> DataLoader[Any]:
    """The validation loader over `dataset`: in order, `val_batch_size` images a batch.

    Args:
        cfg: The run's config (batch size, seed, workers, pinned memory).
        dataset: The validation images, (image, label) items.
        device: Where the run trains (pinned memory on CUDA).

    Returns:
        The loader.
    """
    return make_loader(
        dataset,
        cfg.val_batch_size,
        shuffle=False,
        seed=cfg.seed,
        num_workers=cfg.dataset.num_workers,
        persistent_workers=True,
        pin_memory=cfg.dataset.pin_memory and device.type == "cuda",
    )


def build_source(
    cfg: RunConfig, teacher: nn.Module, spec: DatasetSpec, named: str | None, size: int | None, device: torch.device
) -> BatchSource:
    """Where the student's batches come from (`cfg.dataset.source`): the training split of the named data set
    `named` (KD baseline), a generator (built after re-seeding the global RNG), or ZeroQ's distilled set."""
    if cfg.dataset.source == "real" and named is None:
        if spec.train is None:
            raise UserError(
                f"source=real needs real training images: a named data set (data=...) or DatasetSpec(train=...); "
                f"the spec {spec.name!r} carries none"
            )
        return RealDataSource(spec.train, teacher, cfg, device)
    if cfg.dataset.source == "real" and named is not None:
        train_set = load_dataset(
            named,
            cfg.dataset.root,
            split="train",
            download=cfg.download,
            normalization=cfg.dataset.normalization,
            image_size=size,
        )
        return RealDataSource(train_set, teacher, cfg, device)
    if cfg.dataset.source == "generator":
        torch.manual_seed(cfg.seed)
        generator = build_generator(
            cfg.synthesis.name,
            spec.num_classes,
            generator_image_shape(cfg.synthesis.name, spec.image_shape),
            teacher=teacher,
            **generator_options(cfg),
        ).to(device)
        return GeneratorSource(generator, teacher, cfg, device, image_shape=spec.image_shape)
    return DistilledSource(teacher, spec, cfg, device)


def generator_options(cfg: RunConfig) -> dict[str, object]:
    """Generator keyword arguments the config implies (Qimera's official per-model settings, ARC's model)."""
    if cfg.synthesis.name == "qimera":
        options: dict[str, object] = {}
        if cfg.quant.w_bits in QIMERA_DEFAULTS.get(cfg.teacher, {}):
            options.update(preset=cfg.teacher, preset_bits=cfg.quant.w_bits)  # the official per-model settings
        for key, value in (
            ("mix_prob", cfg.synthesis.qimera_mix_prob),
            ("mix_k", cfg.synthesis.qimera_mix_k),
            ("embedding_init", cfg.synthesis.qimera_embedding_init),
        ):
            if value is not None:
                options[key] = value
        return options
    if cfg.synthesis.name == "arc":
        return {"model_name": cfg.teacher}
    return {}


def build_optimizer(
    cfg: RunConfig, params: list[nn.Parameter], quant_layers: dict[str, QuantConv2d | QuantLinear]
) -> torch.optim.Optimizer | GradientInundation:
    """The student's optimiser; wrapped in gradient inundation (paper §4.2) when cfg.inundation.enabled."""
    base: torch.optim.Optimizer
    # Adam's / RMSprop's denominator epsilon: torch's default unless the config sets one
    extra: dict[str, Any] = {} if cfg.optim.eps is None else {"eps": cfg.optim.eps}
    if cfg.optim.name == "sgd":
        base = torch.optim.SGD(
            params,
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            nesterov=cfg.optim.nesterov,
            weight_decay=cfg.optim.weight_decay,
        )
    elif cfg.optim.name == "adam":
        # the reference passes eps=1e-5 and default betas (GDFQ/trainer.py:65-71, GDFQ_AIT/trainer.py:94-100);
        # eps=None keeps torch's default, the Tab. 3 presets set the reference's (zsq_probe/presets.py)
        base = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, **extra)
    elif cfg.optim.name == "rmsprop":
        # the reference: RMSprop(eps=1.0, alpha=momentum=0.9, momentum=0.9) (GDFQ/trainer.py:56-64,
        # GDFQ_AIT/trainer.py:85-93); the momentum and alpha are the config's, as is eps when set
        base = torch.optim.RMSprop(
            params,
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
            momentum=cfg.optim.momentum,
            alpha=cfg.optim.rmsprop_alpha,
            **extra,
        )
    else:  # lars (You, Gitman, Ginsburg 2017; zsq_probe.quantization.lars)
        base = LARS(
            params,
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
            trust_coef=cfg.optim.lars_trust_coef,
        )
    if not cfg.inundation.enabled:
        return base

    return GradientInundation(
        base, quant_layers, p=cfg.inundation.p, kappa_cap_warmup=cfg.inundation.warmup_cap, rule=cfg.inundation.rule
    )
