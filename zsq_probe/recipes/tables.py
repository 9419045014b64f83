"""Tables: a recipe's finished runs as the paper's table, each of our cells (mean ± std over seeds, ddof=1)
beside the paper's value, written to OUT/tables/<recipe>.txt and its long form to .csv."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias, TypedDict

from zsq_probe.recipes.jobs import Job
from zsq_probe.recipes.specs import TINY_SCALE, PaperValue, Recipe, bits_label

if TYPE_CHECKING:
    from zsq_probe.rundir.store import PathArg

METRICS = {"best": "best_val_top1", "final": "final_val_top1"}

Layout: TypeAlias = Mapping[str, Any]
"""A part of a recipe's table layout: the table, a block, a row or a column (dicts the recipe writes)."""


class CellRow(TypedDict):
    """One (block, row, column) cell of the table's long form (:func:`table_cells`)."""

    block: str
    row: str
    column: str
    run: str | None  # the paper run id; None: the paper's value only
    planned: bool  # whether the run was planned
    n: int  # finished seeds
    mean: float | None
    std: float | None
    paper: float | None  # the paper's mean
    paper_std: float | None
    text: str  # ours as shown
    paper_text: str  # the paper's as shown


CellKey: TypeAlias = tuple[str, str, str]
"""(block title, row label, column name)."""


