"""`zsq_probe.plots` as a notebook uses it: drawing into axes the caller made, figures as objects,
logging instead of printing, and no side effects (no backend chosen, no rcParams changed, no sys.path
patching, figures/ a folder of scripts)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from fabricated_runs import EPOCHS, LAYERS, make_run, paper_runs

pytestmark = pytest.mark.teacher_free  # never loads the digits teacher: runs first under xdist (conftest)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return paper_runs(tmp_path_factory.mktemp("runs"))


# ------------------------------------------------------------------------------- a notebook's use
def test_draw_functions_draw_into_the_axes_given(runs):
    """Each figure's drawing function draws into axes the caller made (from a run, a folder or a table)."""
    from matplotlib.figure import Figure

    from zsq_probe import plots

    kd, zq, ait = runs["kd"], runs["zq"], runs["ait"]

    def axes(n=1):
        return Figure().subplots(1, n, squeeze=False)[0]

    ax = axes()[0]
    epochs = plots.draw_cosine(ax, zq.path)  # a folder
    assert len(ax.lines) == 1 and len(ax.collections) == 1 and list(epochs["epoch"]) == EPOCHS
    assert ax.lines[0].get_label() == "ZQ: gdfq"  # the run names are in the caption file
    ax = axes()[0]
    plots.draw_cosine(ax, zq.read_table("cosine"), color="k", scatter=False, label="mine")  # a table
    assert len(ax.lines) == 1 and not ax.collections and ax.lines[0].get_label() == "mine"
    ax = axes()[0]
    plots.draw_cosine_snapshot(ax, kd, epoch=4)
    assert ax.get_title() == "KD, ep. 4"
    ax = axes()[0]
    plots.draw_hessian_trace(ax, kd)
    assert len(ax.lines) == 2 and ax.get_legend() is not None  # one estimate per loss (CE, KL), with its interval
    assert len(ax.collections) == 2 and "95% interval" in ax.get_ylabel()
    ax = axes()[0]
    assert plots.draw_eigen_density(ax, zq) == EPOCHS[-1] and len(ax.lines) == 2
    ax = axes()[0]
    plots.draw_loss_slice(ax, zq)
    assert len(ax.lines) == len(EPOCHS) and "eigenvector" in ax.get_title()
    ax = axes()[0]
    plots.draw_inter_epoch(ax, zq)
    assert len(ax.lines) == 1
    ax = axes()[0]
    layers = plots.draw_crossings(ax, ait, 3, value="share_per_step", p_line=True)
    assert len(ax.patches) == len(LAYERS) == len(layers) and len(ax.lines) == 1  # the bars and p
    three = axes(3)
    plots.draw_training(three, [kd, zq, ait])
    assert [len(a.lines) for a in three] == [2, 3, 2]  # the two ZQ runs in each panel (and cosine 0)
    ax = axes()[0]
    plots.draw_compare(ax, "hessian", kd, zq)
    assert len(ax.lines) == 4
    with plots.style():
        import matplotlib

        assert matplotlib.rcParams["figure.dpi"] == plots.STYLE["figure.dpi"]


def test_make_figure_returns_the_figure_and_writes_nothing(runs, tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    from zsq_probe.plots import make_figure, make_figures

    monkeypatch.chdir(tmp_path)
    fig = make_figure("fig1", [runs["kd"].path, runs["zq"].path], epoch=3)
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    ((stem, fig6),) = make_figures("fig6", [runs["kd"], runs["zq"]])
    assert stem == "fig6_samples_zq-run" and len(fig6.axes) == 50  # (1 real + 4 synthetic rows) x 10 digits
    assert not any(tmp_path.iterdir())
    with pytest.raises(TypeError, match="epochs"):
        make_figure("fig1", [runs["zq"]], epochs="1,2")


def test_write_figures_logs_what_it_did(runs, tmp_path, caplog, capsys):
    """The library reports through `logging` (no print): the CLI shows it, a notebook may not."""
    import logging

    from zsq_probe.plots import write_figures

    only_metrics, _ = make_run(tmp_path / "m", "kl-only", -0.1, 1.0, 0.1, tables=("metrics",))
    with caplog.at_level(logging.INFO, logger="zsq_probe"):
        written, failed = write_figures([only_metrics.path], tmp_path / "o", only="fig2b,fig5", epochs="2-3")
    assert failed == 0 and [p.name for p in written] == ["fig5_training.png"]
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("skipped fig2b: no run has probes/hessian_trace") for m in messages)
    assert any(m.startswith("wrote fig5: ") for m in messages)
    assert capsys.readouterr().out == ""


# ------------------------------------------------------------------------------- side effects
@pytest.mark.slow  # a fresh interpreter: the start-up is the point (the slow tier, docs/development.md)
def test_importing_plots_leaves_the_backend_alone():
    """`import zsq_probe.plots` keeps a backend the user chose first (a notebook's inline backend) and changes no
    rcParams.  With none chosen: the import's own check in test_drawing_a_file_leaves_backend_and_pyplot_alone."""
    import os

    code = (
        "import matplotlib, json; matplotlib.use('svg'); "
        "before = matplotlib.get_backend(); rc = dict(matplotlib.rcParams); import zsq_probe.plots; "
        "print(json.dumps([before, matplotlib.get_backend(), dict(matplotlib.rcParams) == rc]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "PYTHONPATH")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert out.returncode == 0, out.stderr
    before, after, same_rc = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == after == "svg" and same_rc


@pytest.mark.slow  # a fresh interpreter: the start-up is the point (the slow tier, docs/development.md)
def test_drawing_a_file_leaves_backend_and_pyplot_alone(runs, tmp_path):
    """`import zsq_probe.plots` selects no matplotlib backend and changes no rcParams (the default backend is
    still there afterwards), and figures written to files are built without pyplot: no backend chosen, no
    rcParams changed."""
    import os

    # rcParams read raw (dict.items): asking for the backend would itself import pyplot to resolve it; the raw
    # backend entry unchanged is the default backend kept
    code = (
        "import sys, json, matplotlib; raw = lambda: dict(dict.items(matplotlib.rcParams)); rc = raw(); "
        "import zsq_probe.plots; imported = raw() == rc; "
        "from zsq_probe.plots import write_figures; "
        "written, failed = write_figures(sys.argv[1:2], sys.argv[2], only='fig1,fig5'); "
        "pyplot = 'matplotlib.pyplot' in sys.modules; "
        "print(json.dumps([imported, raw() == rc, pyplot, len(written), failed]))"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("MPLBACKEND", "PYTHONPATH")}
    out = subprocess.run(
        [sys.executable, "-c", code, str(runs["zq"].path), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr
    imported, same_rc, pyplot, n, failed = json.loads(out.stdout.strip().splitlines()[-1])
    assert imported and same_rc and not pyplot and (n, failed) == (2, 0)


def _python_files(*folders):
    for folder in folders:
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_backend_choice_and_no_sys_path_patching():
    """Only entry points (the CLI package, the figure scripts) may choose a backend; nothing patches sys.path."""
    for path in _python_files("zsq_probe", "figures"):
        text = path.read_text()
        rel = path.relative_to(ROOT).as_posix()
        assert "sys.path" not in text, rel
        entry_point = rel.startswith(("zsq_probe/cli/", "figures/"))
        if not entry_point:
            assert "matplotlib.use(" not in text and "MPLBACKEND" not in text, rel
    assert not (ROOT / "figures" / "__init__.py").exists()  # a folder of scripts, not a package
