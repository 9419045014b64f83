"""zsq_probe.quantization.quantizer against the GDFQ/AIT formulas of docs/reference.md#quantisation."""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from zsq_probe.errors import UserError
from zsq_probe.quantization.quantizer import (
    ActivationQuantizer,
    QuantConv2d,
    QuantizedActivation,
    QuantLinear,
    activation_quantizers,
    activation_ranges_frozen,
    calibrate_activation_ranges,
    dequantize,
    fake_quantize_weight,
    integer_codes,
    integer_codes_of,
    quantization_spec,
    quantize_model,
    quantized_layers,
    set_activation_ranges_frozen,
    weight_quant_params,
)


def reference_codes(w: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-channel codes computed channel by channel in float32 numpy, straight from
    docs/reference.md#weight-quantiser."""
    w = w.astype(np.float32)
    codes = np.empty(w.shape, np.int64)
    scales, zps = [], []
    for c in range(w.shape[0]):
        ch = w[c]
        lo, hi = ch.min(), ch.max()
        scale = np.float32(2**k - 1) / max(np.float32(hi - lo), np.float32(1e-8))
        zp = np.round(np.float32(scale * lo)) + np.float32(2 ** (k - 1))
        q = np.round(np.float32(scale) * ch - np.float32(zp))
        codes[c] = np.clip(q, -(2 ** (k - 1)), 2 ** (k - 1) - 1)
        scales.append(scale)
        zps.append(zp)
    return codes, np.array(scales, np.float32), np.array(zps, np.float32)


def get_model(name: str, pretrained: bool = False):
    """pytorchcv's `get_model`, imported when a test builds a model: its model_provider imports every pytorchcv model
    and torchvision (~4 s), which collecting this module would otherwise cost every pytest-xdist worker."""
    from pytorchcv.model_provider import get_model as pytorchcv_get_model

    return pytorchcv_get_model(name, pretrained=pretrained)


@pytest.fixture(scope="module")
def resnet20():
    torch.manual_seed(0)
    return get_model("resnet20_cifar10", pretrained=False).eval()


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
@pytest.mark.parametrize("shape", [(6, 3, 3, 3), (5, 7)])
def test_codes_match_formula(bits, shape):
    g = torch.Generator().manual_seed(bits * 100 + len(shape))
    w = torch.randn(shape, generator=g) * 0.3
    w[1] = 0.25  # constant channel: max == min, the 1e-8 guard decides the scale
    w[2] = 0.0
    ref, ref_scale, ref_zp = reference_codes(w.numpy(), bits)
    codes = integer_codes_of(w, bits)
    assert not codes.dtype.is_floating_point
    assert np.array_equal(codes.numpy().astype(np.int64), ref)
    assert codes.min() >= -(2 ** (bits - 1)) and codes.max() <= 2 ** (bits - 1) - 1
    scale, zp = weight_quant_params(w, bits)
    assert scale.shape == (shape[0],) + (1,) * (len(shape) - 1)
    # torch evaluates scalar/tensor as reciprocal * scalar: equal up to an ulp
    np.testing.assert_allclose(scale.flatten().numpy(), ref_scale, rtol=1e-6)
    np.testing.assert_array_equal(zp.flatten().numpy(), ref_zp)
    # dequantised value = (q + zp)/scale: within half a step of w on normal channels
    deq = dequantize(codes, scale, zp)
    assert torch.equal(fake_quantize_weight(w, bits), deq)
    normal = [c for c in range(shape[0]) if c not in (1, 2)]
    err = (deq[normal] - w[normal]).abs().reshape(len(normal), -1)
    assert torch.all(err <= 0.5 / scale[normal].reshape(-1, 1) * (1 + 1e-4))
    # the channel's min and max are representable: all 2^k levels in use over a wide channel
    wide = torch.linspace(-1, 1, 1000).reshape(1, -1)
    assert integer_codes_of(wide, bits).unique().numel() == 2**bits
    # constant channels come back (almost) exactly
    assert torch.allclose(deq[1], torch.full_like(deq[1], 0.25), atol=1e-6)
    assert torch.allclose(deq[2], torch.zeros_like(deq[2]), atol=1e-6)


@pytest.mark.parametrize("bits", [0, 1, 9, 16, 4.0, True, "4", None])
def test_bad_bits_raise(bits):
    with pytest.raises(UserError):
        integer_codes_of(torch.randn(3, 3), bits)
    with pytest.raises(UserError):
        quantize_model(nn.Sequential(nn.Linear(2, 2)), bits, 4)
    with pytest.raises(UserError):
        quantize_model(nn.Sequential(nn.Linear(2, 2)), 4, bits)


def test_weight_and_activation_bits_are_independent():
    q = quantize_model(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)), 2, 8)
    assert [m.w_bits for m in quantized_layers(q).values()] == [2, 2]
    assert [a.a_bits for a in activation_quantizers(q).values()] == [8]


