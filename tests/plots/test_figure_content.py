"""What the figures say (issue 22, item 7), on fabricated runs: no figure taller than style.MAX_HEIGHT for many
epochs and runs; Fig. 4's legend names each p it draws; Figs. 3b/c and 4 count level (or net) changes, never
zero-point flips, and do not mix each other's runs; Fig. 6 draws one grid per distinct generator; Figs. 7/8 and 9
skip with a one-line reason when the runs span one setting; captions list the runs drawn and nothing else, and say
when the product budget stopped trace estimates (issue 24)."""

import numpy as np
import pandas as pd
import pytest
from fabricated_runs import LAYERS, STEPS, make_run, run_config

from zsq_probe.plots import FIGURES, SkipFigure, plot_figure
from zsq_probe.plots import runs as R
from zsq_probe.plots.crossings import EPOCHS_PER_PAGE, crossings_figure, crossings_gi_figure
from zsq_probe.plots.style import MAX_HEIGHT, METHOD_STYLE, SNAPSHOT_KL_COLOR, figure_width
from zsq_probe.rundir.store import RunDir

pytestmark = pytest.mark.teacher_free  # never loads the digits teacher: runs first under xdist (conftest)

# crossings rows start at epoch 2: three full pages of epoch panels and one more epoch (fig3bc_crossings_4)
MANY = list(range(1, 3 * EPOCHS_PER_PAGE + 3))
CIFAR = {"teacher": "resnet20_cifar10", "data": "cifar10"}


def _generator_checkpoint(run, seed: int, epoch: int):
    import torch

    from zsq_probe.generators import build_generator

    torch.manual_seed(seed)
    gen = build_generator("gdfq", 10, (1, 16, 16))
    run.save_checkpoint(epoch, {"student": {}, "generator": gen.state_dict(), "config": run_config("gdfq")})
    return gen.state_dict()


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """Six runs of two settings over MANY epochs, two seeds of one method: five drawn one seed per method, one
    more than a page of Fig. 2c holds, and enough for full pages of every figure paged by runs (two rows of
    Figs. 2b, 2d and 9); Fig. 1's height shrinks with more methods."""
    root = tmp_path_factory.mktemp("many")
    runs = [
        make_run(root / f"digits-gdfq-s{seed}", "gdfq", -0.1, 12.0, 0.5, seed=seed, epochs=MANY)[0] for seed in (0, 1)
    ]
    runs.append(make_run(root / "digits-kd", "kd", 0.3, 8.0, 2.0, source="real", epochs=MANY)[0])
    runs.append(make_run(root / "digits-ait", "ait", 0.2, 6.0, 0.3, gi=True, epochs=MANY)[0])
    runs.append(make_run(root / "cifar-kl-only", "kl-only", 0.1, 9.0, 0.4, epochs=MANY, **CIFAR)[0])
    runs.append(make_run(root / "cifar-ait", "ait", 0.2, 6.0, 0.3, gi=True, epochs=MANY, **CIFAR)[0])
    return runs


@pytest.mark.slow  # every figure over six runs of many epochs, ~7 s on one core: a scale check (slow tier)
def test_no_figure_is_taller_than_a_page_for_many_epochs_and_runs(many):
    """At the text width (the column width scales every figure down); Fig. 6's height is per class, not per run."""
    heights = {}
    with figure_width("text"):
        for spec in FIGURES.values():
            if spec.name == "fig6":  # needs a generator checkpoint; its height grows with classes, capped by CELL
                continue
            options = {"epochs": f"2-{MANY[-1]}"} if "epochs" in spec.options else {}
            for stem, fig in spec.figures(many, **options):
                heights[stem] = fig.get_figheight()
    assert max(heights.values()) <= MAX_HEIGHT + 1e-9, heights
    # the epochs and runs that do not fit continue in further files rather than being squeezed or dropped
    assert {"fig3bc_crossings_4", "fig4_crossings_gi_4", "fig2c_loss_slice_2"} <= set(heights), sorted(heights)
    assert "fig9_trace_grid" in heights and "fig7_8_cosine_grid" in heights  # two settings: drawn


