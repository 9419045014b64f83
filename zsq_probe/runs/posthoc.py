"""Post-hoc probes: measure a saved run from its checkpoints, for runs trained without that probe.

Each checkpoint epoch-N is the state at the end of epoch N; a probe measures it with the same
`measure_checkpoint` it runs online, on the probe batch of epoch N drawn from the same stream, so an online
and a post-hoc measurement of the same checkpoint give the same numbers.  Rows are written as parts
`part-e<N>-posthoc.parquet` next to the online ones (column origin='posthoc'); epochs already probed post
hoc are skipped unless `overwrite` is set.  An epoch's tables are committed all or nothing
(`RunDir.commit_parts`: staged parts, then a marker, then renames), under the run folder's writer lock."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from types import ModuleType
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.nn as nn

from zsq_probe.analysis.epochs import epoch_list
from zsq_probe.config import config_from_dict
from zsq_probe.errors import UserError
from zsq_probe.events import ProbeContext
from zsq_probe.probes import PROBES
from zsq_probe.quantization.quantizer import activation_quantizers
from zsq_probe.rundir.lock import RunLock
from zsq_probe.rundir.store import PathArg, RunDir, epoch_key, key_epoch
from zsq_probe.threads import torch_threads
from zsq_probe.training.build import build_run
from zsq_probe.training.checkpoint import check_checkpoint_identity, check_teacher_fingerprint, restore_models
from zsq_probe.training.sources import check_iterations

if TYPE_CHECKING:
    from zsq_probe.data.datasets import DatasetSpec
    from zsq_probe.probes.base import Probe

log = logging.getLogger(__name__)
SUFFIX = "-posthoc"


def ranges_set(model: nn.Module) -> bool:
    """Whether every activation quantiser of `model` has its range set (learned from the first batches)."""
    return all(q.is_initialized for q in activation_quantizers(model).values())


def posthoc_probes() -> dict[str, type[Probe]]:
    """Name -> probe class, for the registered probes that can measure a checkpoint."""
    return {name: cls for name, cls in PROBES.items() if cls.posthoc_tables}


def open_run(
    run_path: PathArg,
    device: str = "cpu",
    teacher: nn.Module | None = None,
    data_spec: DatasetSpec | None = None,
) -> tuple[RunDir, ProbeContext]:
    """A run's store and a probe context over the models its config builds (no optimiser, no validation
    data); the context's `load_checkpoint(epoch)` puts a checkpoint's student (and generator) in place.  A
    one-line UserError when the teacher built now or a checkpoint loaded is not the run's that config.json
    describes (`check_teacher_fingerprint`, `check_checkpoint_identity`)."""
    run = RunDir.open(run_path)
    doc = run.read_config_doc()
    cfg = config_from_dict(doc["config"])
    cfg.device, cfg.probing.probes = device, []
    parts = build_run(cfg, teacher=teacher, data_spec=data_spec, for_training=False)
    check_teacher_fingerprint(doc, parts.teacher_info, run.config_path)

    def load_checkpoint(epoch: int) -> None:
        state = run.load_checkpoint(epoch, map_location=parts.device)[1]
        # config.json labels the rows: the checkpoint must be of the run it describes
        check_checkpoint_identity(state, doc, run.checkpoint_path(epoch), run.config_path)
        restore_models(parts, state)

    ctx = ProbeContext(
        cfg=cfg,
        run=run,
        student=parts.student,
        teacher=parts.teacher,
        param_names=parts.param_names,
        params=parts.params,
        quant_layers=parts.quant_layers,
        device=parts.device,
        iterations_per_epoch=check_iterations(cfg, parts.source),
        draw_probe_batch=parts.source.draw,
        origin="posthoc",
        load_checkpoint=load_checkpoint,
        checkpoint_epochs=sorted(run.checkpoints()),
    )
    return run, ctx


def probe_run(
    run_path: PathArg,
    probe: str,
    epochs: Iterable[int] | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    teacher: nn.Module | None = None,
    data_spec: DatasetSpec | None = None,
    threads: int | None = None,
) -> pd.DataFrame:
    """Run one post-hoc probe over the run's checkpoints; returns the rows of its first table for the epochs
    asked (those written now and those probed before).  `threads`: torch's CPU threads while it measures
    (None: as set), put back afterwards; a count other than the run's (config.json `threads`) is logged, since
    the numbers differ from the online ones by float round-off.  Draws no progress bar; progress is logged."""
    with torch_threads(threads):
        return _probe_run(run_path, probe, epochs, device, overwrite, teacher, data_spec)


def _probe_run(
    run_path: PathArg,
    probe: str,
    epochs: Iterable[int] | None,
    device: str,
    overwrite: bool,
    teacher: nn.Module | None,
    data_spec: DatasetSpec | None,
) -> pd.DataFrame:
    available = posthoc_probes()
    if probe not in available:
        raise UserError(f"unknown post-hoc probe {probe!r} ({', '.join(available)})")
    run, ctx = open_run(run_path, device, teacher, data_spec)
    run.check_part_versions("probe")  # parts of a newer zsq-probe: never mixed with this version's
    if not ctx.checkpoint_epochs:
        raise UserError(f"{run.path} has no checkpoints to probe")
    wanted = ctx.checkpoint_epochs if epochs is None else sorted(set(epochs))
    missing = [e for e in wanted if e not in ctx.checkpoint_epochs]
    if missing:
        raise UserError(
            f"{run.path} has no checkpoint for epoch(s) {epoch_list(missing)} (has {epoch_list(ctx.checkpoint_epochs)})"
        )
    cls = available[probe]
    instance = cls(ctx.cfg, origin="posthoc")
    instance.check_posthoc(ctx)
    instance.run_name = run.name
    first = cls.posthoc_tables[0]
    from zsq_probe.hessian import distributed  # split across ranks (torchrun): every rank computes, rank 0 writes

    with RunLock(run.path, what=f"zsq-probe {probe}", rank=0 if distributed.is_writer() else 1):
        _note_threads(run)  # once it is ours: a refused second writer says one line
        return _probe_epochs(run, ctx, instance, probe, first, wanted, overwrite, distributed)


def last_epoch(run_path: PathArg) -> int:
    """The last epoch of a run as its config.json sets it (a one-line UserError when it is not a run)."""
    return config_from_dict(RunDir.open(run_path).read_config_doc()["config"]).epochs


def _note_threads(run: RunDir) -> None:
    """Log when torch's thread count differs from the one the run trained with (config.json `threads`)."""
    recorded = run.read_config_doc().get("threads")
    if isinstance(recorded, int) and recorded != torch.get_num_threads():
        log.info(
            f"probing with {torch.get_num_threads()} torch thread(s); {run.path} trained with {recorded}: numbers "
            f"differ from the online ones by float round-off (--threads {recorded} to match)"
        )


