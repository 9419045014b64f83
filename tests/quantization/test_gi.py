"""Gradient inundation (AIT §4.2, docs/reference.md#gradient-inundation) against a plain per-layer re-statement
of the rule."""

import copy
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from zsq_probe.errors import UserError
from zsq_probe.quantization.gi import GradientInundation
from zsq_probe.quantization.quantizer import integer_codes, integer_codes_of, quantize_model, quantized_layers

pytestmark = pytest.mark.teacher_free  # never loads the digits teacher: runs first under xdist (conftest)


class _Net(nn.Module):
    """Quantised layers "c0", "c1", "c2a", "c2b", "fc"; "c2a" and "c2b" share a channel
    length (16), so they live in one GI bucket."""

    def __init__(self):
        super().__init__()
        self.c0 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn0 = nn.BatchNorm2d(8)
        self.c1 = nn.Conv2d(8, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.c2a = nn.Conv2d(16, 24, 1)
        self.c2b = nn.Conv2d(16, 8, 1)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.relu(self.bn1(self.c1(self.relu(self.bn0(self.c0(x))))))
        x = torch.cat([self.relu(self.c2a(x)), self.relu(self.c2b(x))], dim=1)
        return self.fc(x.mean(dim=(2, 3)))


def small_net(seed=0, w_bits=4):
    torch.manual_seed(seed)
    return quantize_model(_Net(), w_bits, 4)


def fixed_grads(model, seed, scale=1.0, zero=()):
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        p.grad = torch.randn(p.shape, generator=g) * scale
        if any(name.startswith(z + ".") for z in zero):
            p.grad.zero_()


def changed(before, after):
    return {n: int((before[n] != after[n]).sum()) for n in before}


def ref_kappa(old, new, bits, p, cap, steps=5):
    """The GI rule for one layer, written plainly: returns (κ, flagged at cap)."""
    q0 = integer_codes_of(old, bits)
    d = new - old
    n = old.numel()

    def frac(k):
        w = new if k == 1 else old + k * d
        return int((integer_codes_of(w, bits) != q0).sum()) / n

    if frac(1) >= p:
        return 1.0, False
    k = 1.0
    while True:
        k2 = min(2 * k, cap)
        f = frac(k2)
        if f >= p:
            break
        if k2 >= cap:
            return k2, True
        k = k2
    lo, hi = k, k2
    if abs(f - p) < p / 100:
        return hi, False
    for _ in range(steps):
        mid = (lo + hi) / 2
        f = frac(mid)
        if f >= p:
            hi = mid
        else:
            lo = mid
        if abs(f - p) < p / 100:
            break
    return hi, False


def gi_sgd(model, p, lr=1e-6, **kw):
    base = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, nesterov=True)
    return GradientInundation(base, quantized_layers(model), p=p, **kw)


@pytest.mark.parametrize("warmup,lr", [(True, 3e-6), (False, 1e-7)])
def test_every_layer_reaches_p_and_kappa_matches_the_rule(warmup, lr):
    p = 0.013  # p * numel is never an integer here: the early stop hardly ever fires
    model = small_net()
    gi = gi_sgd(model, p, lr=lr, warmup=warmup)
    plain = copy.deepcopy(model)
    plain_opt = torch.optim.SGD(plain.parameters(), lr=lr, momentum=0.9, nesterov=True)
    cap = 128 if warmup else 2**20
    for step in range(3):
        fixed_grads(model, step)
        fixed_grads(plain, step)
        old = {n: m.weight.detach().clone() for n, m in quantized_layers(model).items()}
        before = integer_codes(model)
        plain_opt.load_state_dict(copy.deepcopy(gi.base.state_dict()))
        with torch.no_grad():
            for a, b in zip(plain.parameters(), model.parameters()):
                a.copy_(b)
        plain_opt.step()
        gi.step()
        after = integer_codes(model)
        counts = changed(before, after)
        assert gi.last_changed_codes == counts
        plain_layers = quantized_layers(plain)
        for name, m in quantized_layers(model).items():
            n = m.weight.numel()
            assert gi.last_fraction[name] == counts[name] / n
            assert counts[name] / n >= p or gi.last_flags.get(name) == "cap"
            kappa, at_cap = ref_kappa(old[name], plain_layers[name].weight.detach(), 4, p, cap)
            assert gi.last_kappa[name] == kappa, name
            assert (gi.last_flags.get(name) == "cap") == at_cap
            if kappa == 1.0:  # the base optimiser's result, bit for bit
                assert torch.equal(m.weight, plain_layers[name].weight)
            else:
                d = plain_layers[name].weight.detach() - old[name]
                assert torch.equal(m.weight, old[name] + kappa * d)
        assert max(gi.last_kappa.values()) > 1  # GI did something: plain SGD moves ~nothing at lr 1e-7
        assert max(gi.last_kappa.values()) <= cap


