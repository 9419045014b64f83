"""Issue 35: every flag of every command refuses a bad value with exit status 2, one line on stderr, and nothing
written.  The flags come from the parser itself (zsq_probe.cli.build_parser), so a new flag is in the table at
once; its bad values follow its kind (the argparse type, its choices, or STRING_KINDS for a free string).  A value
a flag legitimately takes is in ACCEPTED, with why."""

from __future__ import annotations

import argparse
import hashlib
import os
import warnings
from pathlib import Path

import pytest
from tiny_runs import tiny_train

from zsq_probe.cli import build_parser, main

# the bad values of each kind: (label, value); {missing}, {file} and {folder} are filled in per case
INT_VALUES = [("x", "x"), ("empty", ""), ("negative", "-1"), ("zero", "0"), ("huge", str(10**9)), ("float", "1.5")]
FLOAT_VALUES = [
    ("x", "x"),
    ("empty", ""),
    ("negative", "-1"),
    ("zero", "0"),
    ("huge", "1e9"),
    ("inf", "inf"),
    ("nan", "nan"),
]
KIND_VALUES = {
    # a folder that is read: it must exist and be a folder
    "folder": [("empty", ""), ("missing folder", "{missing}"), ("a file", "{file}")],
    # a file that is read
    "file": [("empty", ""), ("missing file", "{missing}"), ("a folder", "{folder}")],
    # a folder written into (a new one is fine)
    "out": [("empty", ""), ("a file", "{file}")],
    # a word from a set the library knows (a teacher, a data set, a device, ...)
    "word": [("empty", ""), ("unknown", "nonsense")],
    # a comma list of such words (probes, figure names, run-id patterns, devices)
    "words": [("empty", ""), ("unknown", "nonsense"), ("empty item", "nonsense,,nonsense")],
    # epoch lists: 0,5,10-12
    "epochs": [("empty", ""), ("x", "x"), ("negative", "-1"), ("huge", str(10**9)), ("empty item", "1,,2")],
    # KEY=VALUE
    "setting": [("empty", ""), ("no =", "x"), ("unknown key", "nonsense=1"), ("bad value", "lr=x")],
    # a free name another system checks (a slurm partition, a Ray address): only the empty string is ours to refuse
    "name": [("empty", "")],
}

# the kind of each free-string flag (by dest); a flag missing here fails test_every_string_flag_has_a_kind
STRING_KINDS = {
    "teacher": "word",
    "data": "word",
    "device": "word",
    "normalization": "word",
    "preset": "word",
    "probes": "words",
    "only": "words",
    "devices": "words",
    "name": "word",
    "weights": "file",
    "config": "file",
    "slurm_config": "file",
    "data_root": "folder",
    "weights_root": "folder",
    "run": "folder",
    "runs": "folder",
    "kd_run": "folder",
    "zq_run": "folder",
    "kd_seeds": "folder",
    "zq_seeds": "folder",
    "out": "out",
    "tensorboard": "out",
    "epochs": "epochs",
    "set": "setting",
    "ray_address": "name",
    "partition": "name",
    "account": "name",
}

