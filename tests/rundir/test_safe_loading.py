"""What zsq-probe refuses to read (zsq_probe.rundir.store, zsq_probe.rundir.safe_pickle): a folder that is not a run,
a run or a part of a newer schema version (older and unversioned parts still read), checkpoints holding pickled
code, truncated or foreign checkpoints (each named for what it is); the restricted unpickler still reads numpy 1's
names.  Every refusal is one line, exit status 2, nothing in the run changed (issues 7 and 13)."""

import json
import os
import pickle
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from cli_checks import cli, cli_err_lines, fake_run, file_hashes, one_line_error, tree_hashes, unchanged
from tiny_runs import TINY_PROBED

from zsq_probe.errors import UserError
from zsq_probe.rundir.store import TABLE_SCHEMA_VERSION, RunDir, load_checkpoint_file, read_table


def test_not_a_run_is_refused_everywhere(tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "cat.jpg").write_bytes(b"meow")
    before = file_hashes(folder)
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
    assert file_hashes(folder) == before and not (tmp_path / "figs").exists()


def test_run_of_an_incompatible_schema_version_is_refused(reference_copy, capsys):
    doc = json.loads((reference_copy / "config.json").read_text())
    doc["run_schema_version"] = 99
    doc["versions"]["zsq_probe"] = "9.0.0"
    (reference_copy / "config.json").write_text(json.dumps(doc))
    before = file_hashes(reference_copy)
    for args in (
        ["cosine", "--run", reference_copy],
        ["train", *TINY_PROBED, "--resume", "--out", reference_copy],
        ["figures", "--runs", reference_copy, "--out", reference_copy / "figs"],
    ):
        rc, _, err = cli(args, capsys)
        assert rc == 2, args
        one_line_error(err, "run schema version 99", "reads version 1", "zsq-probe 9.0.0")
    assert file_hashes(reference_copy) == before


class Payload:
    """Unpickling this would create a file: the proof that code from a checkpoint ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("poison", ["callable", "reduce"])
def test_checkpoint_with_pickled_code_is_refused(poison, reference_copy, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    cp = reference_copy / "checkpoints" / "epoch-0003.pt"
    state = load_checkpoint_file(cp)
    state["student"] = os.system if poison == "callable" else Payload(str(marker))
    torch.save(state, cp)
    before = file_hashes(reference_copy)
    for args in (
        ["cosine", "--run", reference_copy, "--epochs", "3"],
        ["train", *TINY_PROBED, "--resume", "--out", reference_copy],
    ):
        rc, _, err = cli(args, capsys)
        assert rc == 2, args
        one_line_error(err, "epoch-0003.pt", "pickled Python objects", "refused", "weights_only=True")
    assert not marker.exists()
    assert file_hashes(reference_copy) == before


def test_truncated_or_foreign_checkpoints_are_one_line_errors(reference_copy, capsys):
    cp = reference_copy / "checkpoints" / "epoch-0003.pt"
    data = cp.read_bytes()
    cp.write_bytes(data[: len(data) // 2])
    rc, _, err = cli(["cosine", "--run", reference_copy, "--epochs", "3"], capsys)
    assert rc == 2
    one_line_error(err, "epoch-0003.pt", "truncated or corrupt")
    torch.save({"weights": torch.zeros(3)}, cp)
    rc, _, err = cli(["train", *TINY_PROBED, "--resume", "--out", reference_copy], capsys)
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


def test_newer_table_versions_and_parts_without_their_identity_are_refused(reference_copy, capsys):
    folder = reference_copy / "probes" / "cosine"
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
    rc, _, err = cli(["compare", reference_copy, reference_copy, "--probe", "cosine"], capsys)
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
    rc, _, err = cli(["compare", reference_copy, reference_copy, "--probe", "cosine"], capsys)
    assert rc == 2
    one_line_error(err, "part-e00002.parquet", "not a readable parquet file")


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
    before = tree_hashes(run.path)
    argv = (
        ["train", "--no-progress", "--out", str(run.path), "--resume"]
        if command == "resume"
        else ["compare", str(run.path), str(run.path), "--probe", "cosine"]
    )
    rc, err = cli_err_lines(argv, capsys)
    assert rc == 2
    assert len(err) == 1, err
    assert part.name in err[0] and "was written by a newer zsq-probe" in err[0] and "upgrade" in err[0]
    unchanged(before, run.path)


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
    run = fake_run(out)
    run.checkpoint_dir.mkdir(parents=True)
    data = (
        np.random.default_rng(0).bytes(4096)
        if content == b"random"
        else pickle.dumps({"epoch": 1, "student": {"w": [1.0]}})
    )
    run.checkpoint_path(1).write_bytes(data)
    before = tree_hashes(out)
    with warnings.catch_warnings(record=True) as caught:  # torch's pickle-protocol note would be a second line
        warnings.simplefilter("always")
        rc, err = cli_err_lines(["train", "--no-progress", "--out", str(out), "--resume"], capsys)
    assert not [w for w in caught if "pickle protocol" in str(w.message)]
    assert rc == 2 and len(err) == 1, err
    assert "epoch-0001.pt" in err[0] and mention in err[0]
    assert "holds pickled Python objects" not in err[0]
    unchanged(before, out)


def test_restricted_unpickler_accepts_numpy_1_names():
    from zsq_probe.rundir.safe_pickle import safe_loads

    a = np.arange(12, dtype=np.uint8).reshape(3, 4)
    raw = pickle.dumps({"data": a}, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in raw
    assert np.array_equal(safe_loads(raw)["data"], a)
