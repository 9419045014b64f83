"""The command line as a user meets it: help, eval on the embedded teacher, one-line errors (numeric flags out of
range: issue 25; the refusals of bad input: test_errors.py)."""

import json
import subprocess
import sys

import pytest
from cli_checks import cli, cli_err_lines

from zsq_probe.cli import main
from zsq_probe.config import max_workers, usable_cpus


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
    rc, out, _ = cli(["eval", "--teacher", "digits", "--w-bits", "2", "--a-bits", "2", "--json"], capsys)
    r = json.loads(out)
    assert rc == 0 and r["quant_top1"] < eval_8bit["fp_top1"] - 0.2


def test_eval_human_table(digits_teacher, capsys):
    rc, out, _ = cli(["eval", "--teacher", "digits", "--w-bits", "4", "--a-bits", "4", "--max-batches", "1"], capsys)
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
    rc, _, err = cli([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    assert rc == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and phrase in lines[0], err


def test_missing_weights_message_says_no_download(tmp_path, capsys):
    rc, _, err = cli(["eval", "--teacher", "resnet20_cifar10", "--weights-root", str(tmp_path)], capsys)
    assert rc == 2 and "--download" in err and str(tmp_path) in err


def test_presets_lists_the_paper_rows(capsys):
    rc, out, _ = cli(["presets", "--json"], capsys)
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


def test_docs_schema_section_matches_the_code():
    from pathlib import Path

    from zsq_probe.rundir.schema import markdown

    page = (Path(__file__).resolve().parents[2] / "docs" / "run-directory.md").read_text()
    assert markdown().strip() in page, (
        "regenerate docs/run-directory.md's 'Table columns' section with `python -m zsq_probe.rundir.schema`"
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

    root = Path(__file__).resolve().parents[2]
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
    """INFO from the library's loggers is a plain stderr line during a command (stdout is kept for the command's
    result); --quiet keeps warnings and errors; afterwards the `zsq_probe` logger is as it was (no handler left
    behind, level restored)."""
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
        logging.getLogger("zsq_probe.other").warning("quiet warning")
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err == "an info line\na warning line\nquiet warning\n"
    assert logger.level == level and logger.handlers == handlers
    assert main(["cosine", "--run", str(tmp_path)]) == 2  # a failing command restores it too
    assert logger.level == level and logger.handlers == handlers


# ------------------------------------------------------------------------ output, threads, help, exit codes
def _parsers():
    """(name, parser) of `zsq-probe` and of each of its commands."""
    import argparse

    from zsq_probe.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [("zsq-probe", parser), *sub.choices.items()]


def test_every_option_has_help_text_and_lists_its_choices_once():
    import re

    missing, repeated = [], []
    for name, parser in _parsers():
        for action in parser._actions:
            if action.help is None or not action.help.strip():
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
        for group in re.findall(r"\{([^{}]*)\}", parser.format_help()):
            items = group.split(",")
            if len(items) != len(set(items)):
                repeated.append(f"{name}: {{{group}}}")
    assert not missing, missing
    assert not repeated, repeated


def test_every_command_has_the_output_flags_and_threads():
    for name, parser in _parsers()[1:]:
        flags = {s for a in parser._actions for s in a.option_strings}
        assert {"--quiet", "--progress", "--no-progress", "--threads"} <= flags, name


def test_help_imports_no_torch():
    """`zsq-probe --help` and every command's --help build the parser only: no torch (nor pandas, matplotlib)."""
    code = (
        "import contextlib, io, json, sys\n"
        "from zsq_probe.cli import COMMAND_MODULES, build_parser, main\n"
        "import argparse\n"
        "sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))\n"
        "for argv in [['--help']] + [[c, '--help'] for c in sub.choices]:\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        main(argv)\n"
        "print(json.dumps([m for m in ('torch', 'pandas', 'matplotlib') if m in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == []


def test_spelled_out_choices_match_the_library():
    """figures and compare spell their choices out (so that --help loads no torch / pandas): the library's."""
    from zsq_probe.analysis.probe_tables import COMPARABLE_PROBES
    from zsq_probe.cli import compare, figures
    from zsq_probe.plots.style import FORMATS, WIDTHS

    assert figures.FORMAT_CHOICES == (*FORMATS, ",".join(FORMATS))
    assert figures.WIDTH_CHOICES == tuple(WIDTHS)
    assert tuple(compare.ROWS) == COMPARABLE_PROBES


@pytest.mark.parametrize(
    "flags, tty, shown",
    [
        ([], True, True),
        ([], False, False),
        (["--quiet"], True, False),
        (["--quiet", "--progress"], True, False),
        (["--progress"], False, True),
        (["--no-progress"], True, False),
    ],
)
def test_progress_bars_only_on_a_terminal_unless_forced(flags, tty, shown, monkeypatch):
    import io

    from zsq_probe.cli import build_parser
    from zsq_probe.cli.common import show_progress

    class Stderr(io.StringIO):
        def isatty(self):
            return tty

    args = build_parser().parse_args(["figures", "--runs", "R", "--out", "O", *flags])
    monkeypatch.setattr(sys, "stderr", Stderr())
    assert show_progress(args) is shown


TINY_TRAIN = ["--preset", "gdfq", "--epochs", "1", "--iters-per-epoch", "2", "--batch-size", "16"]
TINY_TRAIN += ["--set", "val_max_batches=1", "--set", "warmup_epochs=0"]


@pytest.fixture(scope="module")
def piped_run(digits_teacher, tmp_path_factory):
    """`zsq-probe train --threads 1` in a fresh interpreter, stdout and stderr to pipes: (its folder, result)."""
    out = tmp_path_factory.mktemp("piped") / "run"
    r = subprocess.run(
        [sys.executable, "-m", "zsq_probe", "train", *TINY_TRAIN, "--threads", "1", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    return out, r


@pytest.mark.slow  # a fresh interpreter: the start-up is the point (the slow tier, docs/development.md)
def test_piped_train_logs_on_stderr_without_bars_and_prints_only_its_summary(piped_run):
    out, r = piped_run
    assert json.loads(r.stdout)["epochs_completed"] == 1  # stdout: the summary and nothing else
    assert "\r" not in r.stderr and "it/s" not in r.stderr  # no progress frames in a log file
    assert "[gdfq] epoch    1" in r.stderr  # the log lines are there, on stderr
    assert json.loads((out / "config.json").read_text())["threads"] == 1


def test_threads_are_set_recorded_and_put_back_and_a_resume_with_others_says_so(digits_teacher, tmp_path, capsys):
    import torch

    before = torch.get_num_threads()
    out = tmp_path / "r"
    args = ["train", *TINY_TRAIN, "--no-progress", "--out", str(out)]
    assert main([*args, "--threads", str(before + 1)]) == 0
    assert torch.get_num_threads() == before
    doc = json.loads((out / "config.json").read_text())
    assert doc["threads"] == before + 1 and "resumed_threads" not in doc
    capsys.readouterr()
    assert main(["train", "--out", str(out), "--resume", "--epochs", "2", "--force", "--threads", str(before)]) == 0
    err = capsys.readouterr().err
    assert f"resuming with {before} torch thread(s); this run was started with {before + 1}" in err
    doc = json.loads((out / "config.json").read_text())
    assert doc["threads"] == before + 1 and doc["resumed_threads"] == [{"after_epoch": 1, "threads": before}]
    assert main(["train", *TINY_TRAIN, "--out", str(tmp_path / "bad"), "--threads", "0"]) == 2
    assert capsys.readouterr().err.strip() == (
        f"zsq-probe train: error: --threads must be in [1, {max_workers()}] (4 x the {usable_cpus()} CPU(s) this "
        "process may use), got 0"
    )
    assert not (tmp_path / "bad").exists()


def test_the_library_trains_without_bars_unless_asked(digits_teacher, tmp_path, capsys):
    from zsq_probe.presets import resolve_config
    from zsq_probe.runs import train

    cfg = resolve_config("gdfq", flags={"epochs": 1, "iters_per_epoch": 2, "batch_size": 16, "val_max_batches": 1})
    train(cfg, tmp_path / "quiet")
    assert capsys.readouterr().err == ""
    train(cfg, tmp_path / "bars", progress=True)
    assert "\r" in capsys.readouterr().err  # the same call with progress=True draws them (the test can fail)


def test_posthoc_json_is_alone_on_stdout(digits_teacher, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", *TINY_TRAIN, "--quiet", "--threads", "1", "--out", str(run)]) == 0
    capsys.readouterr()
    assert main(["cosine", "--run", str(run), "--epochs", "1", "--json", "--threads", "1"]) == 0
    cap = capsys.readouterr()
    rows = json.loads(cap.out)  # the whole of stdout parses
    assert [r["epoch"] for r in rows] == [1]
    assert cap.err.strip() and "probing with" not in cap.err  # progress lines on stderr; the run's own count

    import torch

    from zsq_probe.runs.posthoc import probe_run

    before = torch.get_num_threads()
    probe_run(run, "cosine", epochs=[1], overwrite=True, threads=before + 1)
    assert torch.get_num_threads() == before  # put back
    assert main(["cosine", "--run", str(run), "--epochs", "1", "--overwrite", "--threads", "2"]) == 0
    assert "probing with 2 torch thread(s); " in capsys.readouterr().err  # the run trained with 1


def test_a_non_finite_stop_exits_1(digits_teacher, tmp_path, monkeypatch, capsys):
    import zsq_probe.quantization.losses as losses

    real = losses.kl_to_teacher
    monkeypatch.setattr(losses, "kl_to_teacher", lambda s, t, temperature: real(s, t, temperature) * float("nan"))
    rc = main(["train", *TINY_TRAIN, "--quiet", "--out", str(tmp_path / "nan")])
    err = capsys.readouterr().err.strip()
    assert rc == 1 and err.startswith("zsq-probe train: error: non-finite KL term at epoch 1, step 0"), err
    assert len(err.splitlines()) == 1


@pytest.mark.slow
def test_sigterm_stops_training_after_a_checkpoint_and_exits_143(digits_teacher, tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    argv = [*TINY_TRAIN, "--epochs", "200", "--iters-per-epoch", "5"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "zsq_probe", "train", *argv, "--threads", "1", "--out", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (out / "checkpoints" / "epoch-0001.pt").exists() and proc.poll() is None:
        assert time.monotonic() < deadline, "no first checkpoint"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=240)
    assert proc.returncode == 143, stderr[-2000:]
    assert stdout == "" and "zsq-probe train: stopped by SIGTERM after the checkpoint of epoch" in stderr
    last = max(int(p.stem.split("-")[1]) for p in (out / "checkpoints").glob("epoch-*.pt"))
    assert 1 <= last < 200 and not (out / "summary.json").exists()


def _sigterm_at(site: str, argv: list[str]):
    """`zsq-probe <argv>` in a forked child that sends itself SIGTERM once: at the training step `site`
    ("step:<epoch>:<step>") or, for site "summary", while summary.json is written."""
    import os
    import signal

    from forked_cli import Forked, wait_all

    def target() -> int:
        import zsq_probe.training.checkpoint as checkpoint
        import zsq_probe.training.loop as loop

        def term() -> None:
            os.kill(os.getpid(), signal.SIGTERM)

        if site == "summary":
            write = checkpoint.write_summary
            checkpoint.write_summary = lambda *a, **k: (term(), write(*a, **k))[1]
        else:
            loop.fault_point = lambda at: term() if at == site else None
        return main(argv)

    (finished,) = wait_all([Forked(target, args=argv)], timeout=240)
    return finished


@pytest.mark.parametrize("site", ["step:2:0", "summary"], ids=["in the last epoch", "while the summary is written"])
def test_sigterm_in_the_last_epoch_exits_143_and_a_resume_finishes(digits_teacher, tmp_path, site):
    """Issue 35: SIGTERM during the last epoch (or after it, while summary.json is written) exits 143 like one
    in any other epoch: the epoch's checkpoint is written; without a summary, the resume writes it."""
    out = tmp_path / "run"
    argv = ["train", *TINY_TRAIN, "--epochs", "2", "--quiet", "--out", str(out)]
    r = _sigterm_at(site, argv)
    assert r.returncode == 143, r.stderr[-2000:]
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert lines[0].startswith("SIGTERM received: stopping after this epoch's checkpoint"), lines
    stopped = f"zsq-probe train: stopped by SIGTERM after the checkpoint of epoch 2 ({out}); resume to continue"
    assert lines[1:] == [stopped], lines
    assert (out / "checkpoints" / "epoch-0002.pt").is_file()
    assert (out / "summary.json").exists() == (site == "summary")
    assert main(["train", "--resume", *TINY_TRAIN, "--epochs", "2", "--quiet", "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs_completed"] == 2


def test_sigterm_outside_training_exits_143(tmp_path):
    """SIGTERM while a command runs (not training): its message, exit status 143, `finally` blocks run."""
    code = (
        "import os, signal, sys\n"
        "import zsq_probe.cli.presets as presets\n"
        "from zsq_probe.cli import main\n"
        "def handler(args):\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return 0\n"
        "presets.run = handler\n"
        "sys.exit(main(['presets']))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 143 and r.stderr.strip() == "zsq-probe presets: stopped by SIGTERM", r.stderr


def test_compare_mentions_runs_trained_with_different_thread_counts(tmp_path, capsys):
    from fabricated_runs import make_run

    kd, _ = make_run(tmp_path / "kd", "kd", cos_center=0.3, trace_scale=1.0, kl_scale=0.1, source="real")
    zq, _ = make_run(tmp_path / "zq", "ait", cos_center=-0.2, trace_scale=1.0, kl_scale=0.1)
    for run, threads in ((kd, 1), (zq, 1)):
        doc = run.read_config_doc()
        run.write_config(doc["config"], extra={k: v for k, v in doc.items() if k != "config"} | {"threads": threads})
    assert main(["compare", str(kd.path), str(zq.path)]) == 0
    assert "thread" not in capsys.readouterr().err  # one count: nothing to say
    doc = zq.read_config_doc()
    zq.write_config(doc["config"], extra={k: v for k, v in doc.items() if k != "config"} | {"threads": 2})
    assert main(["compare", str(kd.path), str(zq.path), "--json"]) == 0
    cap = capsys.readouterr()
    assert json.loads(cap.out)["probe"] == "cosine"  # still compared: the count is not a setting
    warning = [line for line in cap.err.splitlines() if "thread" in line]
    assert len(warning) == 1 and "different torch thread counts (kd 1, zq 2)" in warning[0], cap.err


@pytest.mark.parametrize(
    "argv,mention",
    [
        (["eval", "--teacher", "digits", "--w-bits", "4", "--a-bits", "4", "--max-batches", "-1"], "--max-batches"),
        (["eval", "--teacher", "digits", "--batch-size", "0"], "--batch-size"),
        (["recipe", "fig1", "--threads", "0", "--dry-run"], "--threads"),
        (["recipe", "fig1", "--max-retries", "-1", "--dry-run"], "--max-retries"),
        (["recipe", "fig1", "--cpus-per-job", "-1", "--dry-run"], "--cpus-per-job"),
        (["recipe", "fig1", "--workers", "0", "--dry-run"], "--workers"),
    ],
    ids=lambda v: " ".join(v) if isinstance(v, list) else v,
)
def test_numeric_flags_out_of_range_are_one_line_exit_2(argv, mention, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rc, err = cli_err_lines(argv, capsys)
    assert rc == 2 and len(err) == 1 and mention in err[0] and err[0].startswith("zsq-probe "), err
    assert list(tmp_path.iterdir()) == []
