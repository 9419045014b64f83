"""`zsq-probe eval` on a CIFAR teacher (zsq_probe.cli.evaluate): it names the normalisation and compares like with
like with the published numbers; an unknown normalisation is a one-line error (issue 12, items 4 and 5; the
weights and data are fabricated)."""

import json
import warnings

import pytest

from zsq_probe.cli import main

REF_C10 = ((0.49139968, 0.48215827, 0.44653124), (0.24703233, 0.24348505, 0.26158768))


PYTORCHCV = ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


R20_FILE = "resnet20_cifar10-0597-9b0024ac.pth"


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


@pytest.mark.parametrize(
    "norm, stats, compared, label",
    [
        ("reference", REF_C10, 93.89, "in the AIT paper"),
        ("pytorchcv", PYTORCHCV, 94.03, "published by pytorchcv"),
    ],
)
def test_eval_names_the_normalisation_and_compares_like_with_like(
    r20_root, capsys, norm, stats, compared, label, no_network
):
    args = [
        "eval",
        "--teacher",
        "resnet20_cifar10",
        "--weights-root",
        str(r20_root),
        "--data-root",
        str(r20_root / "data"),
        "--calib-batches",
        "1",
        "--batch-size",
        "6",
        "--w-bits",
        "8",
        "--a-bits",
        "8",
    ]
    if norm == "pytorchcv":
        args += ["--normalization", "pytorchcv"]
    assert quiet(main, args + ["--json"]) == 0
    cap = capsys.readouterr()
    r = json.loads(cap.out)
    assert r["normalization"] == norm
    assert (tuple(r["normalization_mean"]), tuple(r["normalization_std"])) == stats
    assert (r["compared_top1"], r["weights_file"], r["paper_weights_file"]) == (compared, R20_FILE, R20_FILE)
    assert label in r["compared_with"]
    # random weights: far off, so the warning fires, naming the matching number and the normalisation
    assert f"{compared:.2f}% {label}" in r["warning"] and f"({norm} normalisation)" in r["warning"]
    assert "expect a small offset" not in r["warning"]
    assert quiet(main, args) == 0
    table = capsys.readouterr().out
    assert f"normalisation {norm} (mean {stats[0][0]:g}" in table and f"expected {compared:.2f}%" in table
    assert "(the AIT paper's file)" in table


def test_eval_rejects_an_unknown_normalisation(capsys):
    assert main(["eval", "--teacher", "digits", "--normalization", "imgclsmob"]) == 2
    err = capsys.readouterr().err
    assert "unknown normalisation 'imgclsmob'" in err and len(err.strip().splitlines()) == 1
