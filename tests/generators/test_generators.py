"""Generators (GDFQ, Qimera, ARC), the BNS loss and ZeroQ distilled data."""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from pytorchcv.models.resnet_cifar import CIFARResNet

from zsq_probe.errors import UserError
from zsq_probe.generators import (
    ARC_GENOTYPES,
    QIMERA_DEFAULTS,
    ARCGenerator,
    BNStatisticsLoss,
    CategoricalConditionalBatchNorm2d,
    GDFQGenerator,
    QimeraGenerator,
    ZeroQStatisticsLoss,
    build_generator,
    distill_zeroq,
)

pytestmark = pytest.mark.teacher_free  # never loads the digits teacher: runs first under xdist (conftest)

SHAPES = [(1, 16, 16), (3, 32, 32), (3, 224, 224)]


class TinyTeacher(nn.Module):
    """conv -> BN -> ReLU -> conv -> BN -> ReLU -> pool -> Linear."""

    def __init__(self, in_ch=3, num_classes=10, width=8):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(in_ch, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, padding=1, bias=False), nn.BatchNorm2d(width)
        self.output = nn.Linear(width, num_classes)

    def forward(self, x):
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)))
        return self.output(h.mean(dim=(2, 3)))


def small_resnet(calibrate=True, seed=0):
    """Small pytorchcv CIFAR ResNet on 1x16x16; BN running stats from random structured data."""
    torch.manual_seed(seed)
    m = CIFARResNet(
        channels=[[8], [16], [32]], init_block_channels=8, bottleneck=False, in_channels=1, in_size=(16, 16)
    )
    m.features.final_pool = nn.AdaptiveAvgPool2d(1)
    if calibrate:  # random but attainable statistics: those of smooth, shifted, scaled noise images
        m.train()
        for bn in m.modules():
            if isinstance(bn, nn.BatchNorm2d):
                bn.momentum = None
        with torch.no_grad():
            for _ in range(3):
                x = F.interpolate(0.7 + 1.5 * torch.randn(32, 1, 4, 4), size=16, mode="bilinear")
                m(x)
    return m.eval()


def rng(seed=0):
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------- shapes, sampling
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["gdfq", "qimera", "arc"])
def test_output_shapes(kind, shape):
    torch.manual_seed(0)
    gen = build_generator(kind, 10, shape, teacher=TinyTeacher(shape[0]))
    batch = 1 if shape[1] > 64 else 2  # ImageNet-size convolutions are slow on CPU
    z, labels = gen.sample(batch, generator=rng(), device="cpu")
    with torch.no_grad():
        x = gen(z, labels)
    assert x.shape == (batch, *shape)
    assert torch.isfinite(x).all()
    assert gen.latent_dim == z.shape[-1]


@pytest.mark.parametrize("kind", ["gdfq", "qimera", "arc"])
def test_sample_reproducible_and_global_rng_untouched(kind):
    gen = build_generator(
        kind, 10, (1, 16, 16), teacher=TinyTeacher(1), **({"mix_prob": 0.5} if kind == "qimera" else {})
    )
    state = torch.get_rng_state()
    draws = [gen.sample(6, generator=rng(5), device="cpu") for _ in range(2)]
    other = gen.sample(6, generator=rng(6), device="cpu")
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(draws[0][0], draws[1][0]) and torch.equal(draws[0][1], draws[1][1])
    assert not torch.equal(draws[0][0], other[0])


def test_sample_rejects_global_rng_and_bad_batch():
    gen = GDFQGenerator(10, (1, 16, 16))
    with pytest.raises(UserError):
        gen.sample(4, generator=None)
    with pytest.raises(UserError):
        gen.sample(0, generator=rng())


# ---------------------------------------------------------------------------- GDFQ
def test_gdfq_multiplies_z_by_label_embedding():
    torch.manual_seed(0)
    gen = GDFQGenerator(10, (3, 32, 32)).eval()
    z, _ = gen.sample(4, generator=rng())
    a = gen(z, torch.full((4,), 1))
    b = gen(z, torch.full((4,), 2))
    assert not torch.allclose(a, b)
    assert torch.equal(gen(z, torch.full((4,), 1)), a)
    with torch.no_grad():
        gen.label_emb.weight[3] = 1.0  # embedding of ones: the body must see z itself
    assert torch.allclose(gen(z, torch.full((4,), 3)), gen.body(z))


