"""Post-hoc probes: measure a saved run from its checkpoints, for runs trained without that probe.

Each checkpoint epoch-N is the state at the end of epoch N; the probe batch of epoch N is drawn from the
same stream the online probe uses, so an online probe and a post-hoc probe of the same checkpoint give the
same numbers.  Rows are written as parts `part-e<N>-posthoc.parquet` next to the online ones (column
origin='posthoc'); epochs already probed post hoc are skipped unless `overwrite` is set."""

from __future__ import annotations

import warnings

import pandas as pd

from zsq_probe.config import config_from_dict
from zsq_probe.errors import UserError
from zsq_probe.probes.base import Probe, draw_probe_batch, observing
from zsq_probe.probes.crossings import checkpoint_diff_rows, codes_and_levels
from zsq_probe.probes.curvature import curvature, curvature_seed, slice_rows, warn_small_batch
from zsq_probe.probes.gradients import checkpoint_cosine
from zsq_probe.store import RunDir, epoch_key

POSTHOC_TABLES = {"cosine": ("cosine",), "hessian": ("hessian_trace", "hessian_eigenvalues", "hessian_density"),
                  "slice": ("slice",), "crossings": ("crossings",)}
SUFFIX = "-posthoc"


class _Rows(Probe):
    """A row collector with the probes' emit/flush (no observing of a live run)."""

    def __init__(self, cfg, tables, run_name):
        self.tables = tables
        super().__init__(cfg, origin="posthoc")
        self.run_name = run_name


def ranges_set(model) -> bool:
    from zsq_probe.quant import activation_quantizers

    return all(q.is_initialized for q in activation_quantizers(model).values())


def open_trainer(run_path, device: str = "cpu"):
    """A Trainer rebuilt from a run's config (teacher, student, generator, data), without observers."""
    from zsq_probe.train import Trainer

    run = RunDir.open(run_path)
    cfg = config_from_dict(run.read_config_doc()["config"])
    cfg.device, cfg.probes = device, []
    return run, Trainer(cfg, run, observers=[], progress=False, log=lambda *a: None)


def probe_run(run_path, probe: str, epochs=None, device: str = "cpu", overwrite: bool = False,
              log=print) -> pd.DataFrame:
    """Run one post-hoc probe over the run's checkpoints; returns the rows written (all epochs asked)."""
    if probe not in POSTHOC_TABLES:
        raise UserError(f"unknown post-hoc probe {probe!r} (cosine, hessian, slice or crossings)")
    run, trainer = open_trainer(run_path, device)
    cfg = trainer.cfg
    checkpoints = run.checkpoints()
    if not checkpoints:
        raise UserError(f"{run.path} has no checkpoints to probe")
    wanted = sorted(checkpoints) if epochs is None else sorted(set(epochs))
    missing = [e for e in wanted if e not in checkpoints]
    if missing:
        raise UserError(f"{run.path} has no checkpoint for epoch(s) {missing} (has {sorted(checkpoints)})")
    tables = POSTHOC_TABLES[probe]
    done = set(run.part_keys(tables[0]))
    out = []
    codes: dict[int, tuple] = {}  # (codes, levels) per checkpoint epoch (crossings)

    def codes_at(e):
        if e not in codes:
            trainer.load_state_dict(run.load_checkpoint(e, map_location=trainer.device)[1])
            if len(codes) > 1:
                codes.clear()  # only consecutive pairs are needed
            codes[e] = codes_and_levels(trainer.student)
        return codes[e]

    if probe == "crossings" and not trainer.quant_layers:
        raise UserError(f"{run.path}: the student is not quantised, it has no integer codes")
    for epoch in wanted:
        key = epoch_key(epoch, SUFFIX)
        if key in done and not overwrite:
            log(f"epoch {epoch}: already probed post hoc ({run.table_dir(tables[0])}/part-{key}.parquet); "
                f"--overwrite to redo")
            out.append(run.read_table(tables[0]).query("epoch == @epoch and origin == 'posthoc'"))
            continue
        rows = _Rows(cfg, tables, run.name)
        if probe != "crossings":
            trainer.load_state_dict(run.load_checkpoint(epoch, map_location=trainer.device)[1])
            if not ranges_set(trainer.student):
                log(f"epoch {epoch}: skipped, the student's activation ranges are not set yet (they are learned "
                    f"from the first training batches)")
                continue
        if probe == "crossings":
            before = max((e for e in checkpoints if e < epoch), default=None)
            if before is None:
                continue  # nothing to compare the first checkpoint with
            for r in checkpoint_diff_rows(codes_at(before), codes_at(epoch)):
                rows.emit("crossings", epoch=epoch, step=-1, global_step=-1, statistic="checkpoint_diff",
                          origin="posthoc", kappa=float("nan"), gi_flag="", gi_p=float("nan"),
                          steps=(epoch - before) * trainer.iterations(), **r)
        elif probe == "cosine":
            for r in checkpoint_cosine(trainer, epoch)[0]:
                rows.emit("cosine", epoch=epoch, step=-1, global_step=-1, statistic="checkpoint", origin="posthoc",
                          batch_size=cfg.hessian_batch_size, **r)
        else:
            batch = draw_probe_batch(trainer, epoch, cfg.hessian_batch_size)
            warn_small_batch(batch.size)
            seed = curvature_seed(cfg, epoch)
            with observing(trainer.student):
                if probe == "hessian":
                    tables_rows, _ = curvature(trainer.student, trainer.param_names, batch, cfg, seed)
                else:
                    tables_rows = {"slice": slice_rows(trainer.student, trainer.params, batch, cfg, seed, None)}
            for table, rs in tables_rows.items():
                for r in rs:
                    rows.emit(table, epoch=epoch, origin="posthoc", **r)
        frame = pd.DataFrame(rows.rows[tables[0]])
        rows.flush(run, epoch, SUFFIX)
        out.append(frame)
        log(f"epoch {epoch}: {len(frame)} {tables[0]} rows")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # concat of empty frames
        return pd.concat(out, ignore_index=True) if out else pd.DataFrame()
