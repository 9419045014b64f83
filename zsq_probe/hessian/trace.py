"""Trace of a Hessian operator with variance reduction and an interval a coverage test can hold to.

:func:`estimate_trace` is the package's one trace API: it returns a :class:`TraceInterval` with the
estimate, a 95 % interval (``ci_low``, ``ci_high``), the products it cost and a sentence saying how the
interval was made (``slq_trace`` reports the SLQ density's trace in the same type).

* ``method="hutch++"`` (default) -- Hutch++ (Meyer, Musco, Musco & Woodruff, "Hutch++: optimal
  stochastic trace estimation", SOSA 2021): ``tr(H) = tr(Q^T H Q) + tr((I-QQ^T) H (I-QQ^T))`` for
  an orthonormal ``Q`` built from given vectors (``deflate=``: e.g. the top eigenvectors the probe
  already has) and a sketch ``H S`` of random vectors ``S``.  The first term is computed exactly
  (one product per column of ``Q``); the second by Hutchinson on the complement.
* ``method="hutchinson"`` -- plain Rademacher Hutchinson (``Q`` empty), same result type.

Adaptive by default: complement vectors are drawn in rounds until the interval's half-width is at
most ``max(rtol * |estimate|, atol)`` (``atol`` defaults to ``rtol`` times an estimate of
``||H||_F``, so a trace near 0 stops too) or ``max_products`` is spent.

The interval (why it is not a plain ``mean +- 1.96 * stderr``).  Conditional on ``Q`` the
complement samples are i.i.d. with mean ``tr(H) - tr(Q^T H Q)``, so an interval for their mean is
an interval for ``tr(H)``.  Single-vector samples of a network Hessian are right-skewed (few
outlier eigenvalues: a sample is roughly ``sum_k lambda_k chi^2_1``); a draw that misses the tail
is low *and* has a small sample variance, so a t interval from few samples under-covers, and a
stop rule that ends as soon as the sample variance looks small picks exactly those draws.  Here:

1. Deflation and the sketch remove the outliers, which takes out most of the skew (measured in
   ``benchmarks/trace_coverage.py``; the result records the complement samples' skewness).
2. The half-width uses the larger of two standard deviations of the samples: the sample one, and
   one from the Rademacher variance identity ``Var(v^T B v) = 2 (||B||_F^2 - sum_i B_ii^2)``
   with ``||B||_F^2`` estimated from ``||B v||^2`` (free: ``B v`` is computed for the sample) and
   ``diag(B)`` from ``v * B v`` (Bekas, Kokiopoulou & Saad 2007).  The second is driven by the
   bulk of ``B``, not by whether a draw happened to hit the outliers, so it does not collapse
   with the sample variance; both estimate the same variance, so nothing is lost when they agree.
3. A minimum number of complement samples, and few looks: after the first round, each round
   draws what the current variance says is needed (times 1.2), not one vector at a time.
4. Student-t quantiles with ``n - 1`` degrees of freedom.

Scalars (samples, Rayleigh quotients, norms) are accumulated in float64.  Every random vector comes
from a CPU ``torch.Generator`` seeded with ``seed`` (the global RNG is untouched; a seed gives the
same vectors on every device), so CE and KL probes get independent vectors by passing different seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import torch

from zsq_probe.hessian.arguments import check_int, check_operator
from zsq_probe.hessian.operator import HessianVectorProduct, rademacher
from zsq_probe.hessian.results import Eigenpairs, TraceInterval

Deflation = Union[torch.Tensor, Sequence[torch.Tensor], "Eigenpairs", None]
"""Vectors whose span Hutch++ traces exactly: a ``(k, dim)`` tensor, a list of vectors or an ``Eigenpairs``."""

METHODS = ("hutch++", "hutchinson")
DEFAULT_MAX_PRODUCTS = 1000
DEFAULT_SKETCH = 20
DEFAULT_MIN_SAMPLES = {"hutch++": 16, "hutchinson": 30}
_GROWTH = 1.2  # each later round aims at 1.2x the samples the current variance says are needed


# --------------------------------------------------------------------------- helpers


def _deflation_rows(deflate: Deflation, op: HessianVectorProduct) -> torch.Tensor | None:
    """Given vectors as rows of a (k, dim) tensor on the operator's device and dtype."""
    if deflate is None:
        return None
    vectors: Any = deflate
    if hasattr(vectors, "eigenvectors") and not isinstance(vectors, torch.Tensor):  # an Eigenpairs
        vectors = vectors.eigenvectors
    if isinstance(vectors, (list, tuple)):
        if not vectors:
            return None
        rows = [torch.as_tensor(v).reshape(-1) for v in vectors]
        if any(r.numel() != op.dim for r in rows):
            raise ValueError(f"every deflation vector must have {op.dim} entries")
        vectors = torch.stack(rows)
    block = torch.as_tensor(vectors).detach()
    if block.dim() == 1:
        block = block.reshape(1, -1)
    if block.dim() != 2 or block.shape[1] != op.dim:
        raise ValueError(f"deflate must be a (k, {op.dim}) tensor or a list of vectors, got shape {tuple(block.shape)}")
    if block.shape[0] == 0:
        return None
    if not torch.isfinite(block).all():
        raise ValueError("deflation vectors must be finite")
    return block.to(device=op.device, dtype=op.dtype)


