"""Issue 24: inputs that traced back or hung are one-line refusals that write nothing; a curvature probe that
refuses a model records it and the run goes on; the exact trace refuses cross-sample mixing; product counts."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from zsq_probe.cli import main
from zsq_probe.errors import UserError


def snapshot(*folders) -> dict:
    """{path: (size, mtime_ns, bytes)} of every file and folder under the given paths (missing ones: absent)."""
    out: dict = {}
    for top in map(Path, folders):
        for p in [top, *top.rglob("*")] if top.exists() else []:
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return out


def one_error_line(argv, capsys, command: str) -> str:
    """Run the CLI: exit 2 and exactly one `zsq-probe <command>: error:` line on stderr, no traceback."""
    rc = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, (rc, err)
    assert err[0].startswith(f"zsq-probe {command}: error:"), err
    return err[0]


# ------------------------------------------------------------------ item 2: CIFAR files of the wrong types


def _cifar10(root: Path, labels=None, data_dtype=np.uint8, n: int = 4) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {
            "labels": labels if labels is not None else rng.integers(0, 10, n).tolist(),
            "data": rng.integers(0, 256, (n, 3072)).astype(data_dtype),
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": [f"c{i}" for i in range(10)]}, protocol=2))


@pytest.mark.parametrize(
    "kind,mention",
    [("string labels", "label 'cat' (str)"), ("float64 images", "float64 images, expected uint8")],
)
def test_cifar_files_of_the_wrong_types_are_one_line_refusals(tmp_path, kind, mention):
    from zsq_probe.data.datasets import load_dataset

    if kind == "string labels":
        _cifar10(tmp_path, labels=["cat", "dog", "cat", "dog"])
    else:
        _cifar10(tmp_path, data_dtype=np.float64)
    before = snapshot(tmp_path)
    for split in ("train", "test"):
        with pytest.raises(UserError) as err:
            load_dataset("cifar10", root=tmp_path, split=split)
        assert mention in str(err.value) and "\n" not in str(err.value), err.value
    assert snapshot(tmp_path) == before


def test_genuine_cifar_types_still_load(tmp_path):
    from zsq_probe.data.datasets import load_dataset

    _cifar10(tmp_path)
    with pytest.warns(UserWarning, match="official"):
        ds = load_dataset("cifar10", root=tmp_path, split="test")
    assert ds.data.dtype == np.uint8 and len(ds) == 4 and all(isinstance(t, int) for t in ds.targets)


# ------------------------------------------------------------------ item 2: text in a numeric column


@pytest.fixture
def kd_and_zq(tmp_path):
    from tests.fabricated_runs import make_run

    kd, _ = make_run(tmp_path / "kd", "kd", cos_center=0.3, trace_scale=8.0, kl_scale=2.0, seed=1, source="real")
    zq, _ = make_run(tmp_path / "zq", "gdfq", cos_center=-0.1, trace_scale=12.0, kl_scale=0.5, seed=2)
    return kd.path, zq.path


def _stringify(run: Path, table: str, columns) -> Path:
    from zsq_probe.rundir.store import RunDir

    part = sorted((run / "probes" / table).glob("part-*.parquet"))[0]
    df = pd.read_parquet(part)
    for c in columns:
        df[c] = df[c].astype(str)
    RunDir(run).write_part(table, df, part.name.removeprefix("part-").removesuffix(".parquet"))
    return part


@pytest.mark.parametrize("columns", [["epoch"], ["cosine"]])
def test_compare_refuses_a_part_with_text_in_a_numeric_column(kd_and_zq, tmp_path, capsys, columns):
    kd, zq = kd_and_zq
    part = _stringify(zq, "cosine", columns)
    assert one_error_line(["compare", kd, zq, "--probe", "cosine"], capsys, "compare")  # before: a traceback
    before = snapshot(tmp_path)
    line = one_error_line(["compare", kd, zq, "--probe", "cosine", "--out", tmp_path / "cmp"], capsys, "compare")
    assert str(part) in line and f"numeric column(s) {columns[0]}" in line, line
    assert snapshot(tmp_path) == before


def test_a_part_with_numbers_where_numbers_belong_still_reads(kd_and_zq):
    from zsq_probe.rundir.store import read_table

    _, zq = kd_and_zq
    df = read_table(zq / "probes" / "cosine")
    assert df["epoch"].dtype.kind == "i" and df["cosine"].dtype.kind == "f" and len(df)


# ------------------------------------------------------------------ item 3: budgets the estimators cannot pay

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


def test_the_smallest_accepted_hutchpp_budget_runs_in_the_estimator():
    """The validation's bound is the estimator's own: at hessian_top_k + 16 Hutch++ runs, one below it raises."""
    import torch

    from zsq_probe.hessian.trace import estimate_trace

    class Diagonal:
        dim, dtype, device = 40, torch.float64, torch.device("cpu")

        def matvec(self, x):
            return torch.arange(1.0, 41.0, dtype=torch.float64) * x

    deflate = torch.eye(40, dtype=torch.float64)[-3:]  # the top-3 eigenvectors
    t = estimate_trace(Diagonal(), "hutch++", rtol=0.05, max_products=3 + 16, deflate=deflate, seed=0)
    assert t.num_products <= 19 and t.num_vectors >= 16
    with pytest.raises(ValueError, match="cannot pay"):
        estimate_trace(Diagonal(), "hutch++", rtol=0.05, max_products=3 + 15, deflate=deflate, seed=0)


class _NearlyFlat:
    """diag(linspace(1, 1.0001, dim)): eigenvalues too close for ARPACK to separate quickly (560 products to
    converge at dim 2000, k=3, tol=0, measured with an unbounded maxiter)."""

    def __init__(self, dim: int) -> None:
        import torch

        self.dim, self.dtype, self.device = dim, torch.float64, torch.device("cpu")
        self.diagonal = torch.linspace(1, 1.0001, dim, dtype=torch.float64)
        self.num_products = 0

    def matvec(self, x):
        self.num_products += 1
        return self.diagonal * x


def test_arpack_stops_near_its_product_bound_and_says_so():
    from zsq_probe.hessian import top_eigenpairs
    from zsq_probe.hessian.estimators import ARPACK_MIN_PRODUCTS, arpack_maxiter

    unbounded = top_eigenpairs(_NearlyFlat(2000), k=3, tol=0, seed=0, maxiter=100_000)
    assert unbounded.converged and unbounded.num_products > ARPACK_MIN_PRODUCTS  # the bound matters here
    op = _NearlyFlat(2000)
    with pytest.warns(UserWarning, match="ARPACK did not converge"):
        bounded = top_eigenpairs(op, k=3, tol=0, seed=0)
    ncv = 16  # max(2k + 1, min(20, 4k + 4)) for k = 3
    assert not bounded.converged and op.num_products == bounded.num_products
    assert bounded.num_products <= ARPACK_MIN_PRODUCTS + ncv, bounded.num_products
    assert arpack_maxiter(3, ncv, ARPACK_MIN_PRODUCTS) == 1 + (300 - 16) // 13


# ------------------------------------------------------------------ item 4: refusals write nothing


@pytest.fixture(scope="module")
def three_checkpoints(tmp_path_factory, digits_teacher) -> Path:
    """A short GDFQ run, no probes, checkpoints at epochs 0, 1 and 2 (each test copies it before changing it)."""
    from zsq_probe.presets import resolve_config
    from zsq_probe.runs.training_run import train

    out = tmp_path_factory.mktemp("edges") / "run"
    flags = {"epochs": 2, "iters_per_epoch": 2, "batch_size": 16, "warmup_epochs": 0, "val_max_batches": 1}
    train(resolve_config("gdfq", teacher="digits", flags=flags), out, progress=False)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [f"epoch-000{i}.pt" for i in range(3)]
    return out


def _copy(run: Path, to: Path) -> Path:
    import shutil

    shutil.copytree(run, to)
    return to


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "command,damage", [("crossings", "truncated"), ("crossings", "pickle"), ("cosine", "truncated")]
)
def test_posthoc_refuses_a_damaged_or_malicious_checkpoint_before_writing(
    three_checkpoints, tmp_path, capsys, command, damage
):
    run = _copy(three_checkpoints, tmp_path / "run")
    last = run / "checkpoints" / "epoch-0002.pt"  # epochs 0 and 1 are fine: before, crossings committed them
    marker = tmp_path / "pwned"
    last.write_bytes(last.read_bytes()[:1000] if damage == "truncated" else pickle.dumps(_Evil(marker)))
    before = snapshot(tmp_path)
    line = one_error_line([command, "--run", run], capsys, command)
    assert "epoch-0002.pt" in line, line
    assert snapshot(tmp_path) == before and not marker.exists()


def test_a_damaged_posthoc_part_is_refused_without_overwrite_and_rebuilt_with_it(three_checkpoints, tmp_path, capsys):
    from zsq_probe.rundir.store import read_table

    run = _copy(three_checkpoints, tmp_path / "run")
    assert main(["crossings", "--run", str(run)]) == 0
    table = run / "probes" / "crossings"
    want = read_table(table).drop(columns=["wall_time_s"], errors="ignore")
    part = table / "part-e00001-posthoc.parquet"
    part.write_bytes(part.read_bytes()[:200])
    capsys.readouterr()
    before = snapshot(tmp_path)
    line = one_error_line(["crossings", "--run", run], capsys, "crossings")
    assert str(part) in line and "--overwrite" in line, line
    assert snapshot(tmp_path) == before
    assert main(["crossings", "--run", str(run), "--overwrite"]) == 0
    got = read_table(table).drop(columns=["wall_time_s"], errors="ignore")
    pd.testing.assert_frame_equal(got, want)


@pytest.mark.parametrize("where", ["file", "under a file"])
def test_tensorboard_path_that_is_a_file_is_refused_before_the_run_folder_exists(tmp_path, capsys, where):
    pytest.importorskip("torch.utils.tensorboard")
    file = tmp_path / "curves"
    file.write_text("not a folder")
    logdir = file if where == "file" else file / "sub"
    before = snapshot(tmp_path)
    argv = ["train", "--teacher", "digits", "--epochs", "1", "--no-progress", "--tensorboard", logdir]
    line = one_error_line([*argv, "--out", tmp_path / "run"], capsys, "train")
    assert f"--tensorboard {logdir}" in line and "not a folder" in line, line
    assert snapshot(tmp_path) == before


# ------------------------------------------------------------------ items 6 and 7: the exact trace's refusals


class _Mlp(torch.nn.Module):
    """8 -> 12 -> 4 with `act` in between; `mix`: subtract the batch mean of the hidden layer (no norm module)."""

    def __init__(self, act: torch.nn.Module, mix: bool = False) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.act, self.fc2, self.mix = torch.nn.Linear(8, 12), act, torch.nn.Linear(12, 4), mix

    def forward(self, x):
        h = self.act(self.fc1(x))
        return self.fc2(h - h.mean(0) if self.mix else h)


def _batch(n: int = 16):
    from zsq_probe.events import ProbeBatch

    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g)
    return ProbeBatch(x, torch.randint(0, 4, (n,), generator=g), torch.randn(n, 4, generator=g), "real", 0)


def _dense_trace(model, loss_fn, x, y) -> float:
    from torch.func import functional_call, hessian

    params = {k: v.detach() for k, v in model.named_parameters()}
    flat = torch.cat([v.reshape(-1) for v in params.values()])

    def f(theta):
        out, i = {}, 0
        for k, v in params.items():
            out[k] = theta[i : i + v.numel()].view_as(v)
            i += v.numel()
        return loss_fn(functional_call(model, out, (x,)), y)

    return float(torch.diagonal(hessian(f)(flat)).sum())


def test_the_exact_trace_refuses_a_model_that_mixes_samples():
    from zsq_probe.hessian import exact_trace
    from zsq_probe.hessian.linearity import NotPiecewiseLinearError

    b = _batch()
    mixing = _Mlp(torch.nn.ReLU(), mix=True).double()
    x = b.inputs.double()
    true = _dense_trace(mixing, torch.nn.functional.cross_entropy, x, b.labels)
    ggn = exact_trace(mixing, "ce", x, b.labels, method="ggn", check="off").trace  # what it reported before
    assert abs(ggn - true) > 0.05 * abs(true), (ggn, true)  # the per-sample sum is wrong here ...
    with pytest.raises(NotPiecewiseLinearError, match="mixes samples"):  # ... so it is refused
        exact_trace(mixing, "ce", x, b.labels, method="ggn")
    plain = _Mlp(torch.nn.ReLU()).double()  # the same net without the mixing: accepted, and exact
    got = exact_trace(plain, "ce", x, b.labels, method="ggn").trace
    assert got == pytest.approx(_dense_trace(plain, torch.nn.functional.cross_entropy, x, b.labels), rel=1e-9)


def test_the_hessian_probe_records_an_exact_refusal_and_goes_on(caplog):
    import logging

    from zsq_probe.config import RunConfig
    from zsq_probe.probes.curvature import curvature

    cfg = RunConfig()
    cfg.probing.trace_estimators = ["hutch++", "exact"]
    cfg.probing.hessian_top_k, cfg.probing.trace_max_products = 2, 40
    model = _Mlp(torch.nn.GELU())
    names = [n for n, _ in model.named_parameters()]
    with caplog.at_level(logging.WARNING, logger="zsq_probe.probes"):
        rows, top = curvature(model, names, _batch(), cfg, seed=0)
    trace = {(r["loss"], r["estimator"]): r for r in rows["hessian_trace"]}
    assert set(trace) == {(loss, e) for loss in ("ce", "kl") for e in ("hutch++", "exact")}
    for loss in ("ce", "kl"):
        refused = trace[(loss, "exact")]
        assert np.isnan(refused["trace"]) and refused["interval"].startswith("refused:"), refused
        assert "GELU" in refused["interval"]
        assert np.isfinite(trace[(loss, "hutch++")]["trace"]) and set(top) == {"ce", "kl"}
    warned = [r for r in caplog.records if "no exact" in r.getMessage()]
    assert len(warned) == 2, [r.getMessage() for r in caplog.records]  # one per loss


# ------------------------------------------------------------------ item 8: what the products count


def test_trace_rows_count_hessian_products_with_the_deflation_and_say_what_stopped_them():
    from zsq_probe.config import RunConfig
    from zsq_probe.hessian import HessianOperator, estimate_trace
    from zsq_probe.probes.curvature import curvature, loss_functions, top_pairs
    from zsq_probe.seeds import sub_seed

    cfg = RunConfig()
    cfg.probing.trace_estimators = ["hutch++", "hutchinson", "exact"]
    cfg.probing.hessian_top_k, cfg.probing.trace_max_products = 2, 40
    model, b = _Mlp(torch.nn.ReLU()), _batch()
    names = [n for n, _ in model.named_parameters()]
    rows, _ = curvature(model, names, b, cfg, seed=5)
    trace = {(r["loss"], r["estimator"]): r for r in rows["hessian_trace"]}
    for loss, (fn, target) in loss_functions(cfg).items():
        with HessianOperator(model, fn, [(b.inputs, getattr(b, target))], mode="eval") as op:  # recount by hand
            eig = top_pairs(op, cfg, 5)
            t = estimate_trace(op, "hutch++", rtol=0.05, max_products=40, deflate=eig.eigenvectors,
                               seed=sub_seed(5, loss, "hutch++"))  # fmt: skip
            h = estimate_trace(op, "hutchinson", rtol=0.05, max_products=40, seed=sub_seed(5, loss, "hutchinson"))
        assert eig.num_products > 0 and t.num_products <= 40
        hpp, hut, exact = trace[(loss, "hutch++")], trace[(loss, "hutchinson")], trace[(loss, "exact")]
        assert hpp["num_hvps"] == eig.num_products + t.num_products and hpp["num_vjps"] == 0
        assert hpp["stopped_by"] == t.stopped_by and t.stopped_by in ("tolerance", "budget")
        assert hut["num_hvps"] == h.num_products and hut["stopped_by"] == h.stopped_by
        # the output Hessian has rank C - 1: 3 vector-Jacobian products per sample at 4 classes
        assert exact["num_hvps"] == 0 and exact["num_vjps"] == b.size * 3 and exact["stopped_by"] == "exact"
    assert {r["loss"]: r["num_hvps"] for r in rows["hessian_eigenvalues"] if r["rank"] == 1}  # unchanged table


def test_the_trace_caption_says_when_the_budget_stopped_estimates(tmp_path):
    from tests.fabricated_runs import make_run
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
