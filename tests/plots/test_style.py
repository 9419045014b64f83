"""Figures written atomically (zsq_probe.plots.style.save): a figure that fails while drawing leaves no file (issue
25; a kill during the write: tests/e2e/test_figure_write_kill.py)."""

from __future__ import annotations

import pytest


def test_a_figure_that_fails_while_drawing_leaves_no_file(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from zsq_probe.plots.style import save

    fig = Figure()
    fig.add_subplot().plot([0, 1], [1, 0])

    def fail(self, fname, **kw):
        fname.write(b"\x89PNG half")
        raise OSError("disk full")

    monkeypatch.setattr(Figure, "savefig", fail)
    with pytest.raises(OSError, match="disk full"):
        save(fig, tmp_path, "fig_x")
    assert list(tmp_path.iterdir()) == []
