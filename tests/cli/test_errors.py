"""Bad input at the command line (issues 7 and 13): one line on stderr and exit status 2 (argparse's own errors
too), before a run folder is touched -- bad settings and config files, devices this torch lacks, unknown teachers,
wrong weight and data files, --out paths that cannot be written, a resume with a changed config or another teacher
or data set, figures asked for data the runs lack."""

import json
import os

import pytest
import torch
from cli_checks import cli, cli_err_lines, fake_run, file_hashes, one_line_error, tree_hashes, unchanged
from tiny_runs import TINY_PROBED

from zsq_probe.cli import main


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory, digits_teacher):
    d = tmp_path_factory.mktemp("bad-input")
    model, _ = digits_teacher
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["output.weight"] = torch.zeros(7, state["output.weight"].shape[1])
    torch.save(state, d / "wrong-shape.pt")
    (d / "corrupt.pt").write_bytes(b"\x80\x02not a checkpoint at all")
    from zsq_probe.teachers.loader import build_architecture

    torch.save(build_architecture("resnet20_cifar10").state_dict(), d / "r20.pt")  # untrained, the right shapes
    junk = d / "junk-cifar" / "cifar-10-batches-py"
    junk.mkdir(parents=True)
    for name in (
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
        "batches.meta",
    ):
        (junk / name).write_bytes(b"junk")
    return d


# (arguments after `train`, phrases of the one-line error); {d}: the bad files, {tmp}: the test's folder
BAD_TRAIN = [
    (["--teacher", "resnet20_cifar1"], ["unknown teacher", "resnet20_cifar10"]),
    (["--teacher", "digits", "--weights", "{tmp}/missing.pt"], ["missing.pt", "not found"]),
    (["--teacher", "digits", "--weights", "{d}/wrong-shape.pt"], ["wrong-shape.pt", "does not fit", "shape"]),
    (["--teacher", "digits", "--weights", "{d}/corrupt.pt"], ["corrupt.pt", "corrupt"]),
    (
        ["--preset", "kd", "--teacher", "resnet20_cifar10", "--weights", "{d}/r20.pt", "--data-root", "{tmp}/nowhere"],
        ["CIFAR-10 not found under", "nowhere"],
    ),
    # a ZQ run needs the data only for validation, but a --data-root given must be right
    (
        ["--preset", "ait", "--teacher", "resnet20_cifar10", "--weights", "{d}/r20.pt", "--data-root", "{tmp}/nowhere"],
        ["CIFAR-10 not found under"],
    ),
    (
        [
            "--preset",
            "ait",
            "--teacher",
            "resnet20_cifar10",
            "--weights",
            "{d}/r20.pt",
            "--data-root",
            "{d}/junk-cifar",
        ],
        ["could not be read", "python-pickle"],
    ),
    (["--teacher", "digits", "--data", "cifar10"], ["trained on digits", "--data cifar10"]),
    (["--set", "on_nonfinite=maybe"], ["on_nonfinite", "stop or skip"]),
    (["--set", "lr"], ["--set expects key=value"]),
]