def _orthonormal_rows(block: torch.Tensor, against: torch.Tensor | None) -> torch.Tensor:
    """Orthonormal rows spanning ``block``'s rows with ``against``'s (orthonormal) rows projected
    out (twice).  Householder QR: the rows are orthonormal to working precision even when
    ``block`` is rank deficient (a column it does not span is then a harmless extra direction)."""
    cols = block.T
    for _ in range(2):
        if against is not None and against.shape[0]:
            cols = cols - against.T @ (against @ cols)
        cols = torch.linalg.qr(cols, mode="reduced").Q
    return cols.T.contiguous()


def sample_skewness(x: np.ndarray) -> float:
    """Sample skewness (NaN below three samples, 0 for constant samples)."""
    if len(x) < 3:
        return float("nan")
    d = x - x.mean()
    m2 = float(np.mean(d * d))
    return float(np.mean(d**3) / m2**1.5) if m2 > 0 else 0.0


class _Complement:
    """Running sums of the complement samples ``x = w^T H w`` with ``w = (I - QQ^T) v``, and what the
    Rademacher variance identity needs: ``||H w||^2`` (minus its part along ``Q``) and ``w * H w``."""

    def __init__(self, dim: int, device: torch.device) -> None:
        self.samples: list[float] = []
        self.fro2: list[float] = []  # ||B v||^2, B = (I-P) H (I-P)
        # sums of v * (B v) (Bekas diagonal estimator) and of its square, float64 on the operator's device
        self.diag_sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.diag_sq_sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.hw_fro2: list[float] = []  # ||H w||^2 (for ||H||_F)

    @property
    def n(self) -> int:
        """Complement samples so far."""
        return len(self.samples)

    def add(self, v: torch.Tensor, w: torch.Tensor, hw: torch.Tensor, q: torch.Tensor | None) -> None:
        """Record the sample of ``v`` (``w`` its projection, ``hw = H w``)."""
        hw64 = hw.double()
        self.samples.append(float(torch.dot(w.double(), hw64)))
        self.hw_fro2.append(float(torch.dot(hw64, hw64)))
        bv = hw if q is None or q.shape[0] == 0 else hw - q.T @ (q @ hw)
        bv64 = bv.double()
        self.fro2.append(float(torch.dot(bv64, bv64)))
        d = v.double() * bv64
        self.diag_sum += d
        self.diag_sq_sum += d * d

    def sample_std(self) -> float:
        """The samples' standard deviation (ddof 1; NaN below two samples)."""
        x = np.asarray(self.samples, dtype=np.float64)
        return float(x.std(ddof=1)) if len(x) > 1 else float("nan")

    def identity_std(self) -> float:
        """sqrt(2 (||B||_F^2 - sum_i B_ii^2)) with both terms estimated without bias."""
        n = self.n
        if n < 2:
            return float("nan")
        fro2 = float(np.mean(self.fro2))
        # sum_i B_ii^2: (sum_i mean_i^2) minus the variance of each mean (unbiased for diag^2)
        mean = self.diag_sum / n
        var_of_mean = (self.diag_sq_sum - n * mean * mean) / (n - 1) / n
        diag2 = float(torch.sum(mean * mean - var_of_mean))
        return math.sqrt(max(2.0 * (fro2 - max(diag2, 0.0)), 0.0))


