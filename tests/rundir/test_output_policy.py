"""The output policy of every command that writes (zsq_probe.rundir.output): a folder holding files the command
did not write is refused (exit 2, one line, nothing touched); its own earlier output is resumed (`demo`,
`recipe`, `train --resume`).  `figures` and `compare --out` (replaced only with --overwrite):
tests/plots/test_figures.py.
Manifest first (issue 35): what a command is about to write is listed before it lands, so a killed command's
output is finished by a plain rerun (the kills themselves: tests/e2e/test_output_kills.py); `figures` refuses an
epoch outside the runs' before writing; `figures`, `compare` and `presets` take --threads."""

import os

import pytest
from cli_checks import tree_bytes
from fabricated_runs import make_run

from zsq_probe.cli import main
from zsq_probe.errors import UserError
from zsq_probe.rundir.output import MANIFEST, check_output, foreign_entries, manifest_names, record_output


def _refused(capsys, *words):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("zsq-probe ") and ": error: " in err[0], err
    for w in words:
        assert w in err[0], err[0]


def test_the_manifest_records_what_a_command_wrote(tmp_path):
    out = tmp_path / "o"
    check_output(out, "figures")  # a new folder
    record_output(out, "figures", ["a.png", "a.txt"])
    record_output(out, "figures", [out / "b.png"])
    assert manifest_names(out, "figures") == {"a.png", "a.txt", "b.png"}
    assert manifest_names(out, "compare") == set()  # another command's output is not this one's
    (out / "a.png").write_bytes(b"x")
    (out / "mine.txt").write_text("y")
    assert foreign_entries(out, "figures") == ["mine.txt"]
    assert foreign_entries(out, "compare") == ["a.png", "mine.txt"]
    (out / MANIFEST).write_text("not json")  # a damaged manifest claims nothing
    assert foreign_entries(out, "figures") == ["a.png", "mine.txt"]
    with pytest.raises(UserError, match="is an existing file"):
        check_output(out / "a.png", "figures")


def test_demo_refuses_a_foreign_folder_and_resumes_its_own(tmp_path, capsys):
    from zsq_probe.runs.demo import check_out

    out = tmp_path / "demo"
    out.mkdir()
    (out / "thesis.pdf").write_bytes(b"%PDF")
    before = tree_bytes(out)
    assert main(["demo", "--out", str(out)]) == 2
    _refused(capsys, "thesis.pdf", "did not write")
    assert tree_bytes(out) == before
    own = tmp_path / "own"
    (own / "runs" / "kd-s0").mkdir(parents=True)
    (own / "FINDINGS.md").write_text("earlier")
    check_out(own)  # its own earlier output (runs/, FINDINGS.md): resumed, not refused
    check_out(tmp_path / "new")


def test_train_resume_refuses_a_run_folder_holding_foreign_files(tmp_path, capsys):
    run, _ = make_run(tmp_path / "run", "gdfq", -0.1, 1.0, 0.1, tables=("metrics",))
    (run.path / "notes.txt").write_text("mine")
    before = tree_bytes(run.path)
    assert main(["train", "--out", str(run.path), "--resume", "--no-progress"]) == 2
    _refused(capsys, "notes.txt", "did not write")
    assert tree_bytes(run.path) == before
    assert main(["train", "--out", str(run.path), "--no-progress"]) == 2  # without --resume: new or empty only
    _refused(capsys, "not empty")
    assert tree_bytes(run.path) == before


def test_recipe_refuses_a_foreign_folder_and_resumes_its_own(tmp_path, capsys):
    out = tmp_path / "rec"
    out.mkdir()
    (out / "data.csv").write_text("1,2")
    argv = ["recipe", "tab1", "--scale", "tiny", "--dry-run", "--out", str(out)]
    assert main(argv) == 2
    _refused(capsys, "data.csv", "did not write")
    assert tree_bytes(out) == {"data.csv": b"1,2"}
    (out / "data.csv").unlink()
    (out / "tables").mkdir()
    (out / "tables" / "tab1.txt").write_text("earlier")
    assert main(argv) == 0  # its own earlier output: planned for resuming
    assert "zsq-probe train" in capsys.readouterr().out


# ------------------------------------------------------------------------------- manifest first (issue 35)
def _dead_pid() -> int:
    """The pid of a process that has ended (a killed writer's)."""
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_the_manifest_lists_planned_files_unfinished_before_they_land(tmp_path):
    from zsq_probe.rundir.output import claim_output, finish_output, plan_output, unfinished_output

    out = tmp_path / "o"
    out.mkdir()
    (out / "mine.png").write_bytes(b"user")
    dead = _dead_pid()
    stale = [out / f".a.png.{dead}-ab12cd34.tmp", out / f".{MANIFEST}.{dead}-ab12cd34.tmp"]
    kept = [out / f".mine.png.{dead}-ab12cd34.tmp", out / f".b.png.{os.getpid()}-ab12cd34.tmp"]
    for p in stale + kept:
        p.write_bytes(b"half")
    assert plan_output(out, "figures", ["a.png", "a.txt", "b.png", "mine.png"]) == {"a.png", "a.txt", "b.png"}
    assert manifest_names(out, "figures") == {"a.png", "a.txt", "b.png"}  # the user's file never becomes ours
    assert unfinished_output(out, "figures") and not any(p.exists() for p in stale)
    assert all(p.exists() for p in kept)  # another name's, or a writer still running
    check_output(out / "new", "figures")
    with pytest.raises(UserError, match="mine.png"):
        check_output(out, "figures")  # the user's file: refused as ever
    (out / "mine.png").unlink()
    check_output(out, "figures")  # unfinished output (nothing written yet): finished by a plain rerun
    claim_output(out, "figures", [out / "a_2.png"])  # a file named only while drawing
    assert "a_2.png" in manifest_names(out, "figures")
    (out / "a.png").write_bytes(b"png")
    assert finish_output(out, "figures") == ["a.png"]  # the names that exist
    assert not unfinished_output(out, "figures")
    with pytest.raises(UserError, match="earlier zsq-probe figures output"):
        check_output(out, "figures")  # finished output: replaced only with --overwrite
    check_output(out, "figures", overwrite=True)


