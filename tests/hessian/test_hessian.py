"""zsq_probe.hessian against dense Hessians of small networks (float64); ARPACK stops near its product bound and
says so (issue 24); a non-finite product is a clear error, not a crash inside scipy (issue 13)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call

from zsq_probe.errors import UserError
from zsq_probe.hessian import (
    HessianOperator,
    TraceInterval,
    estimate_trace,
    flatten_params,
    gaussian_density,
    lanczos,
    rademacher,
    slq_density,
    slq_trace,
    top_eigenpairs,
    unflatten,
)

pytestmark = pytest.mark.teacher_free  # never loads the digits teacher: runs first under xdist (conftest)

DT = torch.float64


def hutchinson(op, num_vectors: int, seed: int) -> TraceInterval:
    """Plain Hutchinson with exactly `num_vectors` Rademacher vectors (no stop rule)."""
    return estimate_trace(op, "hutchinson", rtol=None, max_products=num_vectors, min_samples=num_vectors, seed=seed)


# --------------------------------------------------------------------------- fixtures


def mlp(seed: int = 0, dtype=DT) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).to(dtype)


def conv_bn(seed: int = 0, dtype=DT) -> nn.Module:
    torch.manual_seed(seed)
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1),
        nn.BatchNorm2d(3),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(12, 4),
    ).to(dtype)
    net.train()
    with torch.no_grad():  # non-trivial running statistics
        for _ in range(3):
            net(torch.randn(8, 2, 5, 5, dtype=dtype) * 2 + 0.5)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net


def data(shape, classes, n, seed=1, dtype=DT):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *shape, generator=g, dtype=dtype), torch.randint(0, classes, (n,), generator=g)


def dense_hessian(model, loss_fn, batches, names=None, mode="eval") -> torch.Tensor:
    """Reference: double loop of autograd on a deep copy (row i = d(grad_i)/d params)."""
    m = copy.deepcopy(model)
    m.train(mode == "train")
    named = dict(m.named_parameters())
    names = names or [n for n, p in named.items() if p.requires_grad]
    params = [named[n] for n in names]
    total = sum(len(x) for x, _ in batches)
    loss = sum(len(x) * loss_fn(m(x), y) for x, y in batches) / total
    grads = torch.autograd.grad(loss, params, create_graph=True, allow_unused=True)
    g = torch.cat([(torch.zeros_like(p) if gi is None else gi).reshape(-1) for gi, p in zip(grads, params)])
    rows = []
    for i in range(g.numel()):
        if not g[i].requires_grad:
            rows.append(torch.zeros_like(g))
            continue
        r = torch.autograd.grad(g[i], params, retain_graph=True, allow_unused=True)
        rows.append(torch.cat([(torch.zeros_like(p) if ri is None else ri).reshape(-1) for ri, p in zip(r, params)]))
    return torch.stack(rows).detach()


def func_hessian(model, loss_fn, x, y) -> torch.Tensor:
    """Independent reference for eval-mode nets: torch.func.hessian of a functional_call."""
    params = {n: p.detach() for n, p in model.named_parameters()}
    buffers = {n: b.detach().clone() for n, b in model.named_buffers()}
    names = list(params)
    shapes = [params[n].shape for n in names]
    sizes = [params[n].numel() for n in names]
    m = copy.deepcopy(model).eval()

    def f(flat):
        d = {n: c.view(s) for n, c, s in zip(names, flat.split(sizes), shapes)}
        return loss_fn(functional_call(m, (d, buffers), (x,)), y)

    return torch.func.hessian(f)(flatten_params(params))


class Quadratic(nn.Module):
    """loss = 0.5 theta^T A theta + b^T theta: its Hessian is A whatever the data."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.randn(n, dtype=DT))

    def forward(self, x):
        return self.theta


def quad_loss(out, target):
    a, b = target
    return 0.5 * out @ a @ out + b @ out


