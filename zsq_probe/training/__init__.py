"""Training: build a run from its config (`build`), feed it batches (`sources`), loop (`loop`), checkpoint
(`checkpoint`).  Starting or resuming a run in a folder, with its probes, is `zsq_probe.runs.train`."""

from zsq_probe.training.build import build_run
from zsq_probe.training.loop import METRIC_TERMS, NonFiniteError, Trainer, TrainingInterrupted
from zsq_probe.training.parts import RunParts
from zsq_probe.training.schedule import scheduled

__all__ = [
    "METRIC_TERMS",
    "NonFiniteError",
    "RunParts",
    "Trainer",
    "TrainingInterrupted",
    "build_run",
    "scheduled",
]
