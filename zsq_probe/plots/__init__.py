"""Plotting: the paper's figures from a run's parquet tables, as files or into axes you pass in.

Write files::

    from zsq_probe.plots import write_figures, plot_figure
    write_figures(["runs/kd", "runs/gdfq"], "figs")            # every figure the runs have data for
    plot_figure("fig1", ["runs/kd", "runs/gdfq"], "figs")      # one figure

Draw into your own axes (a notebook)::

    import matplotlib.pyplot as plt
    from zsq_probe import plots
    with plots.style():                                        # optional: the figures' look
        fig, ax = plt.subplots()
        plots.draw_cosine(ax, "runs/gdfq")                     # a run folder, a RunDir or a DataFrame

Importing this package neither selects a matplotlib backend nor changes rcParams; it does not even import
matplotlib (nor torchvision: the samples figure loads the data sets), which loads when a figure is drawn.
Figures written to files are built without pyplot.  Module map: `style` (colours, rc settings, saving), `runs` (run
labels, colours, table reading, SkipFigure), one module per topic (`cosine`, `hessian`, `loss_slice`,
`inter_epoch`, `crossings`, `training`, `samples`, `comparison`), `catalog` (figures by name).
"""

from zsq_probe.plots.catalog import (
    FIGURES,
    FigureSpec,
    figure_names,
    make_figure,
    make_figures,
    plot_figure,
    write_figures,
)
from zsq_probe.plots.cosine import cosine_figure, cosine_grid_figure, draw_cosine, draw_cosine_snapshot
from zsq_probe.plots.crossings import crossings_figure, crossings_gi_figure, draw_crossings
from zsq_probe.plots.hessian import (
    density_figure,
    draw_eigen_density,
    draw_hessian_trace,
    trace_figure,
    trace_grid_figure,
)
from zsq_probe.plots.inter_epoch import draw_inter_epoch, inter_epoch_figure
from zsq_probe.plots.loss_slice import draw_loss_slice, slice_figure
from zsq_probe.plots.overlay import compare_figure, draw_compare, plot_compare
from zsq_probe.plots.runs import SkipFigure
from zsq_probe.plots.samples import draw_samples, load_samples, samples_figure
from zsq_probe.plots.style import STYLE, save, style
from zsq_probe.plots.training import draw_training, training_figure

__all__ = [
    "FIGURES",
    "STYLE",
    "FigureSpec",
    "SkipFigure",
    "compare_figure",
    "cosine_figure",
    "cosine_grid_figure",
    "crossings_figure",
    "crossings_gi_figure",
    "density_figure",
    "draw_compare",
    "draw_cosine",
    "draw_cosine_snapshot",
    "draw_crossings",
    "draw_eigen_density",
    "draw_hessian_trace",
    "draw_inter_epoch",
    "draw_loss_slice",
    "draw_samples",
    "draw_training",
    "figure_names",
    "inter_epoch_figure",
    "load_samples",
    "make_figure",
    "make_figures",
    "plot_compare",
    "plot_figure",
    "samples_figure",
    "save",
    "slice_figure",
    "style",
    "trace_figure",
    "trace_grid_figure",
    "training_figure",
    "write_figures",
]
