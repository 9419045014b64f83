"""Issue 24: inputs that traced back or hung are one-line refusals that write nothing; a curvature probe that
refuses a model records it and the run goes on; the exact trace refuses cross-sample mixing; product counts."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from zsq_probe.cli import main
from zsq_probe.errors import UserError


def snapshot(*folders) -> dict:
    """{path: (size, mtime_ns, bytes)} of every file and folder under the given paths (missing ones: absent)."""
    out: dict = {}
    for top in map(Path, folders):
        for p in [top, *top.rglob("*")] if top.exists() else []:
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return out


def one_error_line(argv, capsys, command: str) -> str:
    """Run the CLI: exit 2 and exactly one `zsq-probe <command>: error:` line on stderr, no traceback."""
    rc = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, (rc, err)
    assert err[0].startswith(f"zsq-probe {command}: error:"), err
    return err[0]


# ------------------------------------------------------------------ item 2: CIFAR files of the wrong types


def _cifar10(root: Path, labels=None, data_dtype=np.uint8, n: int = 4) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "labels": labels if labels is not None else rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072)).astype(data_dtype),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))


@pytest.mark.parametrize(
    "kind,mention",
    [("string labels", "label 'cat' (str)"), ("float64 images", "float64 images, expected uint8")],
)
def test_cifar_files_of_the_wrong_types_are_one_line_refusals(tmp_path, kind, mention):
    from zsq_probe.data.datasets import load_dataset

    if kind == "string labels":
        _cifar10(tmp_path, labels=["cat", "dog", "cat", "dog"])
    else:
        _cifar10(tmp_path, data_dtype=np.float64)
    before = snapshot(tmp_path)
    for split in ("train", "test"):
        with pytest.raises(UserError) as err:
            load_dataset("cifar10", root=tmp_path, split=split)
        assert mention in str(err.value) and "\n" not in str(err.value), err.value
    assert snapshot(tmp_path) == before


def test_genuine_cifar_types_still_load(tmp_path):
    from zsq_probe.data.datasets import load_dataset

    _cifar10(tmp_path)
    with pytest.warns(UserWarning, match="official"):
        ds = load_dataset("cifar10", root=tmp_path, split="test")
    assert ds.data.dtype == np.uint8 and len(ds) == 4 and all(isinstance(t, int) for t in ds.targets)


# ------------------------------------------------------------------ item 2: text in a numeric column


@pytest.fixture
def kd_and_zq(tmp_path):
    from tests.fabricated_runs import make_run

    kd, _ = make_run(tmp_path / "kd", "kd", cos_center=0.3, trace_scale=8.0, kl_scale=2.0, seed=1, source="real")
    zq, _ = make_run(tmp_path / "zq", "gdfq", cos_center=-0.1, trace_scale=12.0, kl_scale=0.5, seed=2)
    return kd.path, zq.path


def _stringify(run: Path, table: str, columns) -> Path:
    part = sorted((run / "probes" / table).glob("part-*.parquet"))[0]
    df = pd.read_parquet(part)
    for c in columns:
        df[c] = df[c].astype(str)
    df.to_parquet(part)
    return part


@pytest.mark.parametrize("columns", [["epoch"], ["cosine"]])
def test_compare_refuses_a_part_with_text_in_a_numeric_column(kd_and_zq, tmp_path, capsys, columns):
    kd, zq = kd_and_zq
    part = _stringify(zq, "cosine", columns)
    assert one_error_line(["compare", kd, zq, "--probe", "cosine"], capsys, "compare")  # before: a traceback
    before = snapshot(tmp_path)
    line = one_error_line(["compare", kd, zq, "--probe", "cosine", "--out", tmp_path / "cmp"], capsys, "compare")
    assert str(part) in line and f"numeric column(s) {columns[0]}" in line, line
    assert snapshot(tmp_path) == before


def test_a_part_with_numbers_where_numbers_belong_still_reads(kd_and_zq):
    from zsq_probe.rundir.store import read_table

    _, zq = kd_and_zq
    df = read_table(zq / "probes" / "cosine")
    assert df["epoch"].dtype.kind == "i" and df["cosine"].dtype.kind == "f" and len(df)
