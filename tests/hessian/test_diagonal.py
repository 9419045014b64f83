"""Exact Hessian diagonal (zsq_probe.hessian.diagonal): closed-form output Hessians, GGN diagonal = Hessian
diagonal on piecewise-linear nets (dense float64 on tiny nets; single-coordinate products on the digits
student, float and 3w3a), traces, and the refusal for nets where the GGN is not the Hessian."""

import copy
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from zsq_probe.hessian import HessianOperator
from zsq_probe.hessian.diagonal import coordinate_products, exact_diagonal, exact_trace, ggn_diagonal, output_hessian
from zsq_probe.hessian.linearity import NotPiecewiseLinearError, piecewise_linear_problems
from zsq_probe.quantization.losses import loss_function

D = torch.float64
T = 4.0


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 7), nn.ReLU(), nn.Linear(7, 5), nn.ReLU6(), nn.Linear(5, 4)).to(D)


class _ConvNet(nn.Module):
    """conv + BN (eval) + ReLU + max pool, a residual unit, avg pool, linear."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 3, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(3)
        self.fc = nn.Linear(3 * 2 * 2, 4)

    def forward(self, x):
        h = F.max_pool2d(torch.relu(self.bn1(self.conv1(x))), 2)
        h = torch.relu(h + self.bn2(self.conv2(h)))
        return self.fc(torch.flatten(F.avg_pool2d(h, 2), 1))


def _convnet():
    torch.manual_seed(1)
    net = _ConvNet().to(D)
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.normal_()
            bn.running_var.uniform_(0.5, 2.0)
            bn.weight.normal_()
            bn.bias.normal_()
    return net


def _batch(net, n=6, classes=4):
    g = torch.Generator().manual_seed(2)
    shape = (n, 6) if isinstance(net, nn.Sequential) else (n, 2, 8, 8)
    x = torch.randn(shape, generator=g, dtype=D)
    return x, torch.randint(0, classes, (n,), generator=g), 3 * torch.randn(n, classes, generator=g, dtype=D)


CASES = [("ce", {}), ("ce", {"label_smoothing": 0.1}), ("kl", {"temperature": T})]


# --------------------------------------------------------------------------- H_out


@pytest.mark.parametrize(
    "loss,kw,soft",
    [
        ("ce", {}, False),
        ("ce", {"label_smoothing": 0.2}, False),
        ("ce", {"label_smoothing": 0.1}, True),
        ("kl", {"temperature": T}, False),
        ("kl", {"temperature": 1.0}, False),
    ],
)
def test_output_hessian_matches_autograd(loss, kw, soft):
    g = torch.Generator().manual_seed(3)
    z = 2 * torch.randn(5, 4, generator=g, dtype=D)
    if loss == "kl":
        target = 3 * torch.randn(5, 4, generator=g, dtype=D)
    elif soft:
        target = torch.softmax(torch.randn(5, 4, generator=g, dtype=D), 1)
    else:
        target = torch.randint(0, 4, (5,), generator=g)
    fn = loss_function(loss, **kw)
    full = torch.autograd.functional.hessian(lambda v: fn(v, target), z).reshape(20, 20)
    blocks = output_hessian(loss, z, target, **kw)
    expect = torch.block_diag(*blocks)
    assert torch.allclose(full, expect, atol=1e-14, rtol=1e-12)


# --------------------------------------------------------------------------- dense float64 reference


@pytest.mark.parametrize("make", [_mlp, _convnet], ids=["mlp", "conv_bn_eval"])
@pytest.mark.parametrize("loss,kw", CASES, ids=["ce", "ce_smooth", "kl"])
def test_ggn_diagonal_equals_dense_hessian_diagonal(make, loss, kw):
    net = make()
    x, y, t = _batch(net)
    target = t if loss == "kl" else y
    with HessianOperator(net, loss_function(loss, **kw), [(x, target)]) as op:
        dense = op.to_dense().diagonal()
        unit = exact_diagonal(op)
    assert torch.allclose(unit.flat(), dense, atol=0, rtol=0)
    d = ggn_diagonal(net, loss, x, target, **kw)
    assert d.exact and d.method == "ggn" and d.param_names == [n for n, _ in net.named_parameters()]
    assert torch.allclose(d.flat(), dense, atol=1e-13, rtol=1e-10)
    loop = ggn_diagonal(net, loss, x, target, backend="loop", **kw)
    assert torch.allclose(loop.flat(), dense, atol=1e-13, rtol=1e-10)
    # trace = sum of the diagonal, and the per-layer / per-block traces add up to it
    tr = exact_trace(net, loss, x, target, **kw)
    assert tr.estimator == "exact" and tr.trace == pytest.approx(float(dense.sum()), rel=1e-10)
    assert sum(d.traces("layer").values()) == pytest.approx(d.trace(), rel=1e-12)
    assert d.traces("model") == {"all": pytest.approx(d.trace(), rel=1e-12)}
    assert sum(tr.per_parameter.values()) == pytest.approx(tr.trace, rel=1e-12)


def test_parameter_subset_and_float32():
    net = _convnet()
    x, y, _ = _batch(net)
    full = ggn_diagonal(net, "ce", x, y)
    part = ggn_diagonal(net, "ce", x, y, params=["bn2", "fc.weight"])
    assert part.param_names == ["bn2.weight", "bn2.bias", "fc.weight"]
    for n in part.param_names:
        assert torch.allclose(part.values[n], full.values[n], rtol=1e-12, atol=1e-15)
    net32 = copy.deepcopy(net).float()
    d32 = ggn_diagonal(net32, "ce", x.float(), y)
    assert d32.flat().dtype == torch.float32
    assert torch.allclose(d32.flat().double(), full.flat(), rtol=1e-4, atol=1e-6)
    d64 = ggn_diagonal(net32, "ce", x.float(), y, dtype=D)  # private float64 copy of the float32 weights
    ref = ggn_diagonal(copy.deepcopy(net32).double(), "ce", x.float().double(), y)
    assert d64.flat().dtype == D and torch.equal(d64.flat(), ref.flat())
    assert next(net32.parameters()).dtype == torch.float32


def test_model_state_is_left_as_found():
    net = _convnet().train()
    x, y, _ = _batch(net)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    ggn_diagonal(net, "ce", x, y)  # eval mode inside
    assert net.training and all(m.training for m in net.modules())
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())


# --------------------------------------------------------------------------- refusal where GGN != H


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(4, 4)
        self.out = nn.Linear(4, 3)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(torch.relu(self.hidden(x)))))


class _FunctionalTanh(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Linear(4, 5)
        self.b = nn.Linear(5, 3)

    def forward(self, x):
        return self.b(torch.tanh(self.a(x)))


@pytest.mark.parametrize(
    "make,why",
    [
        (lambda: nn.Sequential(nn.Linear(4, 5), nn.GELU(), nn.Linear(5, 3)), "GELU"),
        (lambda: nn.Sequential(nn.Linear(4, 5), nn.Sigmoid(), nn.Linear(5, 3)), "Sigmoid"),
        (lambda: nn.Sequential(nn.Linear(4, 5), nn.LayerNorm(5), nn.ReLU(), nn.Linear(5, 3)), "LayerNorm"),
        (_FunctionalTanh, "Tanh"),
        (_Twice, "hidden.weight"),
    ],
    ids=["gelu", "sigmoid", "layernorm", "functional_tanh", "layer_used_twice"],
)
def test_not_piecewise_linear_is_refused(make, why):
    torch.manual_seed(4)
    net = make().to(D)
    x = torch.randn(5, 4, dtype=D)
    y = torch.tensor([0, 1, 2, 0, 1])
    with pytest.raises(NotPiecewiseLinearError, match=why):
        ggn_diagonal(net, "ce", x, y)
    with pytest.warns(UserWarning, match="not .*piecewise linear"):
        d = ggn_diagonal(net, "ce", x, y, check="warn")
    assert not d.exact
    with HessianOperator(net, loss_function("ce"), [(x, y)]) as op:
        dense = op.to_dense().diagonal()
    # the claim matters: here the GGN diagonal is not the Hessian diagonal ...
    assert not torch.allclose(d.flat(), dense, rtol=1e-6, atol=1e-9)
    # ... and exact_diagonal falls back to one product per coordinate
    auto = exact_diagonal(net, "ce", x, y)
    assert auto.method == "unit" and auto.exact
    assert torch.allclose(auto.flat(), dense, rtol=0, atol=0)


def test_batchnorm_in_train_mode_is_refused():
    net = _convnet()
    x, y, _ = _batch(net)
    problems = piecewise_linear_problems(net, x, mode="train")
    assert any("batch statistics" in p for p in problems)
    with pytest.raises(NotPiecewiseLinearError, match="batch statistics"):
        ggn_diagonal(net, "ce", x, y, mode="train")
    assert piecewise_linear_problems(net, x) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ggn_diagonal(net, "kl", x, torch.zeros(6, 4, dtype=D), temperature=T)


def test_bad_arguments():
    net = _mlp()
    x, y, t = _batch(net)
    with pytest.raises(ValueError, match="temperature"):
        ggn_diagonal(net, "kl", x, t)
    with pytest.raises(ValueError, match="loss must be"):
        ggn_diagonal(net, "mse", x, y)
    with pytest.raises(ValueError, match="class indices"):
        ggn_diagonal(net, "ce", x, torch.full((6,), -100))
    with HessianOperator(net, loss_function("ce"), [(x, y)]) as op:
        with pytest.raises(ValueError, match="max_dim"):
            exact_diagonal(op, max_dim=10)


# --------------------------------------------------------------------------- digits student


def _coordinates(names_shapes, generator):
    """Flat indices by parameter kind (conv weight, BN weight, BN bias, linear weight, linear bias): one random
    coordinate of every parameter tensor, so every layer is checked at a product each."""
    picked = {}
    offset = 0
    for _name, numel, kind in names_shapes:
        take = offset + int(torch.randint(numel, (1,), generator=generator))
        picked.setdefault(kind, []).append(take)
        offset += numel
    return {kind: torch.tensor(coords) for kind, coords in picked.items()}


def _kind(model, name):
    module = model.get_submodule(name.rsplit(".", 1)[0])
    leaf = name.rsplit(".", 1)[1]
    if isinstance(module, nn.Conv2d):
        return "conv." + leaf
    if isinstance(module, nn.BatchNorm2d):
        return "bn." + leaf
    if isinstance(module, nn.Linear):
        return "linear." + leaf
    return type(module).__name__ + "." + leaf


@pytest.mark.parametrize("quantised", [False, True], ids=["float", "w3a3"])
def test_digits_student_ggn_equals_single_coordinate_products(digits_teacher, quantised):
    """diag(GGN) = e_i^T H e_i on the embedded student (float64), float and 3w3a (straight-through
    surrogate), for CE and KL*T^2: one random coordinate of each parameter tensor per loss (every
    layer and parameter kind; one Hessian product each)."""
    from zsq_probe.data.datasets import load_dataset
    from zsq_probe.quantization.quantizer import calibrate_activation_ranges, quantize_model

    teacher, _ = digits_teacher
    ds = load_dataset("digits", None, split="train")
    idx = torch.randperm(len(ds), generator=torch.Generator().manual_seed(5))[:64]
    x = ds.images[idx]
    labels = torch.tensor([ds.targets[i] for i in idx.tolist()])
    with torch.no_grad():
        t_logits = teacher(x)
    student = copy.deepcopy(teacher)
    if quantised:
        student = quantize_model(student, 3, 3)
        calibrate_activation_ranges(student, [x])
    student = student.double()
    x, t_logits = x[:8].double(), t_logits[:8].double()  # 8 samples keep each product cheap
    labels = labels[:8]
    assert piecewise_linear_problems(student, x) == []
    info = [(n, p.numel(), _kind(student, n)) for n, p in student.named_parameters()]
    assert {k for _, _, k in info} == {"conv.weight", "bn.weight", "bn.bias", "linear.weight", "linear.bias"}
    gen = torch.Generator().manual_seed(6 + quantised)
    for loss, target, kw in [("ce", labels, {}), ("kl", t_logits, {"temperature": 20.0})]:
        d = ggn_diagonal(student, loss, x, target, **kw)
        assert d.exact
        flat = d.flat()
        with HessianOperator(student, loss_function(loss, **kw), [(x, target)]) as op:
            assert op.dim == flat.numel()
            for kind, coords in _coordinates(info, gen).items():
                ref = coordinate_products(op, coords)
                assert ref.abs().max() > 0, kind
                assert torch.allclose(flat[coords], ref, rtol=1e-9, atol=1e-12 * float(ref.abs().max())), (
                    f"{loss} {kind}"
                )
        assert d.trace() == pytest.approx(float(flat.sum()), rel=1e-12)
        assert sum(d.traces("block").values()) == pytest.approx(d.trace(), rel=1e-12)
