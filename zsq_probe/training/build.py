"""Building a run from its config: teacher, student, batch source, optimiser, validation data.

`build_run` returns `RunParts`; the loop (`training.loop`) and the post-hoc probes (`posthoc`) both start
from it.  The order of construction is fixed: each step that draws from torch's global RNG re-seeds it
first, so the same config builds the same models.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn

from zsq_probe.errors import UserError

log = logging.getLogger(__name__)


@dataclass
class RunParts:
    cfg: object
    device: torch.device
    teacher: nn.Module
    teacher_info: object  # zsq_probe.teachers.loader.TeacherInfo
    spec: object  # zsq_probe.data.datasets.DatasetSpec
    student: nn.Module
    student_train_mode: bool  # ZQ students keep BN statistics frozen (eval); a random KD student learns them
    param_names: list[str]
    params: list[nn.Parameter]
    quant_layers: dict
    source: object  # a training.sources.BatchSource: GeneratorSource | RealDataSource | DistilledSource
    optimizer: object | None  # the student's (GI-wrapped when cfg.inundation.enabled); None when built for probing only
    val_loader: object | None


def resolve_device(name: str) -> torch.device:
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return device


def module_fingerprint(model: nn.Module) -> str:
    """sha256 over a module's state dict (names, shapes, dtypes, bytes): identifies a custom teacher."""
    import hashlib

    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        h.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _custom_teacher(model: nn.Module, cfg, spec):
    from zsq_probe.teachers.loader import TeacherInfo

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
    )
    return copy.deepcopy(model), info


