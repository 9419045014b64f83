"""Resuming a run (zsq_probe.runs.training_run, issue 25): a resume cannot change the seed, the preset or the data
set, not even with --force, nor a checkpoint retention that would delete measured checkpoints; naming the teacher's
own data set is no change; every run has a run id, and a forced resume keeps it."""

from __future__ import annotations

import shutil

import pytest
from cli_checks import cli_err_lines, tree_hashes_without_links
from tiny_runs import TINY_AIT as TINY


@pytest.mark.parametrize(
    "extra,setting",
    [
        (["--seed", "7"], "seed"),
        (["--set", "seed=7"], "seed"),
        (["--preset", "gdfq"], "preset"),
        (["--set", "data=cifar10"], "data"),
    ],
    ids=["--seed", "--set seed", "--preset", "--set data"],
)
def test_resume_with_another_seed_preset_or_data_is_refused_even_forced(run_copy, capsys, extra, setting):
    before = tree_hashes_without_links(run_copy)
    rc, err = cli_err_lines(["train", "--resume", "--force", "--out", run_copy, *TINY, "--epochs", "4", *extra], capsys)
    assert rc == 2 and len(err) == 1 and f"cannot change {setting}" in err[0], err
    assert len(err[0]) <= 200 + len("zsq-probe train: error: ") + len(str(run_copy))
    assert tree_hashes_without_links(run_copy) == before


def test_naming_the_teachers_own_data_set_on_resume_is_no_change_of_data(run_copy, capsys):
    import json

    doc = json.loads((run_copy / "config.json").read_text())
    doc["config"]["dataset"]["name"] = None  # a config leaving the data set to the teacher's (train(cfg) can)
    (run_copy / "config.json").write_text(json.dumps(doc))
    argv = ["train", "--resume", "--force", "--out", run_copy, *TINY, "--epochs", "3", "--set", "data=digits"]
    rc, err = cli_err_lines(argv, capsys)
    assert rc == 0, err


def test_a_retention_change_that_would_delete_measured_checkpoints_is_refused(run_copy, capsys):
    assert cli_err_lines(["cosine", "--run", run_copy, "--epochs", "1-2"], capsys)[0] == 0
    before = tree_hashes_without_links(run_copy)
    argv = ["train", "--resume", "--force", "--out", run_copy, *TINY, "--epochs", "4"]
    rc, err = cli_err_lines([*argv, "--set", "keep_checkpoints=last"], capsys)
    assert rc == 2 and len(err) == 1 and "keep_checkpoints" in err[0] and "1, 2" in err[0], err
    assert tree_hashes_without_links(run_copy) == before
    # the checkpoints no table measured may go: a run without post-hoc rows accepts the change
    shutil.rmtree(run_copy / "probes" / "cosine")
    shutil.rmtree(run_copy / "probes" / "_commits")
    assert cli_err_lines([*argv, "--set", "keep_checkpoints=last"], capsys)[0] == 0
    assert sorted(p.name for p in (run_copy / "checkpoints").iterdir()) == ["epoch-0004.pt"]


def test_every_run_gets_a_run_id_that_a_forced_resume_keeps(run_copy, capsys):
    import json

    rid = json.loads((run_copy / "config.json").read_text())["run_id"]
    assert len(rid) == 32 and int(rid, 16) >= 0
    argv = ["train", "--resume", "--force", "--out", run_copy, *TINY, "--epochs", "4", "--set", "lr=0.01"]
    assert cli_err_lines(argv, capsys)[0] == 0
    assert json.loads((run_copy / "config.json").read_text())["run_id"] == rid
