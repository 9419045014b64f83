"""The paper recipes and their runner (zsq_probe.recipes), and the thin scripts in analyses/: every recipe
is valid data, --dry-run prints reproducible commands, the table formatter computes mean ± std (ddof=1)
beside the paper, the runner trains through the library, and the Tab. 1 recipe runs end to end at tiny
scale (and resumes).  One file over ~400 lines: the recipes, their runner and their scripts are tested
as one feature, sharing the fast settings and fixtures above."""

import json
import math
import re
import shlex
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from zsq_probe.cli.recipe import main
from zsq_probe.recipes import RECIPES, load_recipe, plan, recipe_module
from zsq_probe.recipes.jobs import unique_jobs
from zsq_probe.recipes.specs import run, tiny_spec
from zsq_probe.recipes.tables import format_paper, format_stat, paper_mean, report_table, stats

ROOT = Path(__file__).resolve().parents[2]


def tables_needed() -> dict:
    """figure name -> the run tables it reads."""
    from zsq_probe.plots import FIGURES

    return {name: spec.tables_needed for name, spec in FIGURES.items()}


# every run of an end-to-end test: one epoch of two iterations (the brief's < 60 s on 2 cores)
FAST = [
    "epochs=1",
    "iters_per_epoch=2",
    "batch_size=16",
    "warmup_epochs=0",
    "val_max_batches=1",
    "zeroq_images=32",
    "zeroq_iterations=5",
]


def fast_sets(extra=()):
    out = []
    for a in list(FAST) + list(extra):
        out += ["--set", a]
    return out


REQUIRED_KEYS = {"name", "paper", "title", "description", "runs", "seeds", "figures", "table", "tiny"}


# ------------------------------------------------------------------------------------ recipes are valid
@pytest.mark.parametrize("short", list(RECIPES))
def test_recipe_is_valid_data(short):
    from zsq_probe.config import FIELD_NAMES
    from zsq_probe.presets import PRESETS, preset_overrides
    from zsq_probe.probe_registry import BUILTIN_PROBE_NAMES

    module = recipe_module(short)
    recipe = module.RECIPE
    assert REQUIRED_KEYS <= set(recipe), REQUIRED_KEYS - set(recipe)
    assert recipe["name"] == short
    # the docstring says how to run it at paper scale, how long it takes, and the tiny command
    doc = module.__doc__
    assert f"python -m analyses {short} --data-root ~/data --device cuda --out runs/{short}" in doc
    assert f"python -m analyses {short} --scale tiny" in doc
    assert "GPU-hours" in doc and "min" in doc

    ids = [r["id"] for r in recipe["runs"]]
    assert len(ids) == len(set(ids)), "run ids must be unique"
    for r in recipe["runs"]:
        assert r["preset"] in PRESETS
        assert set(r["probes"]) <= set(BUILTIN_PROBE_NAMES)
        assert set(r["overrides"]) <= set(FIELD_NAMES), set(r["overrides"]) - set(FIELD_NAMES)
        assert r["data"] in ("cifar10", "cifar100", "imagenet")
        if not preset_overrides(r["preset"], r["data"]).get("full_precision_student"):
            assert 2 <= r["w_bits"] <= 8 and 2 <= r["a_bits"] <= 8
    assert recipe["seeds"] and all(isinstance(s, int) for s in recipe["seeds"])

    figures = tables_needed() if recipe["figures"] else {}
    for entry in recipe["figures"]:
        assert entry["name"] in figures
        assert set(entry.get("runs") or []) <= set(ids)
        needed = figures[entry["name"]]
        runs = [r for r in recipe["runs"] if entry.get("runs") is None or r["id"] in entry["runs"]]
        probes = {p for r in runs for p in r["probes"]}
        tables = {
            "cosine": "cosine",
            "inter_epoch": "inter_epoch",
            "crossings": "crossings",
            "hessian_trace": "hessian",
            "hessian_density": "hessian",
            "slice": "slice",
        }
        for t in needed:  # the runs switch on the probe that writes each table the figure reads
            if t in tables:
                assert tables[t] in probes, (entry["name"], t)
    assert recipe["figures"] or recipe["table"], "a recipe draws figures or prints a table"

    if recipe["table"]:
        t = recipe["table"]
        cols = [c if isinstance(c, str) else c["name"] for c in t["columns"]]
        referenced = set()
        for block in t["blocks"]:
            for row in block["rows"]:
                assert set(row["cells"]) <= set(cols), (row["label"], set(row["cells"]) - set(cols))
                for c in row["cells"].values():
                    assert c["run"] is None or c["run"] in ids
                    referenced.add(c["run"])
                    p = c["paper"]
                    assert p is None or isinstance(p, float) or (len(p) == 2 and all(isinstance(x, float) for x in p))
                    assert paper_mean(p) is None or 0.0 <= paper_mean(p) <= 100.0
        assert set(ids) <= referenced, f"runs no table cell reports: {set(ids) - referenced}"

    # every run resolves to a valid config at both scales (no teacher or data is loaded)
    for scale in ("paper", "tiny"):
        jobs = plan(recipe, scale, out="/nonexistent", seeds=[0])
        assert jobs
        for j in unique_jobs(jobs):
            cfg = j.config()
            assert cfg.preset == j.spec["preset"]
            for k, v in j.spec["overrides"].items():
                assert cfg.get(k) == v  # the run's own overrides win
            if scale == "tiny":
                assert cfg.teacher == "digits" and cfg.dataset.name == "digits"
            else:
                assert cfg.teacher == j.spec["teacher"] and (cfg.quant.w_bits, cfg.quant.a_bits) != (None, None)
        if scale == "tiny":  # stand-ins keep what tells the runs apart: one trained run per paper run
            ids_tiny = [j.id for j in unique_jobs(jobs)]
            assert len(ids_tiny) == len({j.paper_id for j in jobs})
            assert recipe["tiny"]["keeps"] and recipe["tiny"]["loses"]


