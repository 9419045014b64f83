"""Probes observe without changing training, agree with direct computation, and post-hoc equals online."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from zsq_probe.cli import main
from zsq_probe.events import Observer
from zsq_probe.module_state import preserved_state
from zsq_probe.presets import resolve_config
from zsq_probe.probes import build_probes
from zsq_probe.quantization.losses import ce_to_labels, kl_to_teacher
from zsq_probe.rundir.store import RunDir, load_checkpoint_file
from zsq_probe.runs import train
from zsq_probe.runs.posthoc import probe_run
from zsq_probe.training import build_run

QUIET = {"progress": False}
SMALL = {
    "epochs": 2,
    "iters_per_epoch": 3,
    "batch_size": 16,
    "warmup_epochs": 0,
    "act_range_epochs": 1,
    "val_max_batches": 1,
    "val_batch_size": 64,
    "hessian_batch_size": 16,
    "hessian_every_epochs": 1,
    "probe_every_steps": 1,
    "hessian_vectors": 2,
    "trace_max_products": 24,  # the model-scope trace's budget (400 by default: minutes per probe on a CPU)
    "slq_runs": 1,
    "slq_steps": 6,
    "hessian_top_k": 2,
    "slice_points": 5,
}


def cfg_for(preset, probes=(), **extra):
    flags = dict(SMALL, probes=list(probes))
    flags.update(extra)
    return resolve_config(preset, teacher="digits", flags=flags)


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory, digits_teacher):
    """A short GDFQ run with every probe on (warnings about the small probe batch expected)."""
    out = tmp_path_factory.mktemp("probed") / "run"
    cfg = cfg_for(
        "gdfq",
        probes=["cosine", "inter_epoch", "crossings", "hessian", "slice"],
        slice_directions=["eigenvector", "random", "filter"],
        slice_scalings=["gradient", "unit"],
        probe_scopes=["model", "block", "layer"],
        hessian_every_epochs=2,  # the curvature probes at the last epoch only (the tests read epoch 2)
    )
    with pytest.warns(UserWarning, match="probe batch"):
        train(cfg, out, observers=build_probes(cfg), **QUIET)
    return out, cfg


def test_every_probe_table_is_written_with_its_columns(probed_run):
    from zsq_probe.rundir.schema import TABLES, require_columns

    out, cfg = probed_run
    rd = RunDir(out)
    for table in [
        "cosine",
        "inter_epoch",
        "crossings",
        "hessian_trace",
        "hessian_eigenvalues",
        "hessian_density",
        "slice",
        "metrics",
    ]:
        df = pd.read_parquet(out / "probes" / table)  # readable whole without our code
        require_columns(df, table)
        assert set(df.columns) - {"schema_version"} <= set(TABLES[table]), table
        assert (df["run"] == rd.name).all()


def test_cosine_rows_match_the_definition(probed_run):
    out, cfg = probed_run
    df = pd.read_parquet(out / "probes" / "cosine")
    steps = df[(df.statistic == "step") & (df.scope == "model")]
    assert len(steps) == cfg.epochs * cfg.iters_per_epoch
    assert ((steps.cosine >= -1) & (steps.cosine <= 1)).all()
    np.testing.assert_allclose(np.cos(np.radians(steps.angle_deg)), steps.cosine, atol=1e-9)
    mean = df[(df.statistic == "epoch_mean") & (df.scope == "model")].set_index("epoch").cosine
    np.testing.assert_allclose(mean.values, steps.groupby("epoch").cosine.mean().values)
    # per-layer dot products add up to the model's: check via norms (sum of squares)
    layer = df[(df.statistic == "step") & (df.scope == "layer")]
    sq = layer.groupby(["epoch", "step"]).grad_norm_ce.apply(lambda s: math.sqrt((s**2).sum()))
    np.testing.assert_allclose(
        sq.values, steps.set_index(["epoch", "step"]).grad_norm_ce.loc[sq.index].values, rtol=1e-6
    )
    assert set(df[df.scope == "block"].group) >= {"features.init_block", "features.stage1.unit1", "output"}


def test_checkpoint_cosine_equals_a_direct_computation(probed_run, digits_teacher):
    out, cfg = probed_run
    from zsq_probe.runs.posthoc import open_run

    run, ctx = open_run(out)
    ctx.load_checkpoint(2)
    batch = ctx.probe_batch(2, cfg.probing.batch_size)
    student = ctx.student
    logits = student(batch.inputs)
    g_ce = torch.autograd.grad(ce_to_labels(logits, batch.labels), ctx.params, retain_graph=True)
    g_kl = torch.autograd.grad(kl_to_teacher(logits, batch.teacher_logits, cfg.temperature), ctx.params)
    a = torch.cat([g.reshape(-1) for g in g_ce]).double()
    b = torch.cat([g.reshape(-1) for g in g_kl]).double()
    expected = float(a @ b / (a.norm() * b.norm()))
    df = pd.read_parquet(out / "probes" / "cosine")
    online = df[(df.statistic == "checkpoint") & (df.scope == "model") & (df.epoch == 2)].cosine.item()
    assert online == pytest.approx(expected, rel=1e-5)


def test_posthoc_equals_online_for_the_same_checkpoint(probed_run, tmp_path):
    import shutil

    out, cfg = probed_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    for probe in ("hessian", "slice", "cosine"):  # each probe once: hessian writes both of its tables below
        with pytest.warns(UserWarning) if probe != "cosine" else _nothing():
            probe_run(copy, probe, epochs=[2], overwrite=True)
    for table, keys, value in [
        ("hessian_trace", ["epoch", "loss", "scope", "group", "estimator"], "trace"),
        ("hessian_eigenvalues", ["epoch", "loss", "rank"], "eigenvalue"),
        ("slice", ["epoch", "loss", "loss_kind", "direction", "scaling", "k"], "loss_value"),
        ("cosine", ["epoch", "scope", "group"], "cosine"),
    ]:
        df = pd.read_parquet(copy / "probes" / table)
        if table == "cosine":
            df = df[df.statistic == "checkpoint"]
        online = df[(df.origin == "online") & (df.epoch == 2)].set_index(keys)[value].sort_index()
        post = df[(df.origin == "posthoc") & (df.epoch == 2)].set_index(keys)[value].sort_index()
        assert len(online) and online.index.equals(post.index), table
        np.testing.assert_allclose(post.values, online.values, rtol=1e-4, atol=1e-6, err_msg=table)


class _nothing:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def test_crossings_count_code_changes(probed_run):
    out, cfg = probed_run
    df = pd.read_parquet(out / "probes" / "crossings")
    steps = df[df.statistic == "step"]
    totals = df[df.statistic == "epoch_total"].set_index(["epoch", "layer"])
    summed = steps.groupby(["epoch", "layer"]).changed.sum()
    assert (summed == totals.changed.loc[summed.index]).all()
    assert (totals.steps == cfg.iters_per_epoch).all()
    np.testing.assert_allclose(totals.share, totals.changed / (totals.layer_size * totals.steps))
    # the net change between checkpoints is at most the sum of per-step changes
    rd = RunDir(out)
    from zsq_probe.quantization.quantizer import integer_codes_of

    s1, s2 = (load_checkpoint_file(rd.checkpoints()[e])["student"] for e in (1, 2))
    layer = "features.init_block.conv"
    net = (
        integer_codes_of(s1[layer + ".weight"], cfg.quant.w_bits)
        != integer_codes_of(s2[layer + ".weight"], cfg.quant.w_bits)
    ).sum()
    assert int(net) <= int(summed.loc[(2, layer)])


def test_posthoc_crossings_between_checkpoints(probed_run, tmp_path):
    import shutil

    from zsq_probe.quantization.quantizer import integer_codes_of

    out, cfg = probed_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    df = probe_run(copy, "crossings")
    rd = RunDir(copy)
    s1, s2 = (load_checkpoint_file(rd.checkpoints()[e])["student"] for e in (1, 2))
    row = df[(df.epoch == 2) & (df.layer == "output")].iloc[0]
    expected = integer_codes_of(s1["output.weight"], cfg.quant.w_bits) != integer_codes_of(
        s2["output.weight"], cfg.quant.w_bits
    )
    assert row.changed == int(expected.sum()) and row.statistic == "checkpoint_diff"
    # the online epoch total's net change is the post-hoc net level change between the two checkpoints
    online = pd.read_parquet(out / "probes" / "crossings")
    total = online[(online.statistic == "epoch_total") & (online.epoch == 2)].set_index("layer")
    posthoc = df[df.epoch == 2].set_index("layer")
    assert (total.changed_net == posthoc.changed_net.loc[total.index]).all()
    assert (total.changed_net <= total.changed_weights).all() and (total.changed_weights <= total.changed_level).all()


class _Parts:
    """A stand-in run store that keeps the parts written to it."""

    name = "fake"

    def __init__(self):
        self.rows = []

    def write_part(self, table, rows, key):
        self.rows += rows


def test_crossings_flip_and_flip_back_is_two_step_changes_no_net_change_one_weight():
    from zsq_probe.events import ProbeContext, StepEvent
    from zsq_probe.probes.crossings import CrossingsProbe
    from zsq_probe.quantization.quantizer import QuantLinear, quantized_layers

    model = torch.nn.Sequential(QuantLinear(4, 2, w_bits=8))
    with torch.no_grad():  # per channel min 0, max 1: scale 255, zero point 128 whatever the middle weights do
        model[0].weight.copy_(torch.tensor([[0.0, 1.0, 0.2, 0.6], [0.0, 1.0, 0.4, 0.8]]))
    original = model[0].weight.detach().clone()
    run = _Parts()
    ctx = ProbeContext(
        cfg=resolve_config("kl-only", teacher="digits"),
        run=run,
        student=model,
        teacher=model,
        param_names=[],
        params=[],
        quant_layers=quantized_layers(model),
        device=torch.device("cpu"),
        iterations_per_epoch=3,
        draw_probe_batch=None,
    )
    probe = CrossingsProbe(ctx.cfg)
    probe.on_train_start(ctx)
    up = original.clone()
    up[0, 2] += 1.0 / 255  # one code up ...
    moved = original.clone()
    moved[1, 3] += 1.0 / 255
    for epoch, weights in ((1, [up, original, original]), (2, [moved, moved, moved])):  # ... and back down
        probe.on_epoch_start(ctx, epoch)
        for step, w in enumerate(weights):
            with torch.no_grad():
                model[0].weight.copy_(w)
            event = StepEvent(epoch, step, 3 * (epoch - 1) + step, None, None, None, None, {}, True)
            probe.on_step(ctx, event)
        probe.on_epoch_end(ctx, epoch, {"gi_p": float("nan")})
    df = pd.DataFrame(run.rows)
    steps = df[df.statistic == "step"]
    assert list(steps[steps.epoch == 1].changed) == [1, 1, 0] and (steps.changed_net == -1).all()
    assert (steps.changed_weights == -1).all()
    totals = df[df.statistic == "epoch_total"].set_index("epoch")
    assert totals.loc[1, ["changed", "changed_level", "changed_net", "changed_weights"]].tolist() == [2, 2, 0, 1]
    assert totals.loc[2, ["changed", "changed_level", "changed_net", "changed_weights"]].tolist() == [1, 1, 1, 1]


def test_inter_epoch_cosine_is_between_epoch_means(tmp_path, digits_teacher):
    cfg = cfg_for("kl-only", probes=["inter_epoch"], epochs=3)
    grads = {}

    class Record(Observer):
        name = "record"

        def wants_term_gradients(self, epoch, step):
            return True

        def on_step(self, trainer, event):
            flat = torch.cat([g.reshape(-1) for g in event.term_grads["kl"]]).double()
            grads.setdefault(event.epoch, []).append(flat)

    train(cfg, tmp_path / "r", observers=build_probes(cfg) + [Record()], **QUIET)
    df = pd.read_parquet(tmp_path / "r" / "probes" / "inter_epoch").set_index("epoch")
    means = {e: torch.stack(g).mean(0) for e, g in grads.items()}
    for e in (2, 3):
        expected = float(means[e] @ means[e - 1] / (means[e].norm() * means[e - 1].norm()))
        assert df.loc[e, "cosine"] == pytest.approx(expected, rel=1e-6)
    assert 1 not in df.index  # no previous epoch to compare with


def test_preserved_state_restores_modes_buffers_and_ranges(digits_teacher, tmp_path):
    cfg = cfg_for("kd")
    student = build_run(cfg).student.train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    with preserved_state(student, mode="eval"):
        student.train()
        student(torch.randn(8, 1, 16, 16))  # moves BN running statistics
    assert student.training
    after = student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_posthoc_cli_prints_and_writes(tmp_path, digits_teacher, capsys):
    out = tmp_path / "r"
    assert (
        main(
            [
                "train",
                "--preset",
                "gdfq",
                "--out",
                str(out),
                "--epochs",
                "2",
                "--iters-per-epoch",
                "2",
                "--batch-size",
                "16",
                "--set",
                "warmup_epochs=0",
                "--set",
                "val_max_batches=1",
                "--set",
                "hessian_batch_size=32",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["cosine", "--run", str(out)]) == 0
    text = capsys.readouterr().out
    assert "cosine" in text and (out / "probes" / "cosine").is_dir()
    df = pd.read_parquet(out / "probes" / "cosine")
    assert sorted(df.epoch.unique()) == [1, 2] and (df.origin == "posthoc").all()  # epoch 0: no ranges yet
    assert main(["cosine", "--run", str(out), "--json"]) == 0
    import json

    records = json.loads(capsys.readouterr().out)
    assert [r["epoch"] for r in records] == [1, 2]
    assert main(["crossings", "--run", str(out), "--epochs", "2"]) == 0
    assert main(["cosine", "--run", str(tmp_path)]) == 2  # not a run: one-line error
    assert "not a zsq-probe run" in capsys.readouterr().err


def test_crossings_agree_with_gi_counts_and_levels(tmp_path, digits_teacher):
    cfg = cfg_for("ait", probes=["crossings"], epochs=1)
    seen = []

    class Record(Observer):
        name = "record"

        def on_step(self, trainer, event):
            seen.append((event.step, dict(event.gi["changed"]), dict(event.gi["kappa"])))

    train(cfg, tmp_path / "r", observers=build_probes(cfg) + [Record()], **QUIET)
    df = pd.read_parquet(tmp_path / "r" / "probes" / "crossings")
    steps = df[df.statistic == "step"].set_index(["step", "layer"])
    for step, changed, kappa in seen:
        for layer, n in changed.items():
            assert steps.loc[(step, layer), "changed"] == n  # the probe's own count equals GI's
            assert steps.loc[(step, layer), "kappa"] == kappa[layer]
    assert (steps.changed_level <= steps.layer_size).all() and (steps.changed_level >= 0).all()
