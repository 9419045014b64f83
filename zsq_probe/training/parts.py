"""`RunParts`: what a run is built from (`zsq_probe.training.build.build_run` makes it; the loop, the checkpoints
and the post-hoc probes read it), in a module of its own so the modules that only read it need not import the
builder."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    import torch.nn as nn
    from torch.utils.data import DataLoader

    from zsq_probe.config import RunConfig
    from zsq_probe.data.datasets import DatasetSpec
    from zsq_probe.quantization.gi import GradientInundation
    from zsq_probe.quantization.quantizer import QuantConv2d, QuantLinear
    from zsq_probe.teachers.loader import TeacherInfo
    from zsq_probe.training.sources import BatchSource


@dataclass
class RunParts:
    """Everything a run is built from (`build_run`): the models, the batch source, the optimiser, validation."""

    cfg: RunConfig
    device: torch.device
    teacher: nn.Module
    teacher_info: TeacherInfo
    spec: DatasetSpec
    student: nn.Module
    student_train_mode: bool  # ZQ students keep BN statistics frozen (eval); a random KD student learns them
    param_names: list[str]
    params: list[nn.Parameter]
    quant_layers: dict[str, QuantConv2d | QuantLinear]  # {} for a full-precision student
    source: BatchSource  # GeneratorSource | RealDataSource | DistilledSource
    # the student's (GI-wrapped when cfg.inundation.enabled); None when built for probing only
    optimizer: torch.optim.Optimizer | GradientInundation | None
    val_loader: DataLoader[Any] | None
