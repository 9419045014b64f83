"""The figures (`zsq_probe.plots`, the scripts in figures/), `zsq-probe figures` and `zsq-probe compare`
on fabricated run folders."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cli_checks import tree_bytes
from fabricated_runs import EPOCHS, LAYERS, STEPS, make_run, paper_runs
from fabricated_runs import schema_row as _row

from zsq_probe.analysis import probe_tables
from zsq_probe.cli import main
from zsq_probe.errors import UserError
from zsq_probe.plots import FIGURES, SkipFigure, plot_figure
from zsq_probe.rundir.store import RunDir
from zsq_probe.runs.compare import compare_runs

pytestmark = pytest.mark.teacher_free  # never loads the digits teacher: runs first under xdist (conftest)

ROOT = Path(__file__).resolve().parents[2]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return paper_runs(tmp_path_factory.mktemp("runs"))


def _png_ok(path):
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 5000, path
    assert path.read_bytes()[:8] == PNG_MAGIC


# --------------------------------------------------------------------------------------- each figure
@pytest.fixture(scope="module")
def all_figures(runs, tmp_path_factory):
    """`zsq-probe figures --width column` once over the KD, GDFQ and AIT runs: {figure name: [paths]}.  The column
    width draws a third faster than the text width (fewer pixels at the same dpi) and is otherwise drawn for two
    figures only; tests/plots/test_figure_layout.py checks every figure's readability at the text width."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("all-figures")
    # a second (model, data set) setting: Figs. 7/8 and 9 compare settings (one setting: skipped, see below)
    cifar, _ = make_run(out.parent / "zq-cifar", "gdfq", -0.1, 12.0, 0.5, teacher="resnet20_cifar10", data="cifar10")
    buf = io.StringIO()
    paths = [str(runs[k].path) for k in ("kd", "zq", "ait")] + [str(cifar.path)]
    with contextlib.redirect_stderr(buf):  # "wrote NAME: PATH" is a log line, on stderr
        rc = main(["figures", "--runs", *paths, "--out", str(out), "--width", "column"])
    assert rc == 0
    written = {}
    for line in buf.getvalue().strip().splitlines():
        if not line.startswith("wrote "):  # a note (a run a figure leaves out)
            assert line.startswith("note: "), line
            continue
        name, path = line[6:].split(": ", 1)
        written.setdefault(name, []).append(Path(path))
    return written


# The slow tier (docs/development.md): every figure through the command line over four runs, ~10 s on one core.
# The quick tier draws each figure elsewhere: test_figure_layout (fig1-fig5, fig7_8, fig9), test_slices (fig2c),
# test_figure_content (fig6).
@pytest.mark.slow
@pytest.mark.parametrize("name", list(FIGURES))
def test_each_figure_writes_a_png(all_figures, name):
    spec = FIGURES[name]
    assert spec.name == name and spec.description and isinstance(spec.tables_needed, tuple)
    assert callable(spec.plot) and callable(spec.build)
    assert all_figures.get(name), f"{name} wrote nothing"
    for p in all_figures[name]:
        _png_ok(p)
    if name == "fig6":  # one file per run with a generator checkpoint: only zq-run has one
        assert [p.name for p in all_figures[name]] == ["fig6_samples_zq-run.png"]


def test_plot_returns_its_files(runs, tmp_path):
    paths = FIGURES["fig2b"].plot([runs["kd"], runs["zq"]], tmp_path, fmt="png")
    assert paths == [tmp_path / "fig2b_hessian_trace.png"]
    _png_ok(paths[0])


def test_pdf_on_request(runs, tmp_path):
    (path,) = plot_figure("fig3a", [runs["kd"], runs["zq"]], tmp_path, fmt="pdf")
    assert path.suffix == ".pdf" and path.read_bytes()[:5] == b"%PDF-"


@pytest.mark.slow  # a fresh interpreter: the start-up is the point (the slow tier, docs/development.md)
def test_script_runs_standalone(runs, tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "figures" / "fig1_cosine.py"),
            "--runs",
            str(runs["kd"].path),
            str(runs["zq"].path),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    _png_ok(out.stdout.strip())