# (command, dest, label) -> why that value is legitimate; "*" for every command.  These cases are not run.
ACCEPTED = {
    ("*", "seed", "zero"): "seed 0 is the default seed",
    ("*", "seed", "huge"): "any seed up to 2**63 - 1 is a seed",
    ("train", "num_workers", "zero"): "0 workers: data loads in the process itself (the default)",
    ("eval", "max_batches", "zero"): "0 = every test batch (the default)",
    ("eval", "max_batches", "huge"): "more batches than the test split has = the whole split",
    ("eval", "calib_batches", "huge"): "more batches than the train split has = the whole split",
    ("recipe", "gpus_per_job", "zero"): "0 GPUs per job (the default)",
    ("recipe", "max_retries", "zero"): "0 retries: a lost job fails at once",
    ("figures", "epoch", "zero"): "epoch 0 is the run's first snapshot (the checkpoint before training)",
}


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def _value_actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The actions that take a value (not --help, --quiet, --resume, ...)."""
    return [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._VersionAction)) and a.nargs != 0
    ]


def _kind(action: argparse.Action) -> str:
    if action.type is int:
        return "int"
    if action.type is float:
        return "float"
    if action.choices is not None:
        return "choice"
    return STRING_KINDS.get(action.dest, "unclassified")


def _values(action: argparse.Action) -> list[tuple[str, str]]:
    kind = _kind(action)
    if kind == "int":
        return INT_VALUES
    if kind == "float":
        return FLOAT_VALUES
    if kind == "choice":
        return [("empty", ""), ("unknown", "nonsense")]
    return KIND_VALUES.get(kind, [("empty", "")])


def _accepted(command: str, dest: str, label: str) -> bool:
    return (command, dest, label) in ACCEPTED or ("*", dest, label) in ACCEPTED


def _cases() -> list:
    cases = []
    for command, parser in _commands().items():
        for action in _value_actions(parser):
            for label, value in _values(action):
                if _accepted(command, action.dest, label):
                    continue
                flag = action.option_strings[0] if action.option_strings else action.dest
                cases.append(pytest.param(command, action.dest, value, id=f"{command} {flag} {label}"))
    return cases


# ------------------------------------------------------------------ the valid command each bad value goes into

TINY = tiny_train("gdfq", epochs=1, iters=1)
PROBE_SETTINGS = [  # the tiny run's post-hoc probes take seconds (hessian, slice)
    "hessian_batch_size=16",
    "trace_estimators=slq",
    "hessian_top_k=1",
    "slq_runs=1",
    "slq_steps=4",
    "slice_points=3",
    "slice_scalings=unit",
    "slice_losses=surrogate",
]
# <dest> marks a positional; {tmp} is the case's tmp_path, {run} the shared tiny run
BASE = {
    "eval": ["eval", "--teacher", "digits", "--max-batches", "1", "--calib-batches", "1", "--no-progress"],
    "presets": ["presets"],
    "train": ["train", *TINY, "--out", "{tmp}/new-run", "--no-progress"],
    "demo": ["demo", "--out", "{tmp}/demo", "--no-progress"],
    "cosine": ["cosine", "--run", "{run}", "--epochs", "2", "--no-progress"],
    "hessian": ["hessian", "--run", "{run}", "--epochs", "2", "--no-progress"],
    "slice": ["slice", "--run", "{run}", "--epochs", "2", "--no-progress"],
    "crossings": ["crossings", "--run", "{run}", "--epochs", "2", "--no-progress"],
    "figures": ["figures", "--runs", "{run}", "--out", "{tmp}/figures", "--only", "fig1", "--no-progress"],
    "compare": ["compare", "<kd_run>", "<zq_run>", "--out", "{tmp}/compare", "--no-progress"],
    "recipe": ["recipe", "<name>", "--scale", "tiny", "--out", "{tmp}/recipe", "--dry-run", "--no-progress"],
}
POSITIONALS = {"kd_run": "{run}", "zq_run": "{run}", "name": "fig1"}


class DemoStarted(Exception):
    """Raised where the demo would start its long work (it must never get there in this table)."""


@pytest.fixture(scope="module")
def tiny_run(digits_teacher, tmp_path_factory):
    """A tiny digits GDFQ run with the cosine probe, two epochs, checkpoints 0..2."""
    out = tmp_path_factory.mktemp("bad-flags") / "run"
    sets = [f"--set={s}" for s in PROBE_SETTINGS]
    argv = ["train", *tiny_train("gdfq", epochs=2, iters=2), *sets, "--probes", "cosine", "--out", str(out)]
    assert main([*argv, "--quiet", "--no-progress"]) == 0
    return out


def _snapshot(*roots: Path) -> dict[str, str | None]:
    """{path: sha256 of a file, None for a folder} of everything under `roots`."""
    seen: dict[str, str | None] = {}
    for root in roots:
        for folder, dirs, files in os.walk(root):
            for d in dirs:
                seen[os.path.join(folder, d)] = None
            for f in files:
                path = os.path.join(folder, f)
                seen[path] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return seen


def _argv(command: str, dest: str | None, value: str | None, tmp: Path, run: Path) -> list[str]:
    fill = {"{tmp}": str(tmp), "{run}": str(run), "{missing}": str(tmp / "no-such"), "{file}": str(tmp / "a-file")}
    fill["{folder}"] = str(tmp / "a-folder")

    def filled(text: str) -> str:
        for key, what in fill.items():
            text = text.replace(key, what)
        return text

    positionals = dict(POSITIONALS)
    extra: list[str] = []
    if dest is not None:
        action = next(a for a in _value_actions(_commands()[command]) if a.dest == dest)
        if action.option_strings:
            extra = [action.option_strings[0], value]
        else:
            positionals[dest] = value
    argv = [positionals[a[1:-1]] if a.startswith("<") else a for a in BASE[command]]
    return [filled(a) for a in argv + extra]


def _run(argv: list[str], capsys) -> tuple[int, list[str]]:
    """main(argv): (exit status, the non-empty stderr lines, each Python warning counted as a line)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            rc = main(argv)
        except SystemExit as stop:  # argparse
            rc = stop.code
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err + [f"warning: {w.message}" for w in caught]


@pytest.fixture
def no_demo_work(monkeypatch):
    import zsq_probe.runs.demo as demo

    def started(*args, **kwargs):
        raise DemoStarted("the demo started its work")

    monkeypatch.setattr(demo, "post_training_quantization", started)


def _mentions(line: str, command: str, dest: str, value: str, tmp: Path) -> bool:
    """The one line names the flag (its option, its config key, its metavar) or the value it refuses."""
    action = next(a for a in _value_actions(_commands()[command]) if a.dest == dest)
    names = [*action.option_strings, dest, dest.replace("_", "-"), action.metavar or dest]
    if "=" in value:  # --set KEY=VALUE: the config key
        names.append(value.split("=")[0])
    if len(value) > 2:
        names.append(value.replace("{missing}", str(tmp / "no-such")).replace("{file}", str(tmp / "a-file")))
    return any(name and name in line for name in names)


