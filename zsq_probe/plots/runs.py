"""What the figures need to know about a run: its method and kind (KD or ZQ), its label and colour,
its tables (read with their columns checked), and which epoch to draw.

A figure that lacks data raises `SkipFigure(reason)` (the reason names the table and how to produce
it); data that is there but wrong raises `UserError`.
"""

from __future__ import annotations

import json
import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, SupportsInt, TypeAlias, TypeVar

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from zsq_probe.analysis.epochs import epoch_list
from zsq_probe.analysis.probe_tables import HOW_TO_GET
from zsq_probe.analysis.run_settings import distinct_runs, run_setting
from zsq_probe.config import FLAT_KEYS
from zsq_probe.errors import UserError
from zsq_probe.plots.style import ZQ_COLOR, canonical_method, method_style, safe_name
from zsq_probe.presets import DATASET_SCALES, dataset_family
from zsq_probe.rundir.schema import TABLES, require_columns, tripped_health_checks
from zsq_probe.rundir.store import JSONDict, PathArg, RunDir

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import ColorType

RunSource: TypeAlias = RunDir | PathArg  # a run: a RunDir or its folder
RunsArg: TypeAlias = RunSource | Iterable[RunSource]  # one run or several
TableSource: TypeAlias = RunSource | pd.DataFrame  # a run, or one of its tables already read
# epochs as a caller gives them: '60,350', '3-12', one number or numbers (zsq_probe.analysis.epochs.parse_epochs)
EpochsArg: TypeAlias = str | int | Iterable[SupportsInt] | None
SeedCurves: TypeAlias = tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64], int]

_T = TypeVar("_T")


class SkipFigure(Exception):
    """The given runs lack the data this figure needs; str(exc) says what and how to get it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# ------------------------------------------------------------------------------------------ runs
def open_run(run: RunSource) -> RunDir:
    """A RunDir from a RunDir or a run folder path."""
    return run if isinstance(run, RunDir) else RunDir.open(run)


def open_runs(paths: RunsArg) -> list[RunDir]:
    """RunDirs of the runs given (one or a list); UserError when none is."""
    if not paths:
        raise UserError("no runs given: pass --runs RUN [RUN ...]")
    return distinct_runs([open_run(r) for r in as_list(paths)])  # a copied run is one run (one seed), with a warning


def as_list(runs: RunsArg) -> list[RunSource]:
    """One run (a RunDir or a folder) as a list of one; several runs as a list."""
    return [runs] if isinstance(runs, (str, os.PathLike, RunDir)) else list(runs)


def config(run: RunDir) -> JSONDict:
    """The run's config as flat keys (method, teacher, data, gi, source, generator, ...), whether its
    config.json holds one flat dict or nested sections."""
    return flat_config(run.read_config_doc().get("config", {}) or {})


def flat_config(doc: Mapping[str, object]) -> JSONDict:
    """A config.json 'config' dict with its nested sections ({'inundation': {'enabled': ...}}) turned into
    the flat keys `--set` uses ('gi'); a flat dict is returned as it is."""
    flat_name = {where: key for key, where in FLAT_KEYS.items()}
    out: JSONDict = {}
    for key, value in doc.items():
        if isinstance(value, dict):
            section: Mapping[str, object] = value  # a config.json section: its keys are strings
            out.update({flat_name.get((key, name), name): v for name, v in section.items()})
        else:
            out[key] = value
    return out


def method(run: RunDir) -> str:
    """A run's method as its config names it ('?' when it names none)."""
    return str(config(run).get("method") or "?")


def is_kd(run: RunDir) -> bool:
    """Whether a run is real-data distillation (method 'kd')."""
    return method(run) == "kd"


def kind(run: RunDir) -> str:
    """'KD' (real-data distillation) or 'ZQ' (zero-shot)."""
    return "KD" if is_kd(run) else "ZQ"


def setting(run: RunDir) -> str:
    """teacher/data, e.g. 'resnet20_cifar10/cifar10': the names the config gives (a teacher module of your own: its
    cfg.teacher and its DatasetSpec's name, recorded under config.json's 'teacher')."""
    cfg = config(run)
    recorded = run.read_config_doc().get("teacher") or {}
    own = isinstance(recorded, dict) and recorded.get("source") == "module"
    data = recorded.get("dataset") if own else cfg.get("data")
    return f"{cfg.get('teacher') or '?'}/{data or '?'}"