def test_fig4_legend_lists_each_p_it_draws(tmp_path):
    def schedule(e):
        return 1e-3 if e < 4 else 1e-5  # GI's p decays during the run

    ait, _ = make_run(tmp_path / "ait", "ait", 0.2, 6.0, 0.3, gi=True, gi_p=schedule)
    high, _ = make_run(tmp_path / "high", "kl-only-high-lr", 0.1, 9.0, 0.4, lr=1e-2)
    ((_, fig),) = crossings_gi_figure([ait, high], epochs="2,5")
    drawn = 0
    for ax in fig.axes:
        p_lines = [ln for ln in ax.get_lines() if ln.get_linestyle() == ":"]
        legend = {t.get_text() for t in ax.get_legend().get_texts()}
        for ln in p_lines:
            p = float(ln.get_ydata()[0])
            assert any(f"p = {p:.3g}" in text for text in legend), (p, legend)
            drawn += 1
        assert len(p_lines) == 1
    assert drawn == 2
    values = sorted(float(ln.get_ydata()[0]) for ax in fig.axes for ln in ax.get_lines() if ln.get_linestyle() == ":")
    assert values == pytest.approx([1e-5, 1e-3])
    # the legend names the high-lr run's lr as its config has it, relative to the scale's base lr (digits: 1e-3)
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert any("lr 0.01 = 10× base" in t for t in labels), labels
    caption = FIGURES["fig4"].plot([ait, high], tmp_path / "out", epochs="2,5")[0].with_suffix(".txt").read_text()
    assert "dotted black" in caption and "red" not in caption and "100" not in caption


def _bar_heights(ax):
    return [p.get_height() + p.get_y() for p in ax.patches]


