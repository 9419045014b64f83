"""The probe protocol: what a probe observes, when it runs, and how its rows reach parquet.

A probe is an `Observer` (zsq_probe.events) that
  * says when it wants the per-term gradients (`wants_term_gradients`, every `probe_every_steps`);
  * measures through the `ProbeContext` it is handed, without changing training: it draws from its own
    random streams and leaves modes, buffers and activation ranges as it found them (`preserved_state`);
  * measures a checkpoint in `measure_checkpoint(ctx, epoch)` — the one code path of its online
    epoch-end measurement and of the post-hoc runner (`zsq_probe.runs.posthoc`); probes that cannot measure a
    saved checkpoint leave `posthoc_tables` empty;
  * names in `needs` the probes whose results it reuses when they run too; `build_probes` builds those first
    and hands each to `connect` (the slice probe reuses the Hessian probe's eigenvectors);
  * collects rows with `emit(table, **columns)`; at each epoch end the rows of the epoch are written as
    one parquet part per table (`RUN/probes/<table>/part-e<epoch>.parquet`), so a crash never loses an
    earlier epoch and a resumed run rewrites, never duplicates, the epochs after its checkpoint.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from zsq_probe.config import curvature_epoch
from zsq_probe.events import Observer, ProbeContext
from zsq_probe.hessian.results import parameter_group
from zsq_probe.rundir.store import epoch_key

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig
    from zsq_probe.rundir.store import RunDir

Row = dict[str, object]  # one parquet row: column -> value


class Probe(Observer):
    """An observer that measures the student and writes its rows as one parquet part per table and epoch.

    Class attributes: `name` (how configs switch it on), `tables` (what it writes), `posthoc_tables` (what
    `measure_checkpoint` writes; () = no post-hoc measurement), `needs` (probes whose results it reuses when
    they run too) and `needs_activation_ranges` (post hoc: skip checkpoints whose activation ranges are not set).
    """

    tables: tuple[str, ...] = ()
    posthoc_tables: tuple[str, ...] = ()
    needs: tuple[str, ...] = ()
    needs_activation_ranges = True

    def __init__(self, cfg: RunConfig, origin: str = "online") -> None:
        self.cfg = cfg
        self.origin = origin
        self.rows: dict[str, list[Row]] = {t: [] for t in self.tables}
        self.run_name = ""

    def connect(self, provider: Probe) -> None:
        """Take a built probe this one names in `needs` (`build_probes` calls this before training, once per
        need that is switched on too).  A probe that declares `needs` overrides it."""
        raise NotImplementedError(f"probe {self.name!r} declares needs {self.needs} but does not take them")

    def on_train_start(self, ctx: ProbeContext) -> None:
        """Remember the run's name (every row carries it)."""
        self.run_name = ctx.run.name

    def measure_checkpoint(self, ctx: ProbeContext, epoch: int) -> None:
        """Measure the student as it is now (the end of `epoch`) and `emit` the rows."""
        raise NotImplementedError(f"probe {self.name!r} does not measure checkpoints")

    def posthoc_checkpoints(self, ctx: ProbeContext, epoch: int) -> list[int]:
        """The checkpoints `measure_checkpoint(ctx, epoch)` loads (post hoc, every one is checked before anything
        is written)."""
        return [epoch]

    def check_posthoc(self, ctx: ProbeContext) -> None:
        """Raise UserError when this run cannot be probed post hoc by this probe."""

    def emit(self, table: str, **columns: object) -> None:
        """Collect one row of `table` (with the run's name and method) until the next `flush`."""
        self.rows[table].append({"run": self.run_name, "method": self.cfg.method, **columns})

    def flush(self, run: RunDir, epoch: int, suffix: str = "") -> None:
        """Write the collected rows as the epoch's part of each table, and start collecting afresh."""
        for table, rows in self.rows.items():
            if rows:
                run.write_part(table, rows, epoch_key(epoch, suffix))
        self.rows = {t: [] for t in self.tables}

    def every_step(self, step: int) -> bool:
        """Whether the gradient probes measure at this step (every `probing.every_steps`)."""
        return step % self.cfg.probing.every_steps == 0

    def every_epoch(self, epoch: int) -> bool:
        """Whether the curvature probes measure at this epoch (every `probing.hessian_every_epochs`, and the last)."""
        return curvature_epoch(self.cfg, epoch)


def grouped_indices(names: list[str], scope: str) -> dict[str, list[int]]:
    """Group -> indices into `names` of its parameters, for one scope (`parameter_group`)."""
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(parameter_group(n, scope), []).append(i)
    return groups
