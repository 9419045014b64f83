"""Estimators over any :class:`~zsq_probe.hessian.operator.HessianVectorProduct` (`.dim`, `.dtype`, `.device`,
`.matvec`): Lanczos, SLQ density and trace, signed top eigenpairs.  The trace is :func:`~zsq_probe.hessian.trace.
estimate_trace`'s; :func:`slq_trace` gives the SLQ density's trace as the same :class:`TraceInterval`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np
import torch

from zsq_probe.hessian.arguments import check_int, check_operator
from zsq_probe.hessian.operator import (
    HessianVectorProduct,
    as_linear_operator,
    products_of,
    rademacher,
)
from zsq_probe.hessian.results import Eigenpairs, LanczosResult, SpectralDensity, TraceInterval
from zsq_probe.hessian.trace import sample_skewness

StopRule = Callable[[Sequence[float], Sequence[float], float], bool]
"""``until(alphas, betas, next_beta)``: stop Lanczos after the current step."""


def _mean_stderr(samples: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error (sample sd / sqrt(n); NaN below two samples) of ``samples``, in float64."""
    x = np.asarray(samples, dtype=np.float64)
    mean = float(x.mean())
    stderr = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    return mean, stderr


def _start_vector(op: HessianVectorProduct, v0: torch.Tensor | None, seed: int) -> torch.Tensor:
    """``v0`` (default: a Rademacher vector from ``seed``) normalised, on the operator's device and dtype."""
    if v0 is None:
        v0 = rademacher(op.dim, torch.Generator().manual_seed(int(seed)), op.dtype, op.device)
    v0 = torch.as_tensor(v0).detach().to(device=op.device, dtype=op.dtype)
    if v0.dim() != 1 or v0.numel() != op.dim:
        raise ValueError(f"v0 must have shape ({op.dim},), got {tuple(v0.shape)}")
    norm = torch.linalg.vector_norm(v0)
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("v0 must be a finite non-zero vector")
    unit: torch.Tensor = v0 / norm
    return unit


def lanczos(
    op: HessianVectorProduct,
    num_steps: int,
    v0: torch.Tensor | None = None,
    seed: int = 0,
    reorthogonalize: bool = True,
    return_basis: bool = False,
    until: StopRule | None = None,
) -> LanczosResult:
    """``num_steps`` steps of Lanczos on ``op`` from ``v0`` (default: a Rademacher vector from
    ``seed``), with full reorthogonalisation (classical Gram-Schmidt, twice) unless told not to.
    ``num_steps`` is capped at ``op.dim``; the run stops early at an invariant subspace, or when
    ``until(alphas, betas, next_beta)`` says so after a step."""
    check_operator(op)
    num_steps = min(check_int(num_steps, "num_steps"), op.dim)
    q = _start_vector(op, v0, seed)
    keep = reorthogonalize or return_basis
    basis = torch.empty((num_steps if keep else 2, op.dim), dtype=op.dtype, device=op.device)
    eps = torch.finfo(op.dtype).eps
    start = products_of(op)
    alphas: list[float] = []
    betas: list[float] = []
    q_prev: torch.Tensor | None = None
    anorm = 0.0
    for j in range(num_steps):
        basis[j if keep else j % 2] = q
        w = op.matvec(q)
        a = float(torch.dot(q.double(), w.double()))  # float64 scalars: float32 dots bias the Ritz values
        alphas.append(a)
        w = w - a * q
        if q_prev is not None:
            w = w - betas[-1] * q_prev
        if reorthogonalize:
            Q = basis[: j + 1]
            for _ in range(2):
                w = w - Q.T @ (Q @ w)
        b = float(torch.linalg.vector_norm(w.double()))
        anorm = max(anorm, abs(a) + b + (betas[-1] if betas else 0.0))
        if j == num_steps - 1 or b <= math.sqrt(eps) * max(anorm, 1e-300) or (until and until(alphas, betas, b)):
            break
        betas.append(b)
        q_prev, q = q, w / b
    n = len(alphas)
    return LanczosResult(
        np.asarray(alphas, dtype=np.float64),
        np.asarray(betas[: n - 1], dtype=np.float64),
        basis[:n].clone() if return_basis else None,
        products_of(op) - start,
    )


