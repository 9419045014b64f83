"""The paper's figures by name (`FIGURES`), and writing them: `plot_figure` (one), `write_figures` (all
the runs have data for, as `zsq-probe figures` does).

Each entry knows its file name, the tables it reads, a one-line description, which options it takes
(`epoch`: a snapshot epoch; `epochs`: epochs to compare) and the function that builds it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeAlias, TypedDict

from zsq_probe.analysis.epochs import MAX_EPOCH, parse_epochs
from zsq_probe.analysis.run_settings import differences_text, setting_differences, training_setting
from zsq_probe.errors import UserError
from zsq_probe.plots import cosine, crossings, hessian, inter_epoch, loss_slice, samples, training
from zsq_probe.plots import runs as R
from zsq_probe.plots.runs import SkipFigure, open_runs
from zsq_probe.plots.style import WIDTHS, check_format, current_width, figure_width, save
from zsq_probe.rundir.store import PathArg, RunDir

if TYPE_CHECKING:  # matplotlib loads when a figure is drawn, not with this module
    from matplotlib.figure import Figure

log = logging.getLogger(__name__)

Built: TypeAlias = "Figure | list[tuple[str, Figure]]"  # what a figure's builder returns
FigureNames: TypeAlias = str | Iterable[object] | None  # 'fig1,fig2b', a list of names, or None for all


class FigureOptions(TypedDict):
    """The options of the figures that take them, checked against the runs (`figure_options`)."""

    epoch: int | None  # the snapshot epoch of fig1/fig2d/fig6
    epochs: list[int] | None  # the epochs of fig3bc/fig4


@dataclass(frozen=True)
class FigureSpec:
    """One paper figure: `build(runs, **options)` returns a Figure, or [(file stem, Figure)] (one file per
    generator for fig6; a figure too tall for one page, style.MAX_HEIGHT, continues in STEM_2, ...).

    Attributes:
        name: The figure's name ('fig1').
        filename: The file stem of its (first) file.
        tables_needed: The probe tables it reads.
        description: One line saying what it shows (the caption's first line).
        build: `build(runs, **options)`, the function that draws it.
        options: The options `build` takes ('epoch', 'epochs').
        per_run: Whether it is one figure per run (fig6).
    """

    name: str
    filename: str
    tables_needed: tuple[str, ...]
    description: str
    build: Callable[..., Built]
    options: tuple[str, ...] = ()
    per_run: bool = False

    def figures(self, runs: R.RunsArg, **options: object) -> list[tuple[str, Figure]]:
        """This figure for `runs`, nothing written.

        Args:
            runs: Run folders or RunDirs (one or several).
            **options: The options the figure takes (`options`).

        Returns:
            [(file stem, Figure)].

        Raises:
            TypeError: An option the figure does not take.
            SkipFigure: The runs lack the data the figure needs.
            UserError: No runs are given, or their data is wrong (a missing column, an epoch without data).
        """
        runs = open_runs(runs)
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise TypeError(
                f"{self.name} takes no option(s) {', '.join(unknown)} (it takes: {', '.join(self.options) or 'none'})"
            )
        built = self.build(runs, **options)
        return built if isinstance(built, list) else [(self.filename, built)]

    def plot(
        self, runs: R.RunsArg, out_dir: PathArg, fmt: str = "png", width: str | None = None, **options: object
    ) -> list[Path]:
        """Write this figure for `runs` into `out_dir`, each file with its caption in STEM.txt.

        Args:
            runs: Run folders or RunDirs (one or several).
            out_dir: The folder to write into (created when missing).
            fmt: 'png' or 'pdf'.
            width: 'column' (3.3 in) or 'text' (7 in); default the width in force (`style.figure_width`).
            **options: The options the figure takes (`options`).

        Returns:
            The figure files written.

        Raises:
            TypeError: An option the figure does not take.
            SkipFigure: The runs lack the data the figure needs.
            UserError: No runs are given, their data is wrong, `fmt` or `width` is unknown, or a file is one
                `style.protect` guards.
        """
        check_format(fmt)
        runs = open_runs(runs)
        with figure_width(width):
            return [
                save(fig, out_dir, stem, fmt, caption=caption(self, runs, stem, fig))
                for stem, fig in self.figures(runs, **options)
            ]


FIGURES: dict[str, FigureSpec] = {
    spec.name: spec
    for spec in (
        FigureSpec(
            "fig1",
            "fig1_cosine",
            ("cosine",),
            "CE-KL gradient cosine over epochs, KD vs ZQ, with 2-D angle snapshots (paper Fig. 1)",
            cosine.cosine_figure,
            ("epoch",),
        ),
        FigureSpec(
            "fig2b",
            "fig2b_hessian_trace",
            ("hessian_trace",),
            "Hessian trace of CE and of KL·T² over epochs, KD and ZQ panels (paper Fig. 2b)",
            hessian.trace_figure,
        ),
        FigureSpec(
            "fig2c",
            "fig2c_loss_slice",
            ("slice",),
            "loss slices along the top Hessian eigenvector e of each loss per epoch, CE in reds and KL in blues, "
            "darker = later epoch (paper Fig. 2c)",
            loss_slice.slice_figure,
        ),
        FigureSpec(
            "fig2d",
            "fig2d_eigen_density",
            ("hessian_density",),
            "eigenvalue density of the CE vs KL Hessian at one epoch (SLQ, paper Fig. 2d)",
            hessian.density_figure,
            ("epoch",),
        ),
        FigureSpec(
            "fig3a",
            "fig3a_inter_epoch",
            ("inter_epoch",),
            "inter-epoch cosine of the epoch-mean KL gradient, KD vs ZQ (paper Fig. 3a)",
            inter_epoch.inter_epoch_figure,
        ),
        FigureSpec(
            "fig3bc",
            "fig3bc_crossings",
            ("crossings",),
            "share of weights changed per layer and step (net or level changes, not zero-point flips) at an early "
            "and a late epoch, ZQ runs without GI or a raised lr (paper Fig. 3b/c)",
            crossings.crossings_figure,
            ("epochs",),
        ),
        FigureSpec(
            "fig4",
            "fig4_crossings_gi",
            ("crossings",),
            "share of codes changed per layer under a high lr (kl-only-high-lr) and under GI (ait), "
            "GI's p at each epoch a dotted black line (paper Fig. 4)",
            crossings.crossings_gi_figure,
            ("epochs",),
        ),
        FigureSpec(
            "fig5",
            "fig5_training",
            ("metrics", "cosine"),
            "KL, CE-KL cosine and validation CE over training for the ZQ methods (paper Fig. 5a-c)",
            training.training_figure,
        ),
        FigureSpec(
            "fig6",
            "fig6_samples",
            (),  # reads config.json and a checkpoint's generator state instead
            "real vs synthetic samples per class, one grid per distinct generator checkpoint (paper Fig. 6)",
            samples.samples_figures,
            ("epoch",),
            per_run=True,
        ),
        FigureSpec(
            "fig7_8",
            "fig7_8_cosine_grid",
            ("cosine",),
            "grid of CE-KL cosine panels across models/data sets, KD vs ZQ per setting; skipped for one setting "
            "(paper Figs. 7, 8)",
            cosine.cosine_grid_figure,
        ),
        FigureSpec(
            "fig9",
            "fig9_trace_grid",
            ("hessian_trace",),
            "grid of Hessian-trace panels (CE vs KL·T²) across models/data sets, one per run; skipped for one "
            "setting (paper Fig. 9)",
            hessian.trace_grid_figure,
        ),
    )
}


PROBE_SETTINGS = {  # what a caption states of the probes a figure reads (flat config keys)
    "cosine": ("probe_every_steps",),
    "hessian_trace": (
        "hessian_every_epochs",
        "hessian_batch_size",
        "trace_estimators",
        "hessian_vectors",
        "trace_rtol",
        "trace_max_products",
        "slq_runs",
        "slq_steps",
    ),
    "hessian_density": (
        "hessian_every_epochs",
        "hessian_batch_size",
        "slq_runs",
        "slq_steps",
        "density_sigma",
        "density_sigma_fraction",
    ),
    "slice": ("hessian_every_epochs", "slice_points", "slice_scalings", "slice_losses", "slice_norm_fraction"),
}


def caption(figure: FigureSpec, runs: Sequence[RunDir], stem: str, fig: Figure | None = None) -> str:
    """The sidecar caption of a figure: what is drawn (the text its builder wrote, `runs.describe`), the runs
    drawn and only those (by method, with their seeds: n; what an epoch is; the lr and its factor over the
    scale's base lr), and the probe estimator's settings as the runs recorded them."""
    lines = [f"{stem} ({figure.name}, {WIDTHS[current_width()]} in wide): {figure.description}."]
    info = R.drawn(fig) if fig is not None else None
    if info is not None:
        runs = [r for r in runs if any(r.path == d.path for d in info.runs)] or list(info.runs)
        lines.append(info.text)
    lines.append("Runs drawn (runs differing only by seed are one method: n = seeds):")
    for g in R.seed_groups(runs):
        seeds = ", ".join(f"{r.name} (seed {R.seed(r)})" for r in g)
        lines.append(
            f"  - {R.method(g[0])} [{R.setting(g[0])}, {R.schedule_text(g[0])}, {R.lr_text(g[0])}], n={len(g)}: {seeds}"
        )
    lines += differences_lines(R.seed_groups(runs))
    for table in figure.tables_needed:
        keys = PROBE_SETTINGS.get(table)
        if not keys:
            continue
        with_table = [r for r in runs if R.has_table(r, table)]
        if not with_table:
            continue
        cfg = R.config(with_table[0])
        settings = ", ".join(f"{k}={cfg.get(k)}" for k in keys if k in cfg)
        lines.append(f"Probe settings ({table}; runs holding it: {', '.join(r.name for r in with_table)}): {settings}.")
    if "hessian_trace" in figure.tables_needed:
        lines += budget_stops(runs)
    lines += range_rule_lines(runs) + health_lines(runs)
    return "\n".join(lines)


def range_rule_lines(runs: Iterable[RunDir]) -> list[str]:
    """The caption's line naming the activation-range rule of the quantised runs drawn, with the updates their
    ranges took before freezing (the reference's bias-corrected rule needs 153 to settle)."""
    rules: dict[str, list[str]] = {}
    for r in runs:
        cfg = R.config(r)
        if cfg.get("full_precision_student"):
            continue
        updates = int(cfg.get("act_range_epochs") or 0) * int(cfg.get("iters_per_epoch") or 0)
        rules.setdefault(f"range_ema={cfg.get('range_ema', 'plain')}, {updates} updates before freezing", []).append(
            r.name
        )
    if not rules:
        return []
    text = "; ".join(f"{rule} ({', '.join(names)})" for rule, names in rules.items())
    return [f"Activation ranges: {text}."]


def health_lines(runs: Iterable[RunDir]) -> list[str]:
    """The caption's line naming every run drawn whose health checks tripped (zsq_probe.training.health)."""
    named = [f"{r.name}: {text}" for r in runs if (text := R.tripped_checks_text(r))]
    if not named:
        return []
    return [f"Health checks tripped (the student may have collapsed; see each run's summary.json): {'; '.join(named)}."]


def differences_lines(groups: Sequence[Sequence[RunDir]]) -> list[str]:
    """The caption's line naming every training setting the drawn run groups differ in besides method and seed
    ([] for one group); a KD group's differences are by design (the KD baseline of paper §3.1)."""
    if len(groups) < 2:
        return []
    settings: dict[str, Mapping[str, object]] = {}
    for g in groups:
        label = R.method(g[0])
        while label in settings:  # two groups of one method (another lr, say)
            label += "'"
        settings[label] = training_setting(g[0])
    text = differences_text(setting_differences(settings))
    kd = (
        " (KD's by design: real data, a random full-precision student, its own lr and schedule)"
        if "kd" in settings
        else ""
    )
    return [f"Settings the runs differ in besides method and seed: {text}{kd}."]


def budget_stops(runs: Iterable[RunDir]) -> list[str]:
    """A caption line when the product budget, not the tolerance, stopped adaptive trace estimates (the
    `stopped_by` column of hessian_trace): their intervals are wider than `trace_rtol` asked."""
    stopped, total = 0, 0
    where: list[str] = []
    for r in (r for r in runs if R.has_table(r, "hessian_trace")):
        df = r.read_table("hessian_trace")
        if "stopped_by" not in df.columns:
            continue
        adaptive = df[(df["estimator"].isin(["hutch++", "hutchinson"])) & (df["scope"] == "model")]
        n = int((adaptive["stopped_by"] == "budget").sum())
        stopped, total = stopped + n, total + len(adaptive)
        where += [f"{r.name} ({n})"] if n else []
    if not stopped:
        return []
    return [
        f"The product budget (trace_max_products) stopped {stopped} of {total} adaptive model-scope trace "
        f"estimates before their +-trace_rtol interval ({', '.join(where)}): those intervals are wider than asked."
    ]


def figure_names(only: FigureNames = None) -> list[str]:
    """The figure names chosen by `only`.

    Args:
        only: 'fig1,fig2b', a list of names, or None (or empty) for all.

    Returns:
        The names: all of them in the paper's order, else those of `only` in its order.

    Raises:
        UserError: An unknown name, or `only` names none.
    """
    valid = list(FIGURES)
    if not only:
        return valid
    names = [s.strip() for s in only.split(",")] if isinstance(only, str) else [str(s).strip() for s in only]
    names = [n for n in names if n]
    bad = [n for n in names if n not in FIGURES]
    if bad or not names:
        raise UserError(
            f"unknown figure name(s) {', '.join(bad) or repr(only)} in --only: valid names are {', '.join(valid)}"
        )
    return names


def figure_formats(fmt: str | Iterable[str]) -> list[str]:
    """The formats of `fmt`.

    Args:
        fmt: 'png', 'pdf', 'png,pdf' or a list of formats.

    Returns:
        The formats, in the order given.

    Raises:
        UserError: An unknown format.
    """
    fmts = [f.strip() for f in fmt.split(",")] if isinstance(fmt, str) else list(fmt)
    return [check_format(f) for f in fmts]


def planned_files(only: FigureNames = None, fmt: str | Iterable[str] = "png") -> list[str]:
    """The file names `write_figures(only=, fmt=)` writes when every figure has data and fits one file (a figure
    per run, fig6, and a continuation page, STEM_2, have names of their own).

    Args:
        only: The figure names ('fig1,fig2b' or a list); default all.
        fmt: 'png', 'pdf' or both ('png,pdf' or a list).

    Returns:
        Each figure's file name and its caption's (STEM.txt).

    Raises:
        UserError: An unknown format or figure name.
    """
    stems = [FIGURES[name].filename for name in figure_names(only)]
    return [f"{stem}.{ext}" for stem in stems for ext in (*figure_formats(fmt), "txt")]


def figure_options(runs: R.RunsArg, epoch: int | None = None, epochs: R.EpochsArg = None) -> FigureOptions:
    """The figure options once both are within the runs' epochs, 0 to the most any run's config trains: refused
    before any drawing.

    Args:
        runs: Run folders or RunDirs (one or several).
        epoch: The snapshot epoch of fig1/fig2d/fig6.
        epochs: The epochs of fig3bc/fig4 ('60,350', '3-12' or a list).

    Returns:
        {"epoch": epoch, "epochs": the parsed epochs (None when not given)}.

    Raises:
        UserError: Naming the flag, the value and the runs' epochs; no runs.
    """
    runs = open_runs(runs)
    last = max((e for r in runs if isinstance(e := R.config(r).get("epochs"), int)), default=0)
    if epoch is not None and not 0 <= epoch <= (last or MAX_EPOCH):
        have = f"0..{last}" if last else "0 and up"
        raise UserError(f"--epoch {epoch} is outside the runs' epochs ({have})")
    return {"epoch": epoch, "epochs": parse_epochs(epochs, last=last or None, what="these runs")}


def spec(name: str) -> FigureSpec:
    """The FigureSpec of a figure name (or alias); UserError for an unknown one."""
    return FIGURES[figure_names([name])[0]]


def make_figures(name: str, runs: R.RunsArg, **options: object) -> list[tuple[str, Figure]]:
    """Figure `name` for `runs`, nothing written (e.g. to show in a notebook).

    Args:
        name: A figure name (`FIGURES`).
        runs: Run folders or RunDirs (one or several).
        **options: The options the figure takes ('epoch', 'epochs').

    Returns:
        [(file stem, matplotlib Figure)].

    Raises:
        TypeError: An option the figure does not take.
        SkipFigure: The runs lack the data the figure needs.
        UserError: An unknown name, no runs, or wrong data in them.
    """
    return spec(name).figures(runs, **options)


def make_figure(name: str, runs: R.RunsArg, **options: object) -> Figure:
    """Figure `name` for `runs` as one matplotlib Figure, nothing written.

    Args:
        name: A figure name (`FIGURES`).
        runs: Run folders or RunDirs (one or several).
        **options: The options the figure takes ('epoch', 'epochs').

    Returns:
        The figure (of a figure written to several files, fig6 say, the first).

    Raises:
        TypeError: An option the figure does not take.
        SkipFigure: The runs lack the data the figure needs.
        UserError: An unknown name, no runs, or wrong data in them.
    """
    return make_figures(name, runs, **options)[0][1]


def plot_figure(
    name: str, runs: R.RunsArg, out_dir: PathArg, fmt: str = "png", width: str | None = None, **options: object
) -> list[Path]:
    """Write figure `name` for `runs` into `out_dir`, each file with its caption in STEM.txt.

    Args:
        name: A figure name (`FIGURES`).
        runs: Run folders or RunDirs (one or several).
        out_dir: The folder to write into (created when missing).
        fmt: 'png' or 'pdf'.
        width: 'column' (3.3 in) or 'text' (7 in); default the width in force (`style.figure_width`).
        **options: The options the figure takes ('epoch', 'epochs').

    Returns:
        The figure files written.

    Raises:
        TypeError: An option the figure does not take.
        SkipFigure: The runs lack the data the figure needs.
        UserError: An unknown name, no runs, wrong data in them, an unknown `fmt` or `width`, or a file is one
            `style.protect` guards.
    """
    return spec(name).plot(runs, out_dir, fmt, width, **options)


def write_figures(
    runs: R.RunsArg,
    out: PathArg,
    only: FigureNames = None,
    fmt: str | Iterable[str] = "png",
    epoch: int | None = None,
    epochs: R.EpochsArg = None,
    width: str | None = None,
) -> tuple[list[Path], int]:
    """Draw every chosen figure the runs have data for into `out`.

    Each figure written, skipped (with the reason) or failed is logged (INFO / INFO / ERROR on the
    `zsq_probe.plots.catalog` logger); a figure that fails with a UserError does not stop the others.

    Args:
        runs: Run folders or RunDirs (one or several).
        out: The folder to write into (created when missing).
        only: The figure names ('fig1,fig2b' or a list); default all.
        fmt: 'png', 'pdf' or both ('png,pdf' or a list).
        epoch: The snapshot epoch of fig1/fig2d/fig6.
        epochs: The epochs of fig3bc/fig4 ('60,350', '3-12' or a list).
        width: 'column' (3.3 in) or 'text' (7 in, the default).

    Returns:
        (files written, number of figures that failed).

    Raises:
        UserError: An unknown format or figure name, no runs, or `epochs` is not epochs of these runs.
    """
    fmts = figure_formats(fmt)
    names = figure_names(only)
    runs = open_runs(runs)
    options = figure_options(runs, epoch, epochs)
    written: list[Path] = []
    failed = 0
    for name in names:
        figure = FIGURES[name]
        kw = {k: v for k, v in options.items() if k in figure.options}
        try:
            paths = [p for f in fmts for p in figure.plot(runs, out, f, width, **kw)]
        except SkipFigure as e:
            log.info("skipped %s: %s", name, e.reason)
            continue
        except UserError as e:
            log.error("failed %s: %s", name, e)
            failed += 1
            continue
        for path in paths:
            log.info("wrote %s: %s", name, path)
        written += paths
    return written, failed
