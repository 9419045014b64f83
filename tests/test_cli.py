"""The command line as a user meets it: help, eval on the embedded teacher, one-line errors."""

import json
import subprocess
import sys

import pytest

from zsq_probe.cli import main


def run_cli(args, capsys):
    rc = main(args)
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_help_lists_the_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "zsq_probe", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for name in ("eval", "train", "presets", "demo", "cosine", "hessian", "slice", "crossings", "figures", "compare"):
        assert name in out


@pytest.fixture(scope="module")
def eval_8bit(digits_teacher):
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["eval", "--teacher", "digits", "--w-bits", "8", "--a-bits", "8", "--json"]) == 0
    return json.loads(buf.getvalue())


def test_eval_8bit_is_within_a_point_of_full_precision(eval_8bit):
    r = eval_8bit
    assert r["fp_top1"] >= 0.95  # the embedded teacher is good enough to tell the story
    assert abs(r["quant_top1"] - r["fp_top1"]) <= 0.01
    for key in ("fp_top1", "quant_top1", "w_bits", "a_bits", "teacher", "weights_sha256"):
        assert key in r
    assert len(r["weights_sha256"]) == 64
    spec = r["quantization"]
    assert spec["w_bits"] == 8 and spec["first_quantized_layer"] == "features.init_block.conv"
    assert spec["last_quantized_layer"] == "output"


def test_eval_2bit_is_clearly_worse(eval_8bit, capsys):
    rc, out, _ = run_cli(["eval", "--teacher", "digits", "--w-bits", "2", "--a-bits", "2", "--json"], capsys)
    r = json.loads(out)
    assert rc == 0 and r["quant_top1"] < eval_8bit["fp_top1"] - 0.2


