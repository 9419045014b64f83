"""Figure scripts, `zsq-probe figures` and `zsq-probe compare` on fabricated run folders."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import figures  # noqa: E402
from figures._common import SkipFigure  # noqa: E402
from zsq_probe import compare
from zsq_probe.cli import main
from zsq_probe.errors import UserError
from zsq_probe.schema import TABLES
from zsq_probe.store import RunDir

ROOT = Path(__file__).resolve().parent.parent
EPOCHS = [1, 2, 3, 4, 5, 6]
STEPS = 10
LAYERS = [("conv1", 144), ("stage1.conv", 2304), ("fc", 640)]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _row(table, **values):
    """A full schema row: every column of `table`, the given values, neutral defaults elsewhere."""
    row = {c: np.nan for c in TABLES[table]}
    row.update(values)
    return row


def _config(method, **extra):
    cfg = {"method": method, "preset": method, "teacher": "digits", "data": "digits", "w_bits": 3, "a_bits": 3,
           "temperature": 20.0, "gi": False, "gi_p": 0.01, "source": "generator", "generator": "gdfq",
           "epochs": len(EPOCHS)}
    cfg.update(extra)
    return cfg


def make_run(path, method, cos_center, trace_scale, kl_scale, gi=False, seed=0, source="generator",
             tables=("metrics", "cosine", "inter_epoch", "crossings", "hessian_trace", "hessian_density", "slice")):
    """A run folder with every table of schema.TABLES (or those in `tables`); returns (run, step cosines)."""
    rng = np.random.default_rng(seed)
    run = RunDir(path)
    run.write_config(_config(method, gi=gi, source=source, generator="gdfq" if source == "generator" else "none"))
    name = run.name
    common = {"run": name, "method": method}
    step_cos = {}
    for e in EPOCHS:
        parts = {t: [] for t in TABLES}
        parts["metrics"].append(_row("metrics", **common, epoch=e, preset=method, iterations=STEPS,
                                     student_stepped=e > 1, act_ranges_frozen=e > 2,
                                     loss_kl=0.01 / e, loss_kl_scaled=4.0 / e, loss_ce=1.0 / e, loss_student=5.0 / e,
                                     lr=1e-3, gi_p=0.01 if gi else np.nan, skipped_steps=0,
                                     val_top1=0.5 + 0.05 * e, val_ce=2.0 - 0.1 * e, wall_time_s=1.0))
        cos = np.clip(rng.normal(cos_center, 0.15, STEPS), -1, 1)
        step_cos[e] = cos
        for s, c in enumerate(cos):
            parts["cosine"].append(_row("cosine", **common, epoch=e, step=s, global_step=(e - 1) * STEPS + s,
                                        statistic="step", origin="online", scope="model", group="all", cosine=c,
                                        grad_norm_ce=1.0, grad_norm_kl=0.1, angle_deg=np.degrees(np.arccos(c)),
                                        batch_size=64))
            # a layer-scope row that must not enter model-level numbers
            parts["cosine"].append(_row("cosine", **common, epoch=e, step=s, global_step=(e - 1) * STEPS + s,
                                        statistic="step", origin="online", scope="layer", group="fc", cosine=-0.99,
                                        grad_norm_ce=1.0, grad_norm_kl=0.1, angle_deg=172.0, batch_size=64))
        parts["cosine"].append(_row("cosine", **common, epoch=e, step=-1, global_step=-1, statistic="epoch_mean",
                                    origin="online", scope="model", group="all", cosine=cos.mean(),
                                    grad_norm_ce=1.0, grad_norm_kl=0.1,
                                    angle_deg=np.degrees(np.arccos(cos)).mean(), batch_size=64))
        if e > 1:
            parts["inter_epoch"].append(_row("inter_epoch", **common, epoch=e, cosine=0.9 if cos_center < 0 else 0.2,
                                             grad_norm=1.0, previous_grad_norm=1.0, steps_averaged=STEPS))
        if e > 1:
            for li, (layer, size) in enumerate(LAYERS):
                changed = (li + 1) * (7 - e) * 3 if not gi else int(0.01 * size * STEPS) + li
                parts["crossings"].append(_row("crossings", **common, epoch=e, step=-1, global_step=-1,
                                               statistic="epoch_total", origin="online", layer=layer,
                                               changed=changed, layer_size=size,
                                               share=changed / (size * STEPS), kappa=4.0 if gi else np.nan,
                                               gi_flag="", gi_p=0.01 if gi else np.nan, steps=STEPS))
        for loss, scale in (("ce", trace_scale), ("kl", kl_scale)):
            for est in ("hutchinson", "slq"):
                tr = scale * (1 + 0.1 * e) * (1.0 if est == "hutchinson" else 1.05)
                parts["hessian_trace"].append(_row("hessian_trace", **common, epoch=e, origin="online", loss=loss,
                                                   scope="model", group="all", estimator=est, trace=tr,
                                                   stderr=0.05 * tr, num_vectors=20, num_hvps=20, num_params=3088,
                                                   probe_batch_size=128, probe_batch_source="generator", seed=0))
            nodes = np.concatenate([rng.normal(0, 0.05 * scale, 12), [scale * 2.0, scale * 3.0]])
            w = np.full(nodes.size, 1.0 / nodes.size)
            for i, (nd, wt) in enumerate(zip(nodes, w)):
                parts["hessian_density"].append(_row("hessian_density", **common, epoch=e, origin="online", loss=loss,
                                                     slq_run=i // 7, node=nd, weight=wt, probe_batch_size=128,
                                                     seed=0))
            for k in np.linspace(-0.5, 0.5, 11):
                curvature = (7 - e) * (1.0 if loss == "ce" else 0.2)  # KL flatter, as in the paper
                parts["slice"].append(_row("slice", **common, epoch=e, origin="online", loss=loss,
                                           direction="eigenvector", scaling="gradient", delta=0.1, k=k,
                                           loss_value=scale * (1.0 / e + k ** 2 * curvature), probe_batch_size=128,
                                           seed=0))
        for table, rows in parts.items():
            if table in tables and rows:
                run.write_part(table, rows, f"e{e:05d}")
    return run, step_cos


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    kd, kd_cos = make_run(root / "kd-run", "kd", cos_center=0.3, trace_scale=8.0, kl_scale=2.0, seed=1, source="real")
    zq, zq_cos = make_run(root / "zq-run", "gdfq", cos_center=-0.1, trace_scale=12.0, kl_scale=0.5, seed=2)
    ait, _ = make_run(root / "ait-run", "ait", cos_center=0.2, trace_scale=6.0, kl_scale=0.3, gi=True, seed=3)
    # a generator checkpoint for fig6
    import torch

    from zsq_probe.generators import build_generator

    torch.manual_seed(0)
    gen = build_generator("gdfq", 10, (1, 16, 16))
    zq.save_checkpoint(6, {"student": {}, "generator": gen.state_dict(), "config": _config("gdfq")})
    return {"kd": kd, "zq": zq, "ait": ait, "kd_cos": kd_cos, "zq_cos": zq_cos, "root": root}


def _png_ok(path):
    path = Path(path)
    assert path.is_file() and path.stat().st_size > 5000, path
    assert path.read_bytes()[:8] == PNG_MAGIC


# --------------------------------------------------------------------------------------- each figure
@pytest.fixture(scope="module")
def all_figures(runs, tmp_path_factory):
    """`zsq-probe figures` once over the KD, GDFQ and AIT runs: {figure name: [paths]}."""
    import contextlib
    import io

    out = tmp_path_factory.mktemp("all-figures")
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["figures", "--runs", str(runs["kd"].path), str(runs["zq"].path), str(runs["ait"].path),
                   "--out", str(out)])
    assert rc == 0
    written = {}
    for line in buf.getvalue().strip().splitlines():
        assert line.startswith("wrote "), line
        name, path = line[6:].split(": ", 1)
        written.setdefault(name, []).append(Path(path))
    return written


@pytest.mark.parametrize("name", list(figures.SCRIPTS))
def test_each_figure_writes_a_png(all_figures, name):
    module = figures.load(name)
    assert module.FIGURE == name and module.DESCRIPTION and isinstance(module.TABLES_NEEDED, list)
    assert callable(module.plot)
    assert all_figures.get(name), f"{name} wrote nothing"
    for p in all_figures[name]:
        _png_ok(p)
    if name == "fig6":  # one file per run with a generator checkpoint: only zq-run has one
        assert [p.name for p in all_figures[name]] == ["fig6_samples_zq-run.png"]


def test_plot_returns_its_files(runs, tmp_path):
    paths = figures.load("fig2b").plot([runs["kd"], runs["zq"]], tmp_path, fmt="png")
    assert paths == [tmp_path / "fig2b_hessian_trace.png"]
    _png_ok(paths[0])


def test_pdf_on_request(runs, tmp_path):
    (path,) = figures.load("fig3a").plot([runs["kd"], runs["zq"]], tmp_path, fmt="pdf")
    assert path.suffix == ".pdf" and path.read_bytes()[:5] == b"%PDF-"


def test_script_runs_standalone(runs, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "figures" / "fig1_cosine.py"), "--runs", str(runs["kd"].path),
                          str(runs["zq"].path), "--out", str(tmp_path)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
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


@pytest.mark.parametrize("name,table,column", [
    ("fig1", "cosine", "angle_deg"),
    ("fig2b", "hessian_trace", "stderr"),
    ("fig3bc", "crossings", "layer_size"),
    ("fig5", "metrics", "val_ce"),
    ("fig2d", "hessian_density", "weight"),
])
def test_missing_column_is_a_user_error_naming_it(runs, tmp_path, name, table, column):
    bad = _copy_without_column(runs["zq"], table, column, tmp_path / "bad")
    with pytest.raises(UserError, match=column):
        figures.load(name).plot([bad], tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_absent_table_skips_with_a_reason(tmp_path):
    run, _ = make_run(tmp_path / "only-metrics", "gdfq", -0.1, 1.0, 0.1, tables=("metrics",))
    with pytest.raises(SkipFigure, match=r"probes/hessian_trace .*zsq-probe hessian --run"):
        figures.load("fig2b").plot([run], tmp_path / "out")
    with pytest.raises(SkipFigure, match="probes/cosine"):
        figures.load("fig1").plot([run], tmp_path / "out")
    kd, _ = make_run(tmp_path / "kd-only", "kd", 0.3, 1.0, 0.1, source="real")
    with pytest.raises(SkipFigure, match="only KD runs"):
        figures.load("fig5").plot([kd], tmp_path / "out")
    with pytest.raises(SkipFigure, match="kl-only-high-lr"):
        figures.load("fig4").plot([kd], tmp_path / "out")
    with pytest.raises(SkipFigure, match="generator"):
        figures.load("fig6").plot([kd], tmp_path / "out")


def test_epoch_choices(runs, tmp_path):
    from figures.fig3bc_crossings import default_epochs

    assert default_epochs([2, 3, 4, 5, 6]) == [3, 6]
    assert default_epochs(range(1, 401)) == [61, 400]
    paths = figures.load("fig3bc").plot([runs["zq"]], tmp_path, epochs="2,4")
    _png_ok(paths[0])
    with pytest.raises(UserError, match="epoch"):
        figures.load("fig3bc").plot([runs["zq"]], tmp_path, epochs="1,4")  # no crossings in epoch 1
    with pytest.raises(UserError, match="epoch 99"):
        figures.load("fig2d").plot([runs["zq"]], tmp_path, epoch=99)


# ------------------------------------------------------------------------------- data shaping
def test_crossings_per_layer_numbers(runs):
    df = runs["zq"].read_table("crossings")
    layers, basis = compare.crossings_per_layer(df, 3)
    assert basis == "epoch_total"
    assert list(layers["layer"]) == [name for name, _ in LAYERS]
    # changed = (li+1) * (7-e) * 3 over STEPS steps
    np.testing.assert_allclose(layers["changed_per_step"], [(i + 1) * 4 * 3 / STEPS for i in range(3)])
    np.testing.assert_allclose(layers["share_per_step"],
                               [(i + 1) * 12 / STEPS / size for i, (_, size) in enumerate(LAYERS)])


def test_trace_curves_average_duplicates():
    df = pd.DataFrame([_row("hessian_trace", epoch=1, loss="ce", scope="model", estimator="hutchinson",
                            trace=t, stderr=s) for t, s in ((10.0, 3.0), (14.0, 4.0))])
    c = compare.trace_curves(df)
    assert len(c) == 1
    assert c["trace"].iloc[0] == pytest.approx(12.0)
    assert c["stderr"].iloc[0] == pytest.approx(5.0 / 2)  # sqrt(3^2 + 4^2) / 2


def test_smoothed_density_integrates_to_one():
    from figures.fig2d_eigen_density import smoothed_density

    grid = np.linspace(-5, 15, 4001)
    d = smoothed_density([0.0, 10.0], [0.25, 0.25], grid, 0.5)
    assert np.trapezoid(d, grid) == pytest.approx(1.0, rel=1e-6)
    assert d[np.argmin(abs(grid - 10))] == pytest.approx(d[np.argmin(abs(grid))], rel=1e-6)


# ------------------------------------------------------------------------------- compare
def test_compare_cosine_numbers_by_hand(runs):
    kd, zq = runs["kd"].read_table("cosine"), runs["zq"].read_table("cosine")
    out = compare.compare_tables(kd, zq, "cosine")
    for key, table in (("kd", runs["kd_cos"]), ("zq", runs["zq_cos"])):
        all_steps = np.concatenate([table[e] for e in EPOCHS])
        epoch_means = np.array([table[e].mean() for e in EPOCHS])
        assert out[key]["steps"] == len(EPOCHS) * STEPS
        assert out[key]["share_negative"] == pytest.approx(np.mean(all_steps < 0))
        assert out[key]["mean_epoch_cosine"] == pytest.approx(epoch_means.mean())
        assert out[key]["median_epoch_cosine"] == pytest.approx(np.median(epoch_means))
    assert out["zq"]["share_negative"] > 0.5 > out["kd"]["share_negative"]
    assert out["zq_minus_kd"]["share_negative"] == pytest.approx(out["zq"]["share_negative"]
                                                                 - out["kd"]["share_negative"])


def test_compare_cosine_without_epoch_mean_rows():
    rows = [_row("cosine", epoch=e, step=s, statistic="step", origin="online", scope="model", cosine=c,
                 angle_deg=0.0, grad_norm_ce=1.0, grad_norm_kl=1.0)
            for e, vals in ((1, [0.5, -0.5, -0.25, 0.75]), (2, [-1.0, -0.5, 0.0, 0.5])) for s, c in enumerate(vals)]
    s = compare.summarize_cosine(pd.DataFrame(rows))
    assert s["share_negative"] == pytest.approx(4 / 8)
    assert s["mean_epoch_cosine"] == pytest.approx((0.125 + -0.25) / 2)
    assert s["epochs"] == 2


def test_compare_hessian_ratios(runs):
    out = compare.compare_tables(runs["kd"].read_table("hessian_trace"), runs["zq"].read_table("hessian_trace"),
                                 "hessian")
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

    assert main(["compare", kd, zq, "--probe", "hessian", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "ratio KL / CE" in text and "ZQ / KD" in text and "wrote " in text


def test_compare_cli_errors(runs, tmp_path, capsys):
    empty, _ = make_run(tmp_path / "bare", "gdfq", -0.1, 1.0, 0.1, tables=("metrics",))
    assert main(["compare", str(runs["kd"].path), str(empty.path), "--probe", "hessian"]) == 2
    err = capsys.readouterr().err
    assert "bare has no probes/hessian_trace" in err and len(err.strip().splitlines()) == 1
    assert main(["compare", str(runs["zq"].path), str(runs["ait"].path), "--json"]) == 0
    assert "not 'kd'" in capsys.readouterr().err


# ------------------------------------------------------------------------------- figures CLI
def test_figures_cli_writes_and_reports_skips(tmp_path, capsys):
    only_metrics, _ = make_run(tmp_path / "m", "kl-only", -0.1, 1.0, 0.1, tables=("metrics",))
    out = tmp_path / "figs"
    rc = main(["figures", "--runs", str(only_metrics.path), "--out", str(out), "--only", "fig2b,fig5,fig3a"])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("wrote fig5: ") for line in lines)
    assert any(line.startswith("skipped fig2b: no run has probes/hessian_trace") for line in lines)
    assert any(line.startswith("skipped fig3a: ") for line in lines)
    assert len(lines) == 3
    _png_ok(out / "fig5_training.png")


def test_figures_cli_nothing_to_draw_and_bad_names(tmp_path, capsys):
    only_metrics, _ = make_run(tmp_path / "m", "gdfq", -0.1, 1.0, 0.1, tables=("metrics",))
    assert main(["figures", "--runs", str(only_metrics.path), "--out", str(tmp_path / "o"), "--only", "fig1"]) == 2
    cap = capsys.readouterr()
    assert "skipped fig1" in cap.out and "no figure written" in cap.err
    assert main(["figures", "--runs", str(only_metrics.path), "--out", str(tmp_path / "o"),
                 "--only", "fig1,fig99"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "fig99" in err and "fig2b" in err and "fig7_8" in err
    assert main(["figures", "--runs", str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_figures_cli_reports_a_broken_table(runs, tmp_path, capsys):
    bad = _copy_without_column(runs["zq"], "hessian_trace", "trace", tmp_path / "bad")
    rc = main(["figures", "--runs", str(bad.path), "--out", str(tmp_path / "o"), "--only", "fig2b,fig3a"])
    cap = capsys.readouterr()
    assert rc == 2
    assert "wrote fig3a" in cap.out
    assert "failed fig2b" in cap.err and "trace" in cap.err
