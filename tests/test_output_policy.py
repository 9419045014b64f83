"""The output policy of every command that writes (zsq_probe.rundir.output): a folder holding files the command
did not write is refused (exit 2, one line, nothing touched); its own earlier output is resumed (`demo`,
`recipe`, `train --resume`).  `figures` and `compare --out` (replaced only with --overwrite): test_figures.py."""

from pathlib import Path

import pytest
from fabricated_runs import make_run

from zsq_probe.cli import main
from zsq_probe.errors import UserError
from zsq_probe.rundir.output import MANIFEST, check_output, foreign_entries, manifest_names, record_output


def _tree(folder):
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


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
    before = _tree(out)
    assert main(["demo", "--out", str(out)]) == 2
    _refused(capsys, "thesis.pdf", "did not write")
    assert _tree(out) == before
    own = tmp_path / "own"
    (own / "runs" / "kd-s0").mkdir(parents=True)
    (own / "FINDINGS.md").write_text("earlier")
    check_out(own)  # its own earlier output (runs/, FINDINGS.md): resumed, not refused
    check_out(tmp_path / "new")


def test_train_resume_refuses_a_run_folder_holding_foreign_files(tmp_path, capsys):
    run, _ = make_run(tmp_path / "run", "gdfq", -0.1, 1.0, 0.1, tables=("metrics",))
    (run.path / "notes.txt").write_text("mine")
    before = _tree(run.path)
    assert main(["train", "--out", str(run.path), "--resume", "--no-progress"]) == 2
    _refused(capsys, "notes.txt", "did not write")
    assert _tree(run.path) == before
    assert main(["train", "--out", str(run.path), "--no-progress"]) == 2  # without --resume: new or empty only
    _refused(capsys, "not empty")
    assert _tree(run.path) == before


def test_recipe_refuses_a_foreign_folder_and_resumes_its_own(tmp_path, capsys):
    out = tmp_path / "rec"
    out.mkdir()
    (out / "data.csv").write_text("1,2")
    argv = ["recipe", "tab1", "--scale", "tiny", "--dry-run", "--out", str(out)]
    assert main(argv) == 2
    _refused(capsys, "data.csv", "did not write")
    assert _tree(out) == {"data.csv": b"1,2"}
    (out / "data.csv").unlink()
    (out / "tables").mkdir()
    (out / "tables" / "tab1.txt").write_text("earlier")
    assert main(argv) == 0  # its own earlier output: planned for resuming
    assert "zsq-probe train" in capsys.readouterr().out
