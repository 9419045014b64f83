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
from typing import TYPE_CHECKING

import pandas as pd
import torch
import torch.nn as nn

from zsq_probe.config import config_from_dict
from zsq_probe.errors import UserError
from zsq_probe.events import ProbeContext
from zsq_probe.rundir.store import PathArg, RunDir, epoch_key
from zsq_probe.training.threads import torch_threads

if TYPE_CHECKING:
    from zsq_probe.data.datasets import DatasetSpec
    from zsq_probe.probes.base import Probe

log = logging.getLogger(__name__)
SUFFIX = "-posthoc"


def ranges_set(model: nn.Module) -> bool:
    """Whether every activation quantiser of `model` has its range set (learned from the first batches)."""
    from zsq_probe.quantization.quantizer import activation_quantizers

    return all(q.is_initialized for q in activation_quantizers(model).values())


def posthoc_probes() -> dict[str, type[Probe]]:
    """Name -> probe class, for the registered probes that can measure a checkpoint."""
    from zsq_probe.probes import PROBES

    return {name: cls for name, cls in PROBES.items() if cls.posthoc_tables}


def open_run(
    run_path: PathArg,
    device: str = "cpu",
    teacher: nn.Module | None = None,
    data_spec: DatasetSpec | None = None,
) -> tuple[RunDir, ProbeContext]:
    """A run's store and a probe context over the models its config builds (no optimiser, no validation
    data); the context's `load_checkpoint(epoch)` puts a checkpoint's student (and generator) in place."""
    from zsq_probe.training.build import build_run
    from zsq_probe.training.checkpoint import restore_models
    from zsq_probe.training.sources import check_iterations

    run = RunDir.open(run_path)
    cfg = config_from_dict(run.read_config_doc()["config"])
    cfg.device, cfg.probing.probes = device, []
    parts = build_run(cfg, teacher=teacher, data_spec=data_spec, for_training=False)

    def load_checkpoint(epoch: int) -> None:
        restore_models(parts, run.load_checkpoint(epoch, map_location=parts.device)[1])

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


def _probe_run(run_path, probe, epochs, device, overwrite, teacher, data_spec) -> pd.DataFrame:
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
        raise UserError(f"{run.path} has no checkpoint for epoch(s) {missing} (has {ctx.checkpoint_epochs})")
    cls = available[probe]
    instance = cls(ctx.cfg, origin="posthoc")
    instance.check_posthoc(ctx)
    instance.run_name = run.name
    first = cls.posthoc_tables[0]
    from zsq_probe.hessian import distributed  # split across ranks (torchrun): every rank computes, rank 0 writes
    from zsq_probe.rundir.lock import RunLock

    with RunLock(run.path, what=f"zsq-probe {probe}", rank=0 if distributed.is_writer() else 1):
        _note_threads(run)  # once it is ours: a refused second writer says one line
        return _probe_epochs(run, ctx, instance, probe, first, wanted, overwrite, distributed)


def _note_threads(run: RunDir) -> None:
    """Log when torch's thread count differs from the one the run trained with (config.json `threads`)."""
    recorded = run.read_config_doc().get("threads")
    if isinstance(recorded, int) and recorded != torch.get_num_threads():
        log.info(
            f"probing with {torch.get_num_threads()} torch thread(s); {run.path} trained with {recorded}: numbers "
            f"differ from the online ones by float round-off (--threads {recorded} to match)"
        )


def committed_keys(run: RunDir, probe: str, tables: Iterable[str]) -> set[str]:
    """Keys of the epochs this post-hoc probe has committed: a commit marker, or (runs probed before markers
    existed) a part in every one of its tables."""
    keys = {k for (p, k) in run.commits() if p == probe}
    legacy = [set(run.part_keys(t)) for t in tables]
    if legacy:
        keys |= {k for k in set.intersection(*legacy) if k.endswith(SUFFIX)}
    return keys


def _probe_epochs(run, ctx, instance, probe, first, wanted, overwrite, distributed) -> pd.DataFrame:
    if distributed.is_writer():  # finish or undo what a killed probe left (we hold the run's lock)
        fixed = run.recover_commits()
        run.remove_temp_files()
        if fixed["published"] or fixed["removed"]:
            log.info(
                f"recovered an interrupted post-hoc write: published {fixed['published']}, "
                f"removed uncommitted {fixed['removed']}"
            )
    done = committed_keys(run, probe, type(instance).posthoc_tables)

    distributed.barrier()  # every rank has read `done` before rank 0 writes anything: the same epochs everywhere
    out = []
    for epoch in wanted:
        key = epoch_key(epoch, SUFFIX)
        if key in done and not overwrite:
            log.info(
                f"epoch {epoch}: already probed post hoc ({run.table_dir(first)}/part-{key}.parquet); "
                f"--overwrite to redo"
            )
            out.append(run.read_table(first).query("epoch == @epoch and origin == 'posthoc'"))
            continue
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
            run.commit_parts(probe, {t: r for t, r in instance.rows.items() if r}, epoch_key(epoch, SUFFIX))
            instance.rows = {t: [] for t in instance.tables}
        else:
            instance.rows = {t: [] for t in instance.tables}
        out.append(frame)
        log.info(f"epoch {epoch}: {len(frame)} {first} rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # concat of empty frames
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