def slq_density(
    op: HessianVectorProduct, num_runs: int = 1, num_steps: int = 90, seed: int = 0, reorthogonalize: bool = True
) -> SpectralDensity:
    """Eigenvalue density by stochastic Lanczos quadrature: ``num_runs`` Lanczos runs of
    ``num_steps`` steps, run ``r`` starting from the ``r``-th Rademacher vector of a generator
    seeded with ``seed``.  The same seed gives the vectors ``estimate_trace(op, "hutchinson")`` draws:
    to have SLQ as an estimate of its own, give it a seed of its own."""
    check_operator(op)
    num_runs = check_int(num_runs, "num_runs")
    num_steps = check_int(num_steps, "num_steps")
    gen = torch.Generator().manual_seed(int(seed))
    run_nodes: list[np.ndarray] = []
    run_weights: list[np.ndarray] = []
    products = 0
    for _ in range(num_runs):
        res = lanczos(op, num_steps, v0=rademacher(op.dim, gen, op.dtype, op.device), reorthogonalize=reorthogonalize)
        nodes, weights = res.ritz()
        run_nodes.append(nodes)
        run_weights.append(weights)
        products += res.num_products
    return SpectralDensity(
        np.concatenate(run_nodes),
        np.concatenate(run_weights) / num_runs,
        tuple(run_nodes),
        tuple(run_weights),
        op.dim,
        num_runs,
        min(num_steps, op.dim),
        int(seed),
        products,
    )


def slq_trace(
    source: HessianVectorProduct | SpectralDensity, num_runs: int = 10, num_steps: int = 30, seed: int = 0
) -> TraceInterval:
    """SLQ trace: ``dim`` times the mean over runs of ``sum(weights * nodes)``, with a 95 % interval over the
    runs, as a :class:`TraceInterval` (``estimator="slq"``, ``num_vectors`` the runs). ``source`` is a
    :class:`SpectralDensity` or an operator (then ``slq_density(source, num_runs, num_steps, seed)`` is
    computed first)."""
    density = source if isinstance(source, SpectralDensity) else slq_density(source, num_runs, num_steps, seed)
    samples = [density.dim * float(np.sum(w * x)) for x, w in zip(density.run_nodes, density.run_weights)]
    mean, stderr = _mean_stderr(samples)
    n = len(samples)
    nan = float("nan")
    if n < 2:
        return _slq_interval(density, samples, mean, stderr, nan, nan, "none (one run)", nan)
    # A run's trace sample is v^T H v for its Rademacher start vector: right-skewed for a network Hessian, so
    # a t interval over a few runs under-covers (benchmarks/trace_coverage.py).  As in hessian/trace.py the
    # standard deviation is the larger of the sample one and one from Var(v^T H v) = 2(||H||_F^2 - sum H_ii^2)
    # <= 2 ||H||_F^2, with ||H||_F^2 = dim * sum(w * x^2) per run (Gauss quadrature is exact for x^2 after
    # two steps): an upper bound that does not collapse when the runs happen to miss the outliers.
    from scipy.stats import t as student_t  # scipy.stats (~0.7 s): only where an interval is computed

    fro2 = [density.dim * float(np.sum(w * x * x)) for x, w in zip(density.run_nodes, density.run_weights)]
    sd_sample = float(np.std(samples, ddof=1))
    sd = max(sd_sample, math.sqrt(2.0 * float(np.mean(fro2)))) if density.num_steps >= 2 else sd_sample
    half = float(student_t.ppf(0.975, n - 1)) * sd / math.sqrt(n)
    how = (
        f"student-t 95% over {n} independent SLQ runs, sd = max(sample sd, sqrt(2) * ||H||_F from the "
        f"runs' second moments)"
    )
    frobenius = math.sqrt(float(np.mean(fro2)))
    return _slq_interval(density, samples, mean, sd / math.sqrt(n), mean - half, mean + half, how, frobenius)


def _slq_interval(
    density: SpectralDensity,
    samples: list[float],
    estimate: float,
    stderr: float,
    low: float,
    high: float,
    how: str,
    frobenius: float,
) -> TraceInterval:
    """SLQ's trace and interval as a :class:`TraceInterval`: every run is one sample, none is deflated."""
    x = np.asarray(samples, dtype=np.float64)
    return TraceInterval(
        estimate=estimate,
        stderr=stderr,
        ci_low=low,
        ci_high=high,
        num_vectors=len(samples),
        num_products=density.num_products,
        estimator="slq",
        interval=how,
        samples=tuple(samples),
        seed=density.seed,
        level=0.95,
        stopped_by="budget",
        frobenius=frobenius,
        skewness=sample_skewness(x),
        sample_stderr=_mean_stderr(samples)[1],
    )