def build_run(cfg, teacher: nn.Module | None = None, data_spec=None, for_training: bool = True) -> RunParts:
    """Everything a run needs.  `teacher`: a module to use instead of loading `cfg.teacher` (which then only
    labels the run); `data_spec`: its DatasetSpec when `cfg.dataset.name` names none.  `for_training=False` builds
    what probes need (no student optimiser, no validation data)."""
    from zsq_probe.config import validate
    from zsq_probe.data.datasets import dataset_for_teacher, get_spec, load_dataset, make_loader, teacher_input_size
    from zsq_probe.quantization.quantizer import quantize_model, quantized_layers
    from zsq_probe.teachers.loader import build_architecture, load_teacher
    from zsq_probe.training.sources import DistilledSource, GeneratorSource, RealDataSource

    validate(cfg)
    device = resolve_device(cfg.device)
    if teacher is None:
        expected = dataset_for_teacher(cfg.teacher)
        if cfg.dataset.name and get_spec(cfg.dataset.name).name != expected:
            raise UserError(
                f"teacher {cfg.teacher} was trained on {expected}, not on --data {cfg.dataset.name}: drop "
                f"--data or pick a teacher for {cfg.dataset.name}"
            )
    norm = cfg.dataset.normalization  # real images only (validation, KD data): zsq_probe.data.datasets
    # the input size the teacher expects (pytorchcv's img_size: 299 for InceptionV3, else the data set's own)
    size = teacher_input_size(cfg.teacher) if teacher is None else None
    spec = (
        data_spec if data_spec is not None else (get_spec(cfg.dataset.name, norm, size) if cfg.dataset.name else None)
    )
    torch.manual_seed(cfg.seed)
    if teacher is None:
        teacher, teacher_info = load_teacher(
            cfg.teacher, weights=cfg.weights, root=cfg.weights_root, download=cfg.download
        )
        spec = spec or get_spec(teacher_info.dataset, norm, size)
    else:
        teacher, teacher_info = _custom_teacher(teacher, cfg, spec)
    teacher = teacher.to(device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    from zsq_probe.training.checkpoint import first_nonfinite_tensor

    bad = first_nonfinite_tensor(teacher.state_dict())
    if bad:  # checked before any run folder is written: a NaN teacher would poison every batch
        raise UserError(f"teacher {cfg.teacher}: weight {bad} holds inf/NaN values (a damaged weights file?)")

    if cfg.quant.student_init == "random":
        if teacher_info.source == "module":
            raise UserError(
                "student_init=random builds the teacher's architecture by its pytorchcv name; with a "
                "teacher module, use student_init=teacher"
            )
        torch.manual_seed(cfg.seed)
        base = build_architecture(cfg.teacher)
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
    param_names = [n for n, p in student.named_parameters() if p.requires_grad]
    params = [p for p in student.parameters() if p.requires_grad]
    layers = {} if cfg.quant.full_precision else quantized_layers(student)

    # real data: validation whenever the test split is there, training data for the KD baseline
    val_loader = None
    known_data = cfg.dataset.name is not None and spec is not None and spec.name == str(cfg.dataset.name).lower()
    if for_training and known_data:
        try:
            val = load_dataset(
                cfg.dataset.name,
                cfg.dataset.root,
                split="test",
                download=cfg.download,
                normalization=norm,
                image_size=size,
            )
            val_loader = make_loader(
                val,
                cfg.val_batch_size,
                shuffle=False,
                seed=cfg.seed,
                num_workers=cfg.dataset.num_workers,
                persistent_workers=True,
                pin_memory=cfg.dataset.pin_memory and device.type == "cuda",
            )
        except UserError as e:
            if cfg.dataset.source == "real" or cfg.dataset.root is not None:  # a --data-root given is meant to be used
                raise
            log.info(f"note: no validation ({e})")

    if cfg.dataset.source == "real":
        if not known_data:
            raise UserError(f"source=real needs a named data set (data=...), not a custom spec {spec.name!r}")
        train_set = load_dataset(
            cfg.dataset.name,
            cfg.dataset.root,
            split="train",
            download=cfg.download,
            normalization=norm,
            image_size=size,
        )
        source = RealDataSource(train_set, teacher, cfg, device)
    elif cfg.dataset.source == "generator":
        from zsq_probe.generators import build_generator, generator_image_shape

        torch.manual_seed(cfg.seed)
        generator = build_generator(
            cfg.synthesis.name,
            spec.num_classes,
            generator_image_shape(cfg.synthesis.name, spec.image_shape),
            teacher=teacher,
            **generator_options(cfg),
        ).to(device)
        source = GeneratorSource(generator, teacher, cfg, device, image_shape=spec.image_shape)
    else:
        source = DistilledSource(teacher, spec, cfg, device)

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


def generator_options(cfg) -> dict:
    """Generator keyword arguments the config implies (Qimera's official per-model settings, ARC's model)."""
    if cfg.synthesis.name == "qimera":
        from zsq_probe.generators import QIMERA_DEFAULTS

        options = {}
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


def build_optimizer(cfg, params, quant_layers):
    """The student's optimiser; wrapped in gradient inundation (paper §4.2) when cfg.inundation.enabled."""
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
        extra = {} if cfg.optim.eps is None else {"eps": cfg.optim.eps}
        base = torch.optim.Adam(params, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, **extra)
    elif cfg.optim.name == "rmsprop":
        # the reference: RMSprop(eps=1.0, alpha=momentum=0.9, momentum=0.9) (GDFQ/trainer.py:56-64,
        # GDFQ_AIT/trainer.py:85-93); the momentum and alpha are the config's, as is eps when set
        extra = {} if cfg.optim.eps is None else {"eps": cfg.optim.eps}
        base = torch.optim.RMSprop(
            params,
            lr=cfg.optim.lr,
            weight_decay=cfg.optim.weight_decay,
            momentum=cfg.optim.momentum,
            alpha=cfg.optim.rmsprop_alpha,
            **extra,
        )
    else:  # lars (You, Gitman, Ginsburg 2017; zsq_probe.quantization.lars)
        from zsq_probe.quantization.lars import LARS

        base = LARS(
            params,
            lr=cfg.optim.lr,
            momentum=cfg.optim.momentum,
            weight_decay=cfg.optim.weight_decay,
            trust_coef=cfg.optim.lars_trust_coef,
        )
    if not cfg.inundation.enabled:
        return base
    from zsq_probe.quantization.gi import GradientInundation

    return GradientInundation(
        base, quant_layers, p=cfg.inundation.p, kappa_cap_warmup=cfg.inundation.warmup_cap, rule=cfg.inundation.rule
    )