# ---------------------------------------------------------------------------------- missing data
def _copy_without_column(run, table, column, dest):
    bad = RunDir(dest)
    bad.write_config(run.read_config_doc()["config"])
    for t in run.tables():
        df = run.read_table(t).drop(columns=["schema_version"])
        if t == table:
            df = df.drop(columns=[column])
        bad.write_part(t, df, "e00001")
    return bad


@pytest.mark.parametrize(
    "name,table,column",
    [
        ("fig1", "cosine", "angle_deg"),
        ("fig2b", "hessian_trace", "stderr"),
        ("fig3bc", "crossings", "layer_size"),
        ("fig5", "metrics", "val_ce"),
        ("fig2d", "hessian_density", "weight"),
    ],
)
def test_missing_column_is_a_user_error_naming_it(runs, tmp_path, name, table, column):
    bad = _copy_without_column(runs["zq"], table, column, tmp_path / "bad")
    with pytest.raises(UserError, match=column):
        plot_figure(name, [bad], tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_absent_table_skips_with_a_reason(tmp_path):
    run, _ = make_run(tmp_path / "only-metrics", "gdfq", -0.1, 1.0, 0.1, tables=("metrics",))
    with pytest.raises(SkipFigure, match=r"probes/hessian_trace .*zsq-probe hessian --run"):
        plot_figure("fig2b", [run], tmp_path / "out")
    with pytest.raises(SkipFigure, match="probes/cosine"):
        plot_figure("fig1", [run], tmp_path / "out")
    kd, _ = make_run(tmp_path / "kd-only", "kd", 0.3, 1.0, 0.1, source="real")
    with pytest.raises(SkipFigure, match="only KD runs"):
        plot_figure("fig5", [kd], tmp_path / "out")
    with pytest.raises(SkipFigure, match="kl-only-high-lr"):
        plot_figure("fig4", [kd], tmp_path / "out")
    with pytest.raises(SkipFigure, match="generator"):
        plot_figure("fig6", [kd], tmp_path / "out")


def test_epoch_choices(runs, tmp_path):
    from zsq_probe.plots.crossings import default_epochs

    assert default_epochs([2, 3, 4, 5, 6]) == [3, 6]
    assert default_epochs(range(1, 401)) == [61, 400]
    paths = plot_figure("fig3bc", [runs["zq"]], tmp_path, epochs="2,4")
    _png_ok(paths[0])
    with pytest.raises(UserError, match="epoch"):
        plot_figure("fig3bc", [runs["zq"]], tmp_path, epochs="1,4")  # no crossings in epoch 1
    with pytest.raises(UserError, match="epoch 99"):
        plot_figure("fig2d", [runs["zq"]], tmp_path, epoch=99)


# ------------------------------------------------------------------------------- data shaping
def test_crossings_per_layer_numbers(runs):
    df = runs["zq"].read_table("crossings")
    layers, basis = probe_tables.crossings_per_layer(df, 3)
    assert basis == "epoch_total"
    assert list(layers["layer"]) == [name for name, _ in LAYERS]
    # changed = (li+1) * (7-e) * 3 over STEPS steps
    np.testing.assert_allclose(layers["changed_per_step"], [(i + 1) * 4 * 3 / STEPS for i in range(3)])
    np.testing.assert_allclose(
        layers["share_per_step"], [(i + 1) * 12 / STEPS / size for i, (_, size) in enumerate(LAYERS)]
    )


def test_trace_curves_never_average_online_with_posthoc():
    """A post-hoc measurement repeats the online one: the online row is used, its stderr not shrunk by sqrt(2);
    rows without intervals get mean +- 1.96 stderr."""
    df = pd.DataFrame(
        [
            _row(
                "hessian_trace", epoch=1, loss="ce", scope="model", estimator="hutchinson", trace=t, stderr=s, origin=o
            )
            for t, s, o in ((10.0, 3.0, "posthoc"), (14.0, 4.0, "online"))
        ]
    )
    c = probe_tables.trace_curves(df)
    assert len(c) == 1
    assert c["trace"].iloc[0] == pytest.approx(14.0) and c["stderr"].iloc[0] == pytest.approx(4.0)
    assert (c["ci_low"].iloc[0], c["ci_high"].iloc[0]) == pytest.approx((14.0 - 1.96 * 4, 14.0 + 1.96 * 4))
    post_only = probe_tables.trace_curves(df[df.origin == "posthoc"])
    assert post_only["trace"].iloc[0] == pytest.approx(10.0)


def test_smoothed_density_integrates_to_one():
    from zsq_probe.plots.hessian import smoothed_density

    grid = np.linspace(-5, 15, 4001)
    d = smoothed_density([0.0, 10.0], [0.25, 0.25], grid, 0.5)
    assert np.trapezoid(d, grid) == pytest.approx(1.0, rel=1e-6)
    assert d[np.argmin(abs(grid - 10))] == pytest.approx(d[np.argmin(abs(grid))], rel=1e-6)


# ------------------------------------------------------------------------------- compare
def test_compare_cosine_numbers_by_hand(runs):
    kd, zq = runs["kd"].read_table("cosine"), runs["zq"].read_table("cosine")
    out = probe_tables.compare_tables(kd, zq, "cosine")
    for key, table in (("kd", runs["kd_cos"]), ("zq", runs["zq_cos"])):
        all_steps = np.concatenate([table[e] for e in EPOCHS])
        epoch_means = np.array([table[e].mean() for e in EPOCHS])
        assert out[key]["steps"] == len(EPOCHS) * STEPS
        assert out[key]["share_negative"] == pytest.approx(np.mean(all_steps < 0))
        assert out[key]["mean_epoch_cosine"] == pytest.approx(epoch_means.mean())
        assert out[key]["median_epoch_cosine"] == pytest.approx(np.median(epoch_means))
    assert out["zq"]["share_negative"] > 0.5 > out["kd"]["share_negative"]
    assert out["zq_minus_kd"]["share_negative"] == pytest.approx(
        out["zq"]["share_negative"] - out["kd"]["share_negative"]
    )


def test_compare_cosine_without_epoch_mean_rows():
    rows = [
        _row(
            "cosine",
            epoch=e,
            step=s,
            statistic="step",
            origin="online",
            scope="model",
            cosine=c,
            angle_deg=0.0,
            grad_norm_ce=1.0,
            grad_norm_kl=1.0,
        )
        for e, vals in ((1, [0.5, -0.5, -0.25, 0.75]), (2, [-1.0, -0.5, 0.0, 0.5]))
        for s, c in enumerate(vals)
    ]
    s = probe_tables.summarize_cosine(pd.DataFrame(rows))
    assert s["share_negative"] == pytest.approx(4 / 8)
    assert s["mean_epoch_cosine"] == pytest.approx((0.125 + -0.25) / 2)
    assert s["epochs"] == 2


def test_compare_hessian_ratios(runs):
    out = probe_tables.compare_tables(
        runs["kd"].read_table("hessian_trace"), runs["zq"].read_table("hessian_trace"), "hessian"
    )
    factor = np.median([1 + 0.1 * e for e in EPOCHS])
    assert out["kd"]["estimator"] == "hutchinson"
    assert out["kd"]["median_trace_ce"] == pytest.approx(8.0 * factor)
    assert out["kd"]["median_trace_kl"] == pytest.approx(2.0 * factor)
    assert out["kd"]["kl_over_ce"] == pytest.approx(0.25)
    assert out["zq"]["kl_over_ce"] == pytest.approx(0.5 / 12.0)
    assert out["zq_over_kd"]["median_trace_ce"] == pytest.approx(12.0 / 8.0)
    assert out["zq_over_kd"]["kl_over_ce"] == pytest.approx((0.5 / 12.0) / 0.25)


def test_compare_cli_json_and_table(runs, tmp_path, capsys):
    kd, zq = str(runs["kd"].path), str(runs["zq"].path)
    assert main(["compare", kd, zq, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["probe"] == "cosine" and doc["runs"] == {"kd": "kd-run", "zq": "zq-run"}
    assert doc["figure"] is None
    all_zq = np.concatenate(list(runs["zq_cos"].values()))
    assert doc["zq"]["share_negative"] == pytest.approx(np.mean(all_zq < 0))

    assert main(["compare", kd, zq, "--probe", "inter_epoch", "--json", "--out", str(tmp_path)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["kd"]["mean_inter_epoch_cosine"] == pytest.approx(0.2)
    assert doc["zq"]["mean_inter_epoch_cosine"] == pytest.approx(0.9)
    _png_ok(doc["figure"])

    assert main(["compare", kd, zq, "--probe", "hessian", "--out", str(tmp_path), "--overwrite"]) == 0
    cap = capsys.readouterr()
    assert "ratio KL / CE" in cap.out and "ZQ / KD" in cap.out and "wrote " in cap.err  # the file: a log line


def test_compare_cli_errors(runs, tmp_path, capsys):
    empty, _ = make_run(tmp_path / "bare", "gdfq", -0.1, 1.0, 0.1, tables=("metrics",))
    assert main(["compare", str(runs["kd"].path), str(empty.path), "--probe", "hessian"]) == 2
    err = capsys.readouterr().err
    assert "bare has no probes/hessian_trace" in err and len(err.strip().splitlines()) == 1
    assert main(["compare", str(runs["zq"].path), str(runs["ait"].path), "--json"]) == 0
    assert "not 'kd'" in capsys.readouterr().err


def test_compare_with_seeds_uses_per_probe_the_seeds_that_carry_it(tmp_path, capsys):
    """Two seeds a side where only the first has the Hessian probe (as in the demo): the Hessian is compared
    over that seed (n=1 a side, the others named as left out), the cosine over both seeds."""
    no_hessian = ("metrics", "cosine", "inter_epoch", "crossings")
    kd = [
        make_run(tmp_path / f"kd-s{i}", "kd", 0.3, 8.0, 2.0, seed=10 + i, source="real", **t)[0]
        for i, t in enumerate(({}, {"tables": no_hessian}))
    ]
    zq = [
        make_run(tmp_path / f"zq-s{i}", "gdfq", -0.1, 12.0, 0.5, seed=20 + i, **t)[0]
        for i, t in enumerate(({}, {"tables": no_hessian}))
    ]
    argv = ["compare", str(kd[0].path), str(zq[0].path), "--kd-seeds", str(kd[1].path), "--zq-seeds", str(zq[1].path)]
    assert main([*argv, "--probe", "hessian", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    alone = compare_runs(kd[0], zq[0], "hessian")
    assert doc["n"] == {"kd": 1, "zq": 1} and doc["left_out"] == {"kd": ["kd-s1"], "zq": ["zq-s1"]}
    assert doc["kd"]["median_trace_ce"] == pytest.approx(alone.kd["median_trace_ce"])
    assert doc["zq"]["last_kl_over_ce"] == pytest.approx(alone.zq["last_kl_over_ce"])
    assert main([*argv, "--probe", "hessian", "--out", str(tmp_path / "fig")]) == 0
    text = capsys.readouterr().out
    assert "(kd, n=1)" in text and "(gdfq, n=1)" in text
    assert "left out (no probes/hessian_trace; n counts the seeds that have it): KD kd-s1; ZQ zq-s1" in text
    assert "settings that differ (KD vs ZQ):" in text and "source: KD real, ZQ generator" in text
    caption = next((tmp_path / "fig").glob("*.txt")).read_text()
    assert "(n=1)" in caption and "kd-s1" not in caption and "zq-s1" not in caption
    both = compare_runs(kd, zq, "cosine")  # every seed has the cosine probe
    assert both.n == {"kd": 2, "zq": 2} and both.left_out == {"kd": [], "zq": []}
    bare = make_run(tmp_path / "bare-s1", "gdfq", -0.1, 12.0, 0.5, seed=9, tables=no_hessian)[0]
    assert main(["compare", str(kd[0].path), str(zq[1].path), "--zq-seeds", str(bare.path), "--probe", "hessian"]) == 2
    err = capsys.readouterr().err
    assert "no ZQ run (zq-s1, bare-s1) has probes/hessian_trace" in err and len(err.strip().splitlines()) == 1


def test_compare_aggregates_seeds_and_calls_a_difference_only_past_their_spread(tmp_path, capsys):
    kd = [make_run(tmp_path / f"kd-s{i}", "kd", 0.3, 8.0, 2.0, seed=10 + i, source="real")[0] for i in range(3)]
    zq = [make_run(tmp_path / f"zq-s{i}", "gdfq", -0.1, 12.0, 0.5, seed=20 + i)[0] for i in range(2)]
    result = compare_runs(kd, zq, "cosine")
    per_seed = [probe_tables.summarize_cosine(r.read_table("cosine"))["mean_epoch_cosine"] for r in zq]
    assert result.n == {"kd": 3, "zq": 2}
    assert result.zq["mean_epoch_cosine"] == pytest.approx(np.mean(per_seed))
    assert result.zq_span["mean_epoch_cosine"] == pytest.approx([min(per_seed), max(per_seed)])
    assert result.zq_minus_kd["mean_epoch_cosine"] == pytest.approx(np.mean(per_seed) - result.kd["mean_epoch_cosine"])
    assert result.verdict["zq_vs_kd"] == "below" and result.verdict["basis"]["zq"] == "seeds [min, max]"
    # the same setting on both sides: the seed intervals overlap, so no difference is called
    same = [make_run(tmp_path / f"kd2-s{i}", "gdfq", 0.3, 8.0, 2.0, seed=30 + i)[0] for i in range(2)]
    assert compare_runs(kd[:2], same, "cosine").verdict["zq_vs_kd"] == "inconclusive"
    # one seed a side: no interval, no verdict -- except the Hessian, whose estimator has its own interval
    one = compare_runs(kd[0], zq[0], "cosine")
    assert one.verdict["zq_vs_kd"] == "inconclusive" and one.kd_span["mean_epoch_cosine"] is None
    hess = compare_runs(kd[0], zq[0], "hessian").verdict
    assert hess["key"] == "last_kl_over_ce" and hess["zq_vs_kd"] == "below", hess  # 0.5/12 against 2/8
    # runs of the two sides may share a folder name: each side still reads its own tables
    twin_kd, _ = make_run(tmp_path / "a" / "s0", "kd", 0.3, 8.0, 2.0, seed=10, source="real")
    twin_zq, _ = make_run(tmp_path / "b" / "s0", "gdfq", -0.1, 12.0, 0.5, seed=20)
    twins = compare_runs(twin_kd, twin_zq, "cosine")
    assert twins.kd["mean_epoch_cosine"] == pytest.approx(one.kd["mean_epoch_cosine"])
    assert twins.zq["mean_epoch_cosine"] == pytest.approx(one.zq["mean_epoch_cosine"])
    # a side mixing settings is refused, naming what differs
    ait, _ = make_run(tmp_path / "ait", "ait", 0.2, 6.0, 0.3, gi=True, seed=3)
    with pytest.raises(UserError, match="differ in more than the seed .*method"):
        compare_runs(kd[0], [zq[0], ait], "cosine")
    # the CLI: mean [min, max] cells, n per side, the verdict line, and the overlay with its caption
    assert (
        main(
            [
                "compare",
                str(kd[0].path),
                str(zq[0].path),
                "--kd-seeds",
                str(kd[1].path),
                str(kd[2].path),
                "--zq-seeds",
                str(zq[1].path),
                "--out",
                str(tmp_path / "fig"),
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "n=3" in text and "n=2" in text and "verdict on mean_epoch_cosine: ZQ below KD" in text
    lo, hi = result.zq_span["mean_epoch_cosine"]
    assert f"[{lo:+.4f}, {hi:+.4f}]" in text
    png = next((tmp_path / "fig").glob("compare_cosine_*.png"))
    _png_ok(png)
    assert "(n=2)" in png.with_suffix(".txt").read_text()


def test_fig4_draws_one_p_line_per_distinct_gi_p(tmp_path):
    from zsq_probe.plots.crossings import crossings_gi_figure

    ait, _ = make_run(tmp_path / "ait", "ait", 0.2, 6.0, 0.3, gi=True, seed=3)
    other, _ = make_run(tmp_path / "qait", "qimera+ait", 0.2, 6.0, 0.3, gi=True, seed=4)
    rd = RunDir(other.path)
    for key in rd.part_keys("crossings"):  # the second GI method ran with p = 0.02
        df = pd.read_parquet(rd.table_dir("crossings") / f"part-{key}.parquet").drop(columns="schema_version")
        rd.write_part("crossings", df.assign(gi_p=0.02), key)
    ((_, fig),) = crossings_gi_figure([ait, other])
    labels = {t.get_text() for t in fig.axes[0].get_legend().get_texts()}
    e = fig.axes[0].get_title().split()[-1]  # each p is labelled with the epoch it belongs to
    assert {f"GI p = 0.01 (epoch {e}, ait)", f"GI p = 0.02 (epoch {e}, qimera+ait)"} <= labels, labels
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_linestyle() == ":"]
    assert sorted(round(ln.get_ydata()[0], 6) for ln in lines) == [0.01, 0.02]
    # the same p twice: one line
    same, _ = make_run(tmp_path / "ait2", "baseline+gi", 0.2, 6.0, 0.3, gi=True, seed=5)
    ((_, fig),) = crossings_gi_figure([ait, same])
    assert [ln.get_ydata()[0] for ln in fig.axes[0].get_lines() if ln.get_linestyle() == ":"] == [0.01]


# ------------------------------------------------------------------------------- figures CLI
def test_figures_cli_writes_and_reports_skips(tmp_path, capsys):
    only_metrics, _ = make_run(tmp_path / "m", "kl-only", -0.1, 1.0, 0.1, tables=("metrics",))
    out = tmp_path / "figs"
    rc = main(["figures", "--runs", str(only_metrics.path), "--out", str(out), "--only", "fig2b,fig5,fig3a"])
    assert rc == 0
    cap = capsys.readouterr()
    assert cap.out == ""  # what was written and skipped is logged, on stderr
    lines = cap.err.strip().splitlines()
    assert any(line.startswith("wrote fig5: ") for line in lines)
    assert any(line.startswith("skipped fig2b: no run has probes/hessian_trace") for line in lines)
    assert any(line.startswith("skipped fig3a: ") for line in lines)
    assert len(lines) == 3
    _png_ok(out / "fig5_training.png")


def test_figures_cli_nothing_to_draw_and_bad_names(tmp_path, capsys):
    only_metrics, _ = make_run(tmp_path / "m", "gdfq", -0.1, 1.0, 0.1, tables=("metrics",))
    assert main(["figures", "--runs", str(only_metrics.path), "--out", str(tmp_path / "o"), "--only", "fig1"]) == 2
    cap = capsys.readouterr()
    assert "skipped fig1" in cap.err and "no figure written" in cap.err
    assert (
        main(["figures", "--runs", str(only_metrics.path), "--out", str(tmp_path / "o"), "--only", "fig1,fig99"]) == 2
    )
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fig99" in err and "fig2b" in err and "fig7_8" in err
    assert main(["figures", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_figures_cli_reports_a_broken_table(runs, tmp_path, capsys):
    bad = _copy_without_column(runs["zq"], "hessian_trace", "trace", tmp_path / "bad")
    rc = main(["figures", "--runs", str(bad.path), "--out", str(tmp_path / "o"), "--only", "fig2b,fig3a"])
    cap = capsys.readouterr()
    assert rc == 1  # a figure that could not be drawn: a failure while computing, the others still written
    assert "wrote fig3a" in cap.err
    assert "failed fig2b" in cap.err and "trace" in cap.err
    last = cap.err.strip().splitlines()[-1]
    assert last.startswith("zsq-probe figures: error: 1 figure(s) failed") and "fig3a_inter_epoch.png" in last


def test_figures_out_refuses_a_foreign_file_and_overwrite_replaces_only_figures(tmp_path, capsys):
    """The output policy (zsq_probe.rundir.output): a folder with a file `figures` did not write is refused
    untouched; --overwrite replaces only the figures, never the user's files, not even one of a figure's name."""
    run, _ = make_run(tmp_path / "m", "kl-only", -0.1, 1.0, 0.1, tables=("metrics",))
    out = tmp_path / "paper"
    out.mkdir()
    (out / "notes.tex").write_text("my paper")
    before = tree_bytes(out)
    argv = ["figures", "--runs", str(run.path), "--out", str(out), "--only", "fig5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "notes.tex" in err[0] and "did not write" in err[0] and "--overwrite" in err[0]
    assert tree_bytes(out) == before

    assert main([*argv, "--overwrite"]) == 0
    capsys.readouterr()
    after = tree_bytes(out)
    assert after["notes.tex"] == b"my paper"
    assert {"fig5_training.png", "fig5_training.txt", ".zsq-probe-output.json"} <= set(after)
    (out / "fig5_training.png").write_bytes(b"old")
    assert main([*argv, "--overwrite"]) == 0  # its own figure: replaced
    _png_ok(out / "fig5_training.png")
    own = tmp_path / "own"
    assert main(["figures", "--runs", str(run.path), "--out", str(own), "--only", "fig5"]) == 0
    assert main(["figures", "--runs", str(run.path), "--out", str(own), "--only", "fig5"]) == 2
    assert "earlier zsq-probe figures output" in capsys.readouterr().err  # replaced only with --overwrite

    # a file of a figure's name that figures did not write is never replaced: that figure fails
    other = tmp_path / "other"
    other.mkdir()
    (other / "fig5_training.png").write_bytes(b"mine")
    # the figure could not be written: a failure while computing (exit 1), not bad input
    assert main(["figures", "--runs", str(run.path), "--out", str(other), "--only", "fig5", "--overwrite"]) == 1
    assert "not replaced" in capsys.readouterr().err
    assert (other / "fig5_training.png").read_bytes() == b"mine" and not (other / "fig5_training.txt").exists()


def test_compare_out_follows_the_output_policy(runs, tmp_path, capsys):
    kd, zq = str(runs["kd"].path), str(runs["zq"].path)
    out = tmp_path / "cmp"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert main(["compare", kd, zq, "--out", str(out)]) == 2
    assert "keep.txt" in capsys.readouterr().err and sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    fresh = tmp_path / "fresh"
    assert main(["compare", kd, zq, "--out", str(fresh)]) == 0
    assert main(["compare", kd, zq, "--out", str(fresh)]) == 2  # its own earlier figure: only with --overwrite
    capsys.readouterr()
    assert main(["compare", kd, zq, "--out", str(fresh), "--overwrite"]) == 0
    assert main(["compare", kd, zq, "--out", str(out), "--overwrite"]) == 0
    assert (out / "keep.txt").read_text() == "mine" and len(list(out.glob("compare_cosine_*.png"))) == 1


# ------------------------------------------------------------------------------- epochs, configs
def test_epoch_ranges_are_read_alike_by_figures_and_post_hoc(runs, tmp_path, capsys):
    from zsq_probe.analysis.epochs import parse_epochs

    assert parse_epochs("3-5,8") == [3, 4, 5, 8]
    assert parse_epochs("60,350") == [60, 350]
    assert parse_epochs([2, 4]) == [2, 4] and parse_epochs(7) == [7]
    assert parse_epochs(None) is None and parse_epochs("") is None
    for bad in ("a,b", "5-3", "1-2-3"):
        with pytest.raises(UserError, match="--epochs"):
            parse_epochs(bad)
    assert issubclass(UserError, ValueError)
    # `zsq-probe figures --epochs 3-5` works as `zsq-probe cosine --epochs 3-5` does: three columns of bars
    rc = main(
        ["figures", "--runs", str(runs["zq"].path), "--out", str(tmp_path), "--only", "fig3bc", "--epochs", "3-5"]
    )
    assert rc == 0, capsys.readouterr().err
    _png_ok(tmp_path / "fig3bc_crossings.png")
    fig = FIGURES["fig3bc"].figures([runs["zq"]], epochs="3-5")[0][1]
    assert len([ax for ax in fig.axes if ax.get_visible()]) == 3