def test_recipes_cover_the_papers_experiments():
    wanted = {
        "fig1",
        "fig2",
        "fig3",
        "fig4",
        "fig5",
        "fig6",
        "fig7",
        "fig8",
        "fig9",
        "tab1",
        "tab2",
        "tab3",
        "tab4",
        "tab5",
        "tab6",
        "tab7",
        "tab9",
    }
    assert wanted <= set(RECIPES)
    for short in RECIPES:
        assert (ROOT / "zsq_probe" / "recipes" / f"{RECIPES[short]}.py").is_file()  # the recipe, in the wheel
        assert (ROOT / "analyses" / f"{RECIPES[short]}.py").is_file()  # its script in the repository


def test_tab1_recipe_matches_the_paper_layout():
    recipe = load_recipe("tab1")
    presets = {r["preset"] for r in recipe["runs"]}
    assert presets == {"zeroq", "gdfq", "ait", "qimera", "qimera+ait", "arc", "arc+ait"}
    assert {r["teacher"] for r in recipe["runs"]} == {
        "resnet20_cifar10",
        "resnet20_cifar100",
        "resnet18",
        "resnet50",
        "mobilenetv2_w1",
    }
    assert {(r["w_bits"], r["a_bits"]) for r in recipe["runs"]} == {(4, 4), (5, 5)}
    blocks = recipe["table"]["blocks"]
    assert len(blocks) == 10
    for b in blocks:
        assert [r["label"] for r in b["rows"]] == ["ZeroQ", "GDFQ", "Qimera", "ARC"]
        assert set(b["rows"][0]["cells"]) == {"baseline"}  # ZeroQ: one column
        assert all(set(r["cells"]) == {"baseline", "+AIT"} for r in b["rows"][1:])
    rn50 = next(b for b in blocks if b["title"] == "ImageNet ResNet-50, 4w4a")
    gdfq = rn50["rows"][1]["cells"]
    assert (gdfq["baseline"]["paper"], gdfq["+AIT"]["paper"]) == (52.12, 64.24)  # the paper's +12.12
    assert rn50["fp32"] == 77.73
    # the ZeroQ run pins epochs=0 so that a global --set epochs=N cannot turn it into fine-tuning
    zeroq = next(r for r in recipe["runs"] if r["preset"] == "zeroq")
    assert zeroq["overrides"] == {"epochs": 0} and zeroq["id"] == "resnet20_cifar10-4w4a-zeroq"