def test_ste_double_backward_weight():
    # fq(w) = w + c with c constant: L = sum(fq(w)^2) has gradient 2 fq(w) and Hessian 2 I.
    w = torch.randn(4, 3, 3, 3, requires_grad=True)
    loss = (fake_quantize_weight(w, 3) ** 2).sum()
    (g,) = torch.autograd.grad(loss, w, create_graph=True)
    assert torch.allclose(g, 2 * fake_quantize_weight(w, 3).detach())
    v = torch.randn_like(w)
    (hv,) = torch.autograd.grad((g * v).sum(), w)
    assert torch.allclose(hv, 2 * v)


def test_ste_double_backward_activation():
    aq = ActivationQuantizer(3)
    x = torch.randn(2, 5, requires_grad=True)
    y = aq(x)
    assert not torch.equal(y, x)  # it does quantise
    (g,) = torch.autograd.grad((y**3).sum(), x, create_graph=True)
    assert torch.allclose(g, 3 * y.detach() ** 2)
    v = torch.randn_like(x)
    (hv,) = torch.autograd.grad((g * v).sum(), x)
    assert torch.allclose(hv, 6 * y.detach() * v)


def test_hessian_vector_products_through_quantised_resnet(resnet20):
    q = quantize_model(resnet20, 4, 4)
    x = torch.randn(4, 3, 32, 32)
    calibrate_activation_ranges(q, [x])
    params = [p for p in q.parameters() if p.requires_grad]
    loss = F.cross_entropy(q(x), torch.tensor([0, 1, 2, 3]))
    grads = torch.autograd.grad(loss, params, create_graph=True)
    v1 = [torch.randn_like(p) for p in params]
    v2 = [torch.randn_like(p) for p in params]
    hv1 = torch.autograd.grad(grads, params, grad_outputs=v1, retain_graph=True)
    hv2 = torch.autograd.grad(grads, params, grad_outputs=v2)
    a = sum((h * v).sum() for h, v in zip(hv1, v2))
    b = sum((h * v).sum() for h, v in zip(hv2, v1))
    assert torch.isfinite(a) and a.abs() > 0
    assert torch.allclose(a, b, rtol=1e-3, atol=1e-6)  # the Hessian is symmetric


@pytest.mark.parametrize("name", ["resnet20_cifar10", "resnet18", "mobilenetv2_w1"])
def test_every_layer_and_relu_is_quantised(name):
    model = get_model(name, pretrained=False)
    before = copy.deepcopy(model.state_dict())
    n_weight = sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())
    n_relu = sum(isinstance(m, (nn.ReLU, nn.ReLU6)) for m in model.modules())
    q = quantize_model(model, 4, 5)
    layers = quantized_layers(q)
    assert len(layers) == n_weight
    float_names = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert list(layers) == float_names
    assert all(m.w_bits == 4 for m in layers.values())
    # no float Conv2d/Linear left anywhere; first and last included
    assert not [
        n
        for n, m in q.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear)) and not isinstance(m, (QuantConv2d, QuantLinear))
    ]
    quantizers = activation_quantizers(q)
    assert len(quantizers) == n_relu
    assert all(a.a_bits == 5 for a in quantizers.values())
    for n, m in q.named_modules():
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            parent = q.get_submodule(n.rsplit(".", 1)[0])
            assert isinstance(parent, QuantizedActivation)
    # the teacher is untouched: same module types, same values, no shared parameters
    assert sum(isinstance(m, (QuantConv2d, QuantLinear, ActivationQuantizer)) for m in model.modules()) == 0
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert not {id(p) for p in model.parameters()} & {id(p) for p in q.parameters()}
    spec = quantization_spec(q)
    json.dumps(spec)
    assert spec["quantized_layer_count"] == n_weight
    assert spec["first_quantized_layer"] == float_names[0]
    assert spec["last_quantized_layer"] == float_names[-1]
    assert spec["activation_quantizer_count"] == n_relu
    assert spec["w_bits"] == 4 and spec["a_bits"] == 5


def test_resnet20_layer_names(resnet20):
    names = list(quantized_layers(quantize_model(resnet20, 4, 4)))
    assert names[0] == "features.init_block.conv"
    assert names[-1] == "output"
    assert len(names) == 22


