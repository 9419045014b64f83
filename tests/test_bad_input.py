"""Issue 13: every bad input is a one-line error with exit status 2, raised before a run folder is touched; the
finite-weights guarantee (parameters checked after each step, no checkpoint holding inf/NaN); probes never
crash on a non-finite loss surface."""

from __future__ import annotations

import hashlib
import json
import os
import warnings

import pytest
import torch
from tiny_runs import tiny_train

from zsq_probe.cli import main


def _tree(path):
    """{relative path: sha256} of everything under `path` (or of the file itself)."""
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return {"": hashlib.sha256(open(path, "rb").read()).hexdigest()}
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = hashlib.sha256(open(p, "rb").read()).hexdigest()
    return out


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


def _run(argv, capsys):
    rc = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="this torch has MPS")
def test_a_device_this_torch_lacks_is_one_line_exit_2(tmp_path, capsys):
    for command in (TRAIN, ["cosine", "--run", str(tmp_path / "no-run")], ["eval", "--teacher", "digits"]):
        rc, err = _run(
            [*command, "--device", "mps", *(["--out", str(tmp_path / "r")] if command is TRAIN else [])], capsys
        )
        assert rc == 2 and err == [
            f"zsq-probe {command[0]}: error: --device mps: this torch ({torch.__version__}) has no usable mps device"
        ]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("argv,mention", [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_bad_train_setting_is_one_line_exit_2_before_any_write(tmp_path, capsys, argv, mention):
    out = tmp_path / "run"
    rc, err = _run(TRAIN + argv + ["--out", str(out)], capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("zsq-probe train: error:"), err
    assert mention in err[0]
    assert not out.exists()


def test_bad_setting_leaves_an_existing_run_folder_unchanged(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"config": {"epochs": 3}}))
    before = _tree(out)
    rc, err = _run(TRAIN + ["--set", "lr=inf", "--out", str(out), "--resume"], capsys)
    assert rc == 2 and len(err) == 1
    assert _tree(out) == before


@pytest.mark.parametrize(
    "doc,mention",
    [([1, 2, 3], "JSON object"), ({"w_bits": None}, "w_bits"), ({"quant": {"w_bits": None}}, "w_bits")],
    ids=["json list", "w_bits null flat", "w_bits null nested"],
)
def test_bad_config_file(tmp_path, capsys, doc, mention):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(doc))
    before = _tree(cfg)
    out = tmp_path / "run"
    rc, err = _run(TRAIN + ["--config", str(cfg), "--out", str(out)], capsys)
    assert rc == 2 and len(err) == 1, err
    assert mention in err[0]
    assert not out.exists() and _tree(cfg) == before


def test_figures_out_an_existing_file(tmp_path, capsys):
    target = tmp_path / "figs.png"
    target.write_bytes(b"not a folder")
    rc, err = _run(["figures", "--runs", str(tmp_path / "none"), "--out", str(target)], capsys)
    assert rc == 2 and len(err) == 1, err
    assert target.read_bytes() == b"not a folder"


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file modes")
def test_read_only_out_parent(tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(0o555)
    try:
        rc, err = _run(TRAIN + ["--epochs", "1", "--iters-per-epoch", "1", "--out", str(parent / "run")], capsys)
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
    rc, err = _run(["presets"], capsys)
    assert rc == 2 and len(err) == 1 and "No space left on device" in err[0], err


# ---------------------------------------------------------------- finite-weights guarantee


def _tiny_cfg(**sets):
    from zsq_probe.presets import resolve_config

    cfg = resolve_config(
        "ait", teacher="digits", flags={"epochs": 2, "iters_per_epoch": 2, "batch_size": 16, "val_max_batches": 1}
    )
    cfg.set("warmup_epochs", 0)
    for k, v in sets.items():
        cfg.set(k, v)
    cfg.validate()
    return cfg


def test_poisoned_parameters_stop_the_run_without_a_poisoned_checkpoint(tmp_path, monkeypatch):
    from zsq_probe.runs import train
    from zsq_probe.training.loop import NonFiniteError, Trainer

    original = Trainer.student_step

    def poisoning_step(self, batch, want_terms):
        result = original(self, batch, want_terms)
        if self.epoch >= 1 or self.global_step >= 1:  # after a first good checkpoint
            with torch.no_grad():
                next(self.parts.student.parameters()).view(-1)[0] = float("inf")
        return result

    monkeypatch.setattr(Trainer, "student_step", poisoning_step)
    with pytest.raises(NonFiniteError, match="became non-finite") as e:
        train(_tiny_cfg(), tmp_path / "run", progress=False)
    assert "last good checkpoint" not in str(e.value)
    for cp in (tmp_path / "run" / "checkpoints").glob("*.pt"):
        state = torch.load(cp, weights_only=True)
        assert all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())