def test_tab7_and_fig6_recipes_match_the_paper():
    from zsq_probe.teachers.loader import PAPER_TEACHER_TOP1, PAPER_WEIGHT_FILES
    from zsq_probe.teachers.metadata import teacher_input_size

    recipe = load_recipe("tab7")
    teachers = {"inceptionv3": 79.00, "sqnxt23_w2": 69.39, "shufflenet_g1_w1": 65.07}
    assert {r["teacher"] for r in recipe["runs"]} == set(teachers)
    assert {(r["preset"], r["w_bits"], r["a_bits"]) for r in recipe["runs"]} == {
        (p, b, b) for p in ("gdfq", "ait") for b in (4, 5)
    }
    blocks = recipe["table"]["blocks"]
    assert [b["fp32"] for b in blocks] == list(teachers.values())
    for t, fp32 in teachers.items():  # the registry knows the paper's teacher, its file and its input size
        assert PAPER_TEACHER_TOP1[t] == fp32 and abs(PAPER_WEIGHT_FILES[t].top1 - fp32) < 0.2
    assert teacher_input_size("inceptionv3") == 299 and teacher_input_size("shufflenet_g1_w1") == 224
    sqnxt = next(b for b in blocks if "SqueezeNext" in b["title"])
    assert [(r["label"], r["cells"]["GDFQ"]["paper"], r["cells"]["GDFQ+AIT"]["paper"]) for r in sqnxt["rows"]] == [
        ("4w4a", 26.21, 45.37),
        ("5w5a", 56.07, 62.76),
    ]
    fig6 = load_recipe("fig6")
    assert fig6["figures"] == [{"name": "fig6"}]
    ids = {r["id"] for r in fig6["runs"]}  # Tab. 1's run ids: one --out reuses its finished runs
    assert ids == {
        "resnet20_cifar10-4w4a-gdfq",
        "resnet20_cifar10-4w4a-ait",
        "resnet18-4w4a-gdfq",
        "resnet18-4w4a-ait",
    } and ids <= {r["id"] for r in load_recipe("tab1")["runs"]}


def test_tiny_mapping_lowers_bits_unless_the_recipe_keeps_them():
    spec = run("gdfq", "resnet18", 4, 4)
    assert tiny_spec(spec, {"tiny": {"bits": "minus1"}})["w_bits"] == 3
    assert tiny_spec(run("gdfq", "resnet18", 5, 5), {})["a_bits"] == 4
    assert tiny_spec(run("gdfq", "resnet18", 2, 3), {})["w_bits"] == 2  # never below 2
    kept = tiny_spec(run("gdfq", "resnet20_cifar10", 2, 3), load_recipe("tab6"))
    assert (kept["w_bits"], kept["a_bits"], kept["teacher"], kept["id"]) == (2, 3, "digits", "digits-2w3a-gdfq")
    kd = tiny_spec(run("kd", "resnet20_cifar10", probes=["cosine"]), {})
    assert kd["w_bits"] is None and kd["id"] == "digits-fp-kd-with-cosine"


# ------------------------------------------------------------------------------------ dry run
def test_dry_run_prints_reproducible_commands_and_runs_nothing(tmp_path, capsys):
    from zsq_probe.cli import build_parser
    from zsq_probe.cli.train import build_config

    out = tmp_path / "out"
    rc = main(["tab2", "--dry-run", "--out", str(out), "--device", "cuda", "--data-root", "/data/sets", "--seeds", "2"])
    assert rc == 0
    text = capsys.readouterr().out
    cmds = [line for line in text.splitlines() if line.startswith("zsq-probe train ")]
    assert len(cmds) == 30 * 2  # 6 methods x 5 models x 2 seeds
    assert not out.exists()  # nothing ran, nothing was written
    assert "GPU" in text  # the rough time estimate
    presets = {shlex.split(c)[shlex.split(c).index("--preset") + 1] for c in cmds}
    assert presets == {"gdfq", "kl-only", "kl-only-high-lr", "baseline+gi", "ce-only+gi", "ait"}
    # each printed command, parsed by the real `zsq-probe train` parser, gives the runner's config
    jobs = {
        str(j.path): j
        for j in plan(load_recipe("tab2"), "paper", out, seeds=[0, 1], device="cuda", data_root="/data/sets")
    }
    parser = build_parser()
    for c in cmds[::7]:
        argv = shlex.split(c)
        assert argv[argv.index("--device") + 1] == "cuda" and argv[argv.index("--data-root") + 1] == "/data/sets"
        args = parser.parse_args(argv[1:])
        job = jobs[args.out]
        assert build_config(args).to_dict() == job.config().to_dict()