def test_kappa_is_minimal_within_bisection_resolution():
    p = 0.013
    model = small_net(seed=3)
    gi = gi_sgd(model, p, lr=1e-6, warmup=False)
    fixed_grads(model, 7)
    old = {n: m.weight.detach().clone() for n, m in quantized_layers(model).items()}
    gi.step()
    new = {n: m.weight.detach().clone() for n, m in quantized_layers(model).items()}
    checked = 0
    for name, kappa in gi.last_kappa.items():
        if kappa == 1.0 or name in gi.last_flags:
            continue
        checked += 1
        q0 = integer_codes_of(old[name], 4)
        d = (new[name] - old[name]) / kappa  # the base step, recovered

        def frac(k, w=old[name], d=d, q0=q0):
            return (integer_codes_of(w + k * d, 4) != q0).float().mean().item()

        top = 2.0 ** math.ceil(math.log2(kappa))  # where doubling stopped; bisection width top/2/2^5
        assert frac(kappa) >= p
        assert frac(kappa / 2) < p
        near = abs(frac(kappa) - p) < p / 100
        assert near or frac(kappa - top / 64) < p
    assert checked >= 3


def test_p_zero_is_plain_nesterov_sgd_bit_for_bit():
    model = small_net(seed=1)
    twin = copy.deepcopy(model)
    gi = GradientInundation(
        torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4),
        quantized_layers(model),
        p=0.0,
    )
    ref = torch.optim.SGD(twin.parameters(), lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-4)
    x = torch.randn(6, 3, 8, 8)
    y = torch.arange(6)
    for _ in range(4):
        for net, opt in ((model, gi), (twin, ref)):
            opt.zero_grad()
            F.cross_entropy(net(x), y).backward()
            opt.step()
        assert all(k == 1.0 for k in gi.last_kappa.values())
        for a, b in zip(model.parameters(), twin.parameters()):
            assert torch.equal(a, b)
            assert torch.equal(gi.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"])
    # last_changed_codes still reports the base step's crossings
    assert sum(gi.last_changed_codes.values()) > 0


@pytest.mark.parametrize(
    "make",
    [
        lambda ps: torch.optim.SGD(ps, lr=1e-6, momentum=0.9, nesterov=True),
        lambda ps: torch.optim.Adam(ps, lr=1e-7, eps=1e-5),
        lambda ps: torch.optim.RMSprop(ps, lr=1e-7, eps=1.0, momentum=0.9, alpha=0.9),
    ],
    ids=["sgd", "adam", "rmsprop"],
)
def test_optimizer_state_is_not_scaled(make):
    p = 0.02
    model = small_net(seed=2)
    twin = copy.deepcopy(model)
    gi = GradientInundation(make(model.parameters()), quantized_layers(model), p=p)
    ref = make(twin.parameters())
    for step in range(3):
        fixed_grads(model, 10 + step)
        fixed_grads(twin, 10 + step)
        before = integer_codes(model)
        gi.step()
        ref.step()
        counts = changed(before, integer_codes(model))
        for name, m in quantized_layers(model).items():
            assert counts[name] / m.weight.numel() >= p or gi.last_flags.get(name) == "cap"
    assert max(gi.last_kappa.values()) > 1
    # same gradients -> same optimiser state, whatever κ did to the weights
    for a, b in zip(model.parameters(), twin.parameters()):
        sa, sb = gi.state[a], ref.state[b]
        assert sa.keys() == sb.keys()
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key
    # parameters outside the GI layers (BN, biases) took the plain step
    gi_weights = {id(m.weight) for m in quantized_layers(model).values()}
    for a, b in zip(model.parameters(), twin.parameters()):
        if id(a) not in gi_weights:
            assert torch.equal(a, b)


def test_zero_gradient_terminates_and_is_flagged():
    model = small_net()
    gi = gi_sgd(model, 1e-3, warmup=False)
    fixed_grads(model, 0, zero=("c0",))  # first conv gets a zero gradient
    w0 = model.c0.weight.detach().clone()
    gi.step()
    assert gi.last_flags == {"c0": "cap"}
    assert gi.last_kappa["c0"] == 2**20
    assert gi.last_changed_codes["c0"] == 0
    assert torch.equal(model.c0.weight, w0)  # old + cap * 0
    model = small_net()
    gi = gi_sgd(model, 1e-3, warmup=True)  # fresh momentum: every proposed step is zero
    fixed_grads(model, 1, scale=0.0)
    gi.step()
    assert set(gi.last_flags.values()) == {"cap"} and len(gi.last_flags) == 5
    assert set(gi.last_kappa.values()) == {128.0}
    assert gi.last_search_iterations <= 7 + 1


def test_nonfinite_step_is_not_multiplied_in():
    model = small_net()
    twin = copy.deepcopy(model)
    gi = gi_sgd(model, 1e-2, lr=1e-7)
    fixed_grads(model, 4)
    model.c1.weight.grad[0, 0, 0, 0] = float("nan")
    gi.step()
    assert gi.last_flags.get("c1") == "nonfinite"
    assert gi.last_kappa["c1"] == 1.0
    w = model.c1.weight.detach()
    assert torch.isnan(w[0, 0, 0, 0])
    finite = torch.isfinite(w)
    # the other entries of that layer moved by the plain (tiny) step only
    assert torch.allclose(w[finite], twin.c1.weight.detach()[finite], atol=1e-5)
    for name in ("c0", "c2a", "c2b", "fc"):
        assert gi.last_fraction[name] >= 1e-2 or gi.last_flags.get(name) == "cap"


def test_layer_without_gradient_is_left_to_base():
    model = small_net()
    gi = gi_sgd(model, 1e-2, lr=1e-7)
    fixed_grads(model, 5)
    model.c2a.weight.grad = None
    w = model.c2a.weight.detach().clone()
    gi.step()
    assert gi.last_flags.get("c2a") == "nograd"
    assert torch.equal(model.c2a.weight, w)


def test_warmup_caps_kappa_at_128():
    model = small_net()
    gi = gi_sgd(model, 0.05, lr=1e-10)
    fixed_grads(model, 6)
    gi.step()
    assert max(gi.last_kappa.values()) == 128.0
    assert any(v == "cap" for v in gi.last_flags.values())
    gi.warmup = False
    fixed_grads(model, 6)
    gi.step()
    assert max(gi.last_kappa.values()) > 128.0


def test_mixed_bits_use_each_layers_bits():
    model = small_net(w_bits=4)
    layers = quantized_layers(model)
    layers["c1"].w_bits = 3
    layers["c2a"].w_bits = 2  # c2a and c2b share a bucket: per-row bits and clamp bounds
    layers["c2b"].w_bits = 8
    gi = gi_sgd(model, 0.01, lr=1e-7)
    fixed_grads(model, 8)
    old = {n: m.weight.detach().clone() for n, m in layers.items()}
    gi.step()
    for name, m in layers.items():
        count = int((integer_codes_of(old[name], m.w_bits) != integer_codes_of(m.weight, m.w_bits)).sum())
        assert gi.last_changed_codes[name] == count
        assert count / m.weight.numel() >= 0.01 or gi.last_flags.get(name) == "cap"


def test_state_dict_round_trip_and_settings():
    model = small_net()
    gi = gi_sgd(model, 1e-3)
    fixed_grads(model, 9)
    gi.step()
    gi.p = 1e-4
    gi.warmup = False
    sd = gi.state_dict()
    other = gi_sgd(model, 0.5)
    other.load_state_dict(sd)
    assert other.p == 1e-4 and other.warmup is False and other.kappa_limit == 2**20
    for prm in model.parameters():
        assert torch.equal(other.state[prm]["momentum_buffer"], gi.state[prm]["momentum_buffer"])
    assert other.param_groups is other.base.param_groups
    other.param_groups[0]["lr"] = 0.5
    assert other.base.param_groups[0]["lr"] == 0.5
    other.zero_grad()
    assert all(prm.grad is None for prm in model.parameters())
    with pytest.raises(UserError):
        other.load_state_dict(gi.base.state_dict())
    for bad in (-0.1, 1.5, float("nan"), "0.1"):
        with pytest.raises(UserError):
            other.p = bad


def test_bad_construction_raises():
    model = small_net()
    layers = quantized_layers(model)
    bn_only = torch.optim.SGD([model.bn0.weight], lr=0.1)
    with pytest.raises(UserError):
        GradientInundation(bn_only, layers, p=1e-3)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UserError):
        GradientInundation(opt, {}, p=1e-3)
    with pytest.raises(UserError):
        GradientInundation(opt, {"bn": model.bn0}, p=1e-3)
    with pytest.raises(UserError):
        GradientInundation(opt, layers, p=2.0)
    with pytest.raises(UserError):
        GradientInundation(opt, layers, p=1e-3, kappa_cap=0.5)


