"""Checkpoints of another run (issue 35): post-hoc probes and resumes refuse checkpoints that are not of the run
config.json describes (preset, method, seed, teacher fingerprint: zsq_probe.training.checkpoint), `--set` cannot
relabel a run, and each refusal is one line, exit status 2, leaving every file of the run, its writer lock included,
byte for byte as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_checks import files, set_lock


@pytest.fixture(scope="module")
def probed_run(digits_teacher, tmp_path_factory) -> Path:
    """A tiny GDFQ run of two epochs (checkpoints 0-2) whose checkpoint 1 a post-hoc cosine measured; each test
    copies it."""
    from forked_cli import main_in_process
    from tiny_runs import tiny_train

    out = tmp_path_factory.mktemp("refusals") / "run"
    for argv in (["train", *tiny_train("gdfq", epochs=2), "--out", out], ["cosine", "--run", out, "--epochs", "1"]):
        r = main_in_process([*argv, "--quiet"])
        assert r.returncode == 0, r.stderr
    return out


def _edit_config(**values):
    """An edit of config.json: `config` keys set to `values` (teacher_sha256: the teacher record's fingerprint)."""

    def edit(run: Path) -> None:
        doc = json.loads((run / "config.json").read_text())
        for key, value in values.items():
            if key == "teacher_sha256":
                doc["teacher"]["weights_sha256"] = value
            else:
                doc["config"][key] = value
        (run / "config.json").write_text(json.dumps(doc, indent=2))

    return edit


def _config_file_beside(run: Path) -> None:
    """A --config file beside the run: its config.json with another method (the preset kept)."""
    doc = json.loads((run / "config.json").read_text())
    doc["config"]["method"] = "ait"
    (run.parent / "ait.json").write_text(json.dumps(doc))


def _edit_checkpoints(change):
    """An edit of every checkpoint's state: `change(state)` (a checkpoint copied from another run)."""

    def edit(run: Path) -> None:
        import torch

        for path in sorted((run / "checkpoints").iterdir()):
            state = torch.load(path, weights_only=True)
            change(state)
            torch.save(state, path)

    return edit


def _other_teacher(state: dict) -> None:
    state["teacher_weights_sha256"] = "f" * 64


def _no_identity(state: dict) -> None:
    del state["teacher_weights_sha256"]


RESUME = ["train", "--resume", "--out", "{run}"]


COSINE = ["cosine", "--run", "{run}"]


# (id, edit of the run before the command or None, argv, what the one line says)
REFUSALS = [
    ("resume --seed", None, [*RESUME, "--seed", "7"], "cannot change seed (0 -> 7)"),
    ("resume lr", None, [*RESUME, "--set", "lr=0.5"], "changed config (lr: "),
    ("resume keep last", None, [*RESUME, "--force", "--set", "keep_checkpoints=last"], "would delete checkpoint(s) 1"),
    (
        "resume --set method",
        None,
        [*RESUME, "--set", "method=ait"],
        "--set method=...: the method label comes from --preset",
    ),
    (
        "resume --set preset",
        None,
        [*RESUME, "--set", "preset=ait"],
        "--set preset=...: the preset is chosen with --preset",
    ),
    (
        "resume --config method",
        _config_file_beside,
        [*RESUME, "--force", "--config", "{run}/../ait.json"],
        "cannot change method",
    ),
    ("resume, config method", _edit_config(method="ait"), RESUME, "config.json says method='ait' but checkpoint"),
    ("resume, config seed", _edit_config(seed=3), RESUME, "config.json says seed=3 but checkpoint"),
    ("cosine, config preset", _edit_config(preset="ait"), COSINE, "config.json says preset='ait' but checkpoint"),
    ("cosine, config method", _edit_config(method="ait"), COSINE, "config.json says method='ait' but checkpoint"),
    ("cosine, config ait", _edit_config(preset="ait", method="ait"), COSINE, "says preset='ait' but checkpoint"),
    ("cosine, config seed", _edit_config(seed=3), COSINE, "config.json says seed=3 but checkpoint"),
    ("hessian, config method", _edit_config(method="ait"), ["hessian", "--run", "{run}"], "says method='ait' but"),
    ("slice, config seed", _edit_config(seed=3), ["slice", "--run", "{run}"], "config.json says seed=3 but"),
    ("crossings, config preset", _edit_config(preset="ait"), ["crossings", "--run", "{run}"], "says preset='ait' but"),
    ("cosine, config teacher", _edit_config(teacher_sha256="0" * 64), COSINE, "teacher.weights_sha256='0000"),
    ("cosine, checkpoint teacher", _edit_checkpoints(_other_teacher), COSINE, "records teacher.weights_sha256='ffff"),
    ("cosine, checkpoint unlabelled", _edit_checkpoints(_no_identity), COSINE, "does not record which run it belongs"),
]


@pytest.mark.parametrize("lock", ["empty", "absent", "dead writer"])
@pytest.mark.parametrize("edit,argv,says", [c[1:] for c in REFUSALS], ids=[c[0] for c in REFUSALS])
def test_a_refusal_is_one_line_exit_2_and_leaves_every_file_of_the_run_as_it_was(
    probed_run, tmp_path, edit, argv, says, lock
):
    from forked_cli import main_in_process

    run = tmp_path / "run"
    shutil.copytree(probed_run, run)
    if edit is not None:
        edit(run)
    set_lock(run, lock)
    before = files(run)
    r = main_in_process([a.replace("{run}", str(run)) for a in argv])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert lines[0].startswith(f"zsq-probe {argv[0]}: error: ") and says in lines[0], lines[0]
    assert files(run) == before