def _arpack_args(
    op: HessianVectorProduct, k: int, which: str, tol: float, maxiter: int | None, ncv: int | None
) -> tuple[int | None, int]:
    """Check ``top_eigenpairs``' ARPACK arguments; ``(maxiter, ncv)`` with ncv's default filled in."""
    if k >= op.dim:
        raise ValueError(f"k must be smaller than the dimension ({op.dim}), got {k}")
    if which not in ("LA", "SA", "LM"):
        raise ValueError(f"which must be 'LA', 'SA' or 'LM', got {which!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    if ncv is not None:
        ncv = check_int(ncv, "ncv", k + 1)
    else:
        ncv = max(2 * k + 1, min(20, 4 * k + 4))
    ncv = min(ncv, op.dim)
    if maxiter is not None:
        return check_int(maxiter, "maxiter"), ncv
    return arpack_maxiter(k, ncv, max(ARPACK_MIN_PRODUCTS, ARPACK_PRODUCTS_PER_NCV * ncv)), ncv


ARPACK_MIN_PRODUCTS = 300  # the default product bound of top_eigenpairs: max(300, 10 * ncv) (ARPACK's own
ARPACK_PRODUCTS_PER_NCV = 10  # default, 10 * dim restarts, is a hang on a network Hessian)


def arpack_maxiter(k: int, ncv: int, max_products: int) -> int:
    """ARPACK restarts (``eigsh``'s ``maxiter``) that keep its products near ``max_products``: ``ncv`` products
    to build the first basis, then at most ``ncv - k`` per implicit restart."""
    return max(1, 1 + (max_products - ncv) // max(ncv - k, 1))


def _ordered_pairs(
    vals: np.ndarray, vecs: np.ndarray, which: str, op: HessianVectorProduct
) -> tuple[np.ndarray, torch.Tensor]:
    """ARPACK's pairs in ``which``'s order, unit vectors with their largest-magnitude entry positive, as rows
    of a tensor on the operator's device and dtype."""
    if which == "LA":
        order = np.argsort(-vals)
    elif which == "SA":
        order = np.argsort(vals)
    else:
        order = np.argsort(-np.abs(vals))
    vals, vecs = np.asarray(vals)[order], np.asarray(vecs)[:, order]
    if vecs.size:
        vecs = vecs / np.linalg.norm(vecs, axis=0, keepdims=True)
        signs = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(vecs.shape[1])])
        vecs = vecs * np.where(signs == 0, 1.0, signs)
    tvecs = torch.from_numpy(np.ascontiguousarray(vecs.T)).to(device=op.device, dtype=op.dtype)
    return vals.astype(np.float64), tvecs


