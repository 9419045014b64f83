"""zsq-probe: loss-surface diagnostics for zero-shot quantization.

The Python API (docs/python-api.md; docs/architecture.md)::

    import zsq_probe as zp

    cfg = zp.resolve_config("ait", teacher="digits", flags={"epochs": 4, "probes": ["cosine", "hessian"]})
    summary = zp.train(cfg, "runs/ait")                 # the probes cfg names run online
    cosine = zp.read_table("runs/ait", "cosine")        # a pandas DataFrame
    zp.probe_run("runs/ait", "slice")                   # a probe measured post hoc from checkpoints

Names are imported on first use, so `import zsq_probe` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from zsq_probe.version import __version__

if TYPE_CHECKING:  # what each lazy name is, for mypy and editors (nothing here runs)
    import pandas as pd

    from zsq_probe.config import RunConfig, config_from_dict
    from zsq_probe.data.datasets import DatasetSpec
    from zsq_probe.errors import UserError
    from zsq_probe.events import Observer, ProbeContext, StepEvent
    from zsq_probe.presets import PRESETS, resolve_config
    from zsq_probe.probes import Probe, build_probes, register_probe
    from zsq_probe.rundir.store import PathArg, RunDir
    from zsq_probe.runs import RunSummary, probe_run, train
    from zsq_probe.runs.compare import Comparison, compare_runs
    from zsq_probe.teachers.accuracy import evaluate_quantized
    from zsq_probe.training import Trainer, build_run

# name -> the module it is imported from on first use (so `import zsq_probe` loads no torch)
_EXPORTS = {
    "RunConfig": "zsq_probe.config",
    "resolve_config": "zsq_probe.presets",
    "PRESETS": "zsq_probe.presets",
    "config_from_dict": "zsq_probe.config",
    "train": "zsq_probe.runs",
    "RunSummary": "zsq_probe.runs",
    "build_run": "zsq_probe.training",
    "Trainer": "zsq_probe.training",
    "probe_run": "zsq_probe.runs",
    "compare_runs": "zsq_probe.runs.compare",
    "Comparison": "zsq_probe.runs.compare",
    "Probe": "zsq_probe.probes",
    "register_probe": "zsq_probe.probes",
    "build_probes": "zsq_probe.probes",
    "Observer": "zsq_probe.events",
    "ProbeContext": "zsq_probe.events",
    "StepEvent": "zsq_probe.events",
    "RunDir": "zsq_probe.rundir.store",
    "DatasetSpec": "zsq_probe.data.datasets",
    "evaluate_quantized": "zsq_probe.teachers.accuracy",
    "UserError": "zsq_probe.errors",
}


def read_table(run: PathArg | RunDir, table: str) -> pd.DataFrame:
    """One table of a run folder as a DataFrame (every part: online and post hoc).

    Args:
        run: The run folder (or an open RunDir).
        table: The table's name (`metrics`, `cosine`, `hessian_trace`, ...).

    Returns:
        The table's rows.

    Raises:
        UserError: `run` is not a run folder, or a part cannot be read.
    """
    from zsq_probe.rundir.store import RunDir  # on first use (module docstring)

    return (run if isinstance(run, RunDir) else RunDir.open(run)).read_table(table)


def __getattr__(name: str) -> Any:
    """The public names of `_EXPORTS`, imported on first use."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zsq_probe' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [  # the names of _EXPORTS, written out so tools see them (tests/package/test_api.py holds the two equal)
    "__version__",
    "read_table",
    "RunConfig",
    "resolve_config",
    "PRESETS",
    "config_from_dict",
    "train",
    "RunSummary",
    "build_run",
    "Trainer",
    "probe_run",
    "compare_runs",
    "Comparison",
    "Probe",
    "register_probe",
    "build_probes",
    "Observer",
    "ProbeContext",
    "StepEvent",
    "RunDir",
    "DatasetSpec",
    "evaluate_quantized",
    "UserError",
]
