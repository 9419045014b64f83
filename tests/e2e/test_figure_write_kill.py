"""`zsq-probe figures` SIGKILLed inside a figure's write (issue 25): no partial PNG under the figure's name, and a
rerun finishes it and removes the killed writer's copy.  The kill is real, in a process forked from this one
(tests/forked_cli.py)."""

from __future__ import annotations

import pytest
from forked_cli import forked_main


@pytest.mark.slow
def test_a_kill_inside_a_figure_write_leaves_no_partial_png_and_the_rerun_cleans_up(three_epoch_run, tmp_path):
    # both in processes forked from this one: the kill is a real SIGKILL, without a fresh interpreter's imports
    out = tmp_path / "figs"
    argv = ["figures", "--runs", three_epoch_run, "--out", out, "--only", "fig6"]
    killed = forked_main(argv, fault="write:fig6_samples_*.png", timeout=300)
    assert killed.returncode == -9, killed.stderr
    assert list(out.glob("*.png")) == []  # no 0-byte (or partial) figure under its name
    left = [p.name for p in out.iterdir() if p.name.startswith(".fig6_samples_run.png.")]
    assert len(left) == 1 and (out / left[0]).stat().st_size > 0
    rerun = forked_main(argv, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    png = out / "fig6_samples_run.png"
    assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000
    hidden = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert hidden == [".zsq-probe-output.json"], hidden  # the killed writer's copy is gone; the manifest stays