def top_eigenpairs(
    op: HessianVectorProduct,
    k: int = 1,
    tol: float = 1e-6,
    seed: int = 0,
    maxiter: int | None = None,
    which: str = "LA",
    ncv: int | None = None,
) -> Eigenpairs:
    """The ``k`` largest *algebraic* (signed) eigenpairs of ``op`` by implicitly restarted Lanczos (ARPACK).

    Args:
        op: Anything with ``.dim``, ``.dtype``, ``.device`` and ``.matvec`` (a :class:`HessianOperator`).
        k: How many pairs.
        tol: ARPACK's relative accuracy of the eigenvalues (0 for machine precision).
        seed: The start vector is a Gaussian vector from ``seed``.
        maxiter: ARPACK restarts; by default as many as keep the products near ``max(300, 10 * ncv)``
            (:func:`arpack_maxiter`), after which the pairs converged so far come back with ``converged=False``
            and a warning.
        which: ``"LA"`` (largest algebraic, default), ``"SA"`` (smallest) or ``"LM"`` (largest magnitude).
        ncv: Lanczos vectors per restart (ARPACK checks convergence only at restarts); default
            ``max(2k+1, min(20, 4k+4))`` (SciPy's is ``max(2k+1, 20)``): small for k=1, where network Hessians
            usually have a well-separated top eigenvalue (resnet20: about 9 products instead of 21).

    Returns:
        The eigenvalues and unit eigenvectors (:class:`Eigenpairs`).

    Raises:
        ValueError: ``k`` not below ``op.dim``, an unknown ``which`` or an argument out of range.

    Example:
        >>> import torch
        >>> from zsq_probe.hessian import HessianOperator, top_eigenpairs
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> op = HessianOperator(model, torch.nn.functional.cross_entropy, [(x, y)])
        >>> dense = torch.stack([op.matvec(e) for e in torch.eye(op.dim)])  # the 67 x 67 Hessian, for the check
        >>> pairs = top_eigenpairs(op, k=2, seed=0)
        >>> top_two = torch.linalg.eigvalsh(dense).flip(0)[:2]  # signed, largest first
        >>> torch.allclose(torch.as_tensor(pairs.eigenvalues, dtype=top_two.dtype), top_two, rtol=1e-4)
        True
    """
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh  # scipy: only where a spectrum is estimated

    check_operator(op)
    k = check_int(k, "k")
    if k == 1 and which == "LA" and ncv is None:
        return top_eigenpair(op, tol=tol, seed=seed, max_steps=maxiter or min(op.dim, 300))
    maxiter, ncv = _arpack_args(op, k, which, tol, maxiter, ncv)
    v0 = torch.randn(op.dim, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64).numpy()
    start = products_of(op)
    converged = True
    try:
        vals, vecs = eigsh(as_linear_operator(op), k=k, which=which, tol=tol, v0=v0, maxiter=maxiter, ncv=ncv)
    except ArpackNoConvergence as e:
        converged = False
        vals, vecs = e.eigenvalues, e.eigenvectors
        warnings.warn(
            f"ARPACK did not converge in maxiter={maxiter}: {len(vals)} of {k} eigenpairs returned", stacklevel=2
        )
    used = products_of(op) - start
    values, vectors = _ordered_pairs(vals, vecs, which, op)
    return Eigenpairs(values, vectors, used, converged, which)


def top_eigenpair(op: HessianVectorProduct, tol: float = 1e-6, seed: int = 0, max_steps: int = 300) -> Eigenpairs:
    """The largest algebraic eigenpair by plain Lanczos, stopped as soon as the Ritz pair's residual
    ``|beta_m * s_m| = ||H y - theta y||`` is at most ``tol * |theta|`` (a residual bound, stricter
    than power iteration's relative change of the estimate).  One product per step, no restarts:
    for a well separated top eigenvalue this needs a handful of products."""
    tol = max(float(tol), 1e-12)

    def converged(alphas: Sequence[float], betas: Sequence[float], next_beta: float) -> bool:
        theta, s = _top_ritz(alphas, betas)
        return bool(abs(next_beta * s[-1]) <= tol * max(abs(theta), 1e-300))

    v0 = torch.randn(op.dim, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    res = lanczos(op, max_steps, v0=v0, return_basis=True, until=converged)
    assert res.basis is not None  # return_basis=True
    theta, s = _top_ritz(list(res.alphas), list(res.betas))
    vec = torch.as_tensor(s, dtype=res.basis.dtype, device=res.basis.device) @ res.basis
    vec = vec / torch.linalg.vector_norm(vec)
    if vec[torch.argmax(vec.abs())] < 0:
        vec = -vec
    ok = res.num_steps < max_steps or res.num_steps == op.dim
    if not ok:
        warnings.warn(f"Lanczos did not reach tol={tol} in {max_steps} steps", stacklevel=2)
    return Eigenpairs(np.asarray([theta], dtype=np.float64), vec.reshape(1, -1), res.num_products, ok, "LA")


def _top_ritz(alphas: Sequence[float], betas: Sequence[float]) -> tuple[float, np.ndarray]:
    """The largest Ritz value of ``tridiag(betas, alphas, betas)`` and its eigenvector."""
    from scipy.linalg import eigh_tridiagonal  # scipy: only where a spectrum is estimated

    n = len(alphas)
    vals, vecs = eigh_tridiagonal(np.asarray(alphas, dtype=np.float64), np.asarray(betas[: n - 1], dtype=np.float64))
    return float(vals[-1]), vecs[:, -1]
