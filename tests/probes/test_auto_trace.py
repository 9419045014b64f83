"""trace_estimators "auto" (zsq_probe/probes/curvature.py): the exact Gauss-Newton trace where the model
qualifies and batch x classes <= 32 x trace_max_products, Hutch++ otherwise, with the reason in the row; block
and layer traces read from the same diagonal; the diagonal from C - 1 cotangents per sample (issue 33)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn as nn
from torch.func import functional_call, hessian

from zsq_probe.config import RunConfig
from zsq_probe.events import ProbeBatch
from zsq_probe.hessian.diagonal import low_rank_factor, output_hessian_factor
from zsq_probe.hessian.results import parameter_group
from zsq_probe.probes.curvature import EXACT_PRODUCTS_PER_BUDGET, curvature, loss_functions

pytestmark = pytest.mark.teacher_free
D = torch.float64


class _Net(nn.Module):
    """8 -> 12 -> 12 -> C in two blocks, with `act` between the layers."""

    def __init__(self, act: nn.Module, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.block1 = nn.Sequential(nn.Linear(8, 12), act)
        self.block2 = nn.Sequential(nn.Linear(12, 12), act, nn.Linear(12, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block2(self.block1(x))


def _batch(n: int = 16, classes: int = 4) -> ProbeBatch:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n, 8, generator=g, dtype=D)
    labels = torch.randint(0, classes, (n,), generator=g)
    return ProbeBatch(x, labels, 3 * torch.randn(n, classes, generator=g, dtype=D), "real", 0)


def _cfg(budget: int = 40) -> RunConfig:
    cfg = RunConfig()
    assert cfg.probing.trace_estimators == ["auto", "slq"]  # the default
    cfg.probing.trace_estimators = ["auto"]
    cfg.probing.hessian_top_k, cfg.probing.trace_max_products = 2, budget
    cfg.probing.scopes = ["model", "block", "layer"]
    return cfg


def _dense_diagonal(model: nn.Module, loss_fn, x, target) -> dict[str, torch.Tensor]:
    """The Hessian diagonal per parameter from the dense float64 Hessian (torch.func)."""
    params = {k: v.detach() for k, v in model.named_parameters()}
    flat = torch.cat([v.reshape(-1) for v in params.values()])

    def f(theta):
        out, i = {}, 0
        for k, v in params.items():
            out[k] = theta[i : i + v.numel()].view_as(v)
            i += v.numel()
        return loss_fn(functional_call(model, out, (x,)), target)

    diag = torch.diagonal(hessian(f)(flat))
    out, i = {}, 0
    for k, v in params.items():
        out[k] = diag[i : i + v.numel()]
        i += v.numel()
    return out


def test_auto_takes_the_exact_trace_and_its_groups_equal_the_dense_hessian():
    model, b, cfg = _Net(nn.ReLU()).to(D), _batch(), _cfg()
    names = [n for n, _ in model.named_parameters()]
    rows, _ = curvature(model, names, b, cfg, seed=0)
    for loss, (fn, target) in loss_functions(cfg).items():
        dense = _dense_diagonal(model, fn, b.inputs, getattr(b, target))
        got = [r for r in rows["hessian_trace"] if r["loss"] == loss]
        model_row = next(r for r in got if r["scope"] == "model")
        assert model_row["estimator"] == "exact" and model_row["reason"] == (
            f"auto: exact (16 x 3 = 48 per-sample products <= {EXACT_PRODUCTS_PER_BUDGET} x trace_max_products "
            f"= {EXACT_PRODUCTS_PER_BUDGET * 40})"
        )
        total = float(sum(v.sum() for v in dense.values()))
        assert model_row["trace"] == pytest.approx(total, rel=1e-9, abs=1e-12)
        assert model_row["ci_low"] == model_row["ci_high"] == model_row["trace"]  # a point: no interval
        assert model_row["num_vjps"] == 16 * 3 and model_row["num_hvps"] == 0  # C - 1 cotangents per sample
        for scope in ("block", "layer"):
            expected: dict[str, float] = {}
            for name, values in dense.items():
                group = parameter_group(name, scope)
                expected[group] = expected.get(group, 0.0) + float(values.sum())
            scoped = {r["group"]: r for r in got if r["scope"] == scope}
            assert set(scoped) == set(expected)
            for group, r in scoped.items():
                assert r["estimator"] == "exact" and r["num_hvps"] == r["num_vjps"] == 0
                assert r["reason"] == "from the model-scope exact diagonal (no products of its own)"
                assert r["trace"] == pytest.approx(expected[group], rel=1e-9, abs=1e-12)


def test_auto_takes_hutchpp_past_the_product_limit_and_says_why():
    classes = 40  # 16 x 39 = 624 > 32 x 19
    model, b, cfg = _Net(nn.ReLU(), classes).to(D), _batch(classes=classes), _cfg(budget=19)
    rows, _ = curvature(model, [n for n, _ in model.named_parameters()], b, cfg, seed=0)
    model_rows = [r for r in rows["hessian_trace"] if r["scope"] == "model"]
    assert {r["estimator"] for r in model_rows} == {"hutch++"}
    assert all(r["reason"] == "auto: hutch++ (16 x 39 = 624 per-sample products > 32 x trace_max_products = 608)"
               for r in model_rows)  # fmt: skip
    assert {r["estimator"] for r in rows["hessian_trace"] if r["scope"] != "model"} == {"hutchinson"}


def test_auto_takes_hutchpp_where_the_model_does_not_qualify(caplog):
    model, b, cfg = _Net(nn.Tanh()).to(D), _batch(), _cfg()
    with caplog.at_level(logging.WARNING, logger="zsq_probe.probes"):
        rows, _ = curvature(model, [n for n, _ in model.named_parameters()], b, cfg, seed=0)
    model_rows = [r for r in rows["hessian_trace"] if r["scope"] == "model"]
    assert [r["estimator"] for r in model_rows] == ["hutch++", "hutch++"]
    assert all(r["reason"].startswith("auto: hutch++ (no exact trace: ") and "Tanh" in r["reason"] for r in model_rows)
    assert all(np.isfinite(r["trace"]) for r in model_rows)
    assert "no exact" not in caplog.text  # a choice, not a refusal: no warning


def test_the_low_rank_factor_keeps_the_output_hessian():
    g = torch.Generator().manual_seed(3)
    logits, labels = torch.randn(5, 7, generator=g, dtype=D) * 4, torch.randint(0, 7, (5,), generator=g)
    u = output_hessian_factor("ce", logits, labels)
    v = low_rank_factor(u)
    assert v.shape == (5, 6, 7)
    assert torch.allclose(v.transpose(1, 2) @ v, u.transpose(1, 2) @ u, atol=1e-13)