def test_checkpoint_guard_refuses_non_finite_state():
    from zsq_probe.training.checkpoint import check_finite_state
    from zsq_probe.training.loop import NonFiniteError

    check_finite_state({"student": {"w": torch.ones(3)}, "rng": {"torch": torch.zeros(2)}}, 1)
    with pytest.raises(NonFiniteError, match="student.w"):
        check_finite_state({"student": {"w": torch.tensor([1.0, float("nan")])}}, 1)
    with pytest.raises(NonFiniteError, match="generator"):
        check_finite_state({"student": {}, "generator": {"l.weight": torch.tensor([float("inf")])}}, 1)


def test_parameter_check_does_not_change_the_numbers(tmp_path):
    """The per-step check only reads: two identical runs give identical metrics (the reference parquet test
    pins the numbers bit for bit against the stored run)."""
    from zsq_probe.runs import train

    a = train(_tiny_cfg(epochs=1), tmp_path / "a", progress=False)
    b = train(_tiny_cfg(epochs=1), tmp_path / "b", progress=False)
    assert a.final_val_top1 == b.final_val_top1


# ---------------------------------------------------------------- probes on a non-finite loss surface


def test_hessian_product_on_nan_model_is_a_clear_error_not_a_scipy_crash():
    import torch.nn as nn
    import torch.nn.functional as F

    from zsq_probe.hessian import HessianOperator, top_eigenpairs
    from zsq_probe.hessian.operator import NonFiniteHessianError

    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with pytest.warns(UserWarning):
        with HessianOperator(model, F.cross_entropy, [(x, y)]) as op:
            with pytest.raises(NonFiniteHessianError):
                top_eigenpairs(op, k=1, seed=0)


def test_curvature_probe_skips_a_nan_epoch_with_a_warning(caplog):
    from types import SimpleNamespace

    from zsq_probe.hessian.operator import NonFiniteHessianError
    from zsq_probe.probes import hessian as curv

    probe = curv.HessianProbe.__new__(curv.HessianProbe)
    probe.cfg = _tiny_cfg(hessian_batch_size=200)
    probe.last = ("stale",)

    def nan_curvature(*a, **k):
        raise NonFiniteHessianError("a Hessian-vector product is non-finite")

    ctx = SimpleNamespace(
        probe_batch=lambda e, n: SimpleNamespace(size=n), student=torch.nn.Linear(1, 1), param_names=["weight", "bias"]
    )
    orig = curv.curvature
    curv.curvature = nan_curvature
    try:
        with caplog.at_level("WARNING"):
            probe.measure_checkpoint(ctx, 3)
    finally:
        curv.curvature = orig
    assert probe.last is None
    assert any("no rows for epoch 3" in r.message for r in caplog.records)


# ---------------------------------------------------------------- the smaller items of issue 13


def _unchanged(before, path):
    """Every file that was there is byte-identical and nothing is new, not even a writer lock file."""
    assert _tree(path) == before


