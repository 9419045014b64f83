"""`RunSummary`: what `zsq_probe.runs.train` returns, the fields of the run's summary.json as a frozen dataclass."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class RunSummary:
    """A finished (or stopped) run, as RUN/summary.json records it.

    Attributes:
        run: The run folder's name.
        method: The training method (`gdfq`, `ait`, `kd`, ...).
        preset: The preset the config came from.
        teacher: The teacher's name (a pytorchcv model, `digits`, or the name given to a module of your own).
        teacher_class: The teacher module's class name.
        data: The data set's name (or that of a DatasetSpec of your own).
        w_bits: Weight bits of the student (None for a full-precision student).
        a_bits: Activation bits of the student (None for a full-precision student).
        full_precision_student: Whether the student is not quantized (the real-data KD baseline).
        epochs_completed: Epochs trained so far.
        seed: The run seed.
        final_val_top1: Validation top-1 (a fraction) after the last epoch validated; None without validation.
        best_val_top1: The best validation top-1 of any epoch; None without validation.
        teacher_top1: The teacher's validation top-1 (the run's ceiling); None without validation.
        skipped_steps: Updates left out over the whole run (`on_nonfinite=skip`).
        health: `{"ok": bool, "tripped": {check: [epochs]}}` from the health checks (zsq_probe.training.health).
        extra: Fields of summary.json this version does not name (kept, so `to_dict` gives the file back).
    """

    run: str
    method: str
    preset: str
    teacher: str
    teacher_class: str | None
    data: str | None
    w_bits: int | None
    a_bits: int | None
    full_precision_student: bool
    epochs_completed: int
    seed: int
    final_val_top1: float | None
    best_val_top1: float | None
    teacher_top1: float | None
    skipped_steps: int = 0
    health: Mapping[str, Any] = field(default_factory=dict)
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> RunSummary:
        """The summary from summary.json's mapping (fields it lacks raise TypeError; unknown ones go to `extra`).

        Args:
            doc: The mapping, as `Trainer.fit` returns it or summary.json holds it.

        Returns:
            The summary.
        """
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in doc.items() if k in names}
        return cls(**known, extra={k: v for k, v in doc.items() if k not in names})

    def to_dict(self) -> dict[str, Any]:
        """The summary as summary.json holds it (JSON-ready).

        Returns:
            A new dict: the named fields in order, then `extra`'s.
        """
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        out["health"] = dict(self.health)
        return {**out, **self.extra}
