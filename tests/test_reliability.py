"""Reliability (issue 7): what survives a kill -9, a NaN, bad input and a hostile checkpoint.

* Crash safety: a `zsq-probe train` process is SIGKILLed at several points (the test-only hook ZSQ_PROBE_FAULT,
  see zsq_probe.rundir.store), resumed each time, and must end with every probe table holding each key exactly
  once, no epoch missing, and weights equal bit for bit to an uninterrupted run.  The first kill hits a real
  `python -m zsq_probe train` subprocess; the others hit processes forked from the test process that run the
  same command line (tests/forked_cli.py), without a fresh interpreter's imports.
* Numerical faults: a NaN/inf loss or gradient stops the run naming epoch, step and term (last good
  checkpoint kept), or is skipped and counted with on_nonfinite=skip.
* Bad input from the CLI: one line on stderr, exit status 2, nothing in the target folder changed.
* Safe loading (weights_only) and schema versions of runs and parquet parts.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from forked_cli import forked_main, main_in_process
from tiny_runs import tiny_train

from zsq_probe.cli import main
from zsq_probe.errors import UserError
from zsq_probe.rundir.atomic import FAULT_ENV
from zsq_probe.rundir.store import TABLE_SCHEMA_VERSION, RunDir, load_checkpoint_file, read_table

# a run of 3 tiny epochs with the probes that write a part per epoch (about 2 s of work on one core, after the imports)
TINY = tiny_train(
    "ait",
    epochs=3,
    iters=3,
    sets=["hessian_batch_size=16", "probe_every_steps=1"],  # the probes' batch: the comparisons hold at any size
    extra=["--probes", "cosine,crossings,inter_epoch", "--no-progress"],
)
# what makes a row unique in each table
KEYS = {
    "metrics": ["epoch"],
    "cosine": ["epoch", "step", "statistic", "scope", "group"],
    "crossings": ["epoch", "step", "statistic", "layer"],
    "inter_epoch": ["epoch"],
}
EPOCHS = {"metrics": [1, 2, 3], "cosine": [1, 2, 3], "crossings": [1, 2, 3], "inter_epoch": [2, 3]}
VOLATILE = ["run", "wall_time_s"]  # the folder name and the clock differ between two runs


def train_process(out: Path, *extra: str, fault: str | None = None, fresh_interpreter: bool = False):
    """`zsq-probe train` in a process of its own that `fault` may SIGKILL: forked from this one (forked_cli: no
    ~3 s of imports), or with `fresh_interpreter` a `python -m zsq_probe` subprocess.  Both share the session's
    teacher cache ($ZSQ_PROBE_CACHE) and run one intra-op thread."""
    argv = ["train", *TINY, "--out", str(out), *extra]
    if not fresh_interpreter:
        return forked_main(argv, fault=fault, timeout=240)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    env.pop(FAULT_ENV, None)
    if fault:
        env[FAULT_ENV] = fault
    return subprocess.run(
        [sys.executable, "-m", "zsq_probe", *argv], env=env, capture_output=True, text=True, timeout=240
    )


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too) -> sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def temp_files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob(".*.tmp"))


def one_line_error(err: str, *phrases: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def cli(args, capsys):
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


@pytest.fixture(scope="module")
def reference(digits_teacher, tmp_path_factory) -> Path:
    """An uninterrupted run: the same command as the interrupted ones, in this process (no interpreter to
    start) with their one intra-op thread."""
    out = tmp_path_factory.mktemp("reliability") / "reference"
    r = main_in_process(["train", *TINY, "--out", out])
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def run_copy(reference, tmp_path) -> Path:
    """A private copy of the reference run that a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(reference, dst)
    return dst


def check_tables_readable_and_unique(run: Path) -> None:
    """What a reader sees at any moment: every table reads (ours and pandas' folder reader alike), with each
    key at most once; the hidden temporary files of a killed writer are invisible."""
    rd = RunDir(run)
    for table in rd.tables():
        df = rd.read_table(table)
        assert len(pd.read_parquet(rd.table_dir(table))) == len(df), table
        if table in KEYS:
            dup = df[df.duplicated(KEYS[table], keep=False)]
            assert dup.empty, (table, dup[KEYS[table]])


