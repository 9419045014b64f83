"""Parity with the AIT reference code (issue 12 items 9 and 10): numbers, not code.

The fixtures below were produced by running the reference's own functions on CPU outside this repository
(github.com/iamkanghyunchoi/ait, commit 13a6c8c099df0eccd936c00c10f9d91799be03cb, GPL; only the numbers carry over):

* GI: ``GDFQ_AIT/optimizer.py`` ``SGD_adalr.step`` (lines 158-255) on one float64 weight of shape (4, 16),
  ``w = randn`` then ``grad = randn`` from ``torch.Generator().manual_seed(seed)``, qw=4, momentum 0.9 (Nesterov,
  fresh state), weight decay 0, alpha_iter 5, ``disable_adalr=True`` (warm-up); ``get_perc`` was wrapped to record
  every probe as (κ, changed codes).
* EMA: ``GDFQ_AIT/quantization_utils/quant_modules.py`` ``QuantAct(4)`` (lines 32-93), fed 50 float32 batches
  ``randn(8)`` from ``torch.Generator().manual_seed(0)``; x_min/x_max recorded after n updates.
"""

import pytest
import torch

from zsq_probe.config import RunConfig
from zsq_probe.errors import UserError
from zsq_probe.presets import DATASET_SCALES, resolve_config
from zsq_probe.quantization.gi import GradientInundation
from zsq_probe.quantization.quantizer import ActivationQuantizer, QuantLinear

# (seed, p, lr) -> reference probes [(κ, changed codes of 64)], the applied κ is the last one
REFERENCE_GI = {
    (0, 0.25, 1e-3): [
        (1.0, 1),
        (2.0, 1),
        (4.0, 1),
        (8.0, 5),
        (16.0, 9),
        (32.0, 13),
        (64.0, 23),
        (48.0, 18),
        (40.0, 15),
        (44.0, 17),
        (42.0, 16),
    ],
    # p unreachable below 128: doubling stops at 128 (κ > 100), then 5 midpoints; 126 is applied though frac < p
    (1, 0.5, 1e-4): [
        (1.0, 0),
        (2.0, 0),
        (4.0, 0),
        (8.0, 1),
        (16.0, 1),
        (32.0, 2),
        (64.0, 15),
        (128.0, 17),
        (96.0, 16),
        (112.0, 16),
        (120.0, 16),
        (124.0, 17),
        (126.0, 17),
    ],
    (2, 0.25, 1e-9): [
        (1.0, 0),
        (2.0, 0),
        (4.0, 0),
        (8.0, 0),
        (16.0, 0),
        (32.0, 0),
        (64.0, 0),
        (128.0, 0),
        (96.0, 0),
        (112.0, 0),
        (120.0, 0),
        (124.0, 0),
        (126.0, 0),
    ],
    # the last midpoint falls short of p (6 of the 7 codes needed): ours applies 15.5 (7 codes) instead
    (3, 0.1, 1e-3): [
        (1.0, 0),
        (2.0, 0),
        (4.0, 2),
        (8.0, 2),
        (16.0, 8),
        (12.0, 5),
        (14.0, 6),
        (15.0, 6),
        (15.5, 7),
        (15.25, 6),
    ],
}


def _gi_case(seed, p, lr, rule):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(4, 16, generator=g, dtype=torch.float64)
    grad = torch.randn(4, 16, generator=g, dtype=torch.float64)
    layer = QuantLinear(16, 4, bias=False, w_bits=4).double()
    with torch.no_grad():
        layer.weight.copy_(w)
    layer.weight.grad = grad.clone()
    base = torch.optim.SGD([layer.weight], lr=lr, momentum=0.9, nesterov=True, weight_decay=0.0)
    gi = GradientInundation(base, {"fc": layer}, p=p, kappa_cap_warmup=128, warmup=True, rule=rule)
    gi.step()
    return gi, layer, w, grad


@pytest.mark.parametrize("case", sorted(REFERENCE_GI))
def test_gi_reference_rule_reproduces_recorded_kappa_sequence(case):
    gi, layer, w, grad = _gi_case(*case, rule="reference")
    probes = REFERENCE_GI[case]
    assert gi.last_probes["fc"] == probes
    kappa = probes[-1][0]
    assert gi.last_kappa["fc"] == kappa
    assert gi.last_changed_codes["fc"] == probes[-1][1]
    # the applied step is κ times the base step (Nesterov, first step: lr * 1.9 * grad)
    torch.testing.assert_close(layer.weight.detach(), w - kappa * case[2] * 1.9 * grad, rtol=0, atol=1e-12)