def committed_keys(run: RunDir, probe: str, tables: Iterable[str]) -> set[str]:
    """Keys of the epochs this post-hoc probe has committed and whose parts are all there: a commit marker
    with every part it lists.  A marker without its parts, or a part without its marker (every post-hoc part is
    committed by a marker), is not done: it is recomputed (`inconsistent_keys` says which)."""
    return {k for (p, k), listed in run.commits().items() if p == probe and _parts_present(run, listed, k)}


def inconsistent_keys(run: RunDir, probe: str, tables: Iterable[str], done: set[str]) -> list[str]:
    """Post-hoc keys of this probe that have a marker or a part but are not done (`committed_keys`)."""
    seen = {k for (p, k) in run.commits() if p == probe}
    seen |= {k for t in tables for k in run.part_keys(t) if k.endswith(SUFFIX)}
    return sorted(seen - done)


def _parts_present(run: RunDir, tables: Iterable[str], key: str) -> bool:
    return all((run.table_dir(t) / f"part-{key}.parquet").is_file() for t in tables)


def check_inputs(run: RunDir, ctx: ProbeContext, instance: Probe, todo: list[int]) -> None:
    """Before anything is written: every part of the probe's tables that stays must read (a damaged post-hoc
    part is rebuilt only with --overwrite), and every checkpoint the measurement loads must load."""
    rebuilt = {epoch_key(e, SUFFIX) for e in todo}
    for table in type(instance).posthoc_tables:
        for key in run.part_keys(table):
            if key not in rebuilt:
                run.read_part(table, key)
    assert ctx.load_checkpoint is not None  # open_run's context
    for epoch in sorted({c for e in todo for c in instance.posthoc_checkpoints(ctx, e)}):
        ctx.load_checkpoint(epoch)