@pytest.mark.slow
def test_kill_9_at_any_point_then_resume_equals_an_uninterrupted_run(reference, tmp_path, capsys):
    out = tmp_path / "killed"
    # (fault site, files that must exist when it fires, files that must not): one run, killed six times
    chain = [
        ("write:config.json", [], ["config.json"]),  # its very first file: not a run yet
        ("checkpoint:0", ["config.json"], ["checkpoints/epoch-0000.pt"]),  # before the first epoch
        ("step:1:1", ["checkpoints/epoch-0000.pt"], ["probes/metrics/part-e00001.parquet"]),  # inside an epoch
        # during a parquet flush: cosine and inter_epoch of epoch 2 are written, crossings is not
        (
            "part:crossings:e00002",
            ["probes/cosine/part-e00002.parquet", "checkpoints/epoch-0001.pt"],
            ["probes/crossings/part-e00002.parquet", "probes/metrics/part-e00002.parquet"],
        ),
        # during a checkpoint write: every part of epoch 2 is there, the checkpoint is not
        (
            "checkpoint:2",
            ["probes/metrics/part-e00002.parquet", "probes/crossings/part-e00002.parquet"],
            ["checkpoints/epoch-0002.pt"],
        ),
        # the metrics flush of the last epoch: the probes' epoch-3 parts are already written
        (
            "part:metrics:e00003",
            ["probes/cosine/part-e00003.parquet", "checkpoints/epoch-0002.pt"],
            ["probes/metrics/part-e00003.parquet", "summary.json"],
        ),
    ]
    config = None
    for i, (site, present, absent) in enumerate(chain):
        # the first link through the real command line; the rest forked (the same main, the same SIGKILL)
        r = train_process(out, *(["--resume"] if i > 1 else []), fault=site, fresh_interpreter=i == 0)
        assert r.returncode == -signal.SIGKILL, (site, r.returncode, r.stderr[-2000:])
        for name in present:
            assert (out / name).is_file(), (site, name)
        for name in absent:
            assert not (out / name).exists(), (site, name)
        if site.startswith(("checkpoint:", "part:")):  # killed between writing the temporary file and the rename
            assert temp_files(out), site
        if site == "write:config.json":
            # --resume has nothing to resume: one line saying so; the same command without --resume starts it
            rc, _, err = cli(["train", *TINY, "--out", out, "--resume"], capsys)
            assert rc == 2
            one_line_error(err, "stopped before it wrote config.json", "without --resume")
            continue
        check_tables_readable_and_unique(out)
        assert RunDir.open(out).checkpoints() or site == "checkpoint:0"
        now = (out / "config.json").read_bytes()
        assert config is None or now == config, "a plain --resume must not rewrite config.json"
        config = now

    r = train_process(out, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert temp_files(out) == [], "resume removes what killed writers left"

    ref, got = RunDir(reference), RunDir(out)
    assert got.tables() == ref.tables() == sorted(KEYS)
    for table, keys in KEYS.items():
        a, b = ref.read_table(table), got.read_table(table)
        assert not b.duplicated(keys).any(), table
        assert sorted(b["epoch"].unique()) == EPOCHS[table], table
        # the rows themselves: same values as the uninterrupted run (the probes are deterministic)
        a = a.drop(columns=VOLATILE, errors="ignore").sort_values(keys).reset_index(drop=True)
        b = b.drop(columns=VOLATILE, errors="ignore").sort_values(keys).reset_index(drop=True)
        pd.testing.assert_frame_equal(a, b, check_exact=True, obj=table)
    assert sorted(got.checkpoints()) == sorted(ref.checkpoints()) == [0, 1, 2, 3]
    for epoch in (2, 3):
        wa = load_checkpoint_file(ref.checkpoints()[epoch])
        wb = load_checkpoint_file(got.checkpoints()[epoch])
        for part in ("student", "generator"):
            assert wa[part].keys() == wb[part].keys()
            for k in wa[part]:
                assert torch.equal(wa[part][k], wb[part][k]), (epoch, part, k)
    sa, sb = (json.loads((p / "summary.json").read_text()) for p in (reference, out))
    assert {k: v for k, v in sa.items() if k != "run"} == {k: v for k, v in sb.items() if k != "run"}


# ------------------------------------------------------------------------------------------ NaN / inf
# --quiet: warnings and errors only, so the error is the one line on stderr
TINY_NAN = ["train", *tiny_train("gdfq", epochs=3, iters=3, extra=["--quiet"])]


def poison_kl(monkeypatch, at: dict):
    """Make the student's KL term NaN (`at[call] == 'loss'`) or its gradient NaN (`'grad'`) at given calls of
    kl_to_teacher (one call per student step in these runs, counted from 0)."""
    import zsq_probe.quantization.losses as train_module

    real = train_module.kl_to_teacher
    calls = {"n": 0}

    def kl(s_logits, t_logits, temperature):
        value = real(s_logits, t_logits, temperature)
        kind = at.get(calls["n"])
        calls["n"] += 1
        if kind == "loss":
            return value * float("nan")
        if kind == "grad":  # finite value, NaN gradient: d sqrt(u)/du = inf at u = 0, times 0
            return value + (s_logits * 0).sqrt().sum()
        return value

    monkeypatch.setattr(train_module, "kl_to_teacher", kl)


@pytest.mark.parametrize(
    "kind, what", [("loss", "non-finite KL term"), ("grad", "non-finite gradient of the student loss")]
)
def test_nonfinite_stops_naming_epoch_step_and_term(kind, what, digits_teacher, tmp_path, monkeypatch, capsys):
    poison_kl(monkeypatch, {4: kind})  # calls 0-2: epoch 1; call 4: epoch 2, step 1
    out = tmp_path / "nan"
    rc, _, err = cli([*TINY_NAN, "--out", out], capsys)
    assert rc == 1  # a run failed while computing
    line = one_line_error(err, what, "at epoch 2, step 1", "epoch-0001.pt", "on_nonfinite=skip")
    assert "Traceback" not in err and "global step 5" in line
    run = RunDir(out)
    assert sorted(run.checkpoints()) == [0, 1]  # the last good checkpoint, intact
    epoch, state = run.load_checkpoint()
    assert epoch == 1 and all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())
    assert list(run.read_table("metrics")["epoch"]) == [1]  # nothing of the failed epoch was written
    assert temp_files(out) == []