@pytest.mark.parametrize("args, phrases", BAD_TRAIN, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_bad_train_input_is_one_line_and_writes_nothing(args, phrases, bad_files, tmp_path, capsys):
    out = tmp_path / "run"
    args = [a.replace("{d}", str(bad_files)).replace("{tmp}", str(tmp_path)) for a in args]
    rc, _, err = cli(["train", *args, "--epochs", "1", "--iters-per-epoch", "1", "--out", out], capsys)
    assert rc == 2
    one_line_error(err, *phrases)
    assert not out.exists()


def test_resume_with_a_changed_config_is_refused_and_changes_nothing(reference_copy, capsys):
    before = file_hashes(reference_copy)
    rc, _, err = cli(
        ["train", *TINY_PROBED, "--out", reference_copy, "--resume", "--set", "lr=0.5", "--epochs", "4"], capsys
    )
    assert rc == 2
    one_line_error(err, "changed config", "epochs: 3 -> 4", "lr: ", "--force")
    assert file_hashes(reference_copy) == before


def test_figures_asked_for_data_the_run_lacks(reference, tmp_path, capsys):
    rc, out, err = cli(["figures", "--runs", reference, "--out", tmp_path / "figs", "--only", "fig2b"], capsys)
    assert rc == 2 and out == ""
    skipped, error = [line for line in err.splitlines() if line.strip()]  # the skip is logged, then the error
    assert skipped.startswith("skipped fig2b: no run has probes/hessian_trace")
    assert error.startswith("zsq-probe figures: error: no figure written")
    rc, _, err = cli(["compare", reference, reference, "--probe", "hessian"], capsys)
    assert rc == 2
    one_line_error(err, "has no probes/hessian_trace")


TRAIN = ["train", "--teacher", "digits", "--no-progress"]


# (id, extra argv, what the one line must mention); --out is added: a path that must not come into being
TRAIN_CASES = [
    ("weight_decay=-1", ["--set", "weight_decay=-1"], "weight_decay"),
    ("gen_beta1=2", ["--set", "gen_beta1=2"], "gen_beta1"),
    ("lr=inf", ["--set", "lr=inf"], "lr=inf"),
    ("lr=nan", ["--set", "lr=nan"], "lr=nan"),
    ("momentum=nan", ["--set", "momentum=nan"], "momentum"),
    ("bns_weight=nan", ["--set", "bns_weight=nan"], "bns_weight"),
    ("gen_lr=inf", ["--set", "gen_lr=inf"], "lr=inf"),
    ("gi_p=nan", ["--set", "gi_p=nan"], "p=nan"),
    ("lr_gamma=inf", ["--set", "lr_gamma=inf"], "lr_gamma"),
    ("huge seed", ["--seed", "99999999999999999999999"], "seed"),
    ("negative seed", ["--seed", "-1"], "seed"),
    ("device nonsense", ["--device", "nonsense"], "device"),
    ("batch-size 1e9", ["--batch-size", "1000000000"], "batch_size"),
    ("epochs 0", ["--epochs", "0"], "epochs"),
    ("iters-per-epoch 0", ["--iters-per-epoch", "0"], "iters_per_epoch"),
    ("hessian_top_k=0", ["--set", "hessian_top_k=0"], "hessian_top_k"),
    ("zeroq_images=1e12", ["--set", "zeroq_images=1000000000000"], "zeroq_images"),
    ("slice_points=1e9", ["--set", "slice_points=1000000000"], "slice_points"),
    # issue 35: bounds on threads and workers (4 x the usable CPUs), devices this torch cannot use
    ("threads 100000", ["--threads", "100000"], "--threads must be in [1, "),
    ("threads 0", ["--threads", "0"], "--threads must be in [1, "),
    ("num-workers 100000", ["--num-workers", "100000"], "num_workers=100000 (at most"),
    ("device cuda:64", ["--device", "cuda:64"], "--device cuda:64: this torch sees"),
    ("preset ''", ["--preset", ""], "--preset: empty value"),
    ("probes ','", ["--probes", ","], "--probes: empty value or list item in ','"),
    ("probes a,,b", ["--probes", "cosine,,crossings"], "--probes: empty value or list item"),
    ("force alone", ["--force"], "--force only goes with --resume"),
    ("data-root for digits", ["--data-root", "/no/such/folder"], "the embedded digits default reads no data folder"),
    ("data-root a file", ["--data-root", __file__], "the embedded digits default reads no data folder"),
    ("set method", ["--set", "method=bogus"], "--set method=...: the method label comes from --preset"),
    ("set preset", ["--preset", "gdfq", "--set", "preset=ait"], "--set preset=...: the preset is chosen with --preset"),
]


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this torch has MPS")
def test_a_device_this_torch_lacks_is_one_line_exit_2(tmp_path, capsys):
    for command in (TRAIN, ["cosine", "--run", str(tmp_path / "no-run")], ["eval", "--teacher", "digits"]):
        rc, err = cli_err_lines(
            [*command, "--device", "mps", *(["--out", str(tmp_path / "r")] if command is TRAIN else [])], capsys
        )
        assert rc == 2 and err == [
            f"zsq-probe {command[0]}: error: --device mps: this torch ({torch.__version__}) has no usable mps device"
        ]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,mention", [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_bad_train_setting_is_one_line_exit_2_before_any_write(tmp_path, capsys, argv, mention):
    out = tmp_path / "run"
    rc, err = cli_err_lines(TRAIN + argv + ["--out", str(out)], capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("zsq-probe train: error:"), err
    assert mention in err[0]
    assert not out.exists()


def test_bad_setting_leaves_an_existing_run_folder_unchanged(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"config": {"epochs": 3}}))
    before = tree_hashes(out)
    rc, err = cli_err_lines(TRAIN + ["--set", "lr=inf", "--out", str(out), "--resume"], capsys)
    assert rc == 2 and len(err) == 1
    assert tree_hashes(out) == before