# --------------------------------------------------------------------------- estimator


@dataclass(frozen=True)
class _Settings:
    """The checked arguments of one :func:`estimate_trace` call."""

    method: str
    rtol: float | None
    atol: float | None
    max_products: int
    min_samples: int
    sketch: int
    seed: int
    level: float


def _settings(
    method: str,
    rtol: float | None,
    atol: float | None,
    max_products: int,
    min_samples: int | None,
    sketch: int | None,
    deflate: Deflation,
    seed: int,
    level: float,
) -> _Settings:
    """Check :func:`estimate_trace`'s arguments and fill in the method's defaults."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if rtol is not None and not (isinstance(rtol, (int, float)) and not isinstance(rtol, bool) and rtol > 0):
        raise ValueError(f"rtol must be a positive number or None, got {rtol!r}")
    if atol is not None and not (isinstance(atol, (int, float)) and not isinstance(atol, bool) and atol >= 0):
        raise ValueError(f"atol must be a number >= 0 or None, got {atol!r}")
    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    max_products = check_int(max_products, "max_products", 2)
    min_samples = check_int(DEFAULT_MIN_SAMPLES[method] if min_samples is None else min_samples, "min_samples", 2)
    if method == "hutchinson":
        if deflate is not None or sketch:
            raise ValueError("method='hutchinson' takes no deflate or sketch (use method='hutch++')")
        sketch = 0
    sketch = check_int(DEFAULT_SKETCH if sketch is None else sketch, "sketch", 0)
    return _Settings(method, rtol, atol, max_products, min_samples, sketch, int(seed), level)


class _Counted:
    """``op`` with the products made through it counted (the budget covers every product of one estimate)."""

    def __init__(self, op: HessianVectorProduct) -> None:
        self.op = op
        self.dim = int(op.dim)
        self.dtype = op.dtype
        self.device = op.device
        self.used = 0

    def matvec(self, x: torch.Tensor) -> torch.Tensor:
        """``H x``, counted."""
        self.used += 1
        return self.op.matvec(x)


@dataclass(frozen=True)
class _LowRank:
    """``Q`` (orthonormal rows: ``deflated`` given, the rest from a ``sketched``-vector sketch), ``tr(Q^T H Q)``
    and ``||H Q||_F^2``."""

    q: torch.Tensor | None
    deflated: int
    sketched: int
    trace: float
    fro2: float

    @property
    def rank(self) -> int:
        """Columns of ``Q``."""
        return 0 if self.q is None else int(self.q.shape[0])

    def describe(self, method: str) -> str:
        """How ``Q`` was made, for the interval's sentence."""
        if method != "hutch++":
            return "plain Hutchinson"
        rank, k = self.rank, self.deflated
        return f"Hutch++ rank {rank} ({k} deflated + {rank - k} from a {self.sketched}-vector sketch)"