def test_gdfq_cifar_layers():
    gen = GDFQGenerator(10, (3, 32, 32))
    body = gen.body
    assert gen.variant == "cifar" and gen.label_emb.weight.shape == (10, 100)
    assert body.l1.out_features == 128 * 8 * 8
    assert isinstance(body.bn0, nn.BatchNorm2d) and body.bn0.eps == 1e-5
    assert body.bn1.eps == 0.8 and body.bn2.eps == 0.8 and body.act.negative_slope == 0.2
    assert body.out_bn.num_features == 3 and not body.out_bn.affine


def test_gdfq_imagenet_variant_uses_conditional_bn():
    torch.manual_seed(0)
    big = GDFQGenerator(10, (3, 224, 224))
    assert big.variant == "imagenet" and big.label_emb is None
    assert big.body.l1.in_features == 100 and big.body.l1.out_features == 128 * 56 * 56
    gen = GDFQGenerator(10, (3, 32, 32), variant="imagenet").eval()  # same stack, cheaper to run
    cbns = [m for m in gen.modules() if isinstance(m, CategoricalConditionalBatchNorm2d)]
    assert [m.eps for m in cbns] == [1e-5, 0.8, 0.8]
    with torch.no_grad():
        cbns[1].gamma.weight[1] = 2.0
        z, _ = gen.sample(1, generator=rng())
        assert not torch.allclose(gen(z, torch.tensor([1])), gen(z, torch.tensor([0])))
        assert torch.allclose(gen(z, torch.tensor([0])), gen(z, torch.tensor([2])))  # identical gamma/beta


def test_conditional_bn_soft_weights_mix_gamma_beta():
    torch.manual_seed(0)
    cbn = CategoricalConditionalBatchNorm2d(4, 3).eval()
    with torch.no_grad():
        cbn.gamma.weight.normal_()
        cbn.beta.weight.normal_()
    x = torch.randn(2, 3, 5, 5)
    hard = torch.tensor([2, 0])
    assert torch.allclose(cbn(x, F.one_hot(hard, 4).float()), cbn(x, hard))
    w = torch.tensor([[0.25, 0.75, 0.0, 0.0], [0.0, 0.0, 0.5, 0.5]])
    expected = (w @ cbn.gamma.weight)[:, :, None, None] * F.batch_norm(
        x, cbn.running_mean, cbn.running_var, eps=cbn.eps
    ) + (w @ cbn.beta.weight)[:, :, None, None]
    assert torch.allclose(cbn(x, w), expected, atol=1e-6)


# ---------------------------------------------------------------------------- BNS
def test_bns_loss_matches_hand_computation():
    torch.manual_seed(0)
    net = TinyTeacher().eval()
    for bn in (net.bn1, net.bn2):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(5, 3, 6, 6)
    with BNStatisticsLoss(net) as bns:
        net(x)
    a1 = net.conv1(x)
    a2 = net.conv2(F.relu(net.bn1(a1)))
    expected = torch.stack(
        [
            F.mse_loss(a.mean((0, 2, 3)), bn.running_mean)
            + F.mse_loss(a.var((0, 2, 3), unbiased=False), bn.running_var)
            for a, bn in ((a1, net.bn1), (a2, net.bn2))
        ]
    ).mean()
    assert bns.num_layers == 2
    assert torch.allclose(bns.loss(), expected, rtol=1e-5)
    assert bns.loss() > 0.1


def test_bns_loss_zero_when_batch_stats_equal_running_stats():
    torch.manual_seed(0)
    net = TinyTeacher().eval()
    x = torch.randn(4, 3, 6, 6)
    bns = BNStatisticsLoss(net)
    with bns:
        for _ in range(bns.num_layers):  # layer k's input only depends on layers < k: converges in L passes
            net(x)
            for bn, (mean, var) in zip(bns.layers, bns.batch_stats()):
                bn.running_mean.copy_(mean.detach())
                bn.running_var.copy_(var.detach())
        net(x)
        assert bns.loss().item() < 1e-10
        net(x + 1.0)
        assert bns.loss().item() > 1e-3