def _recover_interrupted_writes(run: RunDir) -> None:
    """Finish the renames of committed epochs, delete uncommitted staged parts and dead writers' temporary files."""
    fixed = run.recover_commits()
    run.remove_temp_files()
    if fixed["published"] or fixed["removed"]:
        log.info(
            f"recovered an interrupted post-hoc write: published {fixed['published']}, "
            f"removed uncommitted {fixed['removed']}"
        )


def _probe_epochs(
    run: RunDir,
    ctx: ProbeContext,
    instance: Probe,
    probe: str,
    first: str,
    wanted: list[int],
    overwrite: bool,
    distributed: ModuleType,
) -> pd.DataFrame:
    done = committed_keys(run, probe, type(instance).posthoc_tables)  # recovery below leaves the markers as they are
    check_inputs(run, ctx, instance, [e for e in wanted if overwrite or epoch_key(e, SUFFIX) not in done])
    if distributed.is_writer():  # finish or undo what a killed probe left (we hold the run's lock)
        _recover_interrupted_writes(run)
    tables = type(instance).posthoc_tables
    done = committed_keys(run, probe, tables)
    stale = [k for k in inconsistent_keys(run, probe, tables, done) if key_epoch(k) in wanted]
    if stale:
        log.warning(
            f"{run.path}: {probe} epoch(s) {epoch_list(e for k in stale if (e := key_epoch(k)) is not None)} have "
            f"a commit marker "
            f"without its parts or parts without their marker (a deleted checkpoint or part, or an interrupted "
            f"write): measuring them again"
        )
    markers = run.commits()  # (probe, key) -> the tables that epoch committed (none: no rows, e.g. crossings' first)

    distributed.barrier()  # every rank has read `done` before rank 0 writes anything: the same epochs everywhere
    out = []
    for epoch in wanted:
        key = epoch_key(epoch, SUFFIX)
        if key in done and not overwrite:
            log.info(
                f"epoch {epoch}: already probed post hoc ({run.table_dir(first)}/part-{key}.parquet); "
                f"--overwrite to redo"
            )
            if first in markers.get((probe, key), [first]):  # an epoch committed with no rows has no part to read
                out.append(run.read_table(first).query("epoch == @epoch and origin == 'posthoc'"))
            continue
        assert ctx.load_checkpoint is not None  # open_run's context loads checkpoints
        ctx.load_checkpoint(epoch)
        if instance.needs_activation_ranges and not ranges_set(ctx.student):
            log.info(
                f"epoch {epoch}: skipped, the student's activation ranges are not set yet (they are learned "
                f"from the first training batches)"
            )
            continue
        instance.measure_checkpoint(ctx, epoch)
        frame = pd.DataFrame(instance.rows[first])
        if distributed.is_writer():  # every table of this epoch, or none (commit marker last)
            run.discard_commit(probe, key, tables)  # an old marker and parts go first (--overwrite, repairs)
            run.commit_parts(probe, {t: r for t, r in instance.rows.items() if r}, epoch_key(epoch, SUFFIX))
            instance.rows = {t: [] for t in instance.tables}
        else:
            instance.rows = {t: [] for t in instance.tables}
        out.append(frame)
        log.info(f"epoch {epoch}: {len(frame)} {first} rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # concat of empty frames
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
