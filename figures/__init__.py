"""One plotting script per paper figure: parquet in, PNG/PDF out.

Each module has FIGURE (its short name), TABLES_NEEDED, DESCRIPTION and
`plot(runs: list[RunDir], out_dir, fmt="png", ...) -> list[Path]`, which raises
`figures._common.SkipFigure(reason)` when the runs lack its data.  Each is also a script:
`python figures/<script>.py --runs RUN [RUN ...] --out DIR [--format png|pdf]`.
"""

from __future__ import annotations

import importlib

# figure name -> module, in the paper's order
SCRIPTS = {
    "fig1": "fig1_cosine",
    "fig2b": "fig2b_hessian_trace",
    "fig2c": "fig2c_loss_slice",
    "fig2d": "fig2d_eigen_density",
    "fig3a": "fig3a_inter_epoch",
    "fig3bc": "fig3bc_crossings",
    "fig4": "fig4_crossings_gi",
    "fig5": "fig5_training",
    "fig6": "fig6_samples",
    "fig7_8": "fig7_8_cosine_grid",
    "fig9": "fig9_trace_grid",
}


def load(name: str):
    """The module of figure `name` (a key of SCRIPTS)."""
    return importlib.import_module(f"figures.{SCRIPTS[name]}")


def all_modules() -> dict:
    return {name: load(name) for name in SCRIPTS}
