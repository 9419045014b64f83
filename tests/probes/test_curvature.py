"""The curvature probes (zsq_probe.probes.curvature and .hessian): an exact trace the model does not allow is recorded
with its reason and the run goes on, the trace rows count the Hessian products with the deflation and say what
stopped them (issue 24), and an epoch with a non-finite loss surface gets no rows and a warning (issue 13)."""

from __future__ import annotations

import numpy as np
import torch
from cli_checks import tiny_cfg


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


def test_curvature_probe_skips_a_nan_epoch_with_a_warning(caplog):
    from types import SimpleNamespace

    from zsq_probe.hessian.operator import NonFiniteHessianError
    from zsq_probe.probes import hessian as curv

    probe = curv.HessianProbe.__new__(curv.HessianProbe)
    probe.cfg = tiny_cfg(hessian_batch_size=200)
    probe.last = ("stale",)

    def nan_curvature(*a, **k):
        raise NonFiniteHessianError("a Hessian-vector product is non-finite")

    ctx = SimpleNamespace(
        probe_batch=lambda e, n: SimpleNamespace(size=n), student=torch.nn.Linear(1, 1), param_names=["weight", "bias"]
    )
    orig = curv.curvature
    curv.curvature = nan_curvature
    try:
        with caplog.at_level("WARNING"):
            probe.measure_checkpoint(ctx, 3)
    finally:
        curv.curvature = orig
    assert probe.last is None
    assert any("no rows for epoch 3" in r.message for r in caplog.records)
