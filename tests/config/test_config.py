"""The run config: nested sections with flat and dotted keys, presets as data, old flat configs still load,
bad values, config files and unknown data sets are errors; probe budgets the estimators cannot pay are refused
before anything is written (issue 24); the normalisation and the loader settings are config fields."""

import dataclasses
import json

import pytest
from cli_checks import cli_err_lines, one_error_line, snapshot, tree_hashes

from zsq_probe.cli import main
from zsq_probe.config import FLAT_KEYS, RunConfig, config_diff, config_from_dict, parse_assignment
from zsq_probe.errors import UserError
from zsq_probe.presets import DATASET_SCALES, PRESETS, dataset_family, preset_overrides, resolve_config


def test_flat_and_dotted_keys_reach_the_nested_fields():
    cfg = resolve_config(
        "ait",
        teacher="digits",
        overrides=["lr=0.5", "inundation.p=0.01", "probes=cosine,slice", "hessian_every_epochs=7", "warmup_epochs=0"],
    )
    assert cfg.optim.lr == 0.5 and cfg.inundation.p == 0.01 and cfg.inundation.enabled
    assert cfg.probing.probes == ["cosine", "slice"] and cfg.probing.hessian_every_epochs == 7
    assert cfg.warmup_epochs == 0 and cfg.get("gi_p") == 0.01 and cfg.get("optim.lr") == 0.5
    assert parse_assignment("optim.lr=1e-3") == ("lr", 1e-3)
    # every field of every section has exactly one flat key
    fields = [
        (s, f.name)
        for s in ("quant", "optim", "inundation", "dataset", "synthesis", "probing")
        for f in dataclasses.fields(getattr(RunConfig(), s))
    ]
    assert sorted(v for v in FLAT_KEYS.values() if v[0]) == sorted(fields)


def test_config_json_round_trip_and_no_flat_version_1_files():
    cfg = resolve_config("kd", teacher="digits", flags={"epochs": 3, "probes": ["hessian"]})
    doc = json.loads(json.dumps(cfg.to_dict()))
    assert doc["optim"]["lr"] == 0.05 and doc["dataset"]["source"] == "real" and "lr" not in doc
    assert config_from_dict(doc) == cfg
    with pytest.raises(UserError, match="version-1 .flat. config; this zsq-probe reads config version 2"):
        config_from_dict(cfg.flat())  # a pre-release config.json (one flat dict): refused, not converted
    with pytest.raises(UserError, match="unknown keys"):
        config_from_dict({**doc, "optim": {**doc["optim"], "lrr": 1.0}})
    other = resolve_config("kd", teacher="digits", flags={"epochs": 4, "probes": ["hessian"]})
    assert config_diff(cfg, other) == {"epochs": (3, 4)}


def test_presets_are_data_with_per_family_values():
    assert preset_overrides("gdfq", "imagenet")["lr"] == 1e-6  # GDFQ's ImageNet lr
    assert preset_overrides("ait", "imagenet")["lr"] == 1e-4  # AIT: 1e-4 everywhere (paper §5.1)
    assert preset_overrides("kl-only-high-lr", "digits")["lr"] == pytest.approx(1e-2)  # 10x digits' 1e-3
    assert preset_overrides("kd", "digits")["lr_milestones"] == [8, 11]
    assert preset_overrides("kd", "cifar10")["lr"] == 0.05
    for name, preset in PRESETS.items():
        assert preset.help and preset.overrides["method"] == name
        for family in DATASET_SCALES:
            values = preset.resolve({"cifar": "cifar10", "imagenet": "imagenet", "digits": "digits"}[family])
            assert set(values) <= set(FLAT_KEYS), name