def label(run: RunDir) -> str:
    """What a legend or a title calls a run: 'KD' / 'ZQ: gdfq' (the run names are in the caption)."""
    m = method(run)
    return "KD" if m == "kd" else f"ZQ: {m}"


def kd_first(runs: Iterable[RunDir]) -> list[RunDir]:
    """KD runs before ZQ runs (the paper's panel order), otherwise in the order given."""
    return sorted(runs, key=lambda r: not is_kd(r))


# ---------------------------------------------------------------------------------------- colours
def kind_color(run: RunDir, index: int = 0) -> str:
    """The run's method colour (style.METHOD_STYLE, the same in every figure)."""
    return method_style(method(run), index)[0]


def marker(run: RunDir, index: int = 0) -> str:
    """A run's plot marker (by its method)."""
    return method_style(method(run), index)[1]


def default_color(run: RunDir | None) -> str:
    """A run's method colour; the GDFQ colour for a table given without its run."""
    return kind_color(run) if run is not None else ZQ_COLOR


def kind_colors(runs: Iterable[RunDir]) -> dict[str, object]:
    """Run name -> its method's colour (one colour per method in every figure)."""
    return method_colors(runs)


def method_colors(runs: Iterable[RunDir]) -> dict[str, object]:
    """Run name -> its method's colour (style.METHOD_STYLE keyed by the canonical method name)."""
    unknown: dict[str, int] = {}
    out: dict[str, object] = {}
    for r in runs:
        m = canonical_method(method(r))
        out[r.name] = method_style(m, unknown.setdefault(m, len(unknown)))[0]
    return out


def seed(run: RunDir) -> object:
    """A run's seed as its config records it."""
    return config(run).get("seed")


def seed_key(run: RunDir) -> str:
    """What identifies a run's setting apart from its seed (method, teacher, data, lr, epochs, ...)."""
    return json.dumps(run_setting(run), sort_keys=True, default=str)


def seed_groups(runs: Iterable[RunDir]) -> list[list[RunDir]]:
    """Runs that differ only by seed (and probe settings) grouped, in the order first seen."""
    groups: dict[str, list[RunDir]] = {}
    for r in runs:
        groups.setdefault(seed_key(r), []).append(r)
    return list(groups.values())


def representatives(runs: Iterable[RunDir], table: str | None = None) -> list[RunDir]:
    """One run per seed group (the first holding `table` when given): the panels of per-run figures."""
    out: list[RunDir] = []
    for g in seed_groups(runs):
        have = [r for r in g if table is None or has_table(r, table)]
        if have:
            out.append(have[0])
    return out


def file_labels(runs: Sequence[RunDir]) -> dict[str, str]:
    """Run id -> what a per-run figure's file name calls the run: its folder name, made safe for a file name,
    with the first 8 characters of its run id added when another run drawn has the same folder name."""
    names = [safe_name(r.name) for r in runs]
    return {
        r.run_id: name if names.count(name) == 1 else f"{name}-{safe_name(r.run_id)[:8]}"
        for r, name in zip(runs, names)
    }


def group_label(group: Sequence[RunDir]) -> str:
    """'gdfq (n=2)': a method and the number of seeds aggregated."""
    return f"{method(group[0])} (n={len(group)})"


# ----------------------------------------------------------------------------------------- tables
def has_table(run: RunDir, table: str) -> bool:
    """Whether a run holds any part of `table`."""
    return bool(run.part_keys(table))


def runs_with(runs: Sequence[RunDir], table: str, figure: str, what: str | None = None) -> list[RunDir]:
    """The runs holding `table`; SkipFigure naming the table and how to produce it when none does."""
    have = [r for r in runs if has_table(r, table)]
    if not have:
        names = ", ".join(r.name for r in runs)
        raise SkipFigure(
            f"no run has probes/{table} ({HOW_TO_GET.get(table, 'see docs/run-directory.md')}; runs: {names})"
            + (f"; {what}" if what else "")
        )
    return have