def test_early_stop_when_fraction_hits_p():
    # 1000 weights and p = 0.01: exactly 10 changed codes satisfies |frac - p| < p/100
    p, hits = 0.01, 0
    for seed in range(4):
        torch.manual_seed(seed)
        model = quantize_model(nn.Sequential(nn.Linear(50, 20)), 4, 4)
        layer = quantized_layers(model)["0"]
        twin = copy.deepcopy(model)
        gi = gi_sgd(model, p, lr=1e-6, warmup=False)
        plain = torch.optim.SGD(twin.parameters(), lr=1e-6, momentum=0.9, nesterov=True)
        fixed_grads(model, seed)
        fixed_grads(twin, seed)
        old = layer.weight.detach().clone()
        gi.step()
        plain.step()
        kappa, _ = ref_kappa(old, twin[0].weight.detach(), 4, p, 2**20)
        assert gi.last_kappa["0"] == kappa
        hits += gi.last_changed_codes["0"] == 10
    assert hits >= 1


def test_resnet20_all_layers_reach_p():
    from pytorchcv.model_provider import get_model

    torch.manual_seed(0)
    model = quantize_model(get_model("resnet20_cifar10", pretrained=False), 4, 4)
    gi = gi_sgd(model, 1e-3, lr=1e-6, warmup=False)
    fixed_grads(model, 11, scale=1e-2)
    before = integer_codes(model)
    gi.step()
    counts = changed(before, integer_codes(model))
    assert gi.last_changed_codes == counts
    assert not gi.last_flags
    for name, m in quantized_layers(model).items():
        assert counts[name] / m.weight.numel() >= 1e-3
    assert len(set(gi.last_kappa.values())) > 3  # layers sharing a bucket get their own κ