def stats(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """The mean and spread of the finite values.

    Args:
        values: The values (None and non-finite ones are left out).

    Returns:
        (mean, sample std with ddof=1, n); the std is None when n < 2, the mean too when n == 0.
    """
    vals = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    n = len(vals)
    if n == 0:
        return None, None, 0
    mean = sum(vals) / n
    if n < 2:
        return mean, None, n
    var = sum((v - mean) ** 2 for v in vals) / (n - 1)
    return mean, math.sqrt(var), n


def format_stat(mean: float | None, std: float | None, n: int, expected_n: int | None = None, digits: int = 2) -> str:
    """Our value as the table shows it.

    Args:
        mean: The mean over seeds.
        std: Their sample std (needed when n >= 2).
        n: The number of seeds.
        expected_n: The seeds planned; fewer are marked.
        digits: Decimals.

    Returns:
        '65.80 ± 0.20' (n seeds), '65.80 (n=1)' (one seed), '—' (none); '[n=2]' added when seeds are missing.
    """
    if n == 0 or mean is None:
        return "—"
    if n == 1:
        return f"{mean:.{digits}f} (n=1)"
    text = f"{mean:.{digits}f} ± {std:.{digits}f}"
    if expected_n is not None and n < expected_n:
        text += f" [n={n}]"
    return text


def format_paper(value: PaperValue, digits: int = 2) -> str:
    """The paper's value as the table shows it.

    Args:
        value: A number, a (mean, std) pair or None.
        digits: Decimals.

    Returns:
        '91.23', '65.41 ± 0.20' (a mean ± std pair) or '—' (none).
    """
    if value is None:
        return "—"
    if isinstance(value, (list, tuple)):
        return f"{value[0]:.{digits}f} ± {value[1]:.{digits}f}"
    return f"{value:.{digits}f}"


def paper_mean(value: PaperValue) -> float | None:
    """The paper's value as one number.

    Args:
        value: A number, a (mean, std) pair or None.

    Returns:
        The number, the pair's mean, or None.
    """
    if value is None:
        return None
    return value[0] if isinstance(value, (list, tuple)) else value


def _columns(table: Layout) -> list[dict[str, Any]]:
    return [c if isinstance(c, dict) else {"name": c} for c in table["columns"]]


def collect(jobs: Iterable[Job], metric: str = "best") -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """The jobs' finished top-1 values.

    Args:
        jobs: The jobs.
        metric: 'best' or 'final' top-1.

    Returns:
        (paper run id -> top-1 values in percent, one per finished seed; paper run id -> the teachers' top-1s).
    """
    key = METRICS[metric]
    values: dict[str, list[float]] = {}
    teacher: dict[str, list[float]] = {}
    for j in jobs:
        values.setdefault(j.paper_id, [])
        s = j.summary()
        if s is None:
            continue
        if s.get(key) is not None:
            values[j.paper_id].append(100.0 * s[key])
        if s.get("teacher_top1") is not None:
            teacher.setdefault(j.paper_id, []).append(100.0 * s["teacher_top1"])
    return values, teacher


def table_cells(table: Layout, values: Mapping[str, list[float]], expected_n: int | None = None) -> list[CellRow]:
    """Long form of the table: one row per (block, row, column) cell with our stats and the paper's value.

    Args:
        table: The recipe's table layout.
        values: Paper run id -> values (runs absent from `values` were not planned).
        expected_n: The seeds planned per run.

    Returns:
        The cells, block by block, row by row, column by column.
    """
    cols = _columns(table)
    out: list[CellRow] = []
    for b in table["blocks"]:
        for row in b["rows"]:
            for c in cols:
                cl = row["cells"].get(c["name"])
                if cl is None:
                    continue
                rid = cl["run"]
                planned = rid is not None and rid in values
                mean, std, n = stats(values.get(rid, [])) if planned else (None, None, 0)
                out.append(
                    {
                        "block": b["title"],
                        "row": row["label"],
                        "column": c["name"],
                        "run": rid,
                        "planned": planned,
                        "n": n,
                        "mean": mean,
                        "std": std,
                        "paper": paper_mean(cl["paper"]),
                        "paper_std": cl["paper"][1] if isinstance(cl["paper"], (list, tuple)) else None,
                        "text": format_stat(mean, std, n, expected_n)
                        if planned
                        else ("not run" if rid is None else "·"),
                        "paper_text": format_paper(cl["paper"]),
                    }
                )
    return out


def _delta(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return ""
    return f" ({a - b:+.2f})"


def render_table(
    table: Layout,
    values: Mapping[str, list[float]],
    teacher: Mapping[str, list[float]] | None = None,
    expected_n: int | None = None,
    header_note: str = "",
    standins: Mapping[str, str] | None = None,
) -> str:
    """The paper's table layout, each of our cells ('mean ± std' over seeds) beside the paper's value.

    Blocks and rows none of whose runs were planned are left out; '·' marks a cell whose run was not
    planned (--only, tiny scale), 'not run' a cell the paper has but zsq-probe cannot run, '—' a planned
    run without a finished seed; columns without a planned run are left out too.

    Args:
        table: The recipe's table layout.
        values: Paper run id -> our values.
        teacher: Paper run id -> the teachers' top-1s, shown beside a block's paper full-precision value.
        expected_n: The seeds planned per run.
        header_note: Lines under the title.
        standins: Paper run id -> the label of the run trained for it (tiny scale), named in the block title.

    Returns:
        The table's text.
    """
    cells = {(c["block"], c["row"], c["column"]): c for c in table_cells(table, values, expected_n)}
    cols = _shown_columns(_columns(table), cells)
    lines = [table["title"]]
    if header_note:
        lines.append(header_note)
    for b in table["blocks"]:
        rows = _block_rows(b, cols, cells)
        if not rows:
            continue
        grid = [_grid_line(b["title"], r, cols, cells) for r in rows]
        lines += ["", _block_title(b, rows, cols, teacher, standins)]
        lines += _format_grid(grid, cols, table.get("row_header", ""))
    if table.get("notes"):
        lines += [""] + [f"note: {n}" for n in table["notes"]]
    return "\n".join(lines)


def _shown_columns(cols: list[dict[str, Any]], cells: Mapping[CellKey, CellRow]) -> list[dict[str, Any]]:
    """The columns with a planned run (all of them when none has one); a column whose `delta_from` is left
    out shows no difference."""
    shown = [c for c in cols if any(v["planned"] for k, v in cells.items() if k[2] == c["name"])]
    if not shown:
        return cols
    names = {c["name"] for c in shown}
    return [dict(c, delta_from=None) if c.get("delta_from") not in names else c for c in shown]


def _is_planned(cells: Mapping[CellKey, CellRow], key: CellKey) -> bool:
    cell = cells.get(key)
    return cell is not None and cell["planned"]


def _block_rows(block: Layout, cols: list[dict[str, Any]], cells: Mapping[CellKey, CellRow]) -> list[Layout]:
    """A block's rows with a planned run, and its paper-only rows (every cell 'not run', e.g. Tab. 3's
    LARS); none when no row has a planned run."""
    planned = [any(_is_planned(cells, (block["title"], r["label"], c["name"])) for c in cols) for r in block["rows"]]
    if not any(planned):
        return []
    return [
        r
        for r, has_planned in zip(block["rows"], planned)
        if has_planned or all(cl["run"] is None for cl in r["cells"].values())
    ]


def _block_title(
    block: Layout,
    rows: list[Layout],
    cols: list[dict[str, Any]],
    teacher: Mapping[str, list[float]] | None,
    standins: Mapping[str, str] | None,
) -> str:
    """A block's title, with the stand-ins trained for it (tiny scale) and the teacher's top-1 beside the
    paper's full-precision value."""
    title: str = block["title"]
    if standins:
        labels = sorted({standins[cl["run"]] for r in rows for cl in r["cells"].values() if cl["run"] in standins})
        if labels:
            title += f"  [ours: {', '.join(labels)}]"
    if teacher is not None and block.get("fp32") is not None:
        runs = [(r["cells"].get(c["name"]) or {}).get("run") for r in rows for c in cols]
        t_vals = [v for run in runs if run is not None for v in teacher.get(run, [])]
        ours = stats(t_vals)[0]
        title += f"  (teacher top-1: ours {'—' if ours is None else f'{ours:.2f}'}, paper {block['fp32']:.2f})"
    return title


def _grid_line(
    block_title: str, row: Layout, cols: list[dict[str, Any]], cells: Mapping[CellKey, CellRow]
) -> list[str]:
    """A row's label, then (ours, paper) per column, each with its difference to the `delta_from` column."""
    line = [row["label"]]
    for c in cols:
        cl = cells.get((block_title, row["label"], c["name"]))
        if cl is None:
            line += ["", ""]
            continue
        ours, paper = cl["text"], cl["paper_text"]
        base = c.get("delta_from")
        ref = cells.get((block_title, row["label"], base)) if base else None
        if ref is not None:
            ours += _delta(cl["mean"], ref["mean"])
            paper += _delta(cl["paper"], ref["paper"])
        line += [ours, paper]
    return line


def _format_grid(grid: list[list[str]], cols: list[dict[str, Any]], row_head: str) -> list[str]:
    """A block's lines: the column names (each spanning its ours/paper pair), the ours/paper header, a rule
    and the grid, in aligned columns."""
    head1 = [""] + [x for c in cols for x in (c["name"], "")]
    head2 = [row_head] + [x for _ in cols for x in ("ours", "paper")]
    widths = [max(len(str(line[i])) for line in [head1, head2] + grid) for i in range(len(head2))]
    for k, c in enumerate(cols):  # a column name spans its ours/paper pair
        i = 1 + 2 * k
        need = len(c["name"]) - (widths[i] + 3 + widths[i + 1])
        if need > 0:
            widths[i + 1] += need
    header = _format_line(head2, widths)
    return [_format_line(head1, widths, span=True), header, "-" * len(header)] + [
        _format_line(line, widths) for line in grid
    ]


def _format_line(line: list[str], widths: list[int], span: bool = False) -> str:
    """One line of a block: the row label, then 'ours | paper' per column (`span`: one text per column)."""
    parts = [f"{line[0]:<{widths[0]}}"]
    for i in range(1, len(widths), 2):
        if span:
            parts.append(f"{line[i]:<{widths[i] + 3 + widths[i + 1]}}")
        else:
            parts.append(f"{line[i]:<{widths[i]}} | {line[i + 1]:<{widths[i + 1]}}")
    return " || ".join(parts).rstrip()


def write_table_csv(path: Path, rows: Iterable[CellRow]) -> None:
    """The long form (one line per planned or paper-only cell) as CSV.

    Args:
        path: The CSV file (its folder is made).
        rows: The cells (`table_cells`).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = ["block", "row", "column", "run", "n", "mean", "std", "paper", "paper_std"]
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            if r["planned"] or r["run"] is None:
                w.writerow(r)


def report_table(
    recipe: Recipe, jobs: list[Job], out: PathArg, scale: str, metric: str = "best", seeds: int | None = None
) -> str:
    """The recipe's table from the jobs' finished runs, also written to OUT/tables/<recipe>.txt and .csv.

    Args:
        recipe: The recipe.
        jobs: Its jobs.
        out: The output folder OUT.
        scale: The scale they ran at.
        metric: 'best' or 'final' top-1.
        seeds: The expected seeds per run (default: the jobs').

    Returns:
        The table's text.
    """
    table = recipe["table"]
    values, teacher = collect(jobs, metric)
    n_seeds = len({j.seed for j in jobs}) if seeds is None else seeds
    note = f"top-1 % ({METRICS[metric]}), ours = mean ± std over seeds (ddof=1; 'n=1': one seed), scale {scale}"
    if scale == TINY_SCALE:
        note += (
            "\n"
            + "tiny scale: every run is its digits stand-in ("
            + recipe["tiny"]["summary"]
            + "); the paper's values are those of the setting named in each block, shown for layout only"
        )
    standins = None
    if scale == TINY_SCALE:
        standins = {
            j.paper_id: f"{j.spec['teacher']} "
            + ("fp" if j.spec["w_bits"] is None else bits_label(j.spec["w_bits"], j.spec["a_bits"]))
            for j in jobs
        }
    text = render_table(table, values, teacher, expected_n=n_seeds, header_note=note, standins=standins)
    out = Path(out) / "tables"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{recipe['name']}.txt").write_text(text + "\n")
    write_table_csv(out / f"{recipe['name']}.csv", table_cells(table, values, n_seeds))
    return text