def quad_problem(eigs, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = len(eigs)
    q, _ = torch.linalg.qr(torch.randn(n, n, generator=g, dtype=DT))
    a = q @ torch.diag(torch.tensor(eigs, dtype=DT)) @ q.T
    a = 0.5 * (a + a.T)
    torch.manual_seed(seed)
    model = Quadratic(n)
    return model, a, [(torch.zeros(1, 1, dtype=DT), (a, torch.randn(n, generator=g, dtype=DT)))]


def rand_vec(n, seed=3, dtype=DT):
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def state_of(model):
    return (
        {n: b.clone() for n, b in model.named_buffers()},
        {n: id(b) for n, b in model.named_buffers()},
        {n: p.detach().clone() for n, p in model.named_parameters()},
        [m.training for m in model.modules()],
    )


def assert_state_equal(model, before):
    bufs, ids, params, modes = before
    now = dict(model.named_buffers())
    assert set(now) == set(bufs)
    for n, b in bufs.items():
        assert torch.equal(now[n], b), n
        assert id(now[n]) == ids[n], n
    for n, p in model.named_parameters():
        assert torch.equal(p.detach(), params[n]), n
        assert p.grad is None
    assert [m.training for m in model.modules()] == modes


# --------------------------------------------------------------------------- products


def test_matvec_equals_dense_mlp_and_graph_is_reused():
    model = mlp()
    x, y = data((5,), 3, 16)
    h = func_hessian(model, F.cross_entropy, x, y)
    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    with HessianOperator(model, F.cross_entropy, [(x, y)]) as op:
        assert op.dim == h.shape[0] == 75 and op.dtype == DT and op.device == torch.device("cpu")
        for seed in range(3):
            v = rand_vec(op.dim, seed)
            torch.testing.assert_close(op.matvec(v), h @ v, rtol=1e-10, atol=1e-12)
        assert op.num_products == 3 and len(calls) == 1  # one forward, three products
        torch.testing.assert_close(op.to_dense(), h, rtol=1e-10, atol=1e-12)
    assert op.closed
    with pytest.raises(ValueError):
        op.matvec(rand_vec(op.dim))
    rec = HessianOperator(model, F.cross_entropy, [(x, y)], keep_graphs=False)
    torch.testing.assert_close(rec.matvec(rand_vec(75)), h @ rand_vec(75), rtol=1e-10, atol=1e-12)
    # the gradient the graph was built from is the loss gradient
    d = dict(model.named_parameters())
    g = torch.autograd.grad(F.cross_entropy(model(x), y), list(d.values()))
    torch.testing.assert_close(rec.gradient(), flatten_params(g))


def test_conv_bn_eval_from_train_mode_leaves_model_as_found():
    model = conv_bn()  # in train mode; the Hessian is taken in eval mode (frozen BN statistics)
    model[5].eval()  # a mixed per-module state must come back exactly
    x, y = data((2, 5, 5), 4, 6)
    before = state_of(model)
    h = func_hessian(model, F.cross_entropy, x, y)
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    for seed in range(2):
        v = rand_vec(op.dim, seed)
        torch.testing.assert_close(op.matvec(v), h @ v, rtol=1e-9, atol=1e-11)
    assert_state_equal(model, before)
    # later in-place changes of the buffers do not disturb the kept graph
    with torch.no_grad():
        model[1].running_mean.add_(1.0)
    torch.testing.assert_close(op.matvec(rand_vec(op.dim)), h @ rand_vec(op.dim), rtol=1e-9, atol=1e-11)
    # a parameter changed in place makes products fail with a clear message
    with torch.no_grad():
        model[0].weight.add_(0.1)
    with pytest.raises(ValueError, match="changed"):
        op.matvec(rand_vec(op.dim))


def test_train_mode_hessian_and_buffers_restored():
    model = conv_bn().eval()
    x, y = data((2, 5, 5), 4, 6)
    before = state_of(model)
    h = dense_hessian(model, F.cross_entropy, [(x, y)], mode="train")
    h_eval = dense_hessian(model, F.cross_entropy, [(x, y)], mode="eval")
    assert not torch.allclose(h, h_eval)  # batch statistics vs running statistics
    for keep in (True, False):
        op = HessianOperator(model, F.cross_entropy, [(x, y)], mode="train", keep_graphs=keep)
        v = rand_vec(op.dim)
        torch.testing.assert_close(op.matvec(v), h @ v, rtol=1e-9, atol=1e-11)
        op.matvec(v)
        assert_state_equal(model, before)
        assert model[1].num_batches_tracked.item() == 3


def test_several_batches_give_size_weighted_hessian():
    model = mlp(1)
    b1, b2, b3 = data((5,), 3, 2, seed=4), data((5,), 3, 5, seed=5), data((5,), 3, 9, seed=6)
    batches = [b1, b2, b3]
    h = dense_hessian(model, F.cross_entropy, batches)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    torch.testing.assert_close(h, func_hessian(model, F.cross_entropy, x, y), rtol=1e-10, atol=1e-12)
    v = rand_vec(75)
    for keep in (True, False, None):
        op = HessianOperator(model, F.cross_entropy, iter(batches), keep_graphs=keep)
        assert op.batch_sizes == [2, 5, 9]
        torch.testing.assert_close(op.matvec(v), h @ v, rtol=1e-10, atol=1e-12)
    # an unweighted mean of the per-batch Hessians differs: the weighting matters
    unweighted = sum(dense_hessian(model, F.cross_entropy, [b]) for b in batches) / 3
    assert not torch.allclose(unweighted @ v, h @ v, rtol=1e-3)


def test_parameter_selection_is_the_dense_sub_block():
    model = mlp(2)
    x, y = data((5,), 3, 10)
    h = dense_hessian(model, F.cross_entropy, [(x, y)])
    sizes = {n: p.numel() for n, p in model.named_parameters()}  # 0.weight 40, 0.bias 8, 2.weight 24, 2.bias 3
    offsets = np.cumsum([0] + list(sizes.values()))
    index = {n: torch.arange(offsets[i], offsets[i + 1]) for i, n in enumerate(sizes)}
    for sel, names in [
        ("0", ["0.weight", "0.bias"]),
        (["2.bias", "0.weight"], ["0.weight", "2.bias"]),
        ("2.weight", ["2.weight"]),
    ]:
        op = HessianOperator(model, F.cross_entropy, [(x, y)], params=sel)
        assert op.param_names == names
        idx = torch.cat([index[n] for n in names])
        sub = h[idx][:, idx]
        v = rand_vec(op.dim)
        torch.testing.assert_close(op.matvec(v), sub @ v, rtol=1e-10, atol=1e-12)
        assert set(op.unflatten(v)) == set(names)
    with pytest.raises(ValueError, match="no parameter"):
        HessianOperator(model, F.cross_entropy, [(x, y)], params=["0", "layer9"])
    model[0].bias.requires_grad_(False)
    with pytest.raises(ValueError, match="require grad"):
        HessianOperator(model, F.cross_entropy, [(x, y)], params="0.bias")
    assert HessianOperator(model, F.cross_entropy, [(x, y)]).dim == 75 - 8


def test_unused_parameters_give_zero_rows():
    class WithUnused(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp(3)
            self.spare = nn.Linear(4, 2).to(DT)

        def forward(self, x):
            return self.net(x)

    model = WithUnused()
    x, y = data((5,), 3, 8)
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    assert op.dim == 75 + 10
    dense = op.to_dense()
    assert torch.count_nonzero(dense[75:]) == 0 and torch.count_nonzero(dense[:, 75:]) == 0
    torch.testing.assert_close(dense[:75, :75], func_hessian(model.net, F.cross_entropy, x, y), rtol=1e-10, atol=1e-12)
    # only unused parameters: a zero Hessian, not an error
    spare = HessianOperator(model, F.cross_entropy, [(x, y)], params="spare")
    assert torch.count_nonzero(spare.matvec(rand_vec(10))) == 0


def test_quantised_student_hessian_is_finite_and_matches_dense():
    from zsq_probe.quantization.quantizer import activation_quantizers, calibrate_activation_ranges, quantize_model

    teacher = conv_bn(4).eval()
    x, y = data((2, 5, 5), 4, 6, seed=7)
    student = quantize_model(teacher, w_bits=4, a_bits=4)
    calibrate_activation_ranges(student, [x])
    quantizers = activation_quantizers(student)
    for q in quantizers.values():  # unfrozen, as in the first epochs: the probe must not move the ranges
        q.set_frozen(False)
    student.train()
    before = state_of(student)
    with torch.no_grad():
        teacher_logits = teacher(x)

    def kl(s, t):
        return F.kl_div(F.log_softmax(s, 1), F.softmax(t, 1), reduction="batchmean")

    op = HessianOperator(student, kl, [(x, teacher_logits)])
    v = rand_vec(op.dim)
    hv = op.matvec(v)
    assert torch.isfinite(hv).all() and hv.abs().sum() > 0
    assert_state_equal(student, before)
    assert all(not q.is_frozen for q in quantizers.values())
    for q in quantizers.values():
        q.set_frozen(True)
    h = dense_hessian(student, kl, [(x, teacher_logits)])
    assert torch.isfinite(h).all()
    torch.testing.assert_close(hv, h @ v, rtol=1e-9, atol=1e-11)
    tr = hutchinson(op, 5, seed=0)
    assert np.isfinite(tr.estimate)


# --------------------------------------------------------------------------- trace


def test_hutchinson_statistics_and_rng_hygiene():
    model = mlp(5)
    x, y = data((5,), 3, 12)
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    h = func_hessian(model, F.cross_entropy, x, y)
    exact = float(torch.trace(h))
    # Rademacher: Var(v^T H v) = 2 * sum of squared off-diagonal entries
    sample_var = 2 * float((h**2).sum() - (torch.diagonal(h) ** 2).sum())
    state = torch.random.get_rng_state()
    est = hutchinson(op, 200, seed=11)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert est.estimator == "hutchinson" and est.rank == 0 and est.low_rank_part == 0.0
    assert est.num_vectors == 200 and est.seed == 11 and est.num_products == 200
    assert abs(est.estimate - exact) < 4 * np.sqrt(sample_var / 200)
    assert abs(est.estimate - exact) < 4 * est.sample_stderr  # the plain sample standard error
    assert est.stderr >= est.sample_stderr  # the interval's: the larger of two standard deviations
    assert est.sample_stderr**2 * 200 == pytest.approx(sample_var, rel=0.35)
    assert hutchinson(op, 200, seed=11).samples == est.samples  # reproducible
    assert hutchinson(op, 20, seed=12).samples != est.samples[:20]
    # nearly diagonal Hessian, many vectors: equal to the exact trace
    g = torch.Generator().manual_seed(0)
    noise = 0.01 * torch.randn(30, 30, generator=g, dtype=DT)
    a = torch.diag(torch.arange(1.0, 31.0, dtype=DT)) + noise + noise.T
    model_q = Quadratic(30)
    batches = [(torch.zeros(1, 1, dtype=DT), (a, torch.zeros(30, dtype=DT)))]
    many = hutchinson(HessianOperator(model_q, quad_loss, batches), 400, seed=1)
    assert many.estimate == pytest.approx(float(torch.trace(a)), rel=1e-3)
    # a diagonal Hessian: every Rademacher sample is the exact trace
    diag = torch.diag(torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=DT))
    batches = [(torch.zeros(1, 1, dtype=DT), (diag, torch.ones(4, dtype=DT)))]
    est = hutchinson(HessianOperator(Quadratic(4), quad_loss, batches), 4, seed=0)
    assert est.samples == (4.5,) * 4 and est.stderr == 0.0 and est.sample_stderr == 0.0


def test_hutchinson_early_stop_handles_negative_traces():
    eigs = [-9.0, -7.0, -5.0, -3.0, 1.0, 2.0] * 5
    model, a, batches = quad_problem(eigs, seed=1)
    op = HessianOperator(model, quad_loss, batches)
    exact = float(torch.trace(a))
    assert exact < 0
    # atol=0: the stop rule is on the magnitude of the estimate alone
    res = estimate_trace(op, "hutchinson", rtol=0.05, atol=0.0, max_products=2000, min_samples=10, seed=0)
    assert 10 <= res.num_vectors < 2000 and res.stopped_by == "tolerance"
    assert res.half_width <= 0.05 * abs(res.estimate)
    assert res.stderr <= 0.05 * abs(res.estimate)
    assert abs(res.estimate - exact) < 5 * res.stderr
    with pytest.raises(ValueError):
        estimate_trace(op, "hutchinson", max_products=0)
    with pytest.raises(ValueError):
        estimate_trace(op, "hutchinson", rtol=-1.0)


def test_slq_trace_equals_hutchinson_with_the_same_vectors():
    model = mlp(6)
    x, y = data((5,), 3, 12)
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    hutch = hutchinson(op, 7, seed=5)
    slq = slq_trace(op, num_runs=7, num_steps=3, seed=5)
    assert isinstance(slq, TraceInterval) and slq.estimator == "slq" and slq.num_vectors == 7
    np.testing.assert_allclose(slq.samples, hutch.samples, rtol=1e-9)
    assert slq.estimate == pytest.approx(hutch.estimate, rel=1e-9)
    # its interval's sd: the larger of the sample sd and sqrt(2) ||H||_F, ||H||_F^2 from the runs' v^T H^2 v
    from zsq_probe.hessian.operator import rademacher

    gen = torch.Generator().manual_seed(5)
    fro2 = np.mean(
        [
            float(op.matvec(v).double().pow(2).sum())
            for v in [rademacher(op.dim, gen, op.dtype, op.device) for _ in range(7)]
        ]
    )
    assert slq.stderr == pytest.approx(max(hutch.sample_stderr, np.sqrt(2 * fro2 / 7)), rel=1e-6)
    assert slq.sample_stderr == pytest.approx(hutch.sample_stderr, rel=1e-6)
    assert slq.frobenius == pytest.approx(np.sqrt(fro2), rel=1e-6)
    assert slq.ci_high - slq.ci_low == pytest.approx(2 * 2.446912 * slq.stderr, rel=1e-5)  # t(0.975, 6 dof)
    dens = slq_density(op, num_runs=7, num_steps=3, seed=5)
    assert slq_trace(dens).estimate == pytest.approx(slq.estimate, rel=1e-12)


# --------------------------------------------------------------------------- Lanczos and SLQ


def test_lanczos_tridiagonalises_and_full_krylov_gives_the_spectrum():
    model = mlp(7)
    x, y = data((5,), 3, 12)
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    h = func_hessian(model, F.cross_entropy, x, y)
    res = lanczos(op, 20, seed=1, return_basis=True)
    q = res.basis
    assert q.shape == (20, 75) and res.num_products == 20
    torch.testing.assert_close(q @ q.T, torch.eye(20, dtype=DT), atol=1e-10, rtol=0)
    torch.testing.assert_close(q @ h @ q.T, torch.from_numpy(res.tridiagonal()), atol=1e-9, rtol=1e-9)
    # the full Krylov space: Ritz values are eigenvalues of H, weights the spectral measure of v0
    full = lanczos(op, 500, seed=1)
    assert full.num_steps <= 75
    eigs = torch.linalg.eigvalsh(h).numpy()
    nodes, weights = full.ritz()
    scale = np.abs(eigs).max()
    for lam in nodes:
        assert np.min(np.abs(eigs - lam)) < 1e-8 * scale
    assert weights.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        lanczos(op, 5, v0=torch.zeros(75, dtype=DT))


def test_slq_moments_are_exact_per_run_and_unbiased():
    model = mlp(8)
    x, y = data((5,), 3, 12)
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    h = func_hessian(model, F.cross_entropy, x, y)
    n = op.dim
    steps = 3  # Gauss quadrature with m nodes integrates degree <= 2m-1 = 5 exactly
    dens = slq_density(op, num_runs=60, num_steps=steps, seed=9)
    assert dens.weights.sum() == pytest.approx(1.0, abs=1e-12)
    for w in dens.run_weights:
        assert w.sum() == pytest.approx(1.0, abs=1e-12) and (w >= 0).all()
    gen = torch.Generator().manual_seed(9)
    quad = {j: [] for j in range(6)}
    for nodes, weights in zip(dens.run_nodes, dens.run_weights):
        v = rademacher(n, gen, DT)
        hv = v.clone()
        for j in range(6):
            exact = float(v @ hv) / n  # v^T H^j v / n
            got = float(np.sum(weights * nodes**j))
            assert got == pytest.approx(exact, rel=1e-8, abs=1e-10 * float(h.abs().max()) ** j)
            quad[j].append(got)
            hv = h @ hv
    for j in range(6):
        assert dens.moment(j) == pytest.approx(np.mean(quad[j]), rel=1e-10, abs=1e-14)
    # in expectation: tr(H^j)/n, within a few standard errors
    eigs = torch.linalg.eigvalsh(h).numpy()
    assert dens.moment(0) == pytest.approx(1.0)
    for j in (1, 2):
        stderr = np.std(quad[j], ddof=1) / np.sqrt(len(quad[j]))
        assert abs(dens.moment(j) - np.mean(eigs**j)) < 4 * stderr


def test_gaussian_density_is_a_smoothed_probability():
    model = mlp(9)
    x, y = data((5,), 3, 12)
    dens = slq_density(HessianOperator(model, F.cross_entropy, [(x, y)]), num_runs=3, num_steps=10, seed=0)
    sigma = 0.01
    grid = np.linspace(dens.nodes.min() - 10 * sigma, dens.nodes.max() + 10 * sigma, 20001)
    p = dens.smooth(grid, sigma)
    assert (p >= 0).all()
    dx = grid[1] - grid[0]
    assert np.sum(p) * dx == pytest.approx(1.0, rel=1e-6)
    assert np.sum(p * grid) * dx == pytest.approx(dens.moment(1), rel=1e-6, abs=1e-9)
    np.testing.assert_allclose(gaussian_density([0.0], [1.0], [0.0], 1.0), [1 / np.sqrt(2 * np.pi)])
    with pytest.raises(ValueError):
        gaussian_density([0.0], [1.0], [0.0], 0.0)


# --------------------------------------------------------------------------- eigenpairs


def test_top_eigenpairs_are_signed_largest_algebraic():
    eigs = [-100.0, -80.0, -60.0, 0.5, 1.0, 1.5, 2.0, 3.0, 5.0, 7.0] + list(np.linspace(-1, 0.4, 20))
    model, a, batches = quad_problem(eigs, seed=2)
    op = HessianOperator(model, quad_loss, batches)
    top = top_eigenpairs(op, k=3, tol=0, seed=0)
    np.testing.assert_allclose(top.eigenvalues, [7.0, 5.0, 3.0], rtol=1e-10)
    assert top.converged and top.num_products == op.num_products > 0
    for lam, e in zip(top.eigenvalues, top.eigenvectors):
        torch.testing.assert_close(a @ e, lam * e, atol=1e-9, rtol=0)
        assert e.norm().item() == pytest.approx(1.0)
    # a magnitude-based method (power iteration, ARPACK 'LM') reports the negative ones
    lm = top_eigenpairs(op, k=1, tol=0, which="LM")
    assert lm.eigenvalues[0] == pytest.approx(-100.0)
    sa = top_eigenpairs(op, k=2, tol=0, which="SA")
    np.testing.assert_allclose(sa.eigenvalues, [-100.0, -80.0], rtol=1e-10)
    with pytest.raises(ValueError):
        top_eigenpairs(op, k=len(eigs))
    # k = 1 takes the plain-Lanczos path: signed, and stopped by a residual bound
    for tol in (1e-3, 1e-8):
        one = top_eigenpairs(op, k=1, tol=tol, seed=1)
        e = one.eigenvectors[0]
        residual = (a @ e - one.eigenvalues[0] * e).norm().item()
        assert residual <= 1.01 * tol * abs(one.eigenvalues[0]) and one.converged
        assert one.eigenvalues[0] == pytest.approx(7.0, rel=tol)


def test_top_eigenpairs_of_a_network_match_eigvalsh():
    model = mlp(10)
    x, y = data((5,), 3, 12)
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    h = func_hessian(model, F.cross_entropy, x, y)
    eigs = torch.linalg.eigvalsh(h).numpy()[::-1]
    top = top_eigenpairs(op, k=4, tol=0, seed=3)
    np.testing.assert_allclose(top.eigenvalues, eigs[:4], rtol=1e-8, atol=1e-12)
    shaped = op.unflatten(top.eigenvectors[0])
    assert {n: tuple(t.shape) for n, t in shaped.items()} == {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert torch.equal(flatten_params(shaped), top.eigenvectors[0])
    again = top_eigenpairs(op, k=4, tol=0, seed=3)
    torch.testing.assert_close(again.eigenvectors, top.eigenvectors)  # deterministic signs


# --------------------------------------------------------------------------- helpers and errors


def test_flatten_unflatten_round_trip_and_bad_input():
    model = mlp()
    flat = flatten_params(model)
    parts = unflatten(flat, dict(model.named_parameters()))
    for n, p in model.named_parameters():
        assert torch.equal(parts[n], p.detach())
    with pytest.raises(ValueError):
        unflatten(flat[:-1], dict(model.named_parameters()))
    x, y = data((5,), 3, 4)
    with pytest.raises(ValueError, match="mode"):
        HessianOperator(model, F.cross_entropy, [(x, y)], mode="test")
    with pytest.raises(TypeError, match="nn.Module") as info:  # a programming error, not a user's input
        HessianOperator("x", F.cross_entropy, [(x, y)])
    assert not isinstance(info.value, UserError)
    with pytest.raises(ValueError, match="no batches"):
        HessianOperator(model, F.cross_entropy, [])
    with pytest.raises(TypeError, match="pairs"):
        HessianOperator(model, F.cross_entropy, (x, y))
    with pytest.raises(ValueError, match="model is on"):
        HessianOperator(model, F.cross_entropy, [(x, y)], device="cuda")
    with pytest.raises(ValueError, match="scalar"):
        HessianOperator(model, lambda o, t: F.cross_entropy(o, t, reduction="none"), [(x, y)])
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    with pytest.raises(ValueError, match="shape"):
        op.matvec(torch.zeros(3, dtype=DT))


def test_scipy_linear_operator_is_float64():
    model = mlp(dtype=torch.float32)
    x, y = data((5,), 3, 6, dtype=torch.float32)
    op = HessianOperator(model, F.cross_entropy, [(x, y)])
    lin = op.as_linear_operator()
    assert lin.dtype == np.float64 and lin.shape == (75, 75)
    v = np.linspace(-1, 1, 75)
    out = lin.matvec(v)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, op.matvec(torch.from_numpy(v).float()).double().numpy(), rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    model = conv_bn()
    x, y = data((2, 5, 5), 4, 6)
    v = rand_vec(sum(p.numel() for p in model.parameters()))
    cpu = HessianOperator(model, F.cross_entropy, [(x, y)]).matvec(v)
    gpu_model = copy.deepcopy(model).cuda()
    op = HessianOperator(gpu_model, F.cross_entropy, [(x, y)], device="cuda")
    assert op.device.type == "cuda"
    torch.testing.assert_close(op.matvec(v.cuda()).cpu(), cpu, rtol=1e-9, atol=1e-11)
    tr_cpu = hutchinson(HessianOperator(model, F.cross_entropy, [(x, y)]), 3, seed=1)
    assert hutchinson(op, 3, seed=1).estimate == pytest.approx(tr_cpu.estimate, rel=1e-8)


# --------------------------------------------------------------------------- PyHessian 0.1 cross-check


@pytest.mark.filterwarnings("ignore:Using backward\\(\\) with create_graph=True")
def test_agrees_with_pyhessian_trace_and_top_eigenvalue():
    pyhessian = pytest.importorskip("pyhessian")
    torch.manual_seed(13)
    model = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))
    x, y = data((5,), 3, 16, dtype=torch.float32)
    x = x + 2
    h = func_hessian(copy.deepcopy(model).double(), F.cross_entropy, x.double(), y)
    eigs = torch.linalg.eigvalsh(h).numpy()
    exact_trace = float(eigs.sum())
    assert eigs[-1] > 2 * abs(eigs[0]) and eigs[-1] > 1.5 * eigs[-2]  # power iteration converges to the top

    ours_op = HessianOperator(model, F.cross_entropy, [(x, y)])
    ours = hutchinson(ours_op, 300, seed=0)
    ours_top = top_eigenpairs(ours_op, k=1, tol=1e-8, seed=0).eigenvalues[0]

    torch.manual_seed(0)
    ref_model = copy.deepcopy(model)
    ph = pyhessian.hessian(ref_model, F.cross_entropy, data=(x, y), cuda=False)
    ph_samples = ph.trace(maxIter=300, tol=1e-12)
    ph_top = ph.eigenvalues(maxIter=500, tol=1e-7, top_n=1)[0][0]
    for p in ref_model.parameters():
        p.grad = None  # PyHessian leaves a graph in .grad

    ph_mean = float(np.mean(ph_samples))
    ph_err = float(np.std(ph_samples, ddof=1) / np.sqrt(len(ph_samples)))
    assert abs(ours.estimate - exact_trace) < 4 * ours.sample_stderr
    assert abs(ph_mean - exact_trace) < 4 * ph_err
    assert abs(ours.estimate - ph_mean) < 4 * np.hypot(ours.sample_stderr, ph_err)
    assert ours_top == pytest.approx(eigs[-1], rel=1e-5)
    assert ph_top == pytest.approx(ours_top, rel=1e-3)


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


def test_hessian_product_on_nan_model_is_a_clear_error_not_a_scipy_crash():
    import torch.nn as nn
    import torch.nn.functional as F

    from zsq_probe.hessian import HessianOperator, top_eigenpairs
    from zsq_probe.hessian.operator import NonFiniteHessianError

    model = nn.Linear(4, 3)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    x, y = torch.randn(8, 4), torch.randint(0, 3, (8,))
    with pytest.warns(UserWarning):
        with HessianOperator(model, F.cross_entropy, [(x, y)]) as op:
            with pytest.raises(NonFiniteHessianError):
                top_eigenpairs(op, k=1, seed=0)
