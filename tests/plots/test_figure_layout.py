"""Readability of the figures as a reviewer sees them, on fabricated runs (two seeds per method): every text
lies inside the figure, tick labels, axis labels, titles and legends do not overlap, every font is >= 7 pt at
the width the figure was made for, and each figure gets its caption file."""

import pytest
from fabricated_runs import make_run

from zsq_probe.plots import FIGURES
from zsq_probe.plots.style import MIN_FONT, WIDTHS, figure_width, readable

pytestmark = pytest.mark.teacher_free  # never loads the digits teacher: runs first under xdist (conftest)

NAMES = ["fig1", "fig2b", "fig2d", "fig3a", "fig3bc", "fig4", "fig5", "fig7_8", "fig9"]


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    root = tmp_path_factory.mktemp("seeded")
    runs = []
    for seed in (0, 1):
        runs.append(make_run(root / f"kd-s{seed}", "kd", 0.3, 8.0, 2.0, seed=seed, source="real")[0])
        runs.append(make_run(root / f"gdfq-s{seed}", "gdfq", -0.1, 12.0, 0.5, seed=seed)[0])
        runs.append(make_run(root / f"ait-s{seed}", "ait", 0.2, 6.0, 0.3, gi=True, seed=seed)[0])
    # a second (model, data set) setting: Figs. 7/8 and 9 compare settings and skip with one
    runs.append(make_run(root / "gdfq-cifar", "gdfq", -0.1, 12.0, 0.5, teacher="resnet20_cifar10", data="cifar10")[0])
    return runs


def _texts(fig):
    """(kind, text artist) of every visible, non-empty text: tick labels, axis labels, titles, legends."""
    out = []
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        for axis in (ax.xaxis, ax.yaxis):
            lo, hi = sorted(axis.get_view_interval())
            span = (hi - lo) * 1e-6
            for tick in axis.get_major_ticks():  # the labels drawn: ticks inside the view limits
                if lo - span <= tick.get_loc() <= hi + span:
                    out += [("tick", lab, ax) for lab in (tick.label1, tick.label2) if lab.get_visible()]
        out += [("label", ax.xaxis.label, ax), ("label", ax.yaxis.label, ax), ("title", ax.title, ax)]
        leg = ax.get_legend()
        if leg is not None:
            out.append(("legend", leg, ax))
    for leg in fig.legends:
        out.append(("legend", leg, None))
    if fig._suptitle is not None:
        out.append(("title", fig._suptitle, None))
    return [(k, t, a) for k, t, a in out if t.get_visible() and (k == "legend" or t.get_text())]


def _check(fig):
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    page = fig.bbox
    items = [(k, t, a, t.get_window_extent(renderer)) for k, t, a in _texts(fig)]
    for kind, t, _, box in items:
        label = t.get_text() if kind != "legend" else "legend"
        assert box.x0 >= page.x0 - 1 and box.x1 <= page.x1 + 1 and box.y0 >= page.y0 - 1 and box.y1 <= page.y1 + 1, (
            f"{kind} {label!r} outside the figure"
        )
        if kind != "legend":
            assert t.get_fontsize() >= MIN_FONT, f"{kind} {label!r} at {t.get_fontsize()} pt"
        else:
            for lt in t.get_texts():
                assert lt.get_fontsize() >= MIN_FONT, f"legend text {lt.get_text()!r} at {lt.get_fontsize()} pt"
    for i, (k1, t1, a1, b1) in enumerate(items):
        for k2, t2, a2, b2 in items[i + 1 :]:
            if k1 == k2 == "tick" and a1 is a2 and t1.axes is t2.axes:
                pass  # neighbouring tick labels of one axis: checked by overlaps below as well
            if b1.width <= 0 or b2.width <= 0:
                continue
            overlap_w = min(b1.x1, b2.x1) - max(b1.x0, b2.x0)
            overlap_h = min(b1.y1, b2.y1) - max(b1.y0, b2.y0)
            if overlap_w > 1 and overlap_h > 1:
                n1 = t1.get_text() if k1 != "legend" else "legend"
                n2 = t2.get_text() if k2 != "legend" else "legend"
                raise AssertionError(f"{k1} {n1!r} overlaps {k2} {n2!r}")


CASES = [(n, "text") for n in NAMES] + [("fig2b", "column"), ("fig5", "column")]


@pytest.mark.parametrize("name,width", CASES)
def test_figure_is_readable(seeded, name, width):
    with figure_width(width):
        figs = FIGURES[name].figures(seeded)
    for _, fig in figs:
        readable(fig)
        assert abs(fig.get_figwidth() - WIDTHS[width]) < 1e-6
        _check(fig)


def test_caption_sidecar_names_runs_and_seeds(seeded, tmp_path):
    paths = FIGURES["fig1"].plot(seeded, tmp_path, "pdf", "column")
    assert paths[0].suffix == ".pdf"
    text = (tmp_path / "fig1_cosine.txt").read_text()
    assert "n=2" in text and "gdfq-s1" in text and "probe_every_steps" in text
    # fig2b draws one seed per method: its caption lists the runs drawn, not the others
    FIGURES["fig2b"].plot(seeded, tmp_path, "png", "column")  # its caption is read: PNG is the faster file
    text = (tmp_path / "fig2b_hessian_trace.txt").read_text()
    runs_drawn = text.split("Runs drawn")[1].split("Probe settings")[0]
    assert "gdfq-s0" in runs_drawn and "gdfq-s1" not in runs_drawn and "hessian_every_epochs" in text
    # every other setting the drawn runs differ in is named (fabricated: source, generator, GI)
    line = next(x for x in text.splitlines() if x.startswith("Settings the runs differ in besides method and seed"))
    assert "gi: kd False, gdfq False, ait True" in line and "source: kd real, gdfq generator, ait generator" in line
    assert "(KD's by design" in line


def test_one_colour_per_method_everywhere():
    from zsq_probe.plots.style import canonical_method, method_style

    assert canonical_method("qimera-ait") == "qimera+ait"
    assert method_style("qimera-ait") == method_style("qimera+ait")
    colours = [method_style(m)[0] for m in ("kd", "gdfq", "kl-only", "ait", "kl-only-high-lr", "qimera", "qimera+ait")]
    assert len(set(colours)) == len(colours)