def test_nonfinite_generator_loss_is_named(digits_teacher, tmp_path, monkeypatch, capsys):
    from zsq_probe.generators import BNStatisticsLoss

    real, calls = BNStatisticsLoss.loss, {"n": 0}

    def loss(self):
        calls["n"] += 1
        return real(self) * (float("inf") if calls["n"] == 3 else 1.0)  # epoch 1, step 2

    monkeypatch.setattr(BNStatisticsLoss, "loss", loss)
    rc, _, err = cli([*TINY_NAN, "--out", tmp_path / "gen"], capsys)
    assert rc == 1
    one_line_error(err, "non-finite generator BNS term at epoch 1, step 2", "epoch-0000.pt")


def test_skip_flag_skips_and_counts_nonfinite_steps(digits_teacher, tmp_path, monkeypatch, capsys):
    poison_kl(monkeypatch, {4: "loss", 7: "grad"})  # epoch 2 step 1, epoch 3 step 1
    out = tmp_path / "skip"
    rc, _, err = cli([*TINY_NAN, "--set", "on_nonfinite=skip", "--out", out], capsys)
    assert rc == 0, err
    m = RunDir(out).read_table("metrics")
    assert list(m["skipped_steps"]) == [0, 1, 1]
    assert m[["loss_kl", "loss_ce", "loss_student"]].notna().all().all()  # skipped steps left out of the means
    _, state = RunDir(out).load_checkpoint()
    assert all(torch.isfinite(v).all() for v in state["student"].values() if v.is_floating_point())


# ------------------------------------------------------------------------------------------ bad input
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