def test_fig3bc_counts_level_changes_and_leaves_fig4_runs_out(tmp_path):
    gdfq, _ = make_run(tmp_path / "gdfq", "gdfq", -0.1, 12.0, 0.5, lr=1e-3)  # the digits scale's base lr
    ait, _ = make_run(tmp_path / "ait", "ait", 0.2, 6.0, 0.3, gi=True)
    high, _ = make_run(tmp_path / "high", "kl-only-high-lr", 0.1, 9.0, 0.4)
    ((_, fig),) = crossings_figure([gdfq, ait, high], epochs="3")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["gdfq (n=1)"]
    # fabricated (tests/fabricated_runs.py): changed = (li+1)*(7-e)*3 codes; the first layer's zero points flip
    # (changed_level = changed // 3 there); the net change over the epoch changed_net = changed_level // 2
    levels = [(li + 1) * 4 * 3 // (3 if li == 0 else 1) for li in range(len(LAYERS))]
    net = [lv // 2 / STEPS / size for lv, (_, size) in zip(levels, LAYERS)]
    np.testing.assert_allclose(_bar_heights(ax), net)  # every row has changed_net: the figure reads it
    # a run with the net change between epoch-end codes: the figure reads that
    rd = RunDir(gdfq.path)
    for key in rd.part_keys("crossings"):
        df = pd.read_parquet(rd.table_dir("crossings") / f"part-{key}.parquet").drop(columns="schema_version")
        rd.write_part("crossings", df.assign(changed_net=1), key)
    ((_, fig),) = crossings_figure([gdfq], epochs="3")
    np.testing.assert_allclose(_bar_heights(fig.axes[0]), [1 / STEPS / size for _, size in LAYERS])
    caption = FIGURES["fig3bc"].plot([gdfq, ait], tmp_path / "out", epochs="3")[0].with_suffix(".txt").read_text()
    assert "net change between epoch-end codes" in caption
    assert "ait" not in caption.split("Runs drawn")[1]  # only the runs drawn are listed
    with pytest.raises(SkipFigure, match="fig4 draws those"):
        crossings_figure([ait, high])


def test_fig6_draws_one_grid_per_distinct_generator(tmp_path):
    runs = {}
    for name, method, seed in (("gdfq", "gdfq", 0), ("kl-only", "kl-only", 0), ("ait", "ait", 0), ("other", "gdfq", 1)):
        runs[name], _ = make_run(tmp_path / name, method, 0.1, 1.0, 0.1, tables=("metrics",), seed=seed)
        _generator_checkpoint(runs[name], seed, 6)
    # runs[other] differs from runs[gdfq] by its seed only; make it another seed group so both are drawn
    cfg = runs["other"].read_config_doc()["config"]
    cfg["optim"]["lr"] = 5e-4
    runs["other"].write_config(cfg, extra={"run_id": runs["other"].run_id})  # its parts record its run id
    paths = plot_figure("fig6", list(runs.values()), tmp_path / "out")
    assert [p.name for p in paths] == ["fig6_samples_gdfq.png", "fig6_samples_other.png"]
    caption = (tmp_path / "out" / "fig6_samples_gdfq.txt").read_text()
    assert "gdfq, kl-only, ait hold bit-identical generator weights" in caption and "fingerprint" in caption
    assert "Fig. 6 for every run" not in caption and '"""' not in caption  # written, not a docstring
    assert "other" not in caption  # only the runs this grid stands for
    import torch

    from zsq_probe.plots.samples import fingerprint

    state = _generator_checkpoint(runs["gdfq"], 0, 7)
    nudged = {k: v.clone() for k, v in state.items()}
    key = next(k for k, v in nudged.items() if v.is_floating_point())
    first = nudged[key].view(-1)[:1]
    nudged[key].view(-1)[:1] = torch.nextafter(first, torch.full_like(first, np.inf))  # one ulp
    assert fingerprint(state) == fingerprint({k: v.clone() for k, v in state.items()}) != fingerprint(nudged)


@pytest.mark.parametrize("name,instead", [("fig7_8", "fig1"), ("fig9", "fig2b")])
def test_cross_setting_figures_skip_with_one_setting(tmp_path, name, instead):
    tables = ("metrics", *FIGURES[name].tables_needed)  # the figure reads no other
    kd, _ = make_run(tmp_path / "kd", "kd", 0.3, 8.0, 2.0, source="real", tables=tables)
    zq, _ = make_run(tmp_path / "zq", "gdfq", -0.1, 12.0, 0.5, tables=tables)
    with pytest.raises(SkipFigure) as err:
        FIGURES[name].figures([kd, zq])
    reason = err.value.reason
    assert "\n" not in reason and "span one" in reason and "digits/digits" in reason and instead in reason
    other, _ = make_run(tmp_path / "cifar", "gdfq", -0.1, 12.0, 0.5, tables=tables, **CIFAR)
    assert FIGURES[name].figures([kd, zq, other])


def test_fig1_explains_the_warm_up_and_keeps_the_kl_arrow_apart_from_kl_only(tmp_path):
    tables = ("metrics", *FIGURES["fig1"].tables_needed)  # the figure reads no other
    kd, _ = make_run(tmp_path / "kd", "kd", 0.3, 8.0, 2.0, source="real", tables=tables)
    zq, _ = make_run(tmp_path / "kl", "kl-only", 0.1, 9.0, 0.4, warmup=2, tables=tables)
    (path,) = plot_figure("fig1", [kd, zq], tmp_path / "out")
    caption = path.with_suffix(".txt").read_text()
    assert "warm-up (warmup_epochs = 2" in caption and "start at epoch 3" in caption
    fig = FIGURES["fig1"].figures([kd, zq])[0][1]
    texts = {
        t.get_text()
        for ax in fig.axes
        for leg in ax.findobj(lambda a: hasattr(a, "get_texts"))
        for t in leg.get_texts()
    }
    assert any("warm-up" in t for t in texts), texts
    assert SNAPSHOT_KL_COLOR.lower() != METHOD_STYLE["kl-only"][0].lower()
    arrows = [a for ax in fig.axes for a in ax.texts if a.get_text() == "∇KL"]
    assert arrows and all(a.get_color() == SNAPSHOT_KL_COLOR for a in arrows)


def test_fig2d_one_sigma_and_each_panel_its_own_range(tmp_path):
    kd, _ = make_run(tmp_path / "kd", "kd", 0.3, 1.0, 0.5, source="real")
    zq, _ = make_run(tmp_path / "zq", "gdfq", -0.1, 50.0, 5.0)
    ((_, fig),) = FIGURES["fig2d"].figures([kd, zq])
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_lines()]
    assert len(panels) == 2 and panels[0].get_xlim()[1] < panels[1].get_xlim()[1] / 10  # not a shared x axis
    title = fig.legends[0].get_title().get_text()
    assert title.startswith("σ = ") and "every panel" in title
    info = R.drawn(fig)
    assert info is not None and "one Gaussian kernel of width σ" in info.text and "fewer than 8" in info.text


def test_the_trace_caption_says_when_the_budget_stopped_estimates(tmp_path):
    from fabricated_runs import make_run

    from zsq_probe.plots.catalog import caption, spec

    run, _ = make_run(tmp_path / "zq", "gdfq", cos_center=-0.1, trace_scale=12.0, kl_scale=0.5, seed=2)
    assert "budget" not in caption(spec("fig2b"), [run], "fig2b").split("Probe settings")[-1]
    part = sorted(run.table_dir("hessian_trace").glob("part-*.parquet"))[0]
    df = pd.read_parquet(part)
    df["stopped_by"] = np.where(df["estimator"] == "hutchinson", "budget", "tolerance")
    run.write_part("hessian_trace", df, part.name.removeprefix("part-").removesuffix(".parquet"))
    n = int((df["estimator"] == "hutchinson").sum())
    assert n
    text = caption(spec("fig2b"), [run], "fig2b")
    assert f"The product budget (trace_max_products) stopped {n} of " in text and f"zq ({n})" in text, text
