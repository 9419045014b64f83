"""`train()`: start or resume a run in a folder.  Nothing is written until the run's set-up succeeded; a
resume drops whatever a crash left past the last checkpoint, so resumed epochs rewrite, never duplicate."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch.nn as nn

from zsq_probe.config import CONFIG_SCHEMA_VERSION, RunConfig, config_diff, config_from_dict
from zsq_probe.errors import UserError
from zsq_probe.events import Observer
from zsq_probe.rundir.output import RUN_NAMES, check_output
from zsq_probe.rundir.store import PathArg, RunDir, key_epoch
from zsq_probe.training.build import build_run
from zsq_probe.training.loop import Trainer

if TYPE_CHECKING:
    from zsq_probe.data.datasets import DatasetSpec

log = logging.getLogger(__name__)


def train(
    cfg: RunConfig,
    out: PathArg,
    *,
    resume: bool = False,
    force: bool = False,
    observers: Sequence[Observer] | None = None,
    progress: bool = True,
    teacher: nn.Module | None = None,
    data_spec: DatasetSpec | None = None,
) -> dict[str, object]:
    """Run (or resume) a training job into the folder `out`; returns the run summary (summary.json).

    `observers`: None builds the probes `cfg.probing.probes` names; a list is used as given (add
    `zsq_probe.probes.build_probes(cfg)` to it to keep the configured probes).  `teacher` / `data_spec`: a
    teacher module of your own and its zsq_probe.data.datasets.DatasetSpec (see `build_run`)."""
    if observers is None:
        from zsq_probe.probes import build_probes

        observers = build_probes(cfg)
    if resume:
        return _resume(cfg, out, force, observers, progress, teacher, data_spec)
    RunDir.ensure_new(out)  # refuse before any work; nothing is written until the set-up succeeded
    run = RunDir(out)
    parts = build_run(cfg, teacher=teacher, data_spec=data_spec)
    trainer = Trainer(parts, run, observers, progress)
    from zsq_probe.quantization.quantizer import quantization_spec

    spec = None if cfg.quant.full_precision else quantization_spec(parts.student)
    from zsq_probe.rundir.lock import RunLock

    with RunLock(out, what="zsq-probe train"):  # one writer per run folder (rank 0 only under torchrun)
        RunDir.ensure_new(out)  # again, now that we hold the lock: another train may have started meanwhile
        run.write_config(
            cfg.to_dict(),
            extra={
                "seed": cfg.seed,
                "quantization": spec,
                "config_schema_version": CONFIG_SCHEMA_VERSION,
                "teacher": parts.teacher_info.to_dict(),
            },
        )
        run.remove_temp_files()  # a first attempt killed while writing config.json left its temporary copy
        return trainer.fit()


def _resume(
    cfg: RunConfig,
    out: PathArg,
    force: bool,
    observers: Sequence[Observer],
    progress: bool,
    teacher: nn.Module | None,
    data_spec: DatasetSpec | None,
) -> dict[str, object]:
    from zsq_probe.rundir.lock import RunLock

    run = RunDir.open(out)
    check_output(run.path, "train", own=RUN_NAMES, resume=True)  # the output policy (zsq_probe.rundir.output)
    with RunLock(run.path, what="zsq-probe train --resume"):  # one writer per run folder
        return _resume_locked(run, cfg, force, observers, progress, teacher, data_spec)


def _resume_locked(
    run: RunDir,
    cfg: RunConfig,
    force: bool,
    observers: Sequence[Observer],
    progress: bool,
    teacher: nn.Module | None,
    data_spec: DatasetSpec | None,
) -> dict[str, object]:
    doc = run.read_config_doc()
    run.check_part_versions("resume")  # parts of a newer zsq-probe: never mixed with this version's
    changed = config_diff(config_from_dict(doc["config"]), cfg)
    if changed and not force:
        first = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise UserError(
            f"--resume with a changed config ({first}{more}); pass --force to resume anyway "
            f"(the change is recorded in config.json)"
        )
    _check_same_teacher(doc.get("teacher") or {}, teacher)
    trainer = Trainer(build_run(cfg, teacher=teacher, data_spec=data_spec), run, observers, progress)
    if run.checkpoints():
        epoch, state = run.load_checkpoint()
        trainer.load_state_dict(state)
        log.info(f"resuming {run.path} after epoch {epoch}")
    # only now that set-up and checkpoint succeeded is anything in the run changed
    if changed:
        history = doc.get("config_changes", []) + [{k: [a, b] for k, (a, b) in changed.items()}]
        extra = {k: v for k, v in doc.items() if k not in ("format", "run_schema_version", "config", "versions")}
        extra.update(seed=cfg.seed, config_changes=history, config_schema_version=CONFIG_SCHEMA_VERSION)
        run.write_config(cfg.to_dict(), extra=extra)
    run.remove_temp_files()  # what writers killed mid-write left
    for table in run.tables():  # what a crash left past the checkpoint is dropped
        run.remove_parts(table, lambda key: (key_epoch(key) or 0) <= trainer.epoch)
    return trainer.fit()


def _check_same_teacher(recorded: Mapping[str, object], teacher: nn.Module | None) -> None:
    """A run started with a teacher module resumes only with that module (same state-dict fingerprint)."""
    if recorded.get("source") != "module" and teacher is None:
        return
    if teacher is None:
        raise UserError("this run's teacher was a module passed to train(): pass the same module as teacher=")
    from zsq_probe.training.build import module_fingerprint

    if recorded.get("source") != "module" or recorded.get("weights_sha256") != module_fingerprint(teacher):
        raise UserError(
            "the teacher module differs from the one this run was started with (state-dict "
            "fingerprint in config.json 'teacher')"
        )