@pytest.mark.parametrize(
    "teacher, rule",
    [
        ("resnet20_cifar10", "reference"),
        ("resnet20_cifar100", "reference"),
        ("resnet18", "reference"),
        ("digits", "ours"),
    ],
)
def test_gi_presets_use_the_official_kappa_rule_at_paper_scale(teacher, rule, capsys):
    gi_presets = [name for name, p in PRESETS.items() if p.overrides.get("gi")]
    assert {"ait", "ait-adam", "ait-rmsprop", "baseline+gi", "ce-only+gi", "qimera+ait", "arc+ait"} <= set(gi_presets)
    for name in gi_presets:
        assert resolve_config(name, teacher=teacher).inundation.rule == rule, name
        assert resolve_config(name, teacher=teacher, overrides=["gi_rule=ours"]).inundation.rule == "ours"
    for name in ("gdfq", "kl-only", "kl-only-high-lr"):  # no GI: the rule is not set (the config's default)
        assert "gi_rule" not in preset_overrides(name, resolve_config(name, teacher=teacher).dataset.name)
    data = resolve_config("ait", teacher=teacher).dataset.name

    assert main(["presets", "--data", data]) == 0
    shown = capsys.readouterr().out
    ait = shown.split("\nait ")[1].split("\n\n")[0]
    assert f"gi_rule={rule}  [" in ait and ("GDFQ_AIT/optimizer.py" in ait) == (rule == "reference")


@pytest.mark.parametrize("data, base, factor", [("cifar10", 1e-4, 100), ("imagenet", 1e-4, 100), ("digits", 1e-3, 10)])
def test_high_lr_factor_is_relative_to_the_scale_base_lr(data, base, factor):
    from zsq_probe.presets import lr_factor

    lr = preset_overrides("kl-only-high-lr", data)["lr"]
    assert lr == pytest.approx(base * factor) and lr_factor(lr, data) == pytest.approx(factor)
    assert lr_factor(preset_overrides("kl-only", data)["lr"], data) == pytest.approx(1)
    assert f"{factor}x" in PRESETS["kl-only-high-lr"].source_of("lr", data)  # the source states the factor used
    assert f"{factor}x" in PRESETS["kl-only-high-lr"].help
    from zsq_probe.plots.runs import lr_text_for  # a figure caption states the factor too

    assert f"({factor}× the " in lr_text_for({"lr": lr, "data": data})


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("w_bits=9", "bits must be 2..8"),
        ("optimizer=lamb", "optimizer"),
        ("gi_p=2", "gi_p"),
        ("probes=nope", "unknown probe"),
        ("slice_directions=up", "slice direction"),
        ("lr=-1", "lr"),
        ("hessian_every_epochs=0", "hessian_every_epochs"),
    ],
)
def test_each_section_validates_itself(assignment, message):
    with pytest.raises(UserError, match=message):
        resolve_config("gdfq", teacher="digits", overrides=[assignment])


def test_unknown_data_sets_and_keys_are_errors():
    with pytest.raises(UserError, match="unknown data set 'mnist'"):
        dataset_family("mnist")
    with pytest.raises(UserError, match="unknown data set"):
        resolve_config("gdfq", teacher="digits", data="mnist")
    with pytest.raises(UserError, match="did you mean lr"):
        resolve_config("gdfq", teacher="digits", overrides=["lrr=1"])


HESSIAN_TRAIN = ["train", "--teacher", "digits", "--probes", "hessian", "--epochs", "1", "--no-progress"]


BUDGET_CASES = [
    ("max_products 16", ["trace_max_products=16"], "trace_max_products=16 cannot pay for Hutch++"),
    ("top-k 20 on 30", ["hessian_top_k=20", "trace_max_products=30"], "(must be >= 36)"),
    ("top-k 500", ["hessian_top_k=500"], "hessian_top_k=500"),
    ("hutchinson 29", ["trace_estimators=hutchinson", "trace_max_products=29"], "Hutchinson's first 30"),
    ("block vectors 1", ["probe_scopes=model,block", "hessian_vectors=1"], "hessian_vectors=1 with scope(s) block"),
    ("layer vectors 1", ["probe_scopes=layer", "hessian_vectors=1"], "hessian_vectors=1 with scope(s) layer"),
]


