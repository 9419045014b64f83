"""Issue 12 items 2, 3, 7 and LARS: the presets resolve to the reference code's values, those values reach torch,
LARS follows You, Gitman, Ginsburg 2017 on a hand-computed step, and `zsq-probe presets` names each value's source.

Reference numbers (facts, not code) from the official repositories:
* xushoukai/GDFQ trainer.py:56-71 and iamkanghyunchoi/ait GDFQ_AIT/trainer.py:85-100:
  RMSprop(eps=1.0, alpha=settings.momentum=0.9, momentum=0.9), Adam(eps=1e-5, default betas);
* GDFQ imagenet_resnet18.hocon:19 lr_S = 1e-6, GDFQ *.hocon:15 weightDecay = 1e-4;
* iamkanghyunchoi/qimera imagenet_*.hocon:20 lr_S = 0.000001;
* AIT GDFQ_AIT/*.hocon:16 weightDecay = 0.0, :20 lr_S = 0.0001.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from zsq_probe.cli import main
from zsq_probe.errors import UserError
from zsq_probe.presets import PRESETS, resolve_config
from zsq_probe.quantization.lars import LARS
from zsq_probe.quantization.quantizer import QuantLinear
from zsq_probe.training.build import build_optimizer

TEACHER = {"cifar10": "resnet20_cifar10", "imagenet": "resnet18"}


def cfg_of(preset, data="cifar10", **extra):
    teacher = TEACHER.get(data, "digits")
    return resolve_config(preset, teacher=teacher, data=data, overrides=[f"{k}={v}" for k, v in extra.items()])


def optimiser_for(cfg, model=None):
    """build_optimizer on a one-layer quantised model (GI needs a quantised layer); the torch optimiser inside."""
    model = model if model is not None else QuantLinear(4, 3, w_bits=4)
    opt = build_optimizer(cfg, list(model.parameters()), {"fc": model})
    return opt, getattr(opt, "base", opt)


# ------------------------------------------------------------------------------ item 2: Adam / RMSprop (Tab. 3)
@pytest.mark.parametrize("preset", ["gdfq-rmsprop", "ait-rmsprop"])
@pytest.mark.parametrize("data", ["cifar10", "imagenet"])
def test_rmsprop_presets_take_the_reference_hyper_parameters(preset, data):
    cfg = cfg_of(preset, data)
    _, base = optimiser_for(cfg)  # GI wraps the torch optimiser
    assert type(base) is torch.optim.RMSprop
    group = base.param_groups[0]
    assert (group["eps"], group["alpha"], group["momentum"]) == (1.0, 0.9, 0.9)
    assert group["weight_decay"] == (1e-4 if preset.startswith("gdfq") else 0.0)


@pytest.mark.parametrize("preset", ["gdfq-adam", "ait-adam"])
def test_adam_presets_take_the_reference_eps(preset):
    cfg = cfg_of(preset)
    group = optimiser_for(cfg)[1].param_groups[0]
    assert group["eps"] == 1e-5 and tuple(group["betas"]) == (0.9, 0.999)


def test_optimiser_fields_have_flat_keys_and_validate():
    cfg = cfg_of("gdfq", optimizer="rmsprop", eps=0.5, rmsprop_alpha=0.8)
    group = optimiser_for(cfg)[1].param_groups[0]
    assert (group["eps"], group["alpha"]) == (0.5, 0.8)
    assert cfg_of("gdfq").optim.eps is None  # torch's default outside the Tab. 3 presets
    for bad in ({"eps": 0}, {"rmsprop_alpha": 1.0}, {"lars_trust_coef": -1}):
        with pytest.raises(UserError):
            cfg_of("gdfq", **bad)


def test_gi_wraps_the_reference_rmsprop_and_lars():
    """GI on any optimiser still steps with the reference's RMSprop and with LARS."""
    from zsq_probe.quantization.gi import GradientInundation

    for preset, extra in (("ait-rmsprop", {}), ("ait-adam", {}), ("ait", {"optimizer": "lars"})):
        torch.manual_seed(0)
        cfg = cfg_of(preset, **extra)
        model = QuantLinear(4, 3, w_bits=4)
        opt, base = optimiser_for(cfg, model)
        assert isinstance(opt, GradientInundation) and base is not opt
        before = model.quantized_weight().detach().clone()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
        assert not torch.equal(before, model.quantized_weight()), preset  # GI moved integer codes