def test_figures_out_an_existing_file(tmp_path, capsys):
    target = tmp_path / "figs.png"
    target.write_bytes(b"not a folder")
    rc, err = cli_err_lines(["figures", "--runs", str(tmp_path / "none"), "--out", str(target)], capsys)
    assert rc == 2 and len(err) == 1, err
    assert target.read_bytes() == b"not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_read_only_out_parent(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        rc, err = cli_err_lines(
            TRAIN + ["--epochs", "1", "--iters-per-epoch", "1", "--out", str(parent / "run")], capsys
        )
        assert rc == 2 and len(err) == 1, err
        assert list(parent.iterdir()) == []
    finally:
        parent.chmod(0o755)


def test_os_error_is_one_line(monkeypatch, capsys):
    """A full disk / read-only checkpoints folder mid-run: the system's error as one line, exit 2."""
    import zsq_probe.cli.presets as presets_cli

    def boom(args):
        raise OSError(28, "No space left on device", "/x/checkpoints/epoch-0001.pt")

    parser_handler = presets_cli.run if hasattr(presets_cli, "run") else None
    if parser_handler is None:
        pytest.skip("presets command has no run handler")
    monkeypatch.setattr(presets_cli, "run", boom)
    # handlers are bound at registration: register a fresh parser
    rc, err = cli_err_lines(["presets"], capsys)
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err


@pytest.mark.parametrize(
    "argv,mention",
    [
        (["--teacher", "resnet20_cifar10"], "--teacher resnet20_cifar10 differs from this run's teacher 'digits'"),
        (["--teacher", "resnet20_cifar10", "--force"], "--teacher resnet20_cifar10 differs"),
        (["--data", "cifar10"], "--data cifar10 differs from this run's data set 'digits'"),
    ],
    ids=["teacher", "teacher with --force", "data"],
)
def test_resume_refuses_another_teacher_or_data(tmp_path, capsys, argv, mention):
    out = tmp_path / "run"
    fake_run(out)
    before = tree_hashes(out)
    rc, err = cli_err_lines(["train", "--no-progress", "--out", str(out), "--resume"] + argv, capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("zsq-probe train: error:"), err
    assert mention in err[0]
    unchanged(before, out)


def test_resume_accepts_the_runs_own_teacher_and_data_and_fresh_runs_default_to_digits(tmp_path):
    from argparse import Namespace

    from zsq_probe.cli import build_parser
    from zsq_probe.cli.train import _refuse_other_teacher_or_data, build_config

    out = tmp_path / "run"
    fake_run(out)
    for teacher, data in ((None, None), ("digits", None), (None, "digits"), ("digits", "digits")):
        _refuse_other_teacher_or_data(Namespace(teacher=teacher, data=data), out / "config.json")
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "new")])
    assert args.teacher is None  # an explicit --teacher can be told apart from the default ...
    assert build_config(args).teacher == "digits"  # ... which a fresh run resolves to digits


def test_run_that_is_a_file_says_so(tmp_path, capsys):
    target = tmp_path / "run.txt"
    target.write_bytes(b"not a run")
    rc, err = cli_err_lines(["cosine", "--run", str(target)], capsys)
    assert rc == 2 and len(err) == 1, err
    assert "is a file, not a run folder" in err[0] and "does not exist" not in err[0]
    assert target.read_bytes() == b"not a run"


@pytest.mark.parametrize(
    "argv,line",
    [
        (
            ["train", "--threads", "x", "--out", "r"],
            "zsq-probe train: error: argument --threads: invalid int value: 'x'",
        ),
        (["figures"], "zsq-probe figures: error: the following arguments are required: --runs, --out"),
        (["train", "--out", "r", "--width", "3"], "zsq-probe: error: unrecognized arguments: --width 3"),
    ],
)
def test_argparse_errors_are_one_line_exit_2(tmp_path, capsys, argv, line):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2 and capsys.readouterr().err.splitlines() == [line]
