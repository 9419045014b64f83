"""`train()`: start or resume a run in a folder.  Nothing is written until the run's set-up succeeded; a
resume drops whatever a crash left past the last checkpoint, so resumed epochs rewrite, never duplicate."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from zsq_probe.analysis.epochs import epoch_list
from zsq_probe.config import CONFIG_SCHEMA_VERSION, RunConfig, config_diff, config_from_dict
from zsq_probe.errors import UserError
from zsq_probe.events import Observer
from zsq_probe.probes import build_probes
from zsq_probe.quantization.quantizer import quantization_spec
from zsq_probe.rundir.lock import RunLock
from zsq_probe.rundir.output import RUN_NAMES, check_output
from zsq_probe.rundir.store import PathArg, RunDir, key_epoch
from zsq_probe.runs.summary import RunSummary
from zsq_probe.teachers.metadata import dataset_for_teacher
from zsq_probe.threads import torch_threads
from zsq_probe.training.build import build_run, module_fingerprint
from zsq_probe.training.checkpoint import check_checkpoint_identity, check_teacher_fingerprint
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
    progress: bool = False,
    teacher: nn.Module | None = None,
    data_spec: DatasetSpec | None = None,
    threads: int | None = None,
) -> RunSummary:
    """Run (or resume) a training job into the folder `out`.

    Args:
        cfg: The run's config (`zsq_probe.presets.resolve_config`).
        out: The run folder: new or empty, or the run to resume.
        resume: Continue the run in `out` from its last checkpoint (its config must match `cfg`).
        force: With `resume`, accept settings that only shape the epochs still to come (docs/cli.md).
        observers: None builds the probes `cfg.probing.probes` names; a list is used as given (add
            `zsq_probe.probes.build_probes(cfg)` to it to keep the configured probes).
        progress: A progress bar per epoch on stderr.
        teacher: A teacher module of your own (see `zsq_probe.training.build_run`).
        data_spec: The `zsq_probe.data.datasets.DatasetSpec` of `teacher`'s data.
        threads: Torch's CPU threads while it trains (None: as set), put back afterwards; the count in force is
            recorded in config.json (`threads`), and a resume with another count says so.

    Returns:
        The run's summary (what RUN/summary.json holds).

    Raises:
        UserError: Bad input (a config that does not validate, a folder that is not new, a resume with other
            settings, missing data or weights), before anything is written.
    """
    with torch_threads(threads):
        return RunSummary.from_dict(_train(cfg, out, resume, force, observers, progress, teacher, data_spec))


def _train(
    cfg: RunConfig,
    out: PathArg,
    resume: bool,
    force: bool,
    observers: Sequence[Observer] | None,
    progress: bool,
    teacher: nn.Module | None,
    data_spec: DatasetSpec | None,
) -> dict[str, object]:
    if observers is None:
        observers = build_probes(cfg)
    if resume:
        return _resume(cfg, out, force, observers, progress, teacher, data_spec)
    RunDir.ensure_new(out)  # refuse before any work; nothing is written until the set-up succeeded
    run = RunDir(out)
    parts = build_run(cfg, teacher=teacher, data_spec=data_spec)
    trainer = Trainer(parts, run, observers, progress)

    spec = None if cfg.quant.full_precision else quantization_spec(parts.student)

    with RunLock(out, what="zsq-probe train"):  # one writer per run folder (rank 0 only under torchrun)
        RunDir.ensure_new(out)  # again, now that we hold the lock: another train may have started meanwhile
        run.write_config(
            cfg.to_dict(),
            extra={
                "seed": cfg.seed,
                "quantization": spec,
                "config_schema_version": CONFIG_SCHEMA_VERSION,
                "teacher": parts.teacher_info.to_dict(),
                "threads": torch.get_num_threads(),
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
    run = RunDir.open(out)
    check_output(run.path, "train", own=RUN_NAMES, resume=True)  # the output policy (zsq_probe.rundir.output)
    # every part, kept or dropped, is what its place says (table, key, run, content hash) before anything --
    # the lock file included -- is written; a newer zsq-probe's parts are never mixed with this version's
    run.check_parts("resume")
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
    changed = config_diff(config_from_dict(doc["config"]), cfg)
    _refuse_meaning_changes(run, changed, cfg.teacher)  # even with --force
    if changed and not force:
        first = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:3])
        more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
        raise UserError(
            f"--resume with a changed config ({first}{more}); pass --force to resume anyway "
            f"(the change is recorded in config.json)"
        )
    _check_same_teacher(doc.get("teacher") or {}, teacher)
    threads = _note_thread_change(doc)
    parts = build_run(cfg, teacher=teacher, data_spec=data_spec)
    check_teacher_fingerprint(doc, parts.teacher_info, run.config_path)
    trainer = Trainer(parts, run, observers, progress)
    if run.checkpoints():
        epoch, state = run.load_checkpoint()
        check_checkpoint_identity(state, doc, run.checkpoint_path(epoch), run.config_path)
        trainer.load_state_dict(state)
        log.info(f"resuming {run.path} after epoch {epoch}")
    # only now that set-up and checkpoint succeeded is anything in the run changed
    if changed or threads:
        extra = {k: v for k, v in doc.items() if k not in ("format", "run_schema_version", "config", "versions")}
        if changed:
            history = doc.get("config_changes", []) + [{k: [a, b] for k, (a, b) in changed.items()}]
            extra.update(seed=cfg.seed, config_changes=history, config_schema_version=CONFIG_SCHEMA_VERSION)
        if threads:
            history = doc.get("resumed_threads")
            extra["resumed_threads"] = [
                *(history if isinstance(history, list) else []),
                {"after_epoch": trainer.epoch, "threads": threads},
            ]
        run.write_config(cfg.to_dict(), extra=extra)
    run.remove_temp_files()  # what writers killed mid-write left
    # what a crash (or a deleted checkpoint) left past the checkpoint is dropped, with its commit markers
    run.remove_markers(lambda key: (key_epoch(key) or 0) <= trainer.epoch)
    for table in run.tables():
        run.remove_parts(table, lambda key: (key_epoch(key) or 0) <= trainer.epoch)
    return trainer.fit()


# settings a resumed run can never change: its checkpoints, the probe batches of past epochs (seeded by the run
# seed) and the rows measured on them belong to these values (a new run folder is the way)
FIXED_ON_RESUME = {
    "seed": "the probe batches and post-hoc rows of past checkpoints are drawn from the run seed",
    "preset": "the run's settings came from it",
    "method": "every row and checkpoint of the run is labelled with it",
    "teacher": "the checkpoints were distilled from it",
    "data": "the checkpoints were trained and validated on it",
}
RETENTION = "keep_checkpoints"


def _refuse_meaning_changes(run: RunDir, changed: Mapping[str, tuple[object, object]], teacher: str) -> None:
    """A one-line UserError naming the first setting a resume may not change (even forced): those of
    FIXED_ON_RESUME, and a checkpoint retention that would delete checkpoints probe tables measured.
    `teacher`: the run's teacher (a `data` of None means its data set)."""
    for key, why in FIXED_ON_RESUME.items():
        if key in changed:
            old, new = changed[key]
            if key == "data" and _data_set(old, teacher) == _data_set(new, teacher):
                continue  # the teacher's own data set, named or left to the default
            raise UserError(
                f"--resume cannot change {key} ({old!r} -> {new!r}), not even with --force: {why}; "
                f"start a new run in another --out"
            )
    if RETENTION in changed:
        old, new = changed[RETENTION]
        lost = sorted(set(measured_checkpoints(run)) - retained_checkpoints(run, new))
        if lost:
            raise UserError(
                f"--resume with {RETENTION}={new} would delete checkpoint(s) {epoch_list(lost)} that probe tables "
                f"measured; keep {RETENTION}={old}, or start a new run in another --out"
            )


