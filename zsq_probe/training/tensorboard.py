"""Live curves: an observer that logs a run's metrics and its probes' scalars to TensorBoard, epoch by epoch.

    zsq-probe train ... --tensorboard                 # into RUN/tensorboard
    python -m analyses tab2 --tensorboard ...         # every run of the recipe into its own RUN/tensorboard
    tensorboard --logdir runs/                        # watch them

The parquet tables stay the record; TensorBoard is only a view of them while a run trains (every value here is
also in RUN/probes/).  The x-axis is the epoch.  Logged per epoch: every number of the metrics row
(`metrics/loss_kl_scaled`, `metrics/val_top1`, ...), and from the probes that ran in that epoch the epoch-mean
gradient cosines (`cosine/<scope>/<group>`), the inter-epoch cosine, the share of integer codes that changed
(`crossings/share`), Hessian traces (`hessian_trace/<loss>/<estimator>`, block and layer scopes by group) and top
eigenvalues (`hessian_eigenvalue/<loss>/top<k>`).  A resumed run drops the curves past its checkpoint.

Needs the optional extra: ``pip install 'zsq-probe[tensorboard]'``.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from zsq_probe.errors import UserError
from zsq_probe.events import MetricsRow, Observer, ProbeContext
from zsq_probe.rundir.store import PathArg, RunDir, epoch_key

if TYPE_CHECKING:
    from torch.utils.tensorboard import SummaryWriter

EXTRA_HINT = "live curves need TensorBoard: pip install 'zsq-probe[tensorboard]'"


def summary_writer_class() -> type[SummaryWriter]:
    """Torch's SummaryWriter class.

    Returns:
        `torch.utils.tensorboard.SummaryWriter`.

    Raises:
        UserError: The tensorboard package (the optional extra) is missing (one line naming the extra).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter  # the optional [tensorboard] extra
    except ImportError:
        raise UserError(EXTRA_HINT) from None
    return SummaryWriter


def _number(v: object) -> float | None:
    if isinstance(v, bool):
        return float(v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v)
    if isinstance(v, np.generic) and np.issubdtype(type(v), np.number):
        return float(v)
    return None


def probe_scalars(run: RunDir, epoch: int) -> dict[str, float]:
    """Tag -> value of the probes' summary scalars of `epoch`, from the parts the probes wrote for it.

    Args:
        run: The run folder.
        epoch: The epoch whose parts are read.

    Returns:
        The finite scalars by TensorBoard tag.
    """
    out: dict[str, float] = {}

    def part(table: str) -> pd.DataFrame | None:
        key = epoch_key(epoch)
        return run.read_part(table, key) if run.part_path(table, key).is_file() else None  # checked as any reader

    df = part("cosine")
    if df is not None and "statistic" in df:
        for r in df[df["statistic"] == "epoch_mean"].itertuples():
            out[f"cosine/{r.scope}/{r.group}"] = r.cosine
    df = part("inter_epoch")
    if df is not None and len(df):
        out["inter_epoch/cosine"] = df["cosine"].iloc[-1]
    df = part("crossings")
    if df is not None and "statistic" in df:
        tot = df[df["statistic"] == "epoch_total"]
        denom = float((tot["layer_size"] * tot["steps"]).sum()) if len(tot) else 0.0
        if denom > 0:
            out["crossings/share"] = float(tot["changed"].sum()) / denom
    df = part("hessian_trace")
    if df is not None:
        for r in df.itertuples():
            where = "" if r.scope == "model" else f"/{r.scope}/{r.group}"
            out[f"hessian_trace/{r.loss}/{r.estimator}{where}"] = r.trace
    df = part("hessian_eigenvalues")
    if df is not None:
        for r in df.itertuples():
            out[f"hessian_eigenvalue/{r.loss}/top{r.rank}"] = r.eigenvalue
    return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(float(v))}


def check_logdir(logdir: Path) -> Path:
    """Check a TensorBoard folder before the run folder is made.

    Args:
        logdir: The folder (it need not exist yet).

    Returns:
        `logdir`.

    Raises:
        UserError: It, or the nearest part of it that exists, is a file or cannot be written.
    """
    existing = next((p for p in [logdir, *logdir.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        what = "is an existing file" if existing == logdir else f"lies under {existing}, a file"
        raise UserError(f"--tensorboard {logdir} {what}, not a folder")
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--tensorboard {logdir}: {existing} is not writable")
    return logdir


class TensorBoardObserver(Observer):
    """Logs the metrics row and the probes' scalars of every epoch to TensorBoard.  Put it after the probes
    (train_job and the CLI do), so their parts of the epoch exist.

    Args:
        logdir: Where the event files go (default RUN/tensorboard).

    Raises:
        UserError: The tensorboard package is missing, or `logdir` is a file or cannot be written.
    """

    name = "tensorboard"

    def __init__(self, logdir: PathArg | None = None) -> None:
        self._writer_class = summary_writer_class()  # fail before training starts when the extra is missing
        self.logdir = None if logdir is None else check_logdir(Path(logdir))
        self.writer: SummaryWriter | None = None
        self.epochs = 0

    def on_train_start(self, ctx: ProbeContext) -> None:
        """Open the writer (RUN/tensorboard unless given); a resume drops what a crash left past its checkpoint.

        Args:
            ctx: The run's context (its folder, config and checkpoints).
        """
        logdir = self.logdir or Path(ctx.run.path) / "tensorboard"
        self.epochs = ctx.cfg.epochs
        done = sorted(ctx.run.checkpoints())
        # a resumed run continues after its last checkpoint: drop the curves a crash left past it
        self.writer = self._writer_class(log_dir=str(logdir), purge_step=(done[-1] + 1) if done else None)

    def on_epoch_end(self, ctx: ProbeContext, epoch: int, metrics: MetricsRow) -> None:
        """Log the epoch's metrics and probe scalars; close after the last epoch.

        Args:
            ctx: The run's context (its folder).
            epoch: The epoch just trained (the x-axis).
            metrics: Its metrics row (the numbers are logged, the epoch itself aside).
        """
        if self.writer is None:
            return
        for k, v in metrics.items():
            x = _number(v)
            if x is not None and k not in ("epoch",) and math.isfinite(x):
                self.writer.add_scalar(f"metrics/{k}", x, epoch)
        for tag, x in probe_scalars(ctx.run, epoch).items():
            self.writer.add_scalar(tag, x, epoch)
        self.writer.flush()
        if epoch >= self.epochs:
            self.close()

    def close(self) -> None:
        """Flush and close the writer."""
        if self.writer is not None:
            self.writer.close()
            self.writer = None