def _fake_run(path, cfg=None):
    """A run folder holding only a config.json (the tiny digits ZQ config unless `cfg`)."""
    from zsq_probe.rundir.store import RunDir

    run = RunDir(path)
    run.write_config((cfg or _tiny_cfg()).to_dict())
    return run


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
    _fake_run(out)
    before = _tree(out)
    rc, err = _run(["train", "--no-progress", "--out", str(out), "--resume"] + argv, capsys)
    assert rc == 2
    assert len(err) == 1 and err[0].startswith("zsq-probe train: error:"), err
    assert mention in err[0]
    _unchanged(before, out)


def test_resume_accepts_the_runs_own_teacher_and_data_and_fresh_runs_default_to_digits(tmp_path):
    from argparse import Namespace

    from zsq_probe.cli import build_parser
    from zsq_probe.cli.train import _refuse_other_teacher_or_data, build_config

    out = tmp_path / "run"
    _fake_run(out)
    for teacher, data in ((None, None), ("digits", None), (None, "digits"), ("digits", "digits")):
        _refuse_other_teacher_or_data(Namespace(teacher=teacher, data=data), out / "config.json")
    args = build_parser().parse_args(["train", "--out", str(tmp_path / "new")])
    assert args.teacher is None  # an explicit --teacher can be told apart from the default ...
    assert build_config(args).teacher == "digits"  # ... which a fresh run resolves to digits


def _newer_part(run, table="cosine"):
    import pyarrow.parquet as pq

    from zsq_probe.rundir.store import TABLE_SCHEMA_VERSION

    path = run.table_dir(table) / f"part-{run.part_keys(table)[-1]}.parquet"
    tbl = pq.read_table(path)
    meta = dict(tbl.schema.metadata)
    meta[b"zsq_probe.schema_version"] = str(TABLE_SCHEMA_VERSION + 1).encode()
    pq.write_table(tbl.replace_schema_metadata(meta), path)
    return path


@pytest.mark.parametrize("command", ["resume", "read"])
def test_a_part_of_a_newer_schema_is_refused_on_resume_and_on_read(tmp_path, capsys, command):
    from fabricated_runs import make_run

    run, _ = make_run(
        tmp_path / "zq", "ait", cos_center=-0.2, trace_scale=1.0, kl_scale=0.1, tables=("metrics", "cosine")
    )
    part = _newer_part(run)
    before = _tree(run.path)
    argv = (
        ["train", "--no-progress", "--out", str(run.path), "--resume"]
        if command == "resume"
        else ["compare", str(run.path), str(run.path), "--probe", "cosine"]
    )
    rc, err = _run(argv, capsys)
    assert rc == 2
    assert len(err) == 1, err
    assert part.name in err[0] and "was written by a newer zsq-probe" in err[0] and "upgrade" in err[0]
    _unchanged(before, run.path)


def test_compare_of_runs_on_different_data_sets_warns_and_still_compares(tmp_path, capsys):
    from fabricated_runs import make_run, run_config

    kd, _ = make_run(
        tmp_path / "kd", "kd", cos_center=0.3, trace_scale=1.0, kl_scale=0.1, source="real", tables=("cosine",)
    )
    zq, _ = make_run(tmp_path / "zq", "ait", cos_center=-0.2, trace_scale=1.0, kl_scale=0.1, tables=("cosine",))
    # a CIFAR ZQ run (the same run id: its parts record it)
    zq.write_config(run_config("ait", teacher="resnet20_cifar10", data="cifar10"), extra={"run_id": zq.run_id})
    before = {p: _tree(p) for p in (kd.path, zq.path)}
    rc = main(["compare", str(kd.path), str(zq.path), "--probe", "cosine"])
    cap = capsys.readouterr()
    err = [line for line in cap.err.splitlines() if line.strip()]
    assert rc == 0
    assert len(err) == 1 and err[0].startswith("warning:"), err
    assert "different data sets" in err[0] and "digits" in err[0] and "cifar10" in err[0]
    assert "share of steps with cos < 0" in cap.out  # the comparison still ran
    assert {p: _tree(p) for p in (kd.path, zq.path)} == before
    # runs on one data set: no warning
    assert main(["compare", str(kd.path), str(kd.path), "--probe", "cosine"]) == 0
    assert "different data sets" not in capsys.readouterr().err


