"""Loss slices measure what they say (issue 11, item 4): eval-mode BN everywhere (online and post-hoc KD slices
agree), the straight-through surrogate whose Hessian lambda describes (its second difference at 0 is lambda)
beside the re-quantised loss, the paper's delta and a common parameter-norm scale, and Fig. 2c drawing them."""

import copy
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from zsq_probe.config import RunConfig
from zsq_probe.errors import UserError
from zsq_probe.hessian import HessianOperator
from zsq_probe.probes.slice import loss_along, slice_rows
from zsq_probe.probes.surrogate import frozen_quantization, is_quantized
from zsq_probe.quantization.quantizer import calibrate_activation_ranges, quantize_model


def small_net(seed=0):
    """A tiny conv net with BN (running statistics away from their initial values) and ReLUs: 219 parameters."""
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 4, 3, padding=1, stride=2),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(32, 1, 6, 6))
    return net


@pytest.fixture(scope="module")
def quantised():
    """(4-bit quantised small net in float64, train mode, ranges calibrated; inputs; labels)."""
    net = small_net()
    x = torch.randn(32, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 3, (32,))
    q = quantize_model(net, 4, 4).double()
    calibrate_activation_ranges(q, [x])
    q.train()  # as a KD student trains: the slice must still see eval-mode BN
    return q, x, y


def second_difference(student, fn, x, y, e, h, surrogate):
    lo, mid, hi = loss_along(student, fn, x, y, e, [-h, 0.0, h], list(student.parameters()), surrogate=surrogate)
    return (lo + hi - 2 * mid) / h**2, (hi - lo) / (2 * h), mid


def test_surrogate_second_difference_is_the_top_eigenvalue(quantised):
    q, x, y = quantised
    before = copy.deepcopy(q.state_dict())
    with HessianOperator(q, F.cross_entropy, [(x, y)]) as op:
        hessian, gradient = op.to_dense(), op.gradient()
    values, vectors = torch.linalg.eigh(hessian)
    lam, e = float(values[-1]), vectors[:, -1]
    assert lam > 0
    curv, slope, at_theta = second_difference(q, F.cross_entropy, x, y, e, 1e-4, surrogate=True)
    assert curv == pytest.approx(lam, rel=1e-3)
    assert slope == pytest.approx(float(gradient @ e), rel=1e-3, abs=1e-8)  # the STE gradient, too
    requant, _, requant_at_theta = second_difference(q, F.cross_entropy, x, y, e, 1e-4, surrogate=False)
    assert abs(requant - lam) > 0.5 * lam  # the re-quantised loss does not show lambda
    assert requant_at_theta == pytest.approx(at_theta, rel=1e-12)  # same loss at theta
    # the student is left as found: train mode, parameters, BN statistics and ranges, its own forward
    assert q.training and all(m.training for m in q.modules())
    after = q.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert not any("quantized_weight" in vars(m) or "forward" in vars(m) for m in q.modules())


def test_frozen_quantization_guards(quantised):
    q, x, _ = quantised
    with frozen_quantization(q, x):
        with pytest.raises(UserError, match="shape"):
            q(x[:5])
        with pytest.raises(UserError, match="already frozen"):
            with frozen_quantization(q, x):
                pass
    float_net = small_net().double().eval()
    assert not is_quantized(float_net) and is_quantized(q)
    with frozen_quantization(float_net, x):
        out = float_net(x)
    torch.testing.assert_close(out, float_net(x), rtol=0, atol=0)


def probe_cfg(**probing):
    cfg = RunConfig()
    cfg.temperature = 4.0
    cfg.probing.slice_points = 5
    cfg.probing.hessian_top_k = 1
    for k, v in probing.items():
        setattr(cfg.probing, k, v)
    cfg.validate()
    return cfg


def fake_batch(student, x, y):
    with torch.no_grad():
        teacher_logits = torch.randn(x.shape[0], 3, dtype=x.dtype, generator=torch.Generator().manual_seed(1))
    return SimpleNamespace(inputs=x, labels=y, teacher_logits=teacher_logits, size=x.shape[0], source="real")