def test_dry_run_of_a_figure_recipe_prints_the_figures_command(tmp_path, capsys):
    assert main(["fig1", "--dry-run", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    train = [line for line in text.splitlines() if line.startswith("zsq-probe train")]
    assert len(train) == 2 and all("--probes cosine" in line for line in train)
    assert any("--preset kd --teacher resnet20_cifar10" in line for line in train)
    fig = [line for line in text.splitlines() if line.startswith("zsq-probe figures")]
    assert len(fig) == 1 and "--only fig1" in fig[0] and "--epoch 200" in fig[0]
    # at tiny scale: digits stand-ins, and no paper epoch for the snapshot
    assert main(["fig1", "--dry-run", "--scale", "tiny", "--out", str(tmp_path)]) == 0
    text = capsys.readouterr().out
    assert "--teacher digits" in text and "--epoch 200" not in text and "--w-bits 3 --a-bits 3" in text


def test_dry_run_only_and_errors(tmp_path, capsys):
    assert main(["tab1", "--dry-run", "--seeds", "1", "--only", "resnet50-5w5a-*", "--out", str(tmp_path)]) == 0
    cmds = [line for line in capsys.readouterr().out.splitlines() if line.startswith("zsq-probe train")]
    assert len(cmds) == 7 and all("--teacher resnet50" in c and "--w-bits 5" in c for c in cmds)
    assert main(["tab1", "--dry-run", "--only", "nothing-*", "--out", str(tmp_path)]) == 2
    assert "matches none" in capsys.readouterr().err
    assert main(["tab42", "--dry-run"]) == 2
    assert "unknown analysis" in capsys.readouterr().err
    assert main(["tab1", "--dry-run", "--set", "nonsense=1", "--out", str(tmp_path)]) == 2
    assert "unknown config key" in capsys.readouterr().err
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    assert all(re.search(rf"^{k}\s", listing, re.M) for k in RECIPES)


def test_the_runner_trains_through_the_library(tmp_path, monkeypatch):
    """Every job reaches zsq_probe.training.train as a RunConfig with its folder, never as argv, and the
    library builds the probes the config names; a finished run is not trained again, a partial one resumes."""
    from zsq_probe.config import RunConfig
    from zsq_probe.recipes import run_recipe

    calls = []

    def fake_train(cfg, out, *, resume=False, force=False, observers=None, progress=True):
        calls.append(
            {
                "cfg": cfg,
                "out": Path(out),
                "resume": resume,
                "force": force,
                "observers": observers,
                "progress": progress,
            }
        )
        return SimpleNamespace(to_dict=lambda: {"best_val_top1": 0.5, "final_val_top1": 0.5})  # a RunSummary's

    monkeypatch.setattr("zsq_probe.runs.train", fake_train)
    result = run_recipe("fig1", "tiny", tmp_path, seeds=1, sets=FAST)
    jobs = {j.path: j for j in result.plan.jobs}
    assert len(calls) == len(jobs) == 2 and result.ok and result.table is None
    for call in calls:
        job = jobs[call["out"]]
        assert isinstance(call["cfg"], RunConfig) and call["cfg"].to_dict() == job.config().to_dict()
        assert call["cfg"].teacher == "digits" and call["cfg"].seed == 0 and call["cfg"].epochs == 1
        assert call["cfg"].get("probes") == ["cosine"]
        assert (call["resume"], call["force"], call["progress"]) == (False, False, False)
        assert call["observers"] is None  # the library builds the probes the config names

    # one run finished, the other partial: only the partial one is trained, resumed
    done, partial = result.plan.jobs
    for job in (done, partial):
        job.path.mkdir(parents=True)
        (job.path / "config.json").write_text(json.dumps({"config": job.config().to_dict()}))
    (done.path / "summary.json").write_text(json.dumps({"best_val_top1": 0.5, "final_val_top1": 0.5}))
    calls.clear()
    run_recipe("fig1", "tiny", tmp_path, seeds=1, sets=FAST)
    assert [(c["out"], c["resume"], c["force"]) for c in calls] == [(partial.path, True, True)]


def test_analyses_holds_thin_entry_points(tmp_path):
    """analyses/*.py import their recipe from zsq_probe.recipes, patch no sys.path, and run from the
    repository root as a script or through `python -m analyses`; zsq_probe.recipes picks no backend."""
    for path in sorted((ROOT / "analyses").glob("*.py")):
        src = path.read_text()
        assert "sys.path" not in src and len(src.splitlines()) <= 25, path.name
        assert "from zsq_probe.recipes" in src or "from zsq_probe.cli.recipe import main" in src, path.name
        if path.stem not in ("__init__", "__main__"):
            assert path.stem in RECIPES.values() and f"from zsq_probe.recipes.{path.stem} import RECIPE" in src
    for path in (ROOT / "zsq_probe" / "recipes").glob("*.py"):
        assert "matplotlib.use" not in path.read_text(), path.name


@pytest.mark.slow  # two fresh interpreters: the entry points themselves are the point (slow tier, docs/development.md)
def test_analyses_runs_as_a_script_and_as_a_module(tmp_path):
    """`python analyses/tab2_ablation.py` and `python -m analyses tab2` from the repository root: the same plan."""
    args = ["--dry-run", "--seeds", "1", "--only", "resnet18-*", "--out", str(tmp_path)]
    outputs = []
    for cmd in (["-m", "analyses", "tab2"], ["analyses/tab2_ablation.py"]):
        proc = subprocess.run([sys.executable, *cmd, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        outputs.append(proc.stdout)
    assert outputs[0] == outputs[1]
    assert len([line for line in outputs[0].splitlines() if line.startswith("zsq-probe train ")]) == 6


# ------------------------------------------------------------------------------------ table formatter
def test_stats_use_the_sample_std():
    vals = [65.6, 65.8, 66.0]
    mean, std, n = stats(vals)
    assert n == 3 and mean == pytest.approx(65.8) and std == pytest.approx(0.2)
    assert std == pytest.approx(statistics.stdev(vals))  # ddof=1, not pstdev (0.163)
    assert stats([70.0]) == (70.0, None, 1)
    assert stats([]) == (None, None, 0)
    assert stats([1.0, float("nan"), None, 3.0])[:2] == (2.0, pytest.approx(math.sqrt(2)))
    assert format_stat(65.8, 0.2, 3, 3) == "65.80 ± 0.20"
    assert format_stat(65.8, None, 1, 3) == "65.80 (n=1)"
    assert format_stat(65.8, 0.14142, 2, 3) == "65.80 ± 0.14 [n=2]"
    assert format_stat(None, None, 0) == "—"
    assert format_paper((65.41, 0.2)) == "65.41 ± 0.20" and format_paper(91.23) == "91.23"


def write_summary(path, best, final=None, teacher=0.7033):
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(
        json.dumps({"best_val_top1": best, "final_val_top1": final or best, "teacher_top1": teacher})
    )


def cells_of(line):
    """A printed table row -> [label, ours, paper, ours, paper, ...] (padding stripped)."""
    return [c.strip() for c in re.split(r"\|\|?", line)]


def test_table_from_fabricated_summaries(tmp_path):
    recipe = load_recipe("tab2")
    jobs = plan(recipe, "paper", tmp_path, seeds=[0, 1, 2])
    by = {(j.paper_id, j.seed): j for j in jobs}
    for seed, v in enumerate([0.656, 0.658, 0.660]):  # AIT, CIFAR-100: 65.80 ± 0.20
        write_summary(by["resnet20_cifar100-4w4a-ait", seed].path, v, final=v - 0.01)
    for seed, v in enumerate([0.60, 0.62]):  # GDFQ on ResNet-18: two of three seeds
        write_summary(by["resnet18-4w4a-gdfq", seed].path, v)
    write_summary(by["resnet20_cifar10-4w4a-kl-only", 0].path, 0.9)  # one seed
    text = report_table(recipe, jobs, tmp_path, "paper", metric="best")
    lines = text.splitlines()
    ait = next(line for line in lines if line.startswith("AIT (KL-only + GI)"))
    # columns: CIFAR-10 RN-20 (ours, paper), CIFAR-100 RN-20 (ours, paper), ..., ImageNet RN-18 (ours, paper)
    assert cells_of(ait)[1:5] == ["—", "91.23", "65.80 ± 0.20", "65.80"]
    gdfq = cells_of(next(line for line in lines if line.startswith("Baseline (GDFQ)")))
    assert gdfq[5:7] == ["61.00 ± 1.41 [n=2]", "60.60"]  # mean 61, stdev(60, 62) = 1.414
    assert cells_of(next(line for line in lines if line.startswith("KL-only ")))[1:3] == ["90.00 (n=1)", "90.06"]
    assert "ddof=1" in text
    # written beside the printout, with the long form as CSV
    assert (tmp_path / "tables" / "tab2.txt").read_text().strip() == text.strip()
    import csv

    with open(tmp_path / "tables" / "tab2.csv") as table:
        rows = list(csv.DictReader(table))
    row = next(r for r in rows if r["run"] == "resnet20_cifar100-4w4a-ait")
    assert float(row["mean"]) == pytest.approx(65.8) and float(row["std"]) == pytest.approx(0.2)
    assert float(row["paper"]) == 65.80 and row["n"] == "3"
    # --metric final reads final_val_top1
    final = report_table(recipe, jobs, tmp_path, "paper", metric="final")
    assert "64.80 ± 0.20" in final


def test_table_with_paper_std_and_unrunnable_rows(tmp_path):
    recipe = load_recipe("tab3")  # LARS: the gdfq-lars preset, planned (no finished seed yet)
    text = report_table(recipe, plan(recipe, "paper", tmp_path, seeds=[0]), tmp_path, "paper")
    lars = cells_of(next(line for line in text.splitlines() if line.startswith("Baseline-LARS")))
    assert lars[1:3] == ["—", "90.01"]
    recipe8 = load_recipe("tab8")
    text8 = report_table(recipe8, plan(recipe8, "paper", tmp_path, seeds=[0]), tmp_path, "paper")
    row = cells_of(next(line for line in text8.splitlines() if line.startswith("0.0005 ")))
    assert row == ["0.0005", "—", "65.41 ± 0.20", "—", "64.48 ± 0.28"]  # '—': planned, no finished seed yet


# ------------------------------------------------------------------------------------ end to end (tiny)
@pytest.mark.slow  # 14 tiny runs, then the whole recipe again: the end-to-end tier
def test_tab1_end_to_end_tiny_and_resume(tmp_path, capsys, digits_teacher):
    out = tmp_path / "tab1"
    rc = main(["tab1", "--scale", "tiny", "--seeds", "1", "--out", str(out), "--quiet", *fast_sets()])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    text = captured.out
    runs = sorted(p.name for p in (out / "runs").iterdir())
    assert len(runs) == 14  # 7 presets x 2 bit widths (3w3a for 4w4a, 4w4a for 5w5a) x 1 seed
    assert all((out / "runs" / r / "summary.json").is_file() for r in runs)
    zeroq = json.loads((out / "runs" / "digits-3w3a-zeroq-s0" / "summary.json").read_text())
    assert zeroq["epochs_completed"] == 0  # the recipe's epochs=0 beat the global --set epochs=1
    ait = json.loads((out / "runs" / "digits-3w3a-ait-s0" / "summary.json").read_text())
    assert ait["epochs_completed"] == 1 and ait["w_bits"] == 3 and ait["method"] == "ait"

    # one block per bit width, one row per backbone, baseline and +AIT columns, paper values beside
    table = text[text.index("Table 1.") :]
    for title, stand_in in (("CIFAR-10 ResNet-20, 4w4a", "digits 3w3a"), ("CIFAR-10 ResNet-20, 5w5a", "digits 4w4a")):
        start = table.index(title)
        assert f"[ours: {stand_in}]" in table[start : start + 200]
        block = table[start:].split("\n\n")[0].splitlines()
        assert "baseline" in block[1] and "+AIT" in block[1] and block[2].count("ours") == 2
        rows = {line.split("||")[0].strip(): line for line in block[4:]}
        assert list(rows) == ["ZeroQ", "GDFQ", "Qimera", "ARC"]
        assert rows["ZeroQ"].count("(n=1)") == 1  # ZeroQ has one column
        for name in ("GDFQ", "Qimera", "ARC"):
            assert rows[name].count("(n=1)") == 2
    row = next(line for line in table.splitlines() if line.startswith("GDFQ"))
    assert "| 90.25 ||" in row and "| 91.23 (+0.98)" in row  # CIFAR-10 4w4a paper values
    s = json.loads((out / "runs" / "digits-3w3a-gdfq-s0" / "summary.json").read_text())
    assert f"{100 * s['best_val_top1']:.2f} (n=1)" in row
    assert (out / "tables" / "tab1.txt").is_file() and (out / "tables" / "tab1.csv").is_file()

    # run again: everything is skipped, the same table comes out
    before = {r: (out / "runs" / r / "summary.json").stat().st_mtime_ns for r in runs}
    assert main(["tab1", "--scale", "tiny", "--seeds", "1", "--out", str(out), *fast_sets()]) == 0
    cap = capsys.readouterr()
    again = cap.out
    assert cap.err.count("done already") == 14  # the progress lines, on stderr
    assert again[again.index("Table 1.") :].split("(written")[0] == table.split("(written")[0]
    assert before == {r: (out / "runs" / r / "summary.json").stat().st_mtime_ns for r in runs}

    # another --set would mix configs in one folder: refused before anything runs
    assert main(["tab1", "--scale", "tiny", "--seeds", "1", "--out", str(out), *fast_sets(["lr=0.5"])]) == 2
    assert "another config" in capsys.readouterr().err


def test_a_partial_run_is_resumed(tmp_path, capsys, digits_teacher):
    from zsq_probe.events import Observer
    from zsq_probe.rundir.store import RunDir
    from zsq_probe.runs import train

    class CrashAt(Observer):
        def on_epoch_start(self, ctx, epoch):
            if epoch == 2:
                raise KeyboardInterrupt

    out = tmp_path / "tab2"
    only = "resnet20_cifar10-4w4a-gdfq"
    sets = fast_sets(["epochs=2"])
    job = plan(load_recipe("tab2"), "tiny", out, seeds=[0], only=[only], sets=FAST + ["epochs=2"])[0]
    with pytest.raises(KeyboardInterrupt):  # a run killed after its first epoch
        train(job.config(), job.path, observers=[CrashAt()], progress=False)
    assert job.status() == "partial"
    rc = main(["tab2", "--scale", "tiny", "--seeds", "1", "--out", str(out), "--only", only, *sets])
    cap = capsys.readouterr()
    text = cap.out
    assert rc == 0 and "resuming" in cap.err  # a progress line, on stderr
    assert job.status() == "done" and job.summary()["epochs_completed"] == 2
    assert list(RunDir(job.path).read_table("metrics")["epoch"]) == [1, 2]  # resumed, not restarted or duplicated
    # only the selected run shows in the table: one row with our value, others left out
    table = text[text.index("Table 2.") :]
    assert "Baseline (GDFQ)" in table and "KL-only" not in table.split("note:")[0]
    assert "CIFAR-10 RN-20" in table and "CIFAR-100 RN-20" not in table  # unplanned columns left out


def test_figure_recipe_end_to_end_tiny(tmp_path, capsys, digits_teacher):
    out = tmp_path / "fig1"
    rc = main(["fig1", "--scale", "tiny", "--out", str(out), *fast_sets(["epochs=2", "probe_every_steps=1"])])
    text = capsys.readouterr().err  # the progress lines
    assert rc == 0
    assert "$ zsq-probe figures --runs" in text
    png = out / "figures" / "fig1" / "fig1_cosine.png"
    assert png.is_file() and png.stat().st_size > 10_000
