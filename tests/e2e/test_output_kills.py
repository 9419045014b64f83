"""`figures` and `compare --out` SIGKILLed at any moment (issue 35): a plain rerun finishes the output, replaces only
the command's own files (those its manifest lists, written or not) and leaves no temporary file; a file the user has
stays untouched.  The kills are real: each command runs in a process forked from this one (tests/forked_cli.py),
killed by the fault hook ($ZSQ_PROBE_FAULT: before a file's rename) or after a random delay."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest
from fabricated_runs import paper_runs
from forked_cli import Forked, forked_main, main_in_process

from zsq_probe.rundir.atomic import FAULT_ENV
from zsq_probe.rundir.output import MANIFEST, manifest_names, unfinished_output

pytestmark = [pytest.mark.slow, pytest.mark.teacher_free]  # fabricated runs: no digits teacher

FIGURES = "fig1,fig2b,fig5,fig6"  # fig6: one file per run, named only while it draws (claimed before it lands)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return paper_runs(tmp_path_factory.mktemp("runs"))


def _figures(runs, out) -> list:
    kd, zq, ait = (runs[k].path for k in ("kd", "zq", "ait"))
    return ["figures", "--runs", kd, zq, ait, "--out", out, "--only", FIGURES]


def _compare(runs, out) -> list:
    return ["compare", runs["kd"].path, runs["zq"].path, "--out", out]


ARGV = {"figures": _figures, "compare": _compare}


def _listing(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir())


@pytest.fixture(scope="module")
def reference(runs, tmp_path_factory):
    """{command: (file names, manifest names, seconds)} of an uninterrupted forked run of each command."""
    done = {}
    for command, argv in ARGV.items():
        out = tmp_path_factory.mktemp("reference") / command
        started = time.monotonic()
        finished = forked_main(argv(runs, out))
        assert finished.returncode == 0, finished.stderr
        done[command] = (_listing(out), manifest_names(out, command), time.monotonic() - started)
    assert "fig6_samples_zq-run.png" in done["figures"][0] and MANIFEST in done["figures"][0]
    return done


def _assert_like_reference(out: Path, command: str, reference, why: str) -> None:
    names, listed, _ = reference[command]
    assert _listing(out) == names, why
    assert manifest_names(out, command) == listed and not unfinished_output(out, command), why
    assert not [n for n in _listing(out) if n.endswith(".tmp")], why
    for png in out.glob("*.png"):
        assert png.read_bytes().startswith(b"\x89PNG") and png.stat().st_size > 1000, (why, png)


def _rerun_plainly(argv, out: Path, command: str) -> None:
    """The rerun after a kill: 0, or (the killed run had finished: its manifest says so) its earlier output is
    refused as ever without --overwrite."""
    finished_before = (out / MANIFEST).is_file() and not unfinished_output(out, command)
    rerun = forked_main(argv)
    if finished_before:
        assert rerun.returncode == 2 and "earlier zsq-probe" in rerun.stderr, rerun.stderr
    else:
        assert rerun.returncode == 0, rerun.stderr


@pytest.mark.parametrize(
    ("command", "fault"),
    [
        ("figures", "write:.zsq-probe-output.json"),  # the first write: the manifest
        ("figures", "write:fig1_cosine.png"),  # the first figure, before its rename
        ("figures", "write:fig1_cosine.txt"),  # the case: the first PNG in place, its caption not
        ("figures", "write:fig6_samples_*.txt"),  # a file named only while drawing
        ("compare", "write:.zsq-probe-output.json"),
        ("compare", "write:compare_*.png"),
        ("compare", "write:compare_*.txt"),  # the case
    ],
)
def test_a_plain_rerun_finishes_output_killed_at_a_write(runs, reference, tmp_path, command, fault):
    out = tmp_path / "out"
    argv = ARGV[command](runs, out)
    killed = forked_main(argv, fault=fault)
    assert killed.returncode == -9, killed.stderr
    _rerun_plainly(argv, out, command)
    _assert_like_reference(out, command, reference, f"{command} killed at {fault}")


@pytest.mark.parametrize("command", ["figures", "compare"])
@pytest.mark.parametrize("draw", [0, 1])
def test_a_plain_rerun_finishes_output_killed_at_a_random_moment(runs, reference, tmp_path, command, draw):
    seed = time.time_ns() % 2**32
    delay = random.Random(seed).uniform(0.0, reference[command][2])
    why = f"{command} killed after {delay:.3f} s (seed {seed})"
    out = tmp_path / "out"
    argv = [str(a) for a in ARGV[command](runs, out)]
    from zsq_probe.cli import main

    child = Forked(lambda: main(argv), env={FAULT_ENV: None}, args=argv)
    time.sleep(delay)
    child.kill()
    child.result()
    if out.exists():
        _rerun_plainly(argv, out, command)
    else:  # killed before its first write
        assert forked_main(argv).returncode == 0, why
    _assert_like_reference(out, command, reference, why)


def test_a_killed_overwrite_beside_a_users_files_never_touches_them(runs, reference, tmp_path):
    """--overwrite into a folder with the user's files, one of a figure's own name: killed, rerun plainly (it
    finishes, beside them), then with --overwrite (that figure still fails): the user's files stay as they were and
    never enter the manifest."""
    out = tmp_path / "paper"
    out.mkdir()
    (out / "notes.tex").write_text("my paper")
    (out / "fig5_training.png").write_bytes(b"mine")
    argv = _figures(runs, out)
    killed = forked_main([*argv, "--overwrite"], fault="write:fig1_cosine.txt")
    assert killed.returncode == -9, killed.stderr
    assert manifest_names(out, "figures").isdisjoint({"notes.tex", "fig5_training.png"})
    plain = forked_main(argv)
    assert plain.returncode == 2 and "notes.tex" in plain.stderr  # the user's files: refused without --overwrite
    again = main_in_process([*argv, "--overwrite"])
    assert again.returncode == 1 and "fig5_training.png exists and zsq-probe did not write it" in again.stderr
    assert (out / "notes.tex").read_text() == "my paper" and (out / "fig5_training.png").read_bytes() == b"mine"
    assert manifest_names(out, "figures").isdisjoint({"notes.tex", "fig5_training.png"})
    expected = set(reference["figures"][0]) - {"fig5_training.txt"} | {"notes.tex"}
    assert set(_listing(out)) == expected
