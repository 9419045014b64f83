"""Run folders fabricated from numbers known in advance (no training): every table of schema.TABLES,
the paper's pattern in each (KD cosine above zero, ZQ below; KL flatter than CE; ...).  Used by the
figure, compare and wheel tests."""

import os
from unittest import mock

import numpy as np

from zsq_probe.rundir.schema import TABLES
from zsq_probe.rundir.store import RunDir

EPOCHS = [1, 2, 3, 4, 5, 6]
STEPS = 10
LAYERS = [("conv1", 144), ("stage1.conv", 2304), ("fc", 640)]


def schema_row(table, **values):
    """A full schema row: every column of `table`, the given values, neutral defaults elsewhere."""
    row = dict.fromkeys(TABLES[table], np.nan)
    row.update(values)
    return row


_row = schema_row


def flat_config(method, **extra) -> dict:
    """A run config as flat keys (`--set` names); `run_config` nests them as config.json holds them."""
    cfg = {
        "method": method,
        "preset": method,
        "teacher": "digits",
        "data": "digits",
        "w_bits": 3,
        "a_bits": 3,
        "temperature": 20.0,
        "gi": False,
        "gi_p": 0.01,
        "source": "generator",
        "generator": "gdfq",
        "epochs": len(EPOCHS),
    }
    cfg.update(extra)
    return cfg


def run_config(method, **extra) -> dict:
    """The same config as `zsq-probe train` writes it today: nested sections, every field."""
    from zsq_probe.config import RunConfig

    return RunConfig.from_flat(flat_config(method, **extra)).to_dict()