@pytest.mark.parametrize(("command", "dest", "value"), _cases())
def test_a_bad_flag_value_is_one_line_exit_2_and_writes_nothing(
    command, dest, value, tiny_run, tmp_path, capsys, no_demo_work
):
    (tmp_path / "a-file").write_text("a file\n")
    (tmp_path / "a-folder").mkdir()
    before = _snapshot(tmp_path, tiny_run.parent)
    rc, err = _run(_argv(command, dest, value, tmp_path, tiny_run), capsys)
    assert rc == 2 and len(err) == 1, (rc, err)
    assert err[0].startswith(f"zsq-probe {command}: error: ") or err[0].startswith("zsq-probe: error: "), err
    assert _mentions(err[0], command, dest, value, tmp_path), err
    assert _snapshot(tmp_path, tiny_run.parent) == before


@pytest.mark.parametrize("command", [c for c in BASE if c != "demo"])
def test_the_valid_commands_the_table_starts_from_run(command, tiny_run, tmp_path, capsys):
    """Each bad value goes into a command that runs as it is (so a refusal is the bad value's doing)."""
    rc, err = _run(_argv(command, None, None, tmp_path, tiny_run), capsys)
    assert rc == 0, err


def test_the_demo_the_table_starts_from_gets_to_work(tmp_path, capsys, no_demo_work):
    with pytest.raises(DemoStarted):
        main(_argv("demo", None, None, tmp_path, tmp_path))


def test_every_string_flag_has_a_kind():
    """A new free-string flag is given a kind here, so its bad values are the right ones."""
    missing = {
        f"{command} {a.option_strings or a.dest}"
        for command, parser in _commands().items()
        for a in _value_actions(parser)
        if _kind(a) == "unclassified"
    }
    assert not missing


@pytest.mark.parametrize(
    ("flags", "mention"),
    [
        (["--data-root", "{missing}"], "--data-root {missing}: no such folder"),
        (["--data-root", "{file}"], "--data-root {file}: a file, not a folder"),
        (["--data-root", "{folder}", "--weights", "{missing}"], "weights file {missing} not found"),
        (["--data-root", "{folder}", "--weights", "{r20}"], "CIFAR-10 not found under {folder}"),
    ],
    ids=["missing data root", "data root a file", "missing weights", "no CIFAR-10 in the data root"],
)
def test_the_laptop_demo_reads_its_teacher_and_data_before_writing(tmp_path, capsys, no_demo_work, flags, mention):
    """`demo --scale laptop` (whose base is not the table's): its inputs are read before its folder is made."""
    import torch

    from zsq_probe.teachers.loader import build_architecture

    (tmp_path / "a-file").write_text("a file\n")
    (tmp_path / "a-folder").mkdir()
    torch.save(build_architecture("resnet20_cifar10").state_dict(), tmp_path / "r20.pt")  # untrained, right shapes
    fill = {"{missing}": "no-such", "{file}": "a-file", "{folder}": "a-folder", "{r20}": "r20.pt"}

    def filled(text: str) -> str:
        for key, name in fill.items():
            text = text.replace(key, str(tmp_path / name))
        return text

    before = _snapshot(tmp_path)
    rc, err = _run(["demo", "--scale", "laptop", "--out", str(tmp_path / "demo"), *map(filled, flags)], capsys)
    assert rc == 2 and len(err) == 1 and filled(mention) in err[0], err
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["{missing}", "{file}"], ids=["missing folder", "a file"])
def test_a_bad_data_root_is_refused_on_resume_too(tiny_run, tmp_path, capsys, where):
    """--resume takes the teacher from the run (no digits refusal there): the folder itself is checked."""
    (tmp_path / "a-file").write_text("a file\n")
    root = where.replace("{missing}", str(tmp_path / "no-such")).replace("{file}", str(tmp_path / "a-file"))
    before = _snapshot(tmp_path, tiny_run.parent)
    rc, err = _run(["train", "--out", str(tiny_run), "--resume", "--data-root", root, "--no-progress"], capsys)
    assert rc == 2 and len(err) == 1 and err[0].startswith(f"zsq-probe train: error: --data-root {root}: "), err
    assert _snapshot(tmp_path, tiny_run.parent) == before


def test_every_accepted_value_names_a_flag_and_a_bad_value_it_has():
    """No stale allow-list entry: each names a command's flag and one of that flag's bad values, and says why."""
    commands = _commands()
    for (command, dest, label), why in ACCEPTED.items():
        parsers = commands.values() if command == "*" else [commands[command]]
        labels = {lab for p in parsers for a in _value_actions(p) if a.dest == dest for lab, _ in _values(a)}
        assert label in labels and why, (command, dest, label)
