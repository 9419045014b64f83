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
    out = subprocess.run([sys.executable, "-m", "zsq_probe", "--help"], capture_output=True, text=True, check=True).stdout
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
    rc, out, _ = run_cli(["eval", "--teacher", "digits", "--w-bits", "4", "--a-bits", "4", "--max-batches", "1"], capsys)
    assert rc == 0 and "full precision" in out and "quantised 4w4a" in out and "not quantised" in out


@pytest.mark.parametrize("args, phrase", [
    (["eval", "--teacher", "resnet20_cifar10", "--weights-root", "{tmp}"], "resnet20_cifar10-"),
    (["eval", "--teacher", "resnet20_cifar10", "--weights", "{tmp}/missing.pth"], "missing.pth"),
    (["eval", "--teacher", "resnt20_cifar10"], "resnet20_cifar10"),
    (["eval", "--teacher", "digits", "--data", "cifar10", "--data-root", "{tmp}/nowhere"], "cifar-10-batches-py"),
    (["eval", "--teacher", "digits", "--w-bits", "9"], "--w-bits must be 2..8"),
    (["train", "--preset", "nope", "--out", "{tmp}/r"], "unknown preset"),
])
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
    assert rc == 0 and {"gdfq", "kl-only", "ait", "baseline+gi", "ce-only+gi", "kl-only-high-lr", "ait-adam",
                        "ait-rmsprop", "gdfq-adam", "gdfq-rmsprop", "kd"} <= set(table)
    assert table["ait"]["gi"] is True and table["ait"]["ce_weight"] == 0.0


def test_readme_schema_section_matches_the_code():
    from pathlib import Path

    from zsq_probe.schema import markdown

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert markdown().strip() in readme, "regenerate the README's table section with `python -m zsq_probe.schema`"


def test_resume_uses_the_runs_own_config(tmp_path, digits_teacher, capsys):
    out = str(tmp_path / "r")
    common = ["--no-progress", "--set", "val_max_batches=1"]
    assert main(["train", "--preset", "gdfq", "--epochs", "1", "--iters-per-epoch", "2", "--batch-size", "16",
                 "--seed", "3", "--out", out] + common) == 0
    assert main(["train", "--out", out, "--resume", "--no-progress"]) == 0  # no preset, no seed: the run's own
    assert main(["train", "--out", out, "--resume", "--epochs", "2", "--no-progress"]) == 2
    assert "changed config (epochs: 1 -> 2)" in capsys.readouterr().err