def test_slice_rows_kinds_and_scalings(quantised):
    q, x, y = quantised
    cfg = probe_cfg(slice_scalings=["gradient", "norm", "unit"], slice_norm_fraction=0.01)
    batch = fake_batch(q, x, y)
    params = list(q.parameters())
    with HessianOperator(q, F.cross_entropy, [(x, y)]) as op:  # the CE loss of the probe (no label smoothing)
        hessian, g = op.to_dense(), op.gradient()
    e = torch.linalg.eigh(hessian)[1][:, -1]
    df = pd.DataFrame(slice_rows(q, params, batch, cfg, seed=3, top={"ce": e}))  # KL's vector found inside
    assert set(df.loss_kind) == {"surrogate", "requantized"} and set(df.scaling) == {"gradient", "norm", "unit"}
    assert len(df) == 2 * 3 * 2 * 5  # losses x scalings x kinds x points
    assert np.allclose(sorted(df.k.unique()), np.linspace(-0.5, 0.5, 5))
    theta = float(torch.cat([p.detach().reshape(-1) for p in params]).norm())
    assert np.allclose(df.theta_norm, theta)
    norm = df[df.scaling == "norm"]
    # one parameter-norm scale for CE and KL: the displacement at k = 1 is 1 % of ||theta|| for both
    np.testing.assert_allclose(norm.step_norm, 0.01 * theta, rtol=1e-9)
    np.testing.assert_allclose(df[df.scaling == "unit"].delta, 1.0)
    centre = df[df.k == 0].pivot_table(index=["loss", "scaling"], columns="loss_kind", values="loss_value")
    np.testing.assert_allclose(centre.surrogate, centre.requantized, rtol=1e-12)
    # the paper's delta is the gradient along e; 'norm' is signed like it, so k > 0 goes uphill in both
    ce = df[df.loss == "ce"]
    delta = ce[ce.scaling == "gradient"].delta.iloc[0]
    assert delta == pytest.approx(float(g @ e), rel=1e-9)
    assert ce[ce.scaling == "gradient"].step_norm.iloc[0] == pytest.approx(abs(delta), rel=1e-9)
    assert np.sign(ce[ce.scaling == "norm"].delta.iloc[0]) == np.sign(delta)
    # eval-mode BN whatever mode the student is in: the same rows from an eval-mode copy, the student untouched
    ev = copy.deepcopy(q).eval()
    df_eval = pd.DataFrame(slice_rows(ev, list(ev.parameters()), batch, cfg, seed=3, top={"ce": e}))
    np.testing.assert_allclose(df_eval.loss_value, df.loss_value, rtol=1e-10)
    assert q.training


def test_slice_rows_of_a_float_student_and_a_chosen_kind(quantised):
    q, x, y = quantised
    net = small_net().double()
    df = pd.DataFrame(slice_rows(net, list(net.parameters()), fake_batch(net, x, y), probe_cfg(), 0, None))
    assert set(df.loss_kind) == {"float"} and set(df.scaling) == {"gradient", "norm"}  # the defaults
    only = probe_cfg(slice_losses=["surrogate"], slice_scalings=["norm"])
    df = pd.DataFrame(slice_rows(q, list(q.parameters()), fake_batch(q, x, y), only, 0, None))
    assert set(df.loss_kind) == {"surrogate"} and set(df.scaling) == {"norm"}


@pytest.mark.parametrize(
    "key,value,message",
    [
        ("slice_scalings", ["norm", "steep"], "slice scaling"),
        ("slice_losses", ["exact"], "slice loss"),
        ("slice_losses", [], "slice_losses"),
        ("slice_norm_fraction", 0.0, "slice_norm_fraction"),
    ],
)
def test_slice_settings_are_validated(key, value, message):
    cfg = RunConfig()
    setattr(cfg.probing, key, value)
    with pytest.raises(UserError, match=message):
        cfg.validate()


def test_flat_keys_set_the_slice_settings():
    cfg = RunConfig()
    cfg.set("slice_losses", "surrogate")
    cfg.set("slice_norm_fraction", "0.05")
    cfg.set("slice_scalings", "norm,gradient")
    assert cfg.probing.slice_losses == ["surrogate"] and cfg.probing.slice_norm_fraction == 0.05
    assert cfg.probing.slice_scalings == ["norm", "gradient"]


# ------------------------------------------------------------------------------ online vs post hoc
def test_kd_slices_online_equal_posthoc(tmp_path, digits_teacher):
    """A KD student trains in train mode; its slices (online, sharing the Hessian probe's eigenvector, and post
    hoc, computing it after the CE slice) are the eval-mode ones and agree.  One epoch (probed as the last):
    the Hessian probe runs only for its eigenvector, so its trace is SLQ's few products alone."""
    from zsq_probe.presets import resolve_config
    from zsq_probe.probes import build_probes
    from zsq_probe.runs import train
    from zsq_probe.runs.posthoc import probe_run

    cfg = resolve_config(
        "kd",
        teacher="digits",
        flags={
            "epochs": 1,
            "iters_per_epoch": 3,
            "batch_size": 16,
            "warmup_epochs": 0,
            "val_max_batches": 1,
            "val_batch_size": 64,
            "hessian_batch_size": 16,
            "hessian_every_epochs": 1,
            "hessian_vectors": 2,
            "trace_estimators": ["slq"],
            "slq_runs": 1,
            "slq_steps": 4,
            "hessian_top_k": 1,
            "slice_points": 5,
            "probes": ["hessian", "slice"],
        },
    )
    out = tmp_path / "kd"
    with pytest.warns(UserWarning, match="probe batch"):
        train(cfg, out, observers=build_probes(cfg), progress=False)
    with pytest.warns(UserWarning, match="probe batch"):
        probe_run(out, "slice", epochs=[1], overwrite=True)
    df = pd.read_parquet(out / "probes" / "slice")
    assert set(df.loss_kind) == {"float"}
    keys = ["epoch", "loss", "loss_kind", "direction", "scaling", "k"]
    online = df[(df.origin == "online") & (df.epoch == 1)].set_index(keys).sort_index()
    post = df[(df.origin == "posthoc") & (df.epoch == 1)].set_index(keys).sort_index()
    assert len(online) == 2 * 2 * 5 and online.index.equals(post.index)
    for column in ("loss_value", "delta", "step_norm"):
        np.testing.assert_allclose(post[column].values, online[column].values, rtol=1e-6, atol=1e-7, err_msg=column)
    norm = online.xs("norm", level="scaling")
    np.testing.assert_allclose(norm.step_norm, cfg.probing.slice_norm_fraction * norm.theta_norm, rtol=1e-5)