def test_teacher_untouched_by_student_training(resnet20):
    teacher = copy.deepcopy(resnet20)
    q = quantize_model(teacher, 4, 4)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.SGD(q.parameters(), lr=0.1)
    q.train()
    F.cross_entropy(q(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    for k, v in teacher.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert not any(p.grad is not None for p in teacher.parameters())


def test_spec_lists_unquantised_activations():
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 1),
        nn.LeakyReLU(0.2),
        nn.Flatten(),
        nn.Linear(4 * 6 * 6, 3),
        nn.ReLU6(),
        nn.Sigmoid(),
    )
    q = quantize_model(model, 3, 3)
    spec = quantization_spec(q)
    json.dumps(spec)
    others = spec["not_quantized"]["other_activation_modules"]
    assert [o["type"] for o in others] == ["LeakyReLU", "Sigmoid"]
    assert spec["not_quantized"]["other_activation_module_count"] == 2
    assert spec["activation_quantizer_count"] == 2
    assert spec["quantized_layers"] == ["0", "2", "5"]
    with pytest.raises(UserError):
        quantize_model(q, 4, 4)


def test_from_float_layers():
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1, groups=1, bias=True)
    qc = QuantConv2d.from_float(conv, 3)
    assert qc.w_bits == 3
    assert list(qc.state_dict()) == list(conv.state_dict())
    assert torch.equal(qc.weight, conv.weight) and qc.weight is not conv.weight
    x = torch.randn(2, 3, 8, 8)
    expected = F.conv2d(x, fake_quantize_weight(conv.weight, 3), conv.bias, stride=2, padding=1)
    assert torch.allclose(qc(x), expected)
    assert not torch.allclose(qc(x), conv(x), atol=1e-4)
    lin = nn.Linear(6, 4, bias=False)
    ql = QuantLinear.from_float(lin, 2)
    assert list(ql.state_dict()) == ["weight"] and ql.bias is None
    x = torch.randn(3, 6)
    assert torch.allclose(ql(x), x @ fake_quantize_weight(lin.weight, 2).T)
    with pytest.raises(UserError):
        QuantConv2d.from_float(lin, 4)
    with pytest.raises(UserError):
        QuantLinear.from_float(lin, 9)


def test_activation_range_ema_and_freezing():
    aq = ActivationQuantizer(4)
    x1 = torch.tensor([0.5, 1.0, 3.0])
    x2 = torch.tensor([-1.0, 2.0, 5.0])
    aq.eval()  # ranges move regardless of train/eval mode
    aq(x1)
    assert aq.range_min.item() == 0.5 and aq.range_max.item() == 3.0 and bool(aq.initialized)
    aq(x2)  # EMA 0.9
    assert aq.range_min.item() == pytest.approx(0.9 * 0.5 + 0.1 * -1.0)
    assert aq.range_max.item() == pytest.approx(0.9 * 3.0 + 0.1 * 5.0)
    aq.set_frozen(True)
    before = (aq.range_min.clone(), aq.range_max.clone())
    aq(torch.tensor([-100.0, 100.0]))
    assert torch.equal(aq.range_min, before[0]) and torch.equal(aq.range_max, before[1])
    assert bool(aq.frozen)
    aq.set_frozen(False)
    aq.train()
    aq(torch.tensor([-100.0, 100.0]))
    assert aq.range_min.item() < before[0].item() and aq.range_max.item() > before[1].item()
    # quantised output: per-tensor asymmetric, same formula as the weights
    k, lo, hi = 4, aq.range_min, aq.range_max
    scale = (2**k - 1) / (hi - lo)
    zp = torch.round(scale * lo) + 2 ** (k - 1)
    x = torch.linspace(-20, 20, 50)
    aq.set_frozen(True)
    expected = (torch.clamp(torch.round(scale * x - zp), -8, 7) + zp) / scale
    assert torch.allclose(aq(x), expected)


def test_uncalibrated_frozen_quantizer_raises():
    aq = ActivationQuantizer(4)
    aq.set_frozen(True)
    with pytest.raises(UserError):
        aq(torch.randn(3))


