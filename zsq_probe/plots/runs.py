"""What the figures need to know about a run: its method and kind (KD or ZQ), its label and colour,
its tables (read with their columns checked), and which epoch to draw.

A figure that lacks data raises `SkipFigure(reason)` (the reason names the table and how to produce
it); data that is there but wrong raises `UserError`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zsq_probe.compare import HOW_TO_GET
from zsq_probe.errors import UserError
from zsq_probe.plots.style import EXTRA_COLORS, KD_COLOR, METHOD_COLORS, ZQ_COLOR
from zsq_probe.schema import TABLES, require_columns
from zsq_probe.selection import epoch_list
from zsq_probe.store import RunDir


class SkipFigure(Exception):
    """The given runs lack the data this figure needs; str(exc) says what and how to get it."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------------ runs
def open_run(run) -> RunDir:
    """A RunDir from a RunDir or a run folder path."""
    return run if isinstance(run, RunDir) else RunDir.open(run)


def open_runs(paths) -> list[RunDir]:
    if not paths:
        raise UserError("no runs given: pass --runs RUN [RUN ...]")
    if isinstance(paths, (str, Path, RunDir)):
        paths = [paths]
    return [open_run(r) for r in paths]


def config(run: RunDir) -> dict:
    """The run's config as flat keys (method, teacher, data, gi, source, generator, ...), whether its
    config.json holds one flat dict or nested sections."""
    return flat_config(run.read_config_doc().get("config", {}) or {})


def flat_config(doc: dict) -> dict:
    """A config.json 'config' dict with its nested sections ({'inundation': {'enabled': ...}}) turned into
    the flat keys `--set` uses ('gi'); a flat dict is returned as it is."""
    try:
        from zsq_probe.config import FLAT_KEYS
    except ImportError:  # a config module without nested sections
        FLAT_KEYS = {}
    flat_name = {where: key for key, where in FLAT_KEYS.items()}
    out = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            out.update({flat_name.get((key, name), name): v for name, v in value.items()})
        else:
            out[key] = value
    return out


def method(run: RunDir) -> str:
    return str(config(run).get("method") or "?")


def is_kd(run: RunDir) -> bool:
    return method(run) == "kd"


def kind(run: RunDir) -> str:
    """'KD' (real-data distillation) or 'ZQ' (zero-shot)."""
    return "KD" if is_kd(run) else "ZQ"


def setting(run: RunDir) -> str:
    """teacher/data, e.g. 'resnet20_cifar10/cifar10'."""
    cfg = config(run)
    return f"{cfg.get('teacher') or '?'}/{cfg.get('data') or '?'}"


def label(run: RunDir) -> str:
    """What a legend or a title calls a run: 'KD: kd (run-name)' / 'ZQ: gdfq (run-name)'."""
    return f"{kind(run)}: {method(run)} ({run.name})"


def kd_first(runs) -> list[RunDir]:
    """KD runs before ZQ runs (the paper's panel order), otherwise in the order given."""
    return sorted(runs, key=lambda r: not is_kd(r))


# ---------------------------------------------------------------------------------------- colours
def kind_color(run: RunDir, index: int = 0):
    """KD green / ZQ orange; further runs of the same kind get darker/lighter shades."""
    base = KD_COLOR if is_kd(run) else ZQ_COLOR
    if index == 0:
        return base
    from matplotlib.colors import to_rgb

    rgb = np.array(to_rgb(base))
    f = [0.6, 1.35, 0.4, 1.6][(index - 1) % 4]
    return tuple(np.clip(rgb * f if f < 1 else rgb + (1 - rgb) * (f - 1), 0, 1))


def default_color(run):
    """A run's kind colour (KD green, ZQ orange); ZQ orange for a table given without its run."""
    return kind_color(run) if run is not None else ZQ_COLOR


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
    """Run name -> its method's colour (METHOD_COLORS); a spare colour when taken or unknown."""
    out, extra = {}, iter(EXTRA_COLORS * 4)
    used = set()
    for r in runs:
        c = METHOD_COLORS.get(method(r))
        if c is None or c in used:
            c = next(extra)
        used.add(c)
        out[r.name] = c
    return out


# ----------------------------------------------------------------------------------------- tables
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


def read(run: RunDir, table: str, columns=None, figure: str = ""):
    """A table of a run with its needed columns checked (UserError naming a missing column)."""
    df = run.read_table(table)
    require_columns(df, table, columns if columns is not None else list(TABLES[table]),
                    f"{figure + ': ' if figure else ''}{run.name} probes/{table}")
    return df


def where(figure: str, run, table: str) -> str:
    """Where a table came from, for messages: 'fig1: run-name probes/cosine' (parts left out when unknown)."""
    parts = [f"{figure}:" if figure else "", run.name if run is not None else "", f"probes/{table}"]
    return " ".join(p for p in parts if p)


def table_of(source, table: str, columns, figure: str = ""):
    """(run or None, DataFrame) from a run (RunDir or folder) or a DataFrame of `table` already read."""
    import pandas as pd

    if isinstance(source, pd.DataFrame):
        require_columns(source, table, columns, f"{figure + ': ' if figure else ''}probes/{table}")
        return None, source
    run = open_run(source)
    return run, read(run, table, columns, figure)


# ----------------------------------------------------------------------------------------- epochs
def pick_epoch(available, wanted, what: str) -> int:
    """`wanted` if it has data (UserError otherwise); the last epoch with data when None."""
    available = sorted(int(e) for e in available)
    if not available:
        raise SkipFigure(f"{what}: no epochs with data")
    if wanted is None:
        return available[-1]
    if int(wanted) not in available:
        raise UserError(f"{what}: no data for epoch {wanted} (epochs with data: {epoch_list(available)})")
    return int(wanted)


def middle_epoch(available) -> int:
    """The paper's snapshots are 'captured from middle of the training' (epoch 200 of 400)."""
    available = sorted(int(e) for e in available)
    return available[(len(available) - 1) // 2]
