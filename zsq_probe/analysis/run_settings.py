"""A run's setting read from its config.json (functions over `RunDir`s): what must agree for runs to be seeds of
one experiment, what two runs' training settings differ in, and which folders are copies of one run.  The
figures (`zsq_probe.plots`) and `zsq-probe compare` (`zsq_probe.runs.compare`) group and label runs with these."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zsq_probe.config import config_from_dict

if TYPE_CHECKING:
    from zsq_probe.config import ConfigValue
    from zsq_probe.rundir.store import RunDir

log = logging.getLogger(__name__)

# A run's setting apart from its seed: what must agree for runs to be seeds of one experiment (probe
# settings, device and checkpoint cadence do not change the training).
_NOT_SETTING = ("seed", "probing", "device", "checkpoint_every", "keep_checkpoints", "val_every")
_PROBE_WORDS = ("probe", "hessian", "slice", "density", "trace", "slq")


def run_setting(run: RunDir) -> dict[str, object]:
    """A run's config without its seed and probe settings (runs with equal settings are seeds of one run).

    Args:
        run: the run.

    Returns:
        The top-level entries of its config.json's `config` but those.
    """
    raw = run.read_config_doc().get("config", {}) or {}
    return {k: v for k, v in raw.items() if k not in _NOT_SETTING and not any(w in k for w in _PROBE_WORDS)}


# Flat keys that do not change what is trained (or name it): left out when comparing two runs' settings.
_NOT_TRAINING = (
    *("preset", "method", "seed", "device", "val_every", "val_batch_size", "val_max_batches", "checkpoint_every"),
    *("keep_checkpoints", "num_workers", "pin_memory", "weights", "weights_root", "download", "data_root"),
)


def training_setting(run: RunDir) -> dict[str, ConfigValue]:
    """A run's flat config (the `--set` keys) without its seed, probe, validation and bookkeeping settings.

    Args:
        run: the run.

    Returns:
        {flat key: value} of the settings that change what is trained.
    """
    flat = config_from_dict(run.read_config_doc().get("config", {}) or {}).flat()
    return {k: v for k, v in flat.items() if k not in _NOT_TRAINING and not any(w in k for w in _PROBE_WORDS)}


def setting_differences(settings: Mapping[str, Mapping[str, object]]) -> dict[str, dict[str, object]]:
    """The keys whose values differ between settings.

    Args:
        settings: {label: flat setting} (`training_setting`).

    Returns:
        {key: {label: value}} for each key whose value differs (None where a setting lacks the key).
    """
    keys = sorted({k for s in settings.values() for k in s})
    values = {k: {label: s.get(k) for label, s in settings.items()} for k in keys}
    return {k: v for k, v in values.items() if len({repr(x) for x in v.values()}) > 1}


def differences_text(differences: Mapping[str, Mapping[str, object]]) -> str:
    """The differences as one line.

    Args:
        differences: {key: {label: value}} (`setting_differences`).

    Returns:
        'lr: kd 0.05, gdfq 0.001; warmup_epochs: kd 0, gdfq 2' ('none' when there are none).
    """
    if not differences:
        return "none"
    return "; ".join(f"{k}: " + ", ".join(f"{label} {v}" for label, v in d.items()) for k, d in differences.items())


def distinct_runs(runs: list[RunDir]) -> list[RunDir]:
    """`runs` (RunDirs) with every copy of a run left out: folders holding the same run id (`RunDir.run_id`)
    are one run, counted once; a warning names each copy.  The same folder given twice is kept twice (callers
    that must refuse it do).

    Args:
        runs: the runs, in order.

    Returns:
        `runs` in their order without the copies.
    """
    seen: dict[str, RunDir] = {}
    out: list[RunDir] = []
    for r in runs:
        rid = r.run_id
        first = seen.setdefault(rid, r)
        if first is not r and Path(first.path).resolve() != Path(r.path).resolve():
            log.warning(f"{r.path} is a copy of run {first.path} (run id {rid}): counted once")
            continue
        out.append(r)
    return out
