"""Shared look and plumbing of the figure scripts: colours, labels, run loading, saving, script CLI.

Visual language (the paper's): KD (real-data distillation) in green, ZQ (zero-shot) in orange;
CE in reds and KL in blues wherever both losses share an axis; ZQ methods of Fig. 5 each their own
colour.  Every figure: readable font sizes, a title naming runs/methods, tight layout, PNG at 150 dpi
(PDF on request).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("MPLBACKEND", "Agg")
import matplotlib  # noqa: E402

matplotlib.use("Agg", force=True)
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from zsq_probe.errors import UserError  # noqa: E402
from zsq_probe.schema import TABLES, require_columns  # noqa: E402
from zsq_probe.store import RunDir  # noqa: E402

DPI = 150
FORMATS = ("png", "pdf")

KD_COLOR = "#1b9e77"   # green
ZQ_COLOR = "#d95f02"   # orange
CE_COLOR = "#c0392b"   # red
KL_COLOR = "#1f5fa8"   # blue
CE_CMAP = "Reds"
KL_CMAP = "Blues"
P_COLOR = "red"
METHOD_COLORS = {
    "kd": KD_COLOR,
    "gdfq": "#e41a1c",
    "kl-only": "#377eb8",
    "ait": "#4daf4a",
    "kl-only-high-lr": "#984ea3",
    "qimera": "#ff7f00",
    "qimera-ait": "#a65628",
}
_EXTRA_COLORS = ["#f781bf", "#999999", "#66c2a5", "#e6ab02", "#7570b3", "#a6761d"]

# How to produce each table (the skip messages name it).
HOW_TO_GET = {
    "metrics": "written by `zsq-probe train`",
    "cosine": "train with --probes cosine or run `zsq-probe cosine --run RUN`",
    "inter_epoch": "train with --probes inter_epoch",
    "crossings": "train with --probes crossings or run `zsq-probe crossings --run RUN`",
    "hessian_trace": "train with --probes hessian or run `zsq-probe hessian --run RUN`",
    "hessian_eigenvalues": "train with --probes hessian or run `zsq-probe hessian --run RUN`",
    "hessian_density": "train with --probes hessian or run `zsq-probe hessian --run RUN`",
    "slice": "train with --probes slice or run `zsq-probe slice --run RUN`",
}

plt.rcParams.update({
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "legend.fontsize": 8.5,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "axes.grid": True, "grid.alpha": 0.3,
    "axes.spines.top": False, "axes.spines.right": False, "figure.dpi": DPI, "savefig.dpi": DPI,
})


class SkipFigure(Exception):
    """The given runs lack the data this figure needs; str(exc) says what and how to get it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------------ runs
def open_runs(paths) -> list[RunDir]:
    if not paths:
        raise UserError("no runs given: pass --runs RUN [RUN ...]")
    return [r if isinstance(r, RunDir) else RunDir.open(r) for r in paths]


def config(run: RunDir) -> dict:
    return run.read_config_doc().get("config", {}) or {}


def method(run: RunDir) -> str:
    return str(config(run).get("method") or "?")


def is_kd(run: RunDir) -> bool:
    return method(run) == "kd"


def kind(run: RunDir) -> str:
    return "KD" if is_kd(run) else "ZQ"


def setting(run: RunDir) -> str:
    """teacher/data, e.g. 'resnet20_cifar10/cifar10'."""
    cfg = config(run)
    teacher = cfg.get("teacher") or "?"
    data = cfg.get("data") or "?"
    return f"{teacher}/{data}"


def label(run: RunDir) -> str:
    """What a legend or a title calls a run: 'KD (kd, run-name)' / 'ZQ (gdfq, run-name)'."""
    return f"{kind(run)}: {method(run)} ({run.name})"


def kind_color(run: RunDir, index: int = 0) -> str:
    """KD green / ZQ orange; further runs of the same kind get darker/lighter shades."""
    base = KD_COLOR if is_kd(run) else ZQ_COLOR
    if index == 0:
        return base
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(base))
    f = [0.6, 1.35, 0.4, 1.6][(index - 1) % 4]
    return tuple(np.clip(rgb * f if f < 1 else rgb + (1 - rgb) * (f - 1), 0, 1))


def kind_colors(runs) -> dict[str, object]:
    """Run name -> colour: KD runs in greens, ZQ runs in oranges (shades when several)."""
    seen = {"KD": 0, "ZQ": 0}
    out = {}
    for r in runs:
        k = kind(r)
        out[r.name] = kind_color(r, seen[k])
        seen[k] += 1
    return out


