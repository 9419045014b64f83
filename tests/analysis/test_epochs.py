"""Epoch ranges (zsq_probe.analysis.epochs, issue 25): a range past a run's epochs is refused in one short line, for
the post-hoc probes and for the figures."""

from __future__ import annotations

import pytest
from cli_checks import cli_err_lines, tree_hashes_without_links


@pytest.mark.parametrize("epochs", ["0-2000000", "0-2000000000000", "5", "-1"])
def test_epoch_ranges_past_the_run_are_refused_in_one_short_line(run_copy, capsys, epochs):
    before = tree_hashes_without_links(run_copy)
    rc, err = cli_err_lines(["cosine", "--run", run_copy, "--epochs", epochs], capsys)
    assert rc == 2 and len(err) == 1, err
    message = err[0].removeprefix("zsq-probe cosine: error: ")
    assert len(message) <= 200 and "0..3" in message, message
    assert tree_hashes_without_links(run_copy) == before


def test_figures_epochs_are_bounded_by_the_runs_epochs(three_epoch_run, tmp_path, capsys):
    rc, err = cli_err_lines(
        ["figures", "--runs", three_epoch_run, "--out", tmp_path / "f", "--epochs", "0-9999999"], capsys
    )
    assert rc == 2 and len(err) == 1 and "0..3" in err[0] and len(err[0]) <= 250, err
    assert not (tmp_path / "f").exists()
