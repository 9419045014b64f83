"""The exact trace's refusals (zsq_probe.hessian.linearity, issue 24): a model that mixes samples is refused, where
the per-sample sum would be wrong; the same net without the mixing is accepted, and exact."""

from __future__ import annotations

import pytest
import torch


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