def test_writing_output_finishes_on_an_error_and_stays_unfinished_when_stopped(tmp_path):
    from zsq_probe.rundir.output import unfinished_output, writing_output

    new = tmp_path / "new"
    with writing_output(new, "compare", ["c.png", "c.txt"]):
        assert manifest_names(new, "compare") == {"c.png", "c.txt"} and unfinished_output(new, "compare")
    assert not new.exists()  # nothing written into the folder it created: gone again
    out = tmp_path / "o"
    with pytest.raises(UserError), writing_output(out, "compare", ["c.png", "c.txt"]):
        (out / "c.png").write_bytes(b"png")
        raise UserError("a figure could not be drawn")
    assert manifest_names(out, "compare") == {"c.png"} and not unfinished_output(out, "compare")
    with pytest.raises(KeyboardInterrupt), writing_output(out, "compare", ["d.png"]) as claim:
        claim([out / "e.png"])
        raise KeyboardInterrupt  # SIGINT / SIGTERM: like a kill, a plain rerun finishes it
    assert manifest_names(out, "compare") == {"c.png", "d.png", "e.png"} and unfinished_output(out, "compare")


def test_a_figure_is_in_the_manifest_before_it_lands(tmp_path):
    from zsq_probe.plots import FIGURES
    from zsq_probe.plots.style import announce_writes
    from zsq_probe.rundir.output import writing_output

    run, _ = make_run(tmp_path / "m", "kl-only", -0.1, 1.0, 0.1, tables=("metrics",))
    out = tmp_path / "o"
    seen = []
    with writing_output(out, "figures") as claim:

        def before(paths):
            seen.extend((p.name, p.exists()) for p in paths)
            claim(paths)

        with announce_writes(before):
            FIGURES["fig5"].plot([run], out)
    assert seen == [("fig5_training.png", False), ("fig5_training.txt", False)]
    assert manifest_names(out, "figures") == {"fig5_training.png", "fig5_training.txt"}


def test_figures_refuses_an_epoch_outside_the_runs_before_writing(tmp_path, capsys):
    kd, _ = make_run(tmp_path / "kd", "kd", 0.3, 1.0, 0.1, source="real", tables=("cosine",))
    zq, _ = make_run(tmp_path / "zq", "gdfq", -0.1, 1.0, 0.1, tables=("cosine",))
    out = tmp_path / "figs"
    base = ["figures", "--runs", str(kd.path), str(zq.path), "--out", str(out), "--only", "fig1"]
    for flag, value in (
        ("--epoch", "-1"),
        ("--epoch", "99"),
        ("--epochs", "99"),
        ("--epochs", "-1"),
        ("--epochs", "2-99"),
    ):
        assert main([*base, flag, value]) == 2, (flag, value)
        _refused(capsys, flag, value, "0..6")
        assert not out.exists(), (flag, value)  # not even the folder
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main([*base, "--epoch", "99", "--overwrite"]) == 2
    _refused(capsys, "--epoch 99")
    assert tree_bytes(out) == {"keep.txt": b"mine"}  # no manifest either
    assert main([*base, "--epoch", "3", "--overwrite"]) == 0  # within them: drawn
    assert (out / "fig1_cosine.png").is_file()


@pytest.mark.parametrize("command", ["figures", "compare", "presets"])
def test_the_reading_commands_take_threads_and_bound_them(tmp_path, capsys, command, monkeypatch):
    import torch

    from zsq_probe.config import max_workers

    kd, _ = make_run(tmp_path / "kd", "kd", 0.3, 1.0, 0.1, source="real", tables=("metrics", "cosine"))
    zq, _ = make_run(tmp_path / "zq", "gdfq", -0.1, 1.0, 0.1, tables=("metrics", "cosine"))
    argv = {
        "figures": ["figures", "--runs", str(kd.path), str(zq.path), "--out", str(tmp_path / "f"), "--only", "fig5"],
        "compare": ["compare", str(kd.path), str(zq.path), "--out", str(tmp_path / "c")],
        "presets": ["presets"],
    }[command]
    assert main([*argv, "--threads", str(max_workers() + 1)]) == 2
    _refused(capsys, "--threads must be in [1, ")
    before = torch.get_num_threads()
    seen = []
    if command != "presets":  # presets computes nothing: the flag is only checked
        import zsq_probe.plots as plots

        name = "write_figures" if command == "figures" else "plot_compare"
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *a, **k: seen.append(torch.get_num_threads()) or real(*a, **k))
    assert main([*argv, "--threads", str(before + 1)]) == 0
    assert seen == ([] if command == "presets" else [before + 1])  # applied where it draws
    assert torch.get_num_threads() == before  # and put back
