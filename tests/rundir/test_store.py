"""Reading a run folder (zsq_probe.rundir.store): a part with text in a numeric column is a one-line refusal that
writes nothing, a version-1 hessian_trace part reads in version-2 columns (issue 24), and a checkpoint this user may
not read is called unreadable with its mode, not damaged (issue 25)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest
from cli_checks import cli_err_lines, one_error_line, snapshot


@pytest.fixture
def kd_and_zq(tmp_path):
    from fabricated_runs import make_run

    kd, _ = make_run(tmp_path / "kd", "kd", cos_center=0.3, trace_scale=8.0, kl_scale=2.0, seed=1, source="real")
    zq, _ = make_run(tmp_path / "zq", "gdfq", cos_center=-0.1, trace_scale=12.0, kl_scale=0.5, seed=2)
    return kd.path, zq.path


def _stringify(run: Path, table: str, columns) -> Path:
    from zsq_probe.rundir.store import RunDir

    part = sorted((run / "probes" / table).glob("part-*.parquet"))[0]
    df = pd.read_parquet(part)
    for c in columns:
        df[c] = df[c].astype(str)
    RunDir(run).write_part(table, df, part.name.removeprefix("part-").removesuffix(".parquet"))
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


def test_an_unreadable_checkpoint_is_called_unreadable_with_its_mode_not_damaged(run_copy, monkeypatch, capsys):
    """Tests run as root, who reads a mode-000 file anyway: the permission check is what root lacks, so it is
    made to answer as it does for any other user."""
    cp = run_copy / "checkpoints" / "epoch-0002.pt"
    cp.chmod(0)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == cp else real_access(p, mode, **kw))
    import torch

    real_load = torch.load

    def load(f, *a, **kw):
        if Path(f) == cp:
            raise PermissionError(13, "Permission denied", str(f))
        return real_load(f, *a, **kw)

    monkeypatch.setattr(torch, "load", load)
    try:
        rc, err = cli_err_lines(["cosine", "--run", run_copy, "--epochs", "2"], capsys)
    finally:
        cp.chmod(0o644)
    assert rc == 2 and len(err) == 1, err
    assert "unreadable (mode 000" in err[0] and "not damaged" in err[0] and "delete" not in err[0], err