def read(run: RunDir, table: str, columns: Sequence[str] | None = None, figure: str = "") -> pd.DataFrame:
    """A table of a run with its needed columns checked (UserError naming a missing column)."""
    df = run.read_table(table)
    require_columns(
        df,
        table,
        columns if columns is not None else list(TABLES[table]),
        f"{figure + ': ' if figure else ''}{run.name} probes/{table}",
    )
    return df


def where(figure: str, run: RunDir | None, table: str) -> str:
    """Where a table came from, for messages: 'fig1: run-name probes/cosine' (parts left out when unknown)."""
    parts = [f"{figure}:" if figure else "", run.name if run is not None else "", f"probes/{table}"]
    return " ".join(p for p in parts if p)


def table_of(
    source: TableSource, table: str, columns: Sequence[str], figure: str = ""
) -> tuple[RunDir | None, pd.DataFrame]:
    """(run or None, DataFrame) from a run (RunDir or folder) or a DataFrame of `table` already read."""
    if isinstance(source, pd.DataFrame):
        require_columns(source, table, columns, f"{figure + ': ' if figure else ''}probes/{table}")
        return None, source
    run = open_run(source)
    return run, read(run, table, columns, figure)


# ----------------------------------------------------------------------------------------- epochs
def pick_epoch(available: Iterable[SupportsInt], wanted: SupportsInt | None, what: str) -> int:
    """`wanted` if it has data (UserError otherwise); the last epoch with data when None."""
    epochs = sorted(int(e) for e in available)
    if not epochs:
        raise SkipFigure(f"{what}: no epochs with data")
    if wanted is None:
        return epochs[-1]
    if int(wanted) not in epochs:
        raise UserError(f"{what}: no data for epoch {wanted} (epochs with data: {epoch_list(epochs)})")
    return int(wanted)