def test_model_level_freezing(resnet20):
    q = quantize_model(resnet20, 4, 4)
    x = torch.randn(2, 3, 32, 32)
    n = calibrate_activation_ranges(q, [x, (x * 2, torch.zeros(2))])
    assert n == 2
    quantizers = list(activation_quantizers(q).values())
    assert all(a.is_frozen and bool(a.frozen) and a.is_initialized for a in quantizers)
    assert all(not m.training for m in q.modules())  # the fixture is in eval mode, so is its copy
    q.train()
    bn = q.features.init_block.bn
    stats = bn.running_mean.clone()
    calibrate_activation_ranges(q, [x * 3])
    assert all(m.training for m in q.modules())  # train flags restored
    assert torch.equal(bn.running_mean, stats)  # calibration ran in eval mode
    q.eval()
    ranges = [(a.range_min.clone(), a.range_max.clone()) for a in quantizers]
    q(x * 10)
    assert all(torch.equal(a.range_max, r[1]) for a, r in zip(quantizers, ranges))
    set_activation_ranges_frozen(q, False)
    quantizers[0].set_frozen(True)
    with activation_ranges_frozen(q):
        assert all(a.is_frozen for a in quantizers)
        q(x * 10)
        assert all(torch.equal(a.range_max, r[1]) for a, r in zip(quantizers, ranges))
    assert [a.is_frozen for a in quantizers] == [True] + [False] * (len(quantizers) - 1)
    q(x * 10)
    assert torch.equal(quantizers[0].range_max, ranges[0][1])
    assert all(a.range_max > r[1] for a, r in zip(quantizers[1:], ranges[1:]))
    with pytest.raises(UserError):
        calibrate_activation_ranges(q, [])


def relative_error(a, b):
    return ((a - b).norm() / b.norm()).item()


def test_output_close_to_fp_at_8_bits_not_at_2(resnet20):
    torch.manual_seed(1)
    x = torch.randn(16, 3, 32, 32)
    with torch.no_grad():
        ref = resnet20(x)
        errs = {}
        for bits in (8, 2):
            q = quantize_model(resnet20, bits, bits)
            calibrate_activation_ranges(q, [x])
            errs[bits] = relative_error(q(x), ref)
    assert errs[8] < 0.05
    assert errs[2] > 0.3


def test_inplace_relu_gives_same_gradients():
    torch.manual_seed(2)
    base = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3),
        nn.ReLU6(inplace=True),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 3),
    )
    not_inplace = copy.deepcopy(base)
    not_inplace[2].inplace = False
    not_inplace[4].inplace = False
    x = torch.randn(5, 3, 8, 8)
    grads = []
    for model in (base, not_inplace):
        q = quantize_model(model, 4, 4)
        q(x)
        out = q(x)
        params = list(q.parameters())
        g = torch.autograd.grad(out.square().sum(), params, create_graph=True)
        hv = torch.autograd.grad(sum(t.sum() for t in g), params)
        grads.append((out, g, hv))
    for a, b in zip(grads[0][1] + grads[0][2], grads[1][1] + grads[1][2]):
        assert torch.allclose(a, b)
    assert torch.equal(grads[0][0], grads[1][0])


def test_state_dict_round_trip(resnet20):
    q = quantize_model(resnet20, 4, 4)
    x = torch.randn(3, 3, 32, 32)
    calibrate_activation_ranges(q, [x])
    with torch.no_grad():
        for m in quantized_layers(q).values():
            m.weight.mul_(1.1)
    sd = q.state_dict()
    # float keys unchanged, quantiser buffers under the activation's old name
    assert set(resnet20.state_dict()) <= set(sd)
    assert "features.init_block.activ.quantizer.frozen" in sd
    fresh = quantize_model(resnet20, 4, 4)
    fresh.load_state_dict(sd)
    assert all(a.is_frozen and a.is_initialized for a in activation_quantizers(fresh).values())
    with torch.no_grad():
        assert torch.equal(fresh(x), q(x))
    for k, v in integer_codes(fresh).items():
        assert torch.equal(v, integer_codes(q)[k])
    # a float state dict loads strictly into the quantised model, leaving the quantisers alone
    fresh.load_state_dict(resnet20.state_dict())
    assert all(a.is_frozen for a in activation_quantizers(fresh).values())
    assert torch.equal(fresh.output.weight, resnet20.output.weight)
    # a quantised state dict with a quantiser's keys half missing is still an error
    broken = dict(sd)
    del broken["features.init_block.activ.quantizer.range_max"]
    with pytest.raises(RuntimeError):
        fresh.load_state_dict(broken)


def test_integer_codes_by_layer(resnet20):
    q = quantize_model(resnet20, 3, 4)
    codes = integer_codes(q)
    assert list(codes) == list(quantized_layers(q))
    for name, c in codes.items():
        w = q.get_submodule(name).weight
        assert c.shape == w.shape
        ref, _, _ = reference_codes(w.detach().numpy(), 3)
        assert np.array_equal(c.numpy().astype(np.int64), ref)