# fabricated runs need no durability: the store's fsyncs were half of make_run's time on a busy disk
@mock.patch.object(os, "fsync", lambda fd: None)
def make_run(
    path,
    method,
    cos_center,
    trace_scale,
    kl_scale,
    gi=False,
    seed=0,
    source="generator",
    tables=("metrics", "cosine", "inter_epoch", "crossings", "hessian_trace", "hessian_density", "slice"),
    epochs=None,
    warmup=0,
    gi_p=None,
    **config,
):
    """A run folder with every table of schema.TABLES (or those in `tables`); returns (run, step cosines).
    `epochs`: the epochs
    (default EPOCHS); `warmup`: warm-up epochs without student steps (no cosine rows there); `gi_p`: GI's p per
    epoch (a function of the epoch; default 0.01); `config`: further flat config keys."""
    epoch_list = list(EPOCHS if epochs is None else epochs)
    p_of = gi_p or (lambda e: 0.01)
    rng = np.random.default_rng(seed)
    run = RunDir(path)
    extra = {"epochs": len(epoch_list), **({"warmup_epochs": warmup} if warmup else {}), **config}
    run.write_config(
        run_config(method, gi=gi, source=source, generator="gdfq" if source == "generator" else "none", **extra)
    )
    name = run.name
    common = {"run": name, "method": method}
    step_cos = {}
    for e in epoch_list:
        parts = {t: [] for t in TABLES}
        parts["metrics"].append(
            _row(
                "metrics",
                **common,
                epoch=e,
                preset=method,
                iterations=STEPS,
                student_stepped=e > 1,
                act_ranges_frozen=e > 2,
                loss_kl=0.01 / e,
                loss_kl_scaled=4.0 / e,
                loss_ce=1.0 / e,
                loss_student=5.0 / e,
                lr=1e-3,
                gi_p=p_of(e) if gi else np.nan,
                skipped_steps=0,
                val_top1=0.5 + 0.05 * e,
                val_ce=2.0 - 0.1 * e,
                wall_time_s=1.0,
            )
        )
        cos = np.clip(rng.normal(cos_center, 0.15, STEPS), -1, 1)
        step_cos[e] = cos
        for s, c in enumerate(cos if e > warmup else []):
            parts["cosine"].append(
                _row(
                    "cosine",
                    **common,
                    epoch=e,
                    step=s,
                    global_step=(e - 1) * STEPS + s,
                    statistic="step",
                    origin="online",
                    scope="model",
                    group="all",
                    cosine=c,
                    grad_norm_ce=1.0,
                    grad_norm_kl=0.1,
                    angle_deg=np.degrees(np.arccos(c)),
                    batch_size=64,
                )
            )
            # a layer-scope row that must not enter model-level numbers
            parts["cosine"].append(
                _row(
                    "cosine",
                    **common,
                    epoch=e,
                    step=s,
                    global_step=(e - 1) * STEPS + s,
                    statistic="step",
                    origin="online",
                    scope="layer",
                    group="fc",
                    cosine=-0.99,
                    grad_norm_ce=1.0,
                    grad_norm_kl=0.1,
                    angle_deg=172.0,
                    batch_size=64,
                )
            )
        parts["cosine"].append(
            _row(
                "cosine",
                **common,
                epoch=e,
                step=-1,
                global_step=-1,
                statistic="epoch_mean",
                origin="online",
                scope="model",
                group="all",
                cosine=cos.mean(),
                grad_norm_ce=1.0,
                grad_norm_kl=0.1,
                angle_deg=np.degrees(np.arccos(cos)).mean(),
                batch_size=64,
            )
        )
        if e <= warmup:  # the student does not step: no gradient cosine
            parts["cosine"] = []
        if e > max(1, warmup + 1):
            parts["inter_epoch"].append(
                _row(
                    "inter_epoch",
                    **common,
                    epoch=e,
                    cosine=0.9 if cos_center < 0 else 0.2,
                    grad_norm=1.0,
                    previous_grad_norm=1.0,
                    steps_averaged=STEPS,
                )
            )
        if e > max(1, warmup):
            for li, (layer, size) in enumerate(LAYERS):
                changed = (li + 1) * max(7 - e, 0) * 3 if not gi else int(0.01 * size * STEPS) + li
                level = changed // 3 if li == 0 else changed  # the first layer's zero points flip back and forth
                parts["crossings"].append(
                    _row(
                        "crossings",
                        **common,
                        epoch=e,
                        step=-1,
                        global_step=-1,
                        statistic="epoch_total",
                        origin="online",
                        layer=layer,
                        changed=changed,
                        changed_level=level,
                        changed_net=level // 2,
                        changed_weights=level,
                        layer_size=size,
                        share=changed / (size * STEPS),
                        kappa=4.0 if gi else np.nan,
                        gi_flag="",
                        gi_p=p_of(e) if gi else np.nan,
                        steps=STEPS,
                    )
                )
        for loss, scale in (("ce", trace_scale), ("kl", kl_scale)):
            for est in ("hutchinson", "slq"):
                tr = scale * (1 + 0.1 * e) * (1.0 if est == "hutchinson" else 1.05)
                parts["hessian_trace"].append(
                    _row(
                        "hessian_trace",
                        **common,
                        epoch=e,
                        origin="online",
                        loss=loss,
                        scope="model",
                        group="all",
                        estimator=est,
                        trace=tr,
                        stderr=0.05 * tr,
                        num_vectors=20,
                        num_hvps=20,
                        num_params=3088,
                        probe_batch_size=128,
                        probe_batch_source="generator",
                        seed=0,
                    )
                )
            nodes = np.concatenate([rng.normal(0, 0.05 * scale, 12), [scale * 2.0, scale * 3.0]])
            w = np.full(nodes.size, 1.0 / nodes.size)
            for i, (nd, wt) in enumerate(zip(nodes, w)):
                parts["hessian_density"].append(
                    _row(
                        "hessian_density",
                        **common,
                        epoch=e,
                        origin="online",
                        loss=loss,
                        slq_run=i // 7,
                        node=nd,
                        weight=wt,
                        probe_batch_size=128,
                        seed=0,
                    )
                )
            for k in np.linspace(-0.5, 0.5, 11):
                curvature = (7 - e) * (1.0 if loss == "ce" else 0.2)  # KL flatter, as in the paper
                parts["slice"].append(
                    _row(
                        "slice",
                        **common,
                        epoch=e,
                        origin="online",
                        loss=loss,
                        direction="eigenvector",
                        scaling="gradient",
                        delta=0.1,
                        k=k,
                        loss_value=scale * (1.0 / e + k**2 * curvature),
                        probe_batch_size=128,
                        seed=0,
                    )
                )
        for table, rows in parts.items():
            if table in tables and rows:
                run.write_part(table, rows, f"e{e:05d}")
    return run, step_cos


def paper_runs(root) -> dict:
    """A KD, a GDFQ (with a generator checkpoint at the last epoch, for Fig. 6) and an AIT run under `root`:
    {"kd", "zq", "ait": RunDir, "kd_cos", "zq_cos": their step cosines per epoch, "root"}."""
    import torch

    from zsq_probe.generators import build_generator

    kd, kd_cos = make_run(root / "kd-run", "kd", cos_center=0.3, trace_scale=8.0, kl_scale=2.0, seed=1, source="real")
    zq, zq_cos = make_run(root / "zq-run", "gdfq", cos_center=-0.1, trace_scale=12.0, kl_scale=0.5, seed=2)
    ait, _ = make_run(root / "ait-run", "ait", cos_center=0.2, trace_scale=6.0, kl_scale=0.3, gi=True, seed=3)
    torch.manual_seed(0)
    gen = build_generator("gdfq", 10, (1, 16, 16))
    zq.save_checkpoint(EPOCHS[-1], {"student": {}, "generator": gen.state_dict(), "config": run_config("gdfq")})
    return {"kd": kd, "zq": zq, "ait": ait, "kd_cos": kd_cos, "zq_cos": zq_cos, "root": root}
