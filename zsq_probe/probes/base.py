"""The probe protocol: what a probe observes, when it runs, and how its rows reach parquet.

A probe is an `Observer` (zsq_probe.events) that
  * says when it wants the per-term gradients (`wants_term_gradients`, every `probe_every_steps`);
  * measures through the `ProbeContext` it is handed, without changing training: it draws from its own
    random streams and leaves modes, buffers and activation ranges as it found them (`preserved_state`);
  * measures a checkpoint in `measure_checkpoint(ctx, epoch)` — the one code path of its online
    epoch-end measurement and of the post-hoc runner (`zsq_probe.probes.posthoc`); probes that cannot measure a
    saved checkpoint leave `posthoc_tables` empty;
  * collects rows with `emit(table, **columns)`; at each epoch end the rows of the epoch are written as
    one parquet part per table (`RUN/probes/<table>/part-e<epoch>.parquet`), so a crash never loses an
    earlier epoch and a resumed run rewrites, never duplicates, the epochs after its checkpoint.
"""

from __future__ import annotations

from zsq_probe.events import Observer, ProbeContext
from zsq_probe.rundir.store import epoch_key


class Probe(Observer):
    tables: tuple[str, ...] = ()
    posthoc_tables: tuple[str, ...] = ()  # tables `measure_checkpoint` writes; () = no post-hoc measurement
    needs_activation_ranges = True  # post hoc: skip checkpoints whose activation ranges are not set yet

    def __init__(self, cfg, origin: str = "online"):
        self.cfg = cfg
        self.origin = origin
        self.rows: dict[str, list[dict]] = {t: [] for t in self.tables}
        self.run_name = ""

    def on_train_start(self, ctx: ProbeContext) -> None:
        self.run_name = ctx.run.name

    def measure_checkpoint(self, ctx: ProbeContext, epoch: int) -> None:
        """Measure the student as it is now (the end of `epoch`) and `emit` the rows."""
        raise NotImplementedError(f"probe {self.name!r} does not measure checkpoints")

    def check_posthoc(self, ctx: ProbeContext) -> None:
        """Raise UserError when this run cannot be probed post hoc by this probe."""

    def emit(self, table: str, **columns) -> None:
        self.rows[table].append({"run": self.run_name, "method": self.cfg.method, **columns})

    def flush(self, run, epoch: int, suffix: str = "") -> None:
        for table, rows in self.rows.items():
            if rows:
                run.write_part(table, rows, epoch_key(epoch, suffix))
        self.rows = {t: [] for t in self.tables}

    def every_step(self, step: int) -> bool:
        return step % self.cfg.probing.every_steps == 0

    def every_epoch(self, epoch: int) -> bool:
        return epoch % self.cfg.probing.hessian_every_epochs == 0 or epoch == self.cfg.epochs


def parameter_group(name: str, scope: str) -> str:
    """The group a parameter belongs to: 'all' (model), its module ('layer'), or its block ('block':
    pytorchcv's `features.stageN.unitM` / `features.init_block` / top-level module)."""
    if scope == "model":
        return "all"
    module = name.rsplit(".", 1)[0] if "." in name else name
    if scope == "layer":
        return module
    parts = name.split(".")
    if parts[0] == "features" and len(parts) > 2:
        return ".".join(parts[:3]) if parts[1].startswith("stage") else ".".join(parts[:2])
    return parts[0]


def grouped_indices(names: list[str], scope: str) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(parameter_group(n, scope), []).append(i)
    return groups