def test_gi_default_rule_keeps_smallest_kappa_found():
    # ours: never applies a κ whose frac < p; at the warm-up cap it stops at 128 (flag "cap"), no bisection
    gi, *_ = _gi_case(1, 0.5, 1e-4, rule="ours")
    assert gi.last_kappa["fc"] == 128.0 and gi.last_flags == {"fc": "cap"}
    gi, *_ = _gi_case(0, 0.25, 1e-3, rule="ours")
    assert gi.last_kappa["fc"] == 42.0 and gi.last_changed_codes["fc"] >= 16
    gi, *_ = _gi_case(3, 0.1, 1e-3, rule="ours")
    assert gi.last_kappa["fc"] == 15.5 and gi.last_changed_codes["fc"] == 7 and not gi.last_flags


def test_gi_rule_config_and_bad_value():
    cfg = RunConfig()
    assert cfg.get("gi_rule") == "ours"
    cfg.set("gi_rule", "reference")
    assert cfg.inundation.rule == "reference"
    layer = QuantLinear(4, 2, w_bits=4)
    with pytest.raises(UserError):
        GradientInundation(torch.optim.SGD(layer.parameters(), lr=0.1), {"fc": layer}, p=0.1, rule="midpoint")


EMA_MINS = [
    -2.1787893772125244,
    -1.0711873769760132,
    -1.5091077089309692,
    -1.3125219345092773,
    -2.2187793254852295,
    -1.0885837078094482,
    -0.9315211176872253,
    -1.505489706993103,
    -1.7342501878738403,
    -1.3360486030578613,
    -0.9759244322776794,
    -1.7786636352539062,
    -1.209532380104065,
    -2.67256498336792,
    -1.0882245302200317,
    -0.6790193319320679,
    -1.970576286315918,
    -1.2534804344177246,
    -1.4194778203964233,
    -1.444206953048706,
]
EMA_MAXS = [
    1.5409960746765137,
    1.1006041765213013,
    1.4565025568008423,
    1.2637947797775269,
    0.5427713394165039,
    0.28811681270599365,
    2.7565383911132812,
    3.11104416847229,
    1.3946317434310913,
    0.8870960474014282,
    1.0197668075561523,
    0.8476512432098389,
    2.3832194805145264,
    0.8755577802658081,
    0.23278887569904327,
    1.989909291267395,
    0.6280840635299683,
    1.6443167924880981,
    2.0439140796661377,
    1.2369059324264526,
]
# reference QuantAct (x_min, x_max) after n updates on the batches above (the first 20 of the recorded 50)
REFERENCE_RANGES = {
    1: (-2.1787893772125244, 1.5409960746765137),
    2: (-10.884360313415527, 7.87871789932251),
    3: (-36.70417404174805, 26.702930450439453),
    5: (-212.48806762695312, 154.52455139160156),
    10: (-2261.815185546875, 1646.2462158203125),
    20: (-8002.39892578125, 5824.87548828125),
}


def test_bias_corrected_range_ema_matches_reference_ranges():
    q = ActivationQuantizer(4, range_ema="bias-corrected")
    for n, (lo, hi) in enumerate(zip(EMA_MINS, EMA_MAXS), start=1):
        q(torch.tensor([lo, hi, 0.5 * (lo + hi)], dtype=torch.float32))
        if n in REFERENCE_RANGES:
            got = (q.range_min.item(), q.range_max.item())
            assert got == pytest.approx(REFERENCE_RANGES[n], rel=1e-5), n


def test_plain_range_ema_is_the_embedded_default_and_the_paper_schedule_uses_bias_corrected():
    q = ActivationQuantizer(4)
    assert q.range_ema == "plain" and "beta_t" not in q.state_dict()
    for lo, hi in zip(EMA_MINS[:2], EMA_MAXS[:2]):
        q(torch.tensor([lo, hi]))
    assert q.range_min.item() == pytest.approx(0.9 * EMA_MINS[0] + 0.1 * EMA_MINS[1], rel=1e-6)
    assert RunConfig().get("range_ema") == "plain"
    # no scale names the rule: the schedule picks it (the reference's only where it settles; training/test_health.py)
    assert all("range_ema" not in scale for scale in DATASET_SCALES.values())
    assert resolve_config("gdfq", "resnet20_cifar10").quant.range_ema == "bias-corrected"  # 4 x 200 updates
    assert resolve_config("gdfq", "resnet18").quant.range_ema == "bias-corrected"
    assert resolve_config("gdfq", "digits").quant.range_ema == "plain"
    with pytest.raises(UserError):
        ActivationQuantizer(4, range_ema="adam")
