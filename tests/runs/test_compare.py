"""`zsq-probe compare` (zsq_probe.runs.compare): runs on different data sets are compared, with a one-line warning,
and left unchanged (issue 13)."""

from __future__ import annotations

from cli_checks import tree_hashes

from zsq_probe.cli import main


def test_compare_of_runs_on_different_data_sets_warns_and_still_compares(tmp_path, capsys):
    from fabricated_runs import make_run, run_config

    kd, _ = make_run(
        tmp_path / "kd", "kd", cos_center=0.3, trace_scale=1.0, kl_scale=0.1, source="real", tables=("cosine",)
    )
    zq, _ = make_run(tmp_path / "zq", "ait", cos_center=-0.2, trace_scale=1.0, kl_scale=0.1, tables=("cosine",))
    # a CIFAR ZQ run (the same run id: its parts record it)
    zq.write_config(run_config("ait", teacher="resnet20_cifar10", data="cifar10"), extra={"run_id": zq.run_id})
    before = {p: tree_hashes(p) for p in (kd.path, zq.path)}
    rc = main(["compare", str(kd.path), str(zq.path), "--probe", "cosine"])
    cap = capsys.readouterr()
    err = [line for line in cap.err.splitlines() if line.strip()]
    assert rc == 0
    assert len(err) == 1 and err[0].startswith("warning:"), err
    assert "different data sets" in err[0] and "digits" in err[0] and "cifar10" in err[0]
    assert "share of steps with cos < 0" in cap.out  # the comparison still ran
    assert {p: tree_hashes(p) for p in (kd.path, zq.path)} == before
    # runs on one data set: no warning
    assert main(["compare", str(kd.path), str(kd.path), "--probe", "cosine"]) == 0
    assert "different data sets" not in capsys.readouterr().err