def test_eval_human_table(digits_teacher, capsys):
    rc, out, _ = run_cli(
        ["eval", "--teacher", "digits", "--w-bits", "4", "--a-bits", "4", "--max-batches", "1"], capsys
    )
    assert rc == 0 and "full precision" in out and "quantised 4w4a" in out and "not quantised" in out


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["eval", "--teacher", "resnet20_cifar10", "--weights-root", "{tmp}"], "resnet20_cifar10-"),
        (["eval", "--teacher", "resnet20_cifar10", "--weights", "{tmp}/missing.pth"], "missing.pth"),
        (["eval", "--teacher", "resnt20_cifar10"], "resnet20_cifar10"),
        (["eval", "--teacher", "digits", "--data", "cifar10", "--data-root", "{tmp}/nowhere"], "cifar-10-batches-py"),
        (["eval", "--teacher", "digits", "--w-bits", "9"], "--w-bits must be 2..8"),
        (["train", "--preset", "nope", "--out", "{tmp}/r"], "unknown preset"),
    ],
)
def test_bad_input_is_one_line_and_non_zero(args, phrase, tmp_path, capsys):
    rc, _, err = run_cli([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and phrase in lines[0], err


def test_missing_weights_message_says_no_download(tmp_path, capsys):
    rc, _, err = run_cli(["eval", "--teacher", "resnet20_cifar10", "--weights-root", str(tmp_path)], capsys)
    assert rc == 2 and "--download" in err and str(tmp_path) in err


def test_presets_lists_the_paper_rows(capsys):
    rc, out, _ = run_cli(["presets", "--json"], capsys)
    table = json.loads(out)
    assert rc == 0 and {
        "gdfq",
        "kl-only",
        "ait",
        "baseline+gi",
        "ce-only+gi",
        "kl-only-high-lr",
        "ait-adam",
        "ait-rmsprop",
        "gdfq-adam",
        "gdfq-rmsprop",
        "kd",
    } <= set(table)
    assert table["ait"]["gi"] is True and table["ait"]["ce_weight"] == 0.0


def test_readme_schema_section_matches_the_code():
    from pathlib import Path

    from zsq_probe.rundir.schema import markdown

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert markdown().strip() in readme, (
        "regenerate the README's table section with `python -m zsq_probe.rundir.schema`"
    )


def test_resume_uses_the_runs_own_config(tmp_path, digits_teacher, capsys):
    out = str(tmp_path / "r")
    common = ["--no-progress", "--set", "val_max_batches=1"]
    assert (
        main(
            [
                "train",
                "--preset",
                "gdfq",
                "--epochs",
                "1",
                "--iters-per-epoch",
                "2",
                "--batch-size",
                "16",
                "--seed",
                "3",
                "--out",
                out,
            ]
            + common
        )
        == 0
    )
    assert main(["train", "--out", out, "--resume", "--no-progress"]) == 0  # no preset, no seed: the run's own
    assert main(["train", "--out", out, "--resume", "--epochs", "2", "--no-progress"]) == 2
    assert "changed config (epochs: 1 -> 2)" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ structure
COMMANDS = [
    "eval",
    "presets",
    "train",
    "demo",
    "cosine",
    "hessian",
    "slice",
    "crossings",
    "figures",
    "compare",
    "recipe",
]


def test_commands_are_listed_not_registered_on_import():
    """Each command module adds its commands when asked (`register`); building the parser twice gives
    the same commands, in the same order, nothing left over from imports."""
    import argparse

    from zsq_probe.cli import COMMAND_MODULES, build_parser

    assert all(callable(m.register) for m in COMMAND_MODULES)

    def commands(parser):
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        return list(sub.choices)

    assert commands(build_parser()) == COMMANDS == commands(build_parser())


CLI_MODULE = r"zsq_probe\.cli(_\w+)?(\..+)?"  # the package, and the old cli_*.py modules


def _cli_references(path, package) -> list[str]:
    """Modules of the command line a source file imports (relative imports resolved), or names as a
    string (importlib.import_module("zsq_probe.cli"))."""
    import ast
    import re

    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(parts + ([node.module] if node.module else []))
            names += [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.append(node.value.strip())
    return sorted({n for n in names if re.fullmatch(CLI_MODULE, n)})


def test_the_library_never_imports_the_cli():
    """Nothing under zsq_probe/ but zsq_probe/cli/ (and `python -m zsq_probe`, its entry point) imports the
    command line, directly, relatively or by name."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    offenders = []
    for path in sorted((root / "zsq_probe").rglob("*.py")):
        rel = path.relative_to(root)
        if rel.parts[:2] == ("zsq_probe", "cli") or rel.as_posix() == "zsq_probe/__main__.py":
            continue
        package = ".".join(rel.parent.parts)
        hits = _cli_references(path, package)
        if hits:
            offenders.append(f"{rel.as_posix()}: {', '.join(hits)}")
    assert not offenders, offenders


def test_one_line_shortens_errors():
    from zsq_probe.errors import UserError, one_line

    assert one_line(ValueError("a\n  b\tc")) == "ValueError: a b c"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(RuntimeError("x" * 300), 20) == "RuntimeError: " + "x" * 17 + "..."
    assert one_line(OSError("disk\nfull"), with_type=False) == "disk full"
    assert one_line("  two\nlines ", None) == "two lines"
    assert isinstance(UserError("bad"), ValueError)


def test_library_logging_prints_while_a_command_runs(tmp_path, capsys):
    """INFO from the library's loggers is a plain stdout line during a command; afterwards the `zsq_probe`
    logger is as it was (no handler left behind, level restored)."""
    import logging

    from zsq_probe.cli.common import console_logging

    logger = logging.getLogger("zsq_probe")
    level, handlers = logger.level, list(logger.handlers)
    with console_logging():
        logging.getLogger("zsq_probe.some.module").info("an info line")
        logging.getLogger("zsq_probe.some.module").debug("a debug line")
        logging.getLogger("zsq_probe.some.module").warning("a warning line")
    with console_logging(quiet=True):
        logging.getLogger("zsq_probe.other").info("quiet info")
    cap = capsys.readouterr()
    assert cap.out == "an info line\n" and cap.err == "a warning line\n"
    assert logger.level == level and logger.handlers == handlers
    assert main(["cosine", "--run", str(tmp_path)]) == 2  # a failing command restores it too
    assert logger.level == level and logger.handlers == handlers