def middle_epoch(available: Iterable[SupportsInt]) -> int:
    """The paper's snapshots are 'captured from middle of the training' (epoch 200 of 400)."""
    epochs = sorted(int(e) for e in available)
    return epochs[(len(epochs) - 1) // 2]


# ------------------------------------------------------------------------------------------ seeds
def seed_mean(frames: Iterable[pd.DataFrame], x: str, y: str) -> SeedCurves:
    """Runs differing only by seed -> (x, mean, low, high, n) over the x values they share; the band is the
    seed interval [min, max] (what the findings compare)."""
    means = [f[[x, y]].groupby(x, as_index=True)[y].mean() for f in frames if len(f)]
    if not means:
        return np.array([]), np.array([]), np.array([]), np.array([]), 0
    table = pd.concat(means, axis=1).sort_index()
    xs = table.index.to_numpy(dtype=float)
    values = table.to_numpy(dtype=float)
    return xs, np.nanmean(values, axis=1), np.nanmin(values, axis=1), np.nanmax(values, axis=1), len(means)


def draw_seed_band(
    ax: Axes,
    frames: Iterable[pd.DataFrame],
    x: str,
    y: str,
    color: ColorType,
    label: str,
    marker: str | None = "o",
    ls: str = "-",
) -> int:
    """Mean over seeds (line, `label` + ' (n=N)') with the seed interval [min, max] shaded; returns n."""
    xs, mean, low, high, n = seed_mean(frames, x, y)
    if n == 0:
        return 0
    ax.plot(xs, mean, color=color, marker=marker if len(xs) <= 40 else None, ms=3, ls=ls, label=f"{label} (n={n})")
    if n > 1:
        ax.fill_between(xs, low, high, color=color, alpha=0.2, lw=0)
    return n


# ---------------------------------------------------------------------------------------- captions
@dataclass(frozen=True)
class Drawn:
    """What a built figure shows, for its caption: the runs drawn (only those are listed) and the written
    caption text (what is drawn, how it is aggregated, what the colours and lines mean)."""

    runs: tuple[RunDir, ...]
    text: str


_DRAWN: weakref.WeakKeyDictionary[Figure, Drawn] = weakref.WeakKeyDictionary()


def describe(fig: Figure, runs: Iterable[RunDir], text: str) -> Figure:
    """Record on `fig` the runs it draws and its caption text (catalog.caption writes them); returns fig."""
    _DRAWN[fig] = Drawn(tuple(runs), " ".join(text.split()))
    return fig


def drawn(fig: Figure) -> Drawn | None:
    """What `describe` recorded for `fig` (None when nothing was)."""
    return _DRAWN.get(fig)


def scale_lr(run: RunDir) -> float | None:
    """The base learning rate of the run's data-set scale (presets.DATASET_SCALES), None when unknown."""
    try:
        return float(DATASET_SCALES[dataset_family(str(config(run).get("data") or ""))]["lr"])
    except (UserError, KeyError, TypeError, ValueError):
        return None


def raised_lr(run: RunDir) -> bool:
    """Whether the run's lr differs from its data-set scale's base lr."""
    lr, base = config(run).get("lr"), scale_lr(run)
    return lr is not None and bool(base) and not np.isclose(float(lr), float(base or 0))


def lr_short(run: RunDir) -> str:
    """'lr 0.01 = 10× base' for a legend (the run's lr over its scale's base lr, from the config)."""
    lr, base = float(config(run).get("lr") or 0), scale_lr(run) or 1.0
    return f"lr {lr:g} = {lr / base:.3g}× base"


def lr_text(run: RunDir) -> str:
    """'lr 0.01 (10× the digits scale's 0.001)' when the run's lr differs from its scale's base lr, else 'lr 0.001'
    (the factor is read from the config, never assumed)."""
    return lr_text_for(config(run))


def lr_text_for(cfg: Mapping[str, Any]) -> str:
    """`lr_text` of a run's flat config."""
    lr = cfg.get("lr")
    if lr is None:
        return "lr not recorded"
    try:
        base = float(DATASET_SCALES[dataset_family(str(cfg.get("data") or ""))]["lr"])
    except (UserError, KeyError, TypeError, ValueError):
        return f"lr {float(lr):g}"
    if not np.isclose(float(lr), base):
        return f"lr {float(lr):g} ({float(lr) / base:.3g}× the {cfg.get('data')} scale's {base:g})"
    return f"lr {float(lr):g}"


def schedule_text(run: RunDir) -> str:
    """'12 epochs × 25 iterations, warm-up 2': what an epoch of this run is, from its config."""
    cfg = config(run)
    iters = cfg.get("iters_per_epoch")
    per = f"{iters} iterations" if iters else "one pass over the data"
    warm = cfg.get("warmup_epochs")
    return f"{cfg.get('epochs')} epochs × {per}" + (f", warm-up {warm}" if warm and not is_kd(run) else "")


def tripped_checks_text(run: RunDir) -> str:
    """'chance_top1 (epochs 1, 2), wide_ranges (epochs 1, 2)' from the metrics table's `health` column ('' when
    none tripped or the run predates the checks)."""
    if not has_table(run, "metrics"):
        return ""
    tripped = tripped_health_checks(run.read_table("metrics"))
    return ", ".join(f"{check} (epochs {epoch_list(sorted(set(e)))})" for check, e in tripped.items())


def pages(items: Iterable[_T], per_page: int) -> list[list[_T]]:
    """`items` cut into pages of at most `per_page` (a figure that would pass style.MAX_HEIGHT goes on to more
    files)."""
    listed = list(items)
    return [listed[i : i + per_page] for i in range(0, len(listed), per_page)] or [[]]


def page_stem(stem: str, index: int) -> str:
    """The file stem of page `index` (0-based): the first page keeps `stem`, then STEM_2, STEM_3, ..."""
    return stem if index == 0 else f"{stem}_{index + 1}"


def require_settings(runs: Iterable[RunDir], figure: str, instead: str) -> dict[str, list[RunDir]]:
    """{setting (teacher/data): its runs, KD first}; SkipFigure with a one-line reason when the runs span one
    setting (the cross-setting figure would repeat `instead`)."""
    settings: dict[str, list[RunDir]] = {}
    for r in kd_first(runs):
        settings.setdefault(setting(r), []).append(r)
    if len(settings) < 2:
        raise SkipFigure(
            f"{figure} compares (data set, model) settings and the runs span one ({next(iter(settings))}): "
            f"{instead} draws it"
        )
    return settings