def _low_rank(op: _Counted, gen: torch.Generator, cfg: _Settings, deflate: Deflation) -> _LowRank:
    """Hutch++'s exact part (Meyer et al. 2021): ``Q`` from the given vectors and a sketch ``H S``, traced exactly."""
    dim = op.dim
    u = _deflation_rows(deflate, op.op) if cfg.method == "hutch++" else None
    k = 0 if u is None else u.shape[0]
    q = None
    if u is not None:
        if k >= dim:
            raise ValueError(f"deflate has {k} vectors for a dimension of {dim}")
        q = _orthonormal_rows(u, None)
    room = cfg.max_products - k - min(cfg.min_samples, max(dim - k, 0))
    if room < 0:
        raise ValueError(
            f"max_products={cfg.max_products} cannot pay for {k} deflation vectors and {cfg.min_samples} "
            "complement samples"
        )
    s = min(cfg.sketch, room // 2, dim - k)
    if s > 0:
        y = torch.stack([op.matvec(rademacher(dim, gen, op.dtype, op.device)) for _ in range(s)])
        qs = _orthonormal_rows(y, q)
        q = qs if q is None else torch.cat([q, qs])
    trace = 0.0
    fro2 = 0.0
    if q is not None:
        for row in q:
            hq = op.matvec(row).double()
            trace += float(torch.dot(row.double(), hq))
            fro2 += float(torch.dot(hq, hq))  # ||H Q||_F^2 = sum ||H q_i||^2
    return _LowRank(q, k, s, trace, fro2)


@dataclass(frozen=True)
class _Look:
    """One look at the complement samples: the estimate, its interval's parts and whether to stop."""

    n: int
    estimate: float
    sd: float
    quantile: float
    half: float
    frobenius: float
    tolerance: float
    stopped_by: str


def _look(comp: _Complement, low: _LowRank, cfg: _Settings) -> _Look:
    """The estimate after ``comp.n`` samples; ``stopped_by="tolerance"`` once the half-width meets the rule."""
    from scipy.stats import t as student_t  # scipy.stats (~0.7 s): only where an interval is computed

    n = comp.n
    estimate = low.trace + float(np.mean(comp.samples))
    sd = max(comp.sample_std(), comp.identity_std()) if n > 1 else float("nan")
    quantile = float(student_t.ppf(0.5 + cfg.level / 2, n - 1)) if n > 1 else float("nan")
    half = quantile * sd / math.sqrt(n) if n > 1 else float("nan")
    fro = math.sqrt(low.fro2 + float(np.mean(comp.hw_fro2)))
    tol = float("nan")
    stopped_by = "budget"
    if cfg.rtol is not None:
        tol = max(cfg.rtol * abs(estimate), cfg.rtol * fro if cfg.atol is None else cfg.atol)
        if n > 1 and half <= tol:
            stopped_by = "tolerance"
    return _Look(n, estimate, sd, quantile, half, fro, tol, stopped_by)


def _next_target(look: _Look, cfg: _Settings) -> int:
    """Samples to have after the next round: what the current variance says is needed (times 1.2), and at
    least 25 % more than now (few looks)."""
    n = look.n
    if n > 1 and look.sd > 0 and cfg.rtol is not None and look.tolerance > 0:
        need = math.ceil(_GROWTH * (look.quantile * look.sd / look.tolerance) ** 2)
    else:
        need = 2 * n
    return max(need, n + max(1, n // 4))


def _complement(op: _Counted, gen: torch.Generator, low: _LowRank, cfg: _Settings) -> tuple[_Complement, _Look]:
    """Hutchinson on ``(I - QQ^T) H (I - QQ^T)`` in rounds, until the stop rule holds or the budget is spent."""
    comp = _Complement(op.dim, op.device)
    q = low.q
    target = cfg.min_samples
    while True:
        while comp.n < target and op.used < cfg.max_products:
            v = rademacher(op.dim, gen, op.dtype, op.device)
            w = v if q is None else v - q.T @ (q @ v)
            comp.add(v, w, op.matvec(w), q)
        look = _look(comp, low, cfg)
        if look.stopped_by == "tolerance" or op.used >= cfg.max_products:
            return comp, look
        target = _next_target(look, cfg)


def _exact(low: _LowRank, used: int, cfg: _Settings) -> TraceInterval:
    """The result when ``Q`` spans everything: the low-rank part is the trace."""
    return TraceInterval(
        estimate=low.trace,
        stderr=0.0,
        ci_low=low.trace,
        ci_high=low.trace,
        num_vectors=0,
        num_products=used,
        estimator=cfg.method,
        interval=f"exact: {low.describe(cfg.method)} spans the whole space",
        low_rank_part=low.trace,
        rank=low.rank,
        deflated=low.deflated,
        samples=(),
        seed=cfg.seed,
        level=cfg.level,
        stopped_by="exact",
        frobenius=math.sqrt(low.fro2),
        tolerance=0.0,
        skewness=float("nan"),
        sample_stderr=0.0,
    )


def _interval(comp: _Complement, look: _Look, low: _LowRank, used: int, cfg: _Settings) -> TraceInterval:
    """The result from the last look at the complement samples."""
    n, tol = look.n, look.tolerance
    x = np.asarray(comp.samples, dtype=np.float64)
    if look.stopped_by == "tolerance":
        scale = "atol" if cfg.atol is not None else "rtol*||H||_F"
        stop = f"stopped at half-width <= {tol:.4g} (max(rtol*|estimate|, {scale}))"
    else:
        stop = f"budget of {cfg.max_products} products spent" + (
            "" if cfg.rtol is None else f" before half-width <= {tol:.4g}"
        )
    how = (
        f"student-t {100 * cfg.level:g}% over {n} complement samples of {low.describe(cfg.method)}, sd = "
        f"max(sample sd, Rademacher-identity sd); {stop}"
    )
    return TraceInterval(
        estimate=look.estimate,
        stderr=look.sd / math.sqrt(n) if n > 1 else float("nan"),
        ci_low=look.estimate - look.half,
        ci_high=look.estimate + look.half,
        num_vectors=n,
        num_products=used,
        estimator=cfg.method,
        interval=how,
        low_rank_part=low.trace,
        rank=low.rank,
        deflated=low.deflated,
        samples=tuple(float(a) for a in x),
        seed=cfg.seed,
        level=cfg.level,
        stopped_by=look.stopped_by,
        frobenius=look.frobenius,
        tolerance=tol,
        skewness=sample_skewness(x),
        sample_stderr=comp.sample_std() / math.sqrt(n) if n > 1 else float("nan"),
    )


def estimate_trace(
    op: HessianVectorProduct,
    method: str = "hutch++",
    *,
    rtol: float | None = 0.05,
    atol: float | None = None,
    max_products: int = DEFAULT_MAX_PRODUCTS,
    min_samples: int | None = None,
    sketch: int | None = None,
    deflate: Deflation = None,
    seed: int = 0,
    level: float = 0.95,
) -> TraceInterval:
    """Estimate ``tr(H)`` of ``op`` with an interval, stopping as soon as the interval is tight enough.

    Args:
        op: Anything with ``.dim``, ``.dtype``, ``.device`` and ``.matvec`` (a :class:`HessianOperator`).
        method: ``"hutch++"`` (default) or ``"hutchinson"``.
        rtol: Stop once the ``level`` interval's half-width is at most ``max(rtol * |estimate|, atol)``;
            ``None`` spends the whole budget.
        atol: Absolute half-width that also suffices (default ``rtol * ||H||_F``, the Frobenius norm estimated
            from the same products: a trace near 0 stops at a precision relative to the size of ``H``).
        max_products: Budget of products, all parts included.
        min_samples: Complement vectors before the first stop check (default 16 for Hutch++, 30 for Hutchinson).
        sketch: Random sketch vectors for Hutch++ (default 20; fewer when the budget or ``dim`` requires).
        deflate: Vectors (a ``(k, dim)`` tensor, a list of vectors or an ``Eigenpairs``) whose span goes into
            ``Q``: their exact Rayleigh quotients are part of ``low_rank_part`` (``k`` products) and the
            complement has their span projected out.
        seed: Every random vector comes from ``torch.Generator().manual_seed(seed)``.
        level: The interval's coverage.

    Returns:
        The estimate, its interval and what it cost (:class:`TraceInterval`).

    Raises:
        ValueError: An unknown method, a budget too small for it, or an argument out of range.

    Example:
        >>> import torch
        >>> from zsq_probe.hessian import HessianOperator, estimate_trace
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> op = HessianOperator(model, torch.nn.functional.cross_entropy, [(x, y)])
        >>> dense = torch.stack([op.matvec(e) for e in torch.eye(op.dim)])  # the 67 x 67 Hessian, for the check
        >>> est = estimate_trace(op, seed=0)
        >>> bool(est.covers(float(dense.trace())))  # the 95 % interval holds the exact trace
        True
        >>> est.stopped_by, est.relative_half_width <= 0.05  # stopped once within +-5 %
        ('tolerance', True)
    """
    check_operator(op)
    cfg = _settings(method, rtol, atol, max_products, min_samples, sketch, deflate, seed, level)
    counted = _Counted(op)
    gen = torch.Generator().manual_seed(cfg.seed)
    low = _low_rank(counted, gen, cfg, deflate)
    if low.rank >= counted.dim:
        return _exact(low, counted.used, cfg)
    comp, look = _complement(counted, gen, low, cfg)
    return _interval(comp, look, low, counted.used, cfg)