def method_colors(runs) -> dict[str, object]:
    out, extra = {}, iter(_EXTRA_COLORS * 4)
    used = set()
    for r in runs:
        m = method(r)
        c = METHOD_COLORS.get(m)
        if c is None or c in used:
            c = next(extra)
        used.add(c)
        out[r.name] = c
    return out


def has_table(run: RunDir, table: str) -> bool:
    return bool(run.part_keys(table))


def runs_with(runs, table: str, figure: str, what: str | None = None) -> list[RunDir]:
    """The runs holding `table`; SkipFigure naming the table and how to produce it when none does."""
    have = [r for r in runs if has_table(r, table)]
    if not have:
        names = ", ".join(r.name for r in runs)
        raise SkipFigure(f"no run has probes/{table} ({HOW_TO_GET.get(table, 'see the README')}; runs: {names})"
                         + (f"; {what}" if what else ""))
    return have


def read(run: RunDir, table: str, columns=None, figure: str = "") -> "pd.DataFrame":  # noqa: F821
    """A table of a run with its needed columns checked (UserError naming a missing column)."""
    df = run.read_table(table)
    require_columns(df, table, columns if columns is not None else list(TABLES[table]),
                    f"{figure + ': ' if figure else ''}{run.name} probes/{table}")
    return df


def pick_epoch(available, wanted, what: str) -> int:
    available = sorted(int(e) for e in available)
    if not available:
        raise SkipFigure(f"{what}: no epochs with data")
    if wanted is None:
        return available[-1]
    if int(wanted) not in available:
        raise UserError(f"{what}: no data for epoch {wanted} (epochs with data: {_elist(available)})")
    return int(wanted)


def _elist(epochs) -> str:
    epochs = list(epochs)
    return f"{epochs[0]}..{epochs[-1]}" if len(epochs) > 8 else ", ".join(map(str, epochs))


def middle_epoch(available) -> int:
    """The paper's snapshots are 'captured from middle of the training' (epoch 200 of 400)."""
    available = sorted(int(e) for e in available)
    return available[(len(available) - 1) // 2]


def parse_epochs(text) -> list[int] | None:
    if text is None or text == "":
        return None
    if isinstance(text, (list, tuple)):
        return [int(e) for e in text]
    try:
        return [int(t) for t in str(text).split(",") if t.strip()]
    except ValueError:
        raise UserError(f"--epochs takes comma-separated epoch numbers (e.g. 60,350), got {text!r}") from None


# ------------------------------------------------------------------------------------------ output
def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise UserError(f"unknown format {fmt!r}: choose one of {', '.join(FORMATS)}")
    return fmt


def save(fig, out_dir, name: str, fmt: str = "png") -> Path:
    check_format(fmt)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.{fmt}"
    fig.savefig(path, format=fmt, dpi=DPI, bbox_inches="tight")
    plt.close(fig)
    return path


def safe_name(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def epoch_axis(ax, xlabel: str = "Epoch") -> None:
    ax.set_xlabel(xlabel)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=8))


def zero_line(ax) -> None:
    ax.axhline(0.0, color="0.35", lw=0.8, ls="-", zorder=0)


def note(ax, text: str) -> None:
    """A panel that has no data says so in words (never an empty, silent panel)."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=9, color="0.35",
            wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)


def grid_shape(n: int, max_cols: int = 3) -> tuple[int, int]:
    cols = min(n, max_cols)
    return (n + cols - 1) // cols, cols


# --------------------------------------------------------------------------------------- script CLI
def script_main(module, argv=None) -> int:
    """`python figures/<script>.py --runs RUN [RUN ...] --out DIR [--format png|pdf] [...]`."""
    import inspect

    params = inspect.signature(module.plot).parameters
    p = argparse.ArgumentParser(prog=Path(getattr(module, "__file__", "figure.py")).name,
                                description=f"{module.FIGURE}: {module.DESCRIPTION}")
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="run folders")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--format", default="png", choices=FORMATS)
    if "epoch" in params:
        p.add_argument("--epoch", type=int, help="epoch of the snapshot (default: see the description)")
    if "epochs" in params:
        p.add_argument("--epochs", help="two comma-separated epochs, e.g. 60,350")
    args = p.parse_args(argv)
    options = {}
    if "epoch" in params:
        options["epoch"] = args.epoch
    if "epochs" in params:
        options["epochs"] = args.epochs
    try:
        paths = module.plot(open_runs(args.runs), args.out, fmt=args.format, **options)
    except SkipFigure as e:
        print(f"skipped {module.FIGURE}: {e.reason}", file=sys.stderr)
        return 2
    except UserError as e:
        print(f"{module.FIGURE}: error: {e}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0