def test_bns_hooks_removed_after_exit_even_on_error():
    net = TinyTeacher().eval()
    hooks = lambda: sum(len(m._forward_hooks) for m in net.modules())  # noqa: E731
    before = hooks()
    with BNStatisticsLoss(net) as bns:
        assert hooks() == before + 2
        net(torch.randn(2, 3, 6, 6))
    assert hooks() == before
    recorded = bns.loss().item()
    net(torch.randn(2, 3, 6, 6) * 5)  # not recorded any more
    assert bns.loss().item() == recorded
    with pytest.raises(RuntimeError):
        with BNStatisticsLoss(net):
            raise RuntimeError("boom")
    assert hooks() == before


def test_bns_errors():
    with pytest.raises(UserError):
        BNStatisticsLoss(nn.Sequential(nn.Conv2d(1, 2, 3)))
    with pytest.raises(UserError):
        BNStatisticsLoss(TinyTeacher()).loss()  # nothing recorded


def test_bns_gradient_reaches_generator_and_spares_teacher_stats():
    torch.manual_seed(0)
    teacher = small_resnet()
    stats = {k: v.clone() for k, v in teacher.state_dict().items()}
    gen = GDFQGenerator(10, (1, 16, 16))
    z, y = gen.sample(8, generator=rng())
    with BNStatisticsLoss(teacher) as bns:
        logits = teacher(gen(z, y))
    loss = F.cross_entropy(logits, y) + 0.1 * bns.loss()
    bns.loss().backward(retain_graph=True)
    grads = [p.grad for p in gen.parameters() if p.requires_grad]
    assert all(g is not None for g in grads)
    assert gen.body.l1.weight.grad.abs().sum() > 0 and gen.label_emb.weight.grad.abs().sum() > 0
    assert torch.isfinite(loss)
    assert all(torch.equal(stats[k], v) for k, v in teacher.state_dict().items())


# ---------------------------------------------------------------------------- Qimera
def test_qimera_embedding_starts_at_teacher_last_layer():
    torch.manual_seed(0)
    teacher = TinyTeacher(num_classes=10, width=12)
    gen = QimeraGenerator(10, (3, 32, 32), teacher=teacher)
    assert gen.latent_dim == 12
    assert torch.equal(gen.label_emb.weight.detach(), teacher.output.weight.detach())
    assert gen.label_emb.weight.requires_grad  # trainable, as in the reference scripts
    assert gen.body.l1.in_features == 12


def test_qimera_soft_labels_sum_to_one_with_at_most_k_classes():
    gen = QimeraGenerator(10, (1, 16, 16), teacher=TinyTeacher(1), mix_prob=1.0, mix_k=3)
    g = rng(1)
    for _ in range(5):
        z, soft = gen.sample(16, generator=g)
        assert z.shape == (16, 3, gen.latent_dim) and soft.shape == (16, 10)
        assert torch.allclose(soft.sum(1), torch.ones(16))
        assert ((soft > 0).sum(1) <= 3).all() and ((soft > 0).sum(1) >= 2).any() and (soft >= 0).all()
    plain = QimeraGenerator(10, (1, 16, 16), teacher=TinyTeacher(1), mix_prob=0.0)
    z, soft = plain.sample(16, generator=g)
    assert z.shape == (16, plain.latent_dim) and torch.equal(soft.sum(1), torch.ones(16))
    assert torch.equal((soft > 0).sum(1), torch.ones(16, dtype=torch.long))


def test_qimera_superposes_with_configured_probability():
    gen = QimeraGenerator(10, (1, 16, 16), teacher=TinyTeacher(1), mix_prob=0.4, mix_k=2)
    g = rng(123)
    n = 3000
    mixed = sum(gen.sample(1, generator=g)[0].dim() == 3 for _ in range(n))
    assert abs(mixed / n - 0.4) < 4 * (0.4 * 0.6 / n) ** 0.5  # 4 sigma