def test_not_a_run_is_refused_everywhere(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    before = snapshot(folder)
    for args in (
        ["cosine", "--run", folder],
        ["train", "--resume", "--out", folder],
        ["figures", "--runs", folder, "--out", tmp_path / "figs"],
        ["compare", folder, folder],
    ):
        rc, _, err = cli(args, capsys)
        assert rc == 2, args
        one_line_error(err, "is not a zsq-probe run")
    (folder / "config.json").write_text(json.dumps({"some": "other tool"}))
    rc, _, err = cli(["hessian", "--run", folder], capsys)
    assert rc == 2
    one_line_error(err, "is not a zsq-probe run", "format")
    (folder / "config.json").unlink()
    assert snapshot(folder) == before and not (tmp_path / "figs").exists()


def test_run_of_an_incompatible_schema_version_is_refused(run_copy, capsys):
    doc = json.loads((run_copy / "config.json").read_text())
    doc["run_schema_version"] = 99
    doc["versions"]["zsq_probe"] = "9.0.0"
    (run_copy / "config.json").write_text(json.dumps(doc))
    before = snapshot(run_copy)
    for args in (
        ["cosine", "--run", run_copy],
        ["train", *TINY, "--resume", "--out", run_copy],
        ["figures", "--runs", run_copy, "--out", run_copy / "figs"],
    ):
        rc, _, err = cli(args, capsys)
        assert rc == 2, args
        one_line_error(err, "run schema version 99", "reads version 1", "zsq-probe 9.0.0")
    assert snapshot(run_copy) == before


def test_resume_with_a_changed_config_is_refused_and_changes_nothing(run_copy, capsys):
    before = snapshot(run_copy)
    rc, _, err = cli(["train", *TINY, "--out", run_copy, "--resume", "--set", "lr=0.5", "--epochs", "4"], capsys)
    assert rc == 2
    one_line_error(err, "changed config", "epochs: 3 -> 4", "lr: ", "--force")
    assert snapshot(run_copy) == before


def test_figures_asked_for_data_the_run_lacks(reference, tmp_path, capsys):
    rc, out, err = cli(["figures", "--runs", reference, "--out", tmp_path / "figs", "--only", "fig2b"], capsys)
    assert rc == 2 and out == ""
    skipped, error = [line for line in err.splitlines() if line.strip()]  # the skip is logged, then the error
    assert skipped.startswith("skipped fig2b: no run has probes/hessian_trace")
    assert error.startswith("zsq-probe figures: error: no figure written")
    rc, _, err = cli(["compare", reference, reference, "--probe", "hessian"], capsys)
    assert rc == 2
    one_line_error(err, "has no probes/hessian_trace")


# ------------------------------------------------------------------------------------------ safe loading
class Payload:
    """Unpickling this would create a file: the proof that code from a checkpoint ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("poison", ["callable", "reduce"])
def test_checkpoint_with_pickled_code_is_refused(poison, run_copy, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    cp = run_copy / "checkpoints" / "epoch-0003.pt"
    state = load_checkpoint_file(cp)
    state["student"] = os.system if poison == "callable" else Payload(str(marker))
    torch.save(state, cp)
    before = snapshot(run_copy)
    for args in (["cosine", "--run", run_copy, "--epochs", "3"], ["train", *TINY, "--resume", "--out", run_copy]):
        rc, _, err = cli(args, capsys)
        assert rc == 2, args
        one_line_error(err, "epoch-0003.pt", "pickled Python objects", "refused", "weights_only=True")
    assert not marker.exists()
    assert snapshot(run_copy) == before


def test_truncated_or_foreign_checkpoints_are_one_line_errors(run_copy, capsys):
    cp = run_copy / "checkpoints" / "epoch-0003.pt"
    data = cp.read_bytes()
    cp.write_bytes(data[: len(data) // 2])
    rc, _, err = cli(["cosine", "--run", run_copy, "--epochs", "3"], capsys)
    assert rc == 2
    one_line_error(err, "epoch-0003.pt", "truncated or corrupt")
    torch.save({"weights": torch.zeros(3)}, cp)
    rc, _, err = cli(["train", *TINY, "--resume", "--out", run_copy], capsys)
    assert rc == 2
    one_line_error(err, "epoch-0003.pt", "is not a zsq-probe checkpoint")


# ------------------------------------------------------------------------------------------ schema versions
def test_parts_carry_their_schema_version(reference):
    rd = RunDir(reference)
    for table in rd.tables():
        for key in rd.part_keys(table):
            path = rd.table_dir(table) / f"part-{key}.parquet"
            meta = pq.read_schema(path).metadata
            assert meta[b"zsq_probe.schema_version"] == str(TABLE_SCHEMA_VERSION).encode()
            assert meta[b"zsq_probe.table"] == table.encode()
            assert set(pq.read_table(path, columns=["schema_version"]).column(0).to_pylist()) == {TABLE_SCHEMA_VERSION}


def test_newer_table_versions_and_parts_without_their_identity_are_refused(run_copy, capsys):
    folder = run_copy / "probes" / "cosine"
    # a part from before parts recorded their run and content hash (no metadata, no column): refused, naming both
    plain = pa.Table.from_pandas(
        pd.read_parquet(folder / "part-e00001.parquet").drop(columns=["schema_version"]), preserve_index=False
    ).replace_schema_metadata({})
    pq.write_table(plain, folder / "part-e00001.parquet")
    with pytest.raises(UserError) as refused:
        read_table(folder)
    message = str(refused.value)
    assert "\n" not in message and "part-e00001.parquet" in message and "zsq_probe.run_id" in message, message
    assert "zsq_probe.content_sha256" in message, message
    (folder / "part-e00001.parquet").unlink()
    # a part written by a newer zsq-probe: refused, naming both versions
    newer = pq.read_table(folder / "part-e00002.parquet")
    meta = dict(newer.schema.metadata)
    meta[b"zsq_probe.schema_version"] = str(TABLE_SCHEMA_VERSION + 1).encode()
    pq.write_table(newer.replace_schema_metadata(meta), folder / "part-e00002.parquet")
    rc, _, err = cli(["compare", run_copy, run_copy, "--probe", "cosine"], capsys)
    assert rc == 2
    one_line_error(
        err,
        "part-e00002.parquet",
        f"table schema version {TABLE_SCHEMA_VERSION + 1}",
        f"reads versions up to {TABLE_SCHEMA_VERSION}",
        "upgrade",
    )
    # a damaged part (not written by us: ours are renamed into place whole) is a one-line error too
    (folder / "part-e00002.parquet").write_bytes(b"PAR1 garbage")
    rc, _, err = cli(["compare", run_copy, run_copy, "--probe", "cosine"], capsys)
    assert rc == 2
    one_line_error(err, "part-e00002.parquet", "not a readable parquet file")