def _data_set(name: object, teacher: str) -> object:
    """The data set a config's `data` value means: itself, or (None) the teacher's."""
    if name is not None:
        return name
    try:
        return dataset_for_teacher(teacher)
    except UserError:
        return None


def measured_checkpoints(run: RunDir) -> set[int]:
    """Epochs of the run's checkpoints that rows were measured on: post-hoc parts or commit markers, and the
    online parts of probe tables (not `metrics`)."""
    keys = {key for (_, key) in run.commits()}
    for table in run.tables():
        if table not in ("metrics", "zeroq_distillation"):
            keys |= set(run.part_keys(table))
    epochs = {key_epoch(k) for k in keys}
    return {e for e in run.checkpoints() if e in epochs}


def retained_checkpoints(run: RunDir, policy: object) -> set[int]:
    """The existing checkpoints a retention policy keeps once the next checkpoint is written: every one for
    True / 'all'; the online-probed ones for 'probed'; none of them otherwise (False / 'last')."""
    existing = set(run.checkpoints())
    if policy is True or policy == "all":
        return existing
    if policy == "probed":
        online = {
            key_epoch(k)
            for t in run.tables()
            if t not in ("metrics", "zeroq_distillation")
            for k in run.part_keys(t)
            if not k.endswith("-posthoc")
        }
        return existing & online
    return set()


def _note_thread_change(doc: Mapping[str, object]) -> int | None:
    """Torch's thread count now when it differs from the one the run was started with (config.json `threads`;
    logged as a warning: not a changed setting, but results differ by float round-off), else None."""
    recorded, now = doc.get("threads"), torch.get_num_threads()
    if not isinstance(recorded, int) or recorded == now:
        return None
    log.warning(
        f"resuming with {now} torch thread(s); this run was started with {recorded}: the remaining epochs "
        f"differ from an uninterrupted run by float round-off (recorded in config.json resumed_threads)"
    )
    return now


def _check_same_teacher(recorded: Mapping[str, object], teacher: nn.Module | None) -> None:
    """A run started with a teacher module resumes only with that module (same state-dict fingerprint)."""
    if recorded.get("source") != "module" and teacher is None:
        return
    if teacher is None:
        raise UserError("this run's teacher was a module passed to train(): pass the same module as teacher=")

    if recorded.get("source") != "module" or recorded.get("weights_sha256") != module_fingerprint(teacher):
        raise UserError(
            "the teacher module differs from the one this run was started with (state-dict "
            "fingerprint in config.json 'teacher')"
        )
