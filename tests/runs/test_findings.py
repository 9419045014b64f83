"""The demo's findings follow one rule (issue 14): a difference counts only when the intervals do not overlap
(seed interval [min, max] with >= 2 seeds, or the trace estimator's 95 % interval), F4 compares the paper's
pairs (AIT vs GDFQ, KL-only vs GDFQ), F3 reads layers below p -- and a run without GI is read against the GI
run's p."""

from __future__ import annotations

import math

import pandas as pd

from zsq_probe.runs.demo import HIGH_LR, crossing_stats, findings_text, seed_stats


def _crossings(changed, size=1000, steps=10, p=float("nan"), epoch=12, level=None, net=None):
    level = changed if level is None else level
    return pd.DataFrame(
        [
            {
                "epoch": epoch,
                "statistic": "epoch_total",
                "layer": f"l{i}",
                "changed": c,
                "changed_level": lv,
                "changed_net": n,
                "changed_weights": lv,
                "layer_size": size,
                "steps": steps,
                "share": c / (size * steps),
                "gi_p": p,
            }
            for i, (c, lv, n) in enumerate(zip(changed, level, net or [0] * len(changed)))
        ]
    )


def test_crossing_stats_by_hand_and_a_run_without_gi_against_the_gi_runs_p():
    ait = crossing_stats(_crossings([5, 1, 0], p=2e-4), [12])  # shares 5e-4, 1e-4, 0 against p = 2e-4
    assert ait["layers_below_p"] == 2 and ait["layers_without_level_change"] == 1 and ait["p_by_epoch"] == {12: 2e-4}
    assert math.isclose(ait["level_share_per_step"], 6 / 30000)
    plain = _crossings([30, 0, 1])
    assert crossing_stats(plain, [12])["layers_below_p"] is None  # no GI and no p given: nothing to compare with
    high_lr = crossing_stats(plain, [12], {12: 2e-4})  # 3e-3, 0, 1e-4 against AIT's p
    assert high_lr["layers_below_p"] == 2 and high_lr["p_by_epoch"] == {12: 2e-4}


def test_crossing_stats_read_levels_and_net_changes_over_a_window_per_epoch_p():
    """Zero-point flips (codes q changed, grid levels not) are not counted as updates; each epoch of the window
    counts once (mean over epochs), an epoch outside it not at all, and each epoch is read against its own p."""
    table = pd.concat(
        [
            _crossings([70, 10], p=1e-3, epoch=3, level=[7, 10], net=[3, 4]),  # layer 0: 63 zero-point flips
            _crossings([20, 0], p=1e-4, epoch=4, level=[20, 0], net=[10, 0]),
            _crossings([900, 900], p=1e-3, epoch=2, level=[900, 900], net=[900, 900]),  # outside the window
        ]
    )
    st = crossing_stats(table, [3, 4])
    assert st["epochs"] == [3, 4] and st["p_by_epoch"] == {3: 1e-3, 4: 1e-4}
    assert math.isclose(st["level_share_per_step"], (17 / 20000 + 20 / 20000) / 2)
    assert math.isclose(st["code_share_per_step"], (80 / 20000 + 20 / 20000) / 2)
    assert math.isclose(st["net_share_per_epoch"], (7 / 2000 + 10 / 2000) / 2)
    # epoch 3: level shares 7e-4 (below 1e-3) and 1e-3; epoch 4: 2e-3 and 0 (below 1e-4): at most 1 a epoch;
    # in codes q layer 0 is at 7e-3 in epoch 3, above p: the zero-point flips would have hidden it
    assert st["layers_below_p"] == 1 and st["code_layers_below_p"] == 1 and st["layers_without_level_change"] == 0.5
    old = table.drop(columns=["changed_net", "changed_weights"])  # a table of schema version 1
    assert crossing_stats(old, [3, 4])["net_share_per_epoch"] is None


def _f3_run(shares, below, p=(1e-3, 1e-5), **extra):
    out = {
        "layers": 10,
        "p_values": list(p),
        "gi_rule": None,
        "lr": 1e-3,
        "lr_factor": 1.0,
        "skipped_steps": [0] * len(shares),
        "level_share_per_step": seed_stats(shares),
        "code_share_per_step": seed_stats([3 * x for x in shares]),
        "net_share_per_epoch": seed_stats([10 * x for x in shares]),
        "layers_without_level_change": [5.0] * len(shares),
        "layers_below_p": list(below),
        "code_layers_below_p": [0] * len(shares),
    }
    out.update(extra)
    return out


