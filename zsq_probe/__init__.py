"""zsq-probe: loss-surface diagnostics for zero-shot quantization.

The Python API (docs/python-api.md; docs/architecture.md)::

    import zsq_probe as zp

    cfg = zp.resolve_config("ait", teacher="digits", flags={"epochs": 4, "probes": ["cosine", "hessian"]})
    summary = zp.train(cfg, "runs/ait")                 # the probes cfg names run online
    cosine = zp.read_table("runs/ait", "cosine")        # a pandas DataFrame
    zp.probe_run("runs/ait", "slice")                   # a probe measured post hoc from checkpoints

Names are imported on first use, so `import zsq_probe` stays light.
"""

from zsq_probe.version import __version__

_EXPORTS = {
    "RunConfig": "zsq_probe.config",
    "resolve_config": "zsq_probe.presets",
    "PRESETS": "zsq_probe.presets",
    "config_from_dict": "zsq_probe.config",
    "train": "zsq_probe.runs",
    "build_run": "zsq_probe.training",
    "Trainer": "zsq_probe.training",
    "probe_run": "zsq_probe.runs",
    "compare_runs": "zsq_probe.runs.compare",
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


def read_table(run, table: str):
    """One table of a run folder as a DataFrame (every part: online and post hoc)."""
    from zsq_probe.rundir.store import RunDir

    return RunDir.open(run).read_table(table)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'zsq_probe' has no attribute {name!r}")


def __dir__():
    return sorted([*globals(), *_EXPORTS])


__all__ = ["__version__", "read_table", *_EXPORTS]