# ------------------------------------------------------------------------------------------ Fig. 2c
def _slice_run(path, method, quantised_student):
    from fabricated_runs import run_config, schema_row

    from zsq_probe.rundir.store import RunDir

    run = RunDir(path)
    run.write_config(run_config(method))
    kinds = ["surrogate", "requantized"] if quantised_student else ["float"]
    for e in (1, 4, 8):
        rows = []
        for loss, curv, grad in (("ce", 40.0, 0.8 / e), ("kl", 6.0, 0.2 / e)):
            for scaling, step in (("gradient", grad), ("norm", 0.3)):
                for kind in kinds:
                    for k in np.linspace(-0.5, 0.5, 11):
                        s = k * step
                        value = 1.0 / e + 0.5 * curv * s**2 + (0.05 * np.round(8 * k) if kind == "requantized" else 0)
                        rows.append(
                            schema_row(
                                "slice",
                                run=run.name,
                                method=method,
                                epoch=e,
                                origin="online",
                                loss=loss,
                                loss_kind=kind,
                                direction="eigenvector",
                                scaling=scaling,
                                delta=step,
                                step_norm=step,
                                theta_norm=30.0,
                                k=k,
                                loss_value=value,
                                probe_batch_size=200,
                                seed=0,
                            )
                        )
        run.write_part("slice", rows, f"e{e:05d}")
    return run


def test_fig2c_common_scale_and_own_delta_panels(tmp_path):
    import matplotlib.text
    from PIL import Image

    from zsq_probe.plots import make_figure, plot_figure
    from zsq_probe.plots.style import DPI

    kd = _slice_run(tmp_path / "kd-run", "kd", quantised_student=False)
    zq = _slice_run(tmp_path / "zq-run", "gdfq", quantised_student=True)
    fig = make_figure("fig2c", [zq.path, kd.path])
    # readable in one 7 in text column: the file is at most 7 in wide, so no text shrinks below its size
    (path,) = plot_figure("fig2c", [zq.path, kd.path], tmp_path / "out")
    with Image.open(path) as image:
        width_in = image.size[0] / DPI
    assert 6.5 <= width_in <= 7.0
    texts = [t for t in fig.findobj(matplotlib.text.Text) if t.get_text().strip() and t.get_visible()]
    assert min(t.get_fontsize() for t in texts) >= 7
    rows = fig.subfigs
    assert len(rows) == 2 and "KD" in rows[0]._suptitle.get_text()  # KD first
    kd_axes, zq_axes = rows[0].axes, rows[1].axes
    assert [a.get_title() for a in zq_axes] == ["CE and KL, common scale", "CE, own δ scaling", "KL, own δ scaling"]
    common = zq_axes[0]
    assert "‖Δθ‖/‖θ‖ (%)" in common.get_xlabel() and "1 % of ‖θ‖" in common.get_xlabel()
    # CE and KL on one axis: 3 epochs each (surrogate), plus the re-quantised last epoch dashed
    assert len([ln for ln in common.lines if ln.get_linestyle() == "-"]) == 6 + 1  # + the zero line
    assert len([ln for ln in common.lines if ln.get_linestyle() == "--"]) == 2
    solid = [ln for ln in common.lines if ln.get_linestyle() == "-" and len(ln.get_xdata()) > 2]
    xs = np.concatenate([ln.get_xdata() for ln in solid])
    assert np.max(np.abs(xs)) == pytest.approx(100 * 0.5 * 0.3 / 30.0)
    for ax in zq_axes[1:]:
        label = ax.get_xlabel()
        assert "δ = ∂L/∂e" in label and label.startswith("k") and "of ‖θ‖" in label  # k and the step range
    assert "surrogate" in rows[1]._suptitle.get_text() and "re-quantised" in rows[1]._suptitle.get_text()
    assert "full-precision" in rows[0]._suptitle.get_text()
    assert not any(ln.get_linestyle() == "--" for ax in kd_axes for ln in ax.lines)