def _findings(ait_top1, gdfq_top1, kl_top1, ait_below=(0, 0), gdfq_level=(8e-5, 9e-5), high_lr_level=(2e-4, 3e-4)):
    def hessian(ce, kl):
        return {
            "estimator": "hutch++",
            "last_epoch": 12,
            "last_trace_ce": ce,
            "last_ci_low_ce": 0.95 * ce,
            "last_ci_high_ce": 1.05 * ce,
            "last_trace_kl": kl,
            "last_ci_low_kl": 0.95 * kl,
            "last_ci_high_kl": 1.05 * kl,
            "last_kl_over_ce_range": [0.95 * kl / (1.05 * ce), 1.05 * kl / (0.95 * ce)],
        }

    return {
        "ptq": {"fp_top1": 0.985, "quant_top1": 0.55, "w_bits": 3, "a_bits": 3},
        "F1": {
            "epochs": list(range(3, 13)),
            "kd": {"mean_epoch_cosine": seed_stats([0.2, 0.22]), "share_negative": seed_stats([0.2, 0.3])},
            "gdfq": {"mean_epoch_cosine": seed_stats([-0.3, -0.1]), "share_negative": seed_stats([0.6, 0.7])},
        },
        "F2": {"kd": hessian(150, 330), "gdfq": hessian(1100, 220)},
        "F3": {
            "epochs": list(range(3, 13)),
            "gdfq": _f3_run(gdfq_level, [3, 3]),
            "kl-only": _f3_run([4e-5, 5e-5], [8, 7]),
            "ait": _f3_run([3e-4, 1e-3], ait_below, gi_rule="ours", lr=1e-3),
            HIGH_LR: _f3_run(high_lr_level, [6, 4], lr=1e-2, lr_factor=10.0, skipped_steps=[0, 2]),
        },
        "F4": {
            "gdfq": {"final_val_top1": seed_stats(gdfq_top1), "final_kl_scaled": seed_stats([0.04, 0.05])},
            "kl-only": {"final_val_top1": seed_stats(kl_top1), "final_kl_scaled": seed_stats([0.04, 0.04])},
            "ait": {"final_val_top1": seed_stats(ait_top1), "final_kl_scaled": seed_stats([0.03, 0.03])},
            "kd": {"final_val_top1": seed_stats([0.99, 0.99]), "final_kl_scaled": seed_stats([0.01, 0.01])},
        },
        "differences": {
            "F1": {"kd vs gdfq": {"lr": {"kd": 0.05, "gdfq": 0.001}, "warmup_epochs": {"kd": 0, "gdfq": 2}}},
            "F3": {"kl-only vs kl-only-high-lr": {"lr": {"kl-only": 0.001, HIGH_LR: 0.01}}},
        },
    }


def _verdicts(text: str) -> dict:
    out, current = {}, None
    for line in text.splitlines():
        if line[:2] in ("F1", "F2", "F3", "F4"):
            current = line[:2]
        elif line.strip().startswith("->"):
            out[current] = line.strip()[3:]
    return out