def test_raw_pickle_weights_are_refused_for_safety_not_called_corrupt(tmp_path, capsys):
    import pickle

    weights = tmp_path / "teacher.pkl"
    weights.write_bytes(pickle.dumps({"output.weight": [[0.0]]}))
    out = tmp_path / "run"
    with warnings.catch_warnings(record=True) as caught:  # torch's pickle-protocol note would be a second line
        warnings.simplefilter("always")
        rc, err = _run(TRAIN + ["--weights", str(weights), "--out", str(out)], capsys)
    assert not [w for w in caught if "pickle protocol" in str(w.message)]
    assert rc == 2 and len(err) == 1, err
    line = err[0]
    assert str(weights) in line and "pickled (non-weights-only) file" in line and "for safety" in line
    assert "corrupt" not in line
    assert line.endswith("pass --weights new_path")  # the whole hint, not a cut torch message
    assert not out.exists()


@pytest.mark.parametrize(
    "content,mention",
    [
        (b"random", "is not a torch checkpoint (unreadable)"),
        (b"pickle", "is a pickled (non-weights-only) file"),
    ],
    ids=["random bytes", "raw pickle"],
)
def test_a_foreign_checkpoint_is_named_for_what_it_is(digits_teacher, tmp_path, capsys, content, mention):
    import pickle

    import numpy as np

    out = tmp_path / "run"
    run = _fake_run(out)
    run.checkpoint_dir.mkdir(parents=True)
    data = (
        np.random.default_rng(0).bytes(4096)
        if content == b"random"
        else pickle.dumps({"epoch": 1, "student": {"w": [1.0]}})
    )
    run.checkpoint_path(1).write_bytes(data)
    before = _tree(out)
    with warnings.catch_warnings(record=True) as caught:  # torch's pickle-protocol note would be a second line
        warnings.simplefilter("always")
        rc, err = _run(["train", "--no-progress", "--out", str(out), "--resume"], capsys)
    assert not [w for w in caught if "pickle protocol" in str(w.message)]
    assert rc == 2 and len(err) == 1, err
    assert "epoch-0001.pt" in err[0] and mention in err[0]
    assert "holds pickled Python objects" not in err[0]
    _unchanged(before, out)


def test_run_that_is_a_file_says_so(tmp_path, capsys):
    target = tmp_path / "run.txt"
    target.write_bytes(b"not a run")
    rc, err = _run(["cosine", "--run", str(target)], capsys)
    assert rc == 2 and len(err) == 1, err
    assert "is a file, not a run folder" in err[0] and "does not exist" not in err[0]
    assert target.read_bytes() == b"not a run"


def test_summary_records_skipped_steps_and_the_cli_ends_with_them(digits_teacher, tmp_path, monkeypatch, capsys):
    import zsq_probe.quantization.losses as losses

    real, calls = losses.kl_to_teacher, {"n": 0}

    def kl(s_logits, t_logits, temperature):  # a NaN KL term at the second student step
        calls["n"] += 1
        return real(s_logits, t_logits, temperature) * (float("nan") if calls["n"] == 2 else 1.0)

    monkeypatch.setattr(losses, "kl_to_teacher", kl)
    out = tmp_path / "skip"
    # 11 steps: one skipped is under the per-epoch warning share, so the final line is the only one on stderr
    # --quiet: warnings and errors only, so the closing warning is the one line
    flags = tiny_train("gdfq", epochs=1, iters=11, sets=["on_nonfinite=skip"], extra=["--quiet"])
    rc, err = _run(["train", *flags, "--out", str(out)], capsys)
    assert rc == 0
    assert json.loads((out / "summary.json").read_text())["skipped_steps"] == 1
    assert len(err) == 1 and err[0].startswith("warning: 1 training step(s)") and "skipped" in err[0], err


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