def test_qimera_mixed_input_matches_reference_formula():
    torch.manual_seed(0)
    gen = QimeraGenerator(10, (1, 16, 16), teacher=TinyTeacher(1), mix_k=2)
    d = gen.latent_dim
    z = torch.randn(4, 2, d)
    classes = torch.tensor([[1, 4], [0, 9], [3, 2], [7, 5]])
    w = torch.tensor([[0.7, 0.3], [0.6, 0.4], [0.9, 0.1], [0.55, 0.45]])  # descending: slot k = k-th largest
    soft = torch.zeros(4, 10).scatter_add_(1, classes, w)
    x = gen.label_emb(classes) + z
    x = (x - x.mean((0, 2), keepdim=True)) / torch.sqrt(x.var((0, 2), unbiased=False, keepdim=True) + 1e-5)
    expected = (w[:, :, None] * x).sum(1)
    got, cond = gen.generator_input(z, soft)
    assert torch.allclose(got, expected, atol=1e-5)
    # a one-hot soft label with a plain z is exactly the hard-label path (per-sample standardisation)
    z2, y = torch.randn(4, d), torch.tensor([1, 2, 3, 4])
    assert torch.allclose(gen(z2, F.one_hot(y, 10).float()), gen(z2, y), atol=1e-6)
    e = gen.label_emb(y) + z2
    e = (e - e.mean(1, keepdim=True)) / torch.sqrt(e.var(1, unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(gen.generator_input(z2, y)[0], e, atol=1e-5)


def test_qimera_presets_and_errors():
    assert QIMERA_DEFAULTS["resnet20_cifar10"][4]["mix_k"] == 2
    teacher = TinyTeacher(num_classes=100)
    gen = QimeraGenerator(100, (3, 32, 32), teacher=teacher, preset="resnet20_cifar100")
    assert (gen.mix_k, gen.mix_prob, gen.embedding_init) == (10, 0.4, "teacher")
    assert QimeraGenerator(100, (3, 32, 32), teacher=teacher, preset="resnet20_cifar100", mix_k=7).mix_k == 7
    with pytest.raises(UserError):
        QimeraGenerator(10, (3, 32, 32))  # no teacher, no embedding_dim
    assert QimeraGenerator(10, (3, 32, 32), embedding_dim=16).latent_dim == 16
    with pytest.raises(UserError):
        QimeraGenerator(10, (3, 32, 32), teacher=teacher)  # teacher has 100 classes
    with pytest.raises(UserError):
        QimeraGenerator(10, (3, 32, 32), teacher=TinyTeacher(), preset="nope")
    gen = QimeraGenerator(10, (3, 32, 32), teacher=TinyTeacher(), mix_k=2)
    with pytest.raises(UserError):  # three classes in a row do not fit two slots
        gen(torch.randn(1, 2, gen.latent_dim), torch.tensor([[0.2, 0.3, 0.5] + [0.0] * 7]))


# ---------------------------------------------------------------------------- ARC
def test_arc_each_latent_chunk_influences_output():
    torch.manual_seed(0)
    gen = ARCGenerator(10, (1, 16, 16)).eval()
    assert gen.chunks == (33, 33, 34) and gen.genotype_name == "default"
    z, y = gen.sample(2, generator=rng())
    with torch.no_grad():
        base = gen(z, y)
        start = 0
        for size in gen.chunks:
            z2 = z.clone()
            z2[:, start : start + size] += 1.0
            out = gen(z2, y)
            assert (out - base).abs().max() > 1e-4
            z3 = z.clone()
            z3[:, start : start + size] = z[:, start : start + size]
            assert torch.equal(gen(z3, y), base)
            start += size


def test_arc_genotype_selection_and_validation():
    gen = ARCGenerator(100, (3, 32, 32), model_name="resnet20_cifar100")
    assert gen.genotype is ARC_GENOTYPES["resnet20_cifar100"]
    assert ARCGenerator(10, (1, 16, 16), model_name="my_digits_net").genotype_name == "default"
    # a "none" edge builds no parameters; conv edges do
    zero_cell = gen.cells[0].ops[3]  # resnet20_cifar100, cell 1, edge c3 = none
    assert sum(p.numel() for p in zero_cell.parameters()) == 0
    bad = {"cells": [dict(c) for c in ARC_GENOTYPES["default"]["cells"]]}
    bad["cells"][1] = dict(bad["cells"][1], ops=["conv_7x7"] * 5)
    with pytest.raises(UserError):
        ARCGenerator(10, (3, 32, 32), genotype=bad)
    with pytest.raises(UserError):
        ARCGenerator(10, (3, 28, 28))  # not a multiple of 8


# ---------------------------------------------------------------------------- factory and input errors
def test_build_generator_errors():
    with pytest.raises(UserError):
        build_generator("dcgan", 10, (3, 32, 32))
    with pytest.raises(UserError):
        build_generator("gdfq", 10, (3, 32, 32), mix_k=3)
    with pytest.raises(UserError):
        build_generator("gdfq", 10, (3, 30, 30))
    with pytest.raises(UserError):
        build_generator("gdfq", 0, (3, 32, 32))
    gen = build_generator("arc", 10, (3, 32, 32), model_name="resnet18")
    assert gen.genotype_name == "resnet18"
    z, _ = gen.sample(2, generator=rng())
    with pytest.raises(UserError):
        gen(z, torch.tensor([0, 10]))  # label out of range
    with pytest.raises(UserError):
        gen(z[:, :50], torch.tensor([0, 1]))  # wrong latent size


# ---------------------------------------------------------------------------- ZeroQ
def test_zeroq_statistics_loss_matches_hand_computation():
    torch.manual_seed(0)
    net = TinyTeacher().eval()
    for bn in (net.bn1, net.bn2):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(3, 3, 5, 5)
    with ZeroQStatisticsLoss(net) as zq:
        net(x)
    eps = 1e-6

    def term(act, target_mean, target_std):  # ZeroQ: ||target - per-image stat||^2 / batch, for mean and std
        flat = act.reshape(act.shape[0], act.shape[1], -1)
        std = torch.sqrt(flat.var(2, unbiased=True) + eps)
        return ((target_mean - flat.mean(2)).pow(2).sum() + (target_std - std).pow(2).sum()) / act.shape[0]

    a1 = net.conv1(x)
    a2 = net.conv2(F.relu(net.bn1(a1)))
    expected = (
        term(a1, net.bn1.running_mean, torch.sqrt(net.bn1.running_var + eps))
        + term(a2, net.bn2.running_mean, torch.sqrt(net.bn2.running_var + eps))
        + term(x, torch.zeros(3), torch.ones(3))
    )
    assert torch.allclose(zq.loss(x), expected, rtol=1e-5)
    assert torch.allclose(zq.loss(), expected - term(x, torch.zeros(3), torch.ones(3)), rtol=1e-5)


def test_zeroq_loss_falls_and_teacher_untouched():
    teacher = small_resnet()
    teacher.train()  # distill_zeroq must run it in eval mode and restore the mode
    params = {k: v.clone() for k, v in teacher.state_dict().items()}
    modes = []
    handle = teacher.register_forward_pre_hook(lambda m, i: modes.append(m.training))
    images, history = distill_zeroq(teacher, 4, (1, 16, 16), batch_size=4, iterations=25, generator=rng())
    handle.remove()
    losses = [h["loss"] for h in history]
    assert len(history) == 25 and set(modes) == {False}
    assert losses[0] / losses[-1] >= 10
    assert teacher.training
    assert all(torch.equal(params[k], v) for k, v in teacher.state_dict().items())
    assert all(p.grad is None for p in teacher.parameters())
    assert images.shape == (4, 1, 16, 16) and not images.requires_grad


def test_zeroq_batches_reproducibility_and_errors():
    teacher = small_resnet()
    calls = []
    a, hist = distill_zeroq(
        teacher,
        5,
        (1, 16, 16),
        batch_size=3,
        iterations=2,
        generator=rng(3),
        progress=lambda b, it, loss: calls.append((b, it)),
    )
    b, _ = distill_zeroq(teacher, 5, (1, 16, 16), batch_size=3, iterations=2, generator=rng(3))
    assert a.shape == (5, 1, 16, 16) and torch.equal(a, b)
    assert [(h["batch"], h["iteration"]) for h in hist] == [(0, 0), (0, 1), (1, 0), (1, 1)] == calls
    u, _ = distill_zeroq(teacher, 2, (1, 16, 16), batch_size=2, iterations=0, generator=rng(), init="uniform")
    assert u.abs().max() <= 127.5 / 5418.75
    with pytest.raises(UserError):
        distill_zeroq(teacher, 2, (3, 16, 16), batch_size=2, iterations=1, generator=rng())  # wrong channels
    with pytest.raises(UserError):
        distill_zeroq(nn.Linear(3, 3), 2, (1, 16, 16), batch_size=2, generator=rng())
    with pytest.raises(UserError):
        distill_zeroq(teacher, 0, (1, 16, 16), batch_size=2, generator=rng())
