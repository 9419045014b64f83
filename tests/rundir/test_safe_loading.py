"""What zsq-probe refuses to read (zsq_probe.rundir.store, zsq_probe.rundir.safe_pickle): a folder that is not a run,
a run or a part of a newer schema version (older and unversioned parts still read), checkpoints holding pickled
code, truncated or foreign checkpoints (each named for what it is); the restricted unpickler still reads numpy 1's
names.  Every refusal is one line, exit status 2, nothing in the run changed (issues 7 and 13)."""

import hashlib
import json
import os
import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from forked_cli import main_in_process
from tiny_runs import tiny_train

from zsq_probe.cli import main
from zsq_probe.errors import UserError
from zsq_probe.rundir.store import TABLE_SCHEMA_VERSION, RunDir, load_checkpoint_file, read_table


def snapshot(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too) -> sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


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


# a run of 3 tiny epochs with the probes that write a part per epoch (about 2 s of work on one core, after the imports)
TINY = tiny_train(
    "ait",
    epochs=3,
    iters=3,
    sets=["hessian_batch_size=16", "probe_every_steps=1"],  # the probes' batch: the comparisons hold at any size
    extra=["--probes", "cosine,crossings,inter_epoch", "--no-progress"],
)


@pytest.fixture(scope="module")
def reference(digits_teacher, tmp_path_factory) -> Path:
    """An uninterrupted run: the same command as the interrupted ones, in this process (no interpreter to
    start) with their one intra-op thread."""
    out = tmp_path_factory.mktemp("reliability") / "reference"
    r = main_in_process(["train", *TINY, "--out", out])
    assert r.returncode == 0, r.stderr
    return out


# this module's run_copy copies `reference` (tests/conftest.py's, which it hides here, copies three_epoch_run)
@pytest.fixture
def run_copy(reference, tmp_path) -> Path:
    """A private copy of the reference run that a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(reference, dst)
    return dst


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


def _tree(path):
    """{relative path: sha256} of everything under `path` (or of the file itself)."""
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return {"": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def _run(argv, capsys):
    rc = main(argv)
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    return rc, err


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


def _unchanged(before, path):
    """Every file that was there is byte-identical and nothing is new, not even a writer lock file."""
    assert _tree(path) == before


def _fake_run(path, cfg=None):
    """A run folder holding only a config.json (the tiny digits ZQ config unless `cfg`)."""
    from zsq_probe.rundir.store import RunDir

    run = RunDir(path)
    run.write_config((cfg or _tiny_cfg()).to_dict())
    return run


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


def test_restricted_unpickler_accepts_numpy_1_names():
    from zsq_probe.rundir.safe_pickle import safe_loads

    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw = pickle.dumps({"data": a}, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw
    assert np.array_equal(safe_loads(raw)["data"], a)