@pytest.mark.parametrize("sets,mention", [c[1:] for c in BUDGET_CASES], ids=[c[0] for c in BUDGET_CASES])
def test_budget_clashes_are_refused_before_anything_is_written(tmp_path, capsys, sets, mention):
    out = tmp_path / "run"
    out.mkdir()  # an empty run folder the user made: it must stay as it is
    before = snapshot(tmp_path)
    argv = [*HESSIAN_TRAIN, "--out", out] + [a for s in sets for a in ("--set", s)]
    line = one_error_line(argv, capsys, "train")
    assert mention in line, line
    assert snapshot(tmp_path) == before


def test_budgets_that_can_pay_are_accepted():
    from zsq_probe.config import MAX_HESSIAN_TOP_K, ProbeConfig

    ProbeConfig(hessian_top_k=3, trace_max_products=19).validate()  # 3 deflation + 16 samples: just enough
    ProbeConfig(trace_estimators=["hutchinson"], trace_max_products=30).validate()
    ProbeConfig(scopes=["block"], hessian_vectors=2).validate()
    ProbeConfig(scopes=["model"], hessian_vectors=1).validate()  # model scope's Hutch++ does not use them
    ProbeConfig(trace_estimators=["slq"], trace_max_products=8).validate()  # no adaptive estimator: no clash
    ProbeConfig(hessian_top_k=MAX_HESSIAN_TOP_K, trace_max_products=MAX_HESSIAN_TOP_K + 16).validate()
    with pytest.raises(UserError, match="hessian_top_k"):
        ProbeConfig(hessian_top_k=MAX_HESSIAN_TOP_K + 1, trace_max_products=10_000).validate()


def test_config_minimum_samples_are_the_estimators_own():
    from zsq_probe import config
    from zsq_probe.hessian.trace import DEFAULT_MIN_SAMPLES

    assert DEFAULT_MIN_SAMPLES == {"hutch++": config.HUTCHPP_MIN_SAMPLES, "hutchinson": config.HUTCHINSON_MIN_SAMPLES}


TRAIN = ["train", "--teacher", "digits", "--no-progress"]


@pytest.mark.parametrize(
    "doc,mention",
    [([1, 2, 3], "JSON object"), ({"w_bits": None}, "w_bits"), ({"quant": {"w_bits": None}}, "w_bits")],
    ids=["json list", "w_bits null flat", "w_bits null nested"],
)
def test_bad_config_file(tmp_path, capsys, doc, mention):
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(doc))
    before = tree_hashes(cfg)
    out = tmp_path / "run"
    rc, err = cli_err_lines(TRAIN + ["--config", str(cfg), "--out", str(out)], capsys)
    assert rc == 2 and len(err) == 1, err
    assert mention in err[0]
    assert not out.exists() and tree_hashes(cfg) == before


def test_num_workers_and_pin_memory_are_config_fields_and_flags():
    from zsq_probe.cli import build_parser
    from zsq_probe.cli.train import build_config

    args = build_parser().parse_args(["train", "--out", "x", "--num-workers", "4", "--pin-memory"])
    cfg = build_config(args)
    assert cfg.dataset.num_workers == 4 and cfg.dataset.pin_memory is True and cfg.get("num_workers") == 4
    with pytest.raises(UserError, match="num_workers"):
        cfg.set("num_workers", -1)
        cfg.validate()


def test_config_records_normalisation_with_flat_and_dotted_keys():
    cfg = RunConfig()
    assert cfg.dataset.normalization == "reference" and cfg.to_dict()["dataset"]["normalization"] == "reference"
    cfg = resolve_config("ait", teacher="resnet20_cifar10", overrides=["normalization=pytorchcv"])
    assert cfg.get("dataset.normalization") == "pytorchcv" and cfg.flat()["normalization"] == "pytorchcv"
    assert config_from_dict(json.loads(cfg.to_json())) == cfg
    with pytest.raises(UserError, match="normalization='imagenet'"):
        resolve_config("gdfq", teacher="resnet20_cifar10", overrides=["dataset.normalization=imagenet"])