def test_every_verdict_follows_the_interval_rule_on_the_papers_pairs():
    text = findings_text(_findings(ait_top1=[0.93, 0.94], gdfq_top1=[0.88, 0.90], kl_top1=[0.80, 0.82]))
    v = _verdicts(text)
    assert v["F1"].startswith("holds")
    assert v["F3"] == (
        "KL-only below GDFQ (Fig. 3c): holds; AIT above KL-only with no layer below p (Fig. 4c/d): holds; "
        "KL-only at 10x lr (0.01) above KL-only yet with layers below AIT's p (Fig. 4a/b): holds (most layers "
        "below p in any epoch per seed [6, 4])."
    )
    assert "KL flatter in ZQ: holds" in v["F2"] and "larger gap in ZQ than KD: holds" in v["F2"]
    assert v["F4"].startswith("AIT above GDFQ: holds; KL-only below GDFQ: holds")
    # both sides over the same student epochs; what holds by construction and every other difference is said
    assert text.count("over student epochs 3-12") == 2 and "100x lr" not in text.split("F3 (paper")[1][300:]
    assert "by construction: GI (gi_rule=ours)" in text and "zero-point flips excluded" in text
    assert "other differences, kd vs gdfq: lr: kd 0.05, gdfq 0.001; warmup_epochs: kd 0, gdfq 2 (by design" in text
    assert f"other differences, kl-only vs {HIGH_LR}: lr: kl-only 0.001, {HIGH_LR} 0.01." in text
    assert "skipped (non-finite) steps per seed [0, 2]" in text
    # the paper's Fig. 3c contrast can fail on its own: KL-only changing more levels than GDFQ
    v = _verdicts(
        findings_text(
            _findings(ait_top1=[0.93, 0.94], gdfq_top1=[0.88, 0.9], kl_top1=[0.8, 0.82], gdfq_level=(5e-6, 6e-6))
        )
    )
    assert v["F3"].startswith("KL-only below GDFQ (Fig. 3c): does not hold (KL-only changes more)")
    # a high lr changing fewer levels than KL-only does not hold, whatever its layers below p
    v = _verdicts(
        findings_text(
            _findings(ait_top1=[0.93, 0.94], gdfq_top1=[0.88, 0.9], kl_top1=[0.8, 0.82], high_lr_level=(1e-5, 2e-5))
        )
    )
    assert "(Fig. 4a/b): does not hold (fewer changes than KL-only)" in v["F3"]
    # KL-only ahead of GDFQ (the demo's own outcome) is reported against the paper, not as a win for AIT
    v = _verdicts(findings_text(_findings(ait_top1=[0.93, 0.94], gdfq_top1=[0.82, 0.89], kl_top1=[0.91, 0.93])))
    assert "KL-only below GDFQ: does not hold" in v["F4"]
    # overlapping seed intervals: no difference is called, however large the gap of the means
    v = _verdicts(findings_text(_findings(ait_top1=[0.80, 0.99], gdfq_top1=[0.78, 0.81], kl_top1=[0.60, 0.79])))
    assert v["F4"].startswith("AIT above GDFQ: inconclusive") and "KL-only below GDFQ: inconclusive" in v["F4"]
    # one seed a side: no interval, inconclusive
    v = _verdicts(findings_text(_findings(ait_top1=[0.95], gdfq_top1=[0.80], kl_top1=[0.70])))
    assert v["F4"].startswith("AIT above GDFQ: inconclusive")
    # F3 reads layers below p: AIT moving more levels is not enough when a layer stays below p
    v = _verdicts(
        findings_text(_findings(ait_top1=[0.93, 0.94], gdfq_top1=[0.88, 0.90], kl_top1=[0.80, 0.82], ait_below=(0, 2)))
    )
    assert "AIT above KL-only with no layer below p (Fig. 4c/d): partly" in v["F3"]


def test_demo_high_lr_runs_share_the_others_schedule_and_seeds():
    from zsq_probe.config import config_diff
    from zsq_probe.runs.demo import DEMO_SEEDS, demo_plan

    plan = demo_plan("cpu", 0)
    assert [k for k in plan if k.startswith(HIGH_LR)] == [f"{HIGH_LR}-s{s}" for s in range(DEMO_SEEDS)]
    for s in range(DEMO_SEEDS):
        kl, hi = plan[f"kl-only-s{s}"], plan[f"{HIGH_LR}-s{s}"]
        diff = set(config_diff(kl, hi)) - {"preset", "method", "probes"}
        assert diff == {"lr", "on_nonfinite"}, diff  # iterations, warm-up, calibration, seed: the same
        assert hi.optim.lr == 10 * kl.optim.lr and hi.on_nonfinite == "skip"


def test_demo_curvature_probes_on_the_fig2_pair_and_zero_shot_runs_alike():
    """Fig. 2 and F2 contrast KD with GDFQ (paper §3.2): only their first seeds carry the Hessian and slice
    probes; KL-only and AIT keep the cosine, inter-epoch and crossings probes.  Every zero-shot run takes the
    demo's 16 iterations per epoch; KD keeps its one pass over the real split."""
    from zsq_probe.runs.demo import DEMO_RUNS, DEMO_SEEDS, demo_plan

    plan = demo_plan("cpu", 0)
    assert len(plan) == len(DEMO_RUNS) * DEMO_SEEDS + DEMO_SEEDS
    for name in ("kd-s0", "gdfq-s0"):
        assert {"hessian", "slice"} <= set(plan[name].get("probes")), name
    for name in ("kl-only-s0", "ait-s0"):
        assert set(plan[name].get("probes")) == {"cosine", "inter_epoch", "crossings"}, name
    for name, cfg in plan.items():
        assert cfg.get("iters_per_epoch") == (0 if name.startswith("kd-") else 16), name
        if not name.endswith("-s0"):
            assert not {"hessian", "slice", "inter_epoch"} & set(cfg.get("probes")), name