# ------------------------------------------------------------------------------ items 3 and 7: learning rates, wd
@pytest.mark.parametrize(
    "preset, data, lr, wd",
    [
        ("qimera", "imagenet", 1e-6, 1e-4),
        ("qimera", "cifar10", 1e-4, 1e-4),
        ("ce-only", "imagenet", 1e-6, 1e-4),
        ("ce-only", "cifar10", 1e-4, 1e-4),
        ("ce-only+gi", "imagenet", 1e-4, 0.0),
        ("ce-only+gi", "cifar10", 1e-4, 0.0),
        ("gdfq", "imagenet", 1e-6, 1e-4),
        ("baseline+gi", "imagenet", 1e-4, 0.0),
        ("gdfq-lars", "imagenet", 1e-6, 1e-4),
        ("gdfq-rmsprop", "imagenet", 1e-6, 1e-4),
        ("ait-adam", "imagenet", 1e-4, 0.0),
    ],
)
def test_learning_rate_and_weight_decay_follow_the_reference(preset, data, lr, wd):
    cfg = cfg_of(preset, data)
    assert (cfg.optim.lr, cfg.optim.weight_decay) == (lr, wd)


# ------------------------------------------------------------------------------ LARS
def test_lars_step_matches_the_papers_formula_by_hand():
    """w = [3, 4] (||w|| = 5), g = [0.6, 0.8] (||g|| = 1), eta = 0.001, beta = 0.01, lr = 0.1, m = 0.9.
    local_lr = 0.001 * 5 / (1 + 0.01 * 5) = 0.005 / 1.05
    v1 = 0.1 * local_lr * (g + 0.01 w) = (0.0005 / 1.05) * [0.63, 0.84] = [0.0003, 0.0004]
    w1 = [2.9997, 3.9996]; a second step with the same g adds momentum 0.9 * v1."""
    w = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=0.01, trust_coef=0.001)
    w.grad = torch.tensor([0.6, 0.8], dtype=torch.float64)
    opt.step()
    assert w.detach().tolist() == pytest.approx([2.9997, 3.9996], abs=1e-12)
    # step 2 by hand: ||w1|| = sqrt(2.9997^2 + 3.9996^2)
    n1 = math.hypot(2.9997, 3.9996)
    lam = 0.001 * n1 / (1.0 + 0.01 * n1)
    v2 = [0.9 * 0.0003 + 0.1 * lam * (0.6 + 0.01 * 2.9997), 0.9 * 0.0004 + 0.1 * lam * (0.8 + 0.01 * 3.9996)]
    opt.step()
    assert w.detach().tolist() == pytest.approx([2.9997 - v2[0], 3.9996 - v2[1]], abs=1e-12)


def test_lars_zero_norms_and_errors():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = LARS([w], lr=0.5, momentum=0.0)
    w.grad = torch.ones(3)
    opt.step()  # ||w|| = 0: local lr 1, a plain SGD step
    assert w.detach().tolist() == [-0.5, -0.5, -0.5]
    with pytest.raises(UserError):
        LARS([w], lr=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_lars_cuda_matches_cpu():
    torch.manual_seed(0)
    w0, g = torch.randn(8, 5), torch.randn(8, 5)
    out = []
    for dev in ("cpu", "cuda"):
        w = torch.nn.Parameter(w0.clone().to(dev))
        opt = LARS([w], lr=0.1, momentum=0.9, weight_decay=1e-4)
        for _ in range(3):
            w.grad = g.to(dev)
            opt.step()
        out.append(w.detach().cpu())
    torch.testing.assert_close(out[0], out[1])


def test_gdfq_lars_preset_builds_lars():
    cfg = cfg_of("gdfq-lars")
    opt, base = optimiser_for(cfg)
    assert type(opt) is LARS and base is opt
    group = opt.param_groups[0]
    assert (group["trust_coef"], group["momentum"], group["weight_decay"]) == (1e-3, 0.9, 1e-4)


# ------------------------------------------------------------------------------ `zsq-probe presets` sources
@pytest.mark.parametrize("data", ["cifar10", "imagenet", "digits"])
def test_presets_json_lists_a_source_for_every_value(data, capsys):
    assert main(["presets", "--json", "--data", data]) == 0
    table = json.loads(capsys.readouterr().out)
    assert set(table) == set(PRESETS) and "gdfq-lars" in table
    for name, entry in table.items():
        values = {k for k in entry if k not in ("help", "sources", "per_teacher")}
        assert values == set(entry["sources"]), name
        assert all(isinstance(s, str) and s for s in entry["sources"].values()), name
    if data == "imagenet":
        assert "GDFQ/imagenet_resnet18.hocon:19" in table["ce-only"]["sources"]["lr"]
        assert "qimera/imagenet_resnet18.hocon:20" in table["qimera"]["sources"]["lr"]
    assert "eps=1.0" in table["gdfq-rmsprop"]["sources"]["eps"]
    assert table["qimera+ait"]["per_teacher"]["resnet50"]["values"]["qimera_mix_k"] == 100


def test_presets_text_shows_sources(capsys):
    assert main(["presets", "--data", "imagenet"]) == 0
    out = capsys.readouterr().out
    assert "eps=1e-05  [GDFQ/trainer.py:69" in out and "lars_trust_coef=0.001" in out