def _stepping_from_epoch_1(run):
    """Rewrite a fabricated run's metrics as a KD run's: its student steps from the first epoch (no warm-up)."""
    m = run.read_table("metrics").drop(columns=["schema_version"])
    for e, rows in m.groupby("epoch"):
        run.write_part("metrics", rows.assign(student_stepped=True), f"e{int(e):05d}")


def test_f1_and_f3_read_every_run_over_the_same_student_epochs(tmp_path):
    from fabricated_runs import LAYERS, STEPS, make_run

    from zsq_probe.runs.demo import _measure_f1, _measure_f3, common_student_epochs

    def seeds(method, **kw):
        # only the tables F1 and F3 read (epochs from metrics)
        tables = ("metrics", "cosine", "crossings")
        return [
            make_run(tmp_path / f"{method}-s{i}", method, seed=10 * i + len(method), tables=tables, **kw)[0]
            for i in range(2)
        ]

    groups = {
        "kd": seeds("kd", cos_center=0.3, trace_scale=8.0, kl_scale=2.0, source="real"),
        "gdfq": seeds("gdfq", cos_center=-0.1, trace_scale=12.0, kl_scale=0.5),
        "kl-only": seeds("kl-only", cos_center=0.0, trace_scale=6.0, kl_scale=0.5),
        "ait": seeds("ait", cos_center=0.1, trace_scale=6.0, kl_scale=0.3, gi=True),
    }
    for r in groups["kd"]:
        _stepping_from_epoch_1(r)
    epochs = common_student_epochs(groups["kd"] + groups["gdfq"])
    assert epochs == [2, 3, 4, 5, 6]  # the ZQ runs' first epoch is warm-up: KD is read from epoch 2 too
    f1 = _measure_f1(groups, epochs)
    for r, value in zip(groups["kd"], f1["kd"]["mean_epoch_cosine"]["values"]):
        cos = r.read_table("cosine")
        means = cos[(cos.statistic == "epoch_mean") & (cos.scope == "model")].set_index("epoch")["cosine"]
        assert math.isclose(value, means.loc[epochs].mean()) and not math.isclose(value, means.mean())
    f3 = _measure_f3(groups, epochs)
    assert f3["epochs"] == epochs and f3["ait"]["p_values"] == [0.01] and f3["ait"]["skipped_steps"] == [0, 0]
    by_hand = []  # fabricated: codes changed (i+1)*(7-e)*3 per layer, the first layer's levels a third of them
    for e in epochs:
        levels = [(i + 1) * (7 - e) * 3 // (3 if i == 0 else 1) for i in range(len(LAYERS))]
        by_hand.append(sum(levels) / sum(size * STEPS for _, size in LAYERS))
    assert f3["kl-only"]["level_share_per_step"]["values"] == [sum(by_hand) / len(by_hand)] * 2
    assert f3["kl-only"]["layers_below_p"] == [3, 3]  # read against AIT's p = 0.01
    # AIT's first layer: 14 codes q (4 levels) of its 1440 (weight, step) pairs change: below p = 0.01 in both
    assert f3["ait"]["layers_below_p"] == [1, 1] and f3["ait"]["code_layers_below_p"] == [1, 1]
    assert f3["ait"]["gi_rule"] == "ours" and f3["kl-only"]["gi_rule"] is None


def test_the_demo_names_only_the_probes_whose_tables_a_run_writes(tmp_path, digits_teacher, caplog):
    """The demo's run lines list the probes each run carries: a short run of each second-seed config (cosine and
    crossings named) writes exactly those probes' tables -- no crossings for the KD baseline's float student."""
    import logging

    from zsq_probe.probe_registry import BUILTIN_PROBES
    from zsq_probe.rundir.store import RunDir
    from zsq_probe.runs import train
    from zsq_probe.runs.demo import demo_plan, run_probes

    plan = demo_plan("cpu", 0)
    for name in ("kd-s1", "gdfq-s1"):
        cfg = plan[name]
        for key, value in (("epochs", 1), ("iters_per_epoch", 2), ("batch_size", 16), ("warmup_epochs", 0)):
            cfg.set(key, value)
        cfg.set("val_max_batches", 1)
        with caplog.at_level(logging.WARNING):
            train(cfg, tmp_path / name, progress=False)
        written = set(RunDir(tmp_path / name).tables()) - {"metrics"}
        assert written == {t for p in run_probes(cfg) for t in BUILTIN_PROBES[p].tables}, name
    assert run_probes(plan["kd-s1"]) == ("cosine",) and run_probes(plan["gdfq-s1"]) == ("cosine", "crossings")
    assert "crossings" in plan["kd-s0"].get("probes") and "crossings" not in run_probes(plan["kd-s0"])
