"""Trace of a Hessian operator with variance reduction and an interval a coverage test can hold to.

:func:`estimate_trace` (and its two spellings :func:`hutchpp_trace`, :func:`hutchinson_interval`)
returns a :class:`TraceInterval`: the estimate, a 95 % interval (``ci_low``, ``ci_high``), the
products it cost and a sentence saying how the interval was made.

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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from zsq_probe.hessian.operator import rademacher

METHODS = ("hutch++", "hutchinson")
DEFAULT_MAX_PRODUCTS = 1000
DEFAULT_SKETCH = 20
DEFAULT_MIN_SAMPLES = {"hutch++": 16, "hutchinson": 30}
_GROWTH = 1.2  # each later round aims at 1.2x the samples the current variance says are needed


@dataclass(frozen=True)
class TraceInterval:
    """A trace estimate with its interval.

    ``estimate = low_rank_part + mean(samples)``; ``stderr`` is the standard deviation used for
    the interval divided by ``sqrt(num_vectors)``; ``[ci_low, ci_high]`` the ``level`` interval,
    made as ``interval`` says (equal to the estimate when the complement is empty: ``rank ==
    dim``).  ``num_vectors``: complement (Hutchinson) vectors; ``num_products``: every product,
    sketch and low-rank part included; ``rank``: columns of ``Q`` (``deflated`` of them given,
    the rest from the sketch).  ``stopped_by``: ``"tolerance"``, ``"budget"`` or ``"exact"``.
    ``frobenius``: the estimate of ``||H||_F``; ``tolerance``: the half-width the stop rule asked
    for at the end; ``skewness``: sample skewness of the complement samples.
    """

    estimate: float
    stderr: float
    ci_low: float
    ci_high: float
    num_vectors: int
    num_products: int
    estimator: str
    interval: str
    low_rank_part: float = 0.0
    rank: int = 0
    deflated: int = 0
    samples: tuple[float, ...] = field(repr=False, default=())
    seed: int = 0
    level: float = 0.95
    stopped_by: str = "budget"
    frobenius: float = float("nan")
    tolerance: float = float("nan")
    skewness: float = float("nan")
    sample_stderr: float = float("nan")

    @property
    def half_width(self) -> float:
        return 0.5 * (self.ci_high - self.ci_low)

    @property
    def relative_half_width(self) -> float:
        return self.half_width / abs(self.estimate) if self.estimate != 0 else float("inf")

    def covers(self, value: float) -> bool:
        return self.ci_low <= value <= self.ci_high


# --------------------------------------------------------------------------- helpers


def _check_op(op: Any) -> None:
    for attr in ("dim", "dtype", "device", "matvec"):
        if not hasattr(op, attr):
            raise ValueError(f"expected a HessianOperator (or an object with .{attr}), got {type(op).__name__}")


def _int(value: Any, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _deflation_rows(deflate: Any, op: Any) -> torch.Tensor | None:
    """Given vectors as rows of a (k, dim) tensor on the operator's device and dtype."""
    if deflate is None:
        return None
    if hasattr(deflate, "eigenvectors") and not isinstance(deflate, torch.Tensor):  # an Eigenpairs
        deflate = deflate.eigenvectors
    if isinstance(deflate, (list, tuple)):
        if not deflate:
            return None
        rows = [torch.as_tensor(v).reshape(-1) for v in deflate]
        if any(r.numel() != op.dim for r in rows):
            raise ValueError(f"every deflation vector must have {op.dim} entries")
        deflate = torch.stack(rows)
    deflate = torch.as_tensor(deflate).detach()
    if deflate.dim() == 1:
        deflate = deflate.reshape(1, -1)
    if deflate.dim() != 2 or deflate.shape[1] != op.dim:
        raise ValueError(
            f"deflate must be a (k, {op.dim}) tensor or a list of vectors, got shape {tuple(deflate.shape)}"
        )
    if deflate.shape[0] == 0:
        return None
    if not torch.isfinite(deflate).all():
        raise ValueError("deflation vectors must be finite")
    return deflate.to(device=op.device, dtype=op.dtype)


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


def _skewness(x: np.ndarray) -> float:
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
        return len(self.samples)

    def add(self, v: torch.Tensor, w: torch.Tensor, hw: torch.Tensor, q: torch.Tensor | None) -> None:
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


def estimate_trace(
    op: Any,
    method: str = "hutch++",
    *,
    rtol: float | None = 0.05,
    atol: float | None = None,
    max_products: int = DEFAULT_MAX_PRODUCTS,
    min_samples: int | None = None,
    sketch: int | None = None,
    deflate: Any = None,
    seed: int = 0,
    level: float = 0.95,
) -> TraceInterval:
    """Estimate ``tr(H)`` of ``op`` (anything with ``.dim``, ``.dtype``, ``.device``, ``.matvec``).

    ``method``: ``"hutch++"`` (default) or ``"hutchinson"``.  ``rtol``: stop once the ``level``
    interval's half-width is at most ``max(rtol * |estimate|, atol)``; ``None`` spends the whole
    budget.  ``atol``: absolute half-width that also suffices (default ``rtol * ||H||_F``, the
    Frobenius norm estimated from the same products: a trace near 0 stops at a precision
    relative to the size of ``H``).  ``max_products``: budget of products, all parts included.
    ``min_samples``: complement vectors before the first stop check (default 16 for Hutch++, 30
    for Hutchinson).  ``sketch``: random sketch vectors for Hutch++ (default 20; fewer when the
    budget or ``dim`` requires).  ``deflate``: vectors (a ``(k, dim)`` tensor, a list of
    vectors or an ``Eigenpairs``) whose span goes into ``Q``: their exact Rayleigh quotients are
    part of ``low_rank_part`` (``k`` products) and the complement has their span projected out.
    ``seed``: every random vector comes from ``torch.Generator().manual_seed(seed)``.
    """
    _check_op(op)
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if rtol is not None and not (isinstance(rtol, (int, float)) and not isinstance(rtol, bool) and rtol > 0):
        raise ValueError(f"rtol must be a positive number or None, got {rtol!r}")
    if atol is not None and not (isinstance(atol, (int, float)) and not isinstance(atol, bool) and atol >= 0):
        raise ValueError(f"atol must be a number >= 0 or None, got {atol!r}")
    if not (isinstance(level, float) and 0 < level < 1):
        raise ValueError(f"level must be a float in (0, 1), got {level!r}")
    max_products = _int(max_products, "max_products", 2)
    min_samples = _int(DEFAULT_MIN_SAMPLES[method] if min_samples is None else min_samples, "min_samples", 2)
    if method == "hutchinson":
        if deflate is not None or sketch:
            raise ValueError("method='hutchinson' takes no deflate or sketch (use method='hutch++')")
        sketch = 0
    sketch = _int(DEFAULT_SKETCH if sketch is None else sketch, "sketch", 0)
    dim = int(op.dim)

    gen = torch.Generator().manual_seed(int(seed))
    used = 0

    def matvec(x: torch.Tensor) -> torch.Tensor:
        nonlocal used
        used += 1
        return op.matvec(x)

    # ---------------------------------------------------------------- low-rank part
    u = _deflation_rows(deflate, op) if method == "hutch++" else None
    k = 0 if u is None else u.shape[0]
    q = None
    if u is not None:
        if k >= dim:
            raise ValueError(f"deflate has {k} vectors for a dimension of {dim}")
        q = _orthonormal_rows(u, None)
    room = max_products - k - min(min_samples, max(dim - k, 0))
    if room < 0:
        raise ValueError(
            f"max_products={max_products} cannot pay for {k} deflation vectors and {min_samples} complement samples"
        )
    s = min(sketch, room // 2, dim - k)
    if s > 0:
        y = torch.stack([matvec(rademacher(dim, gen, op.dtype, op.device)) for _ in range(s)])
        qs = _orthonormal_rows(y, q)
        q = qs if q is None else torch.cat([q, qs])
    rank = 0 if q is None else q.shape[0]
    low_rank = 0.0
    fro2_low = 0.0
    if q is not None:
        for row in q:
            hq = matvec(row).double()
            low_rank += float(torch.dot(row.double(), hq))
            fro2_low += float(torch.dot(hq, hq))  # ||H Q||_F^2 = sum ||H q_i||^2

    desc_q = (
        f"Hutch++ rank {rank} ({k} deflated + {rank - k} from a {s}-vector sketch)"
        if method == "hutch++"
        else "plain Hutchinson"
    )
    if rank >= dim:  # Q spans everything: the low-rank part is the trace
        return TraceInterval(
            low_rank,
            0.0,
            low_rank,
            low_rank,
            0,
            used,
            method,
            f"exact: {desc_q} spans the whole space",
            low_rank,
            rank,
            k,
            (),
            int(seed),
            level,
            "exact",
            math.sqrt(fro2_low),
            0.0,
            float("nan"),
            0.0,
        )

    # ---------------------------------------------------------------- complement (Hutchinson)
    from scipy.stats import t as student_t

    comp = _Complement(dim, op.device)
    target = min_samples
    stopped_by = "budget"
    tol = float("nan")
    while True:
        while comp.n < target and used < max_products:
            v = rademacher(dim, gen, op.dtype, op.device)
            w = v if q is None else v - q.T @ (q @ v)
            comp.add(v, w, matvec(w), q)
        n = comp.n
        mean = float(np.mean(comp.samples))
        estimate = low_rank + mean
        sd = max(comp.sample_std(), comp.identity_std()) if n > 1 else float("nan")
        quantile = float(student_t.ppf(0.5 + level / 2, n - 1)) if n > 1 else float("nan")
        half = quantile * sd / math.sqrt(n) if n > 1 else float("nan")
        fro = math.sqrt(fro2_low + float(np.mean(comp.hw_fro2)))
        if rtol is not None:
            tol = max(rtol * abs(estimate), rtol * fro if atol is None else atol)
            if n > 1 and half <= tol:
                stopped_by = "tolerance"
                break
        if used >= max_products:
            break
        if n > 1 and sd > 0 and rtol is not None and tol > 0:
            need = math.ceil(_GROWTH * (quantile * sd / tol) ** 2)
        else:
            need = 2 * n
        target = max(need, n + max(1, n // 4))  # at least +25 %: few looks

    x = np.asarray(comp.samples, dtype=np.float64)
    if stopped_by == "tolerance":
        stop = f"stopped at half-width <= {tol:.4g} (max(rtol*|estimate|, {'atol' if atol is not None else 'rtol*||H||_F'}))"
    else:
        stop = f"budget of {max_products} products spent" + ("" if rtol is None else f" before half-width <= {tol:.4g}")
    how = (
        f"student-t {100 * level:g}% over {n} complement samples of {desc_q}, sd = max(sample sd, "
        f"Rademacher-identity sd); {stop}"
    )
    stderr = sd / math.sqrt(n) if n > 1 else float("nan")
    return TraceInterval(
        estimate=estimate,
        stderr=stderr,
        ci_low=estimate - half,
        ci_high=estimate + half,
        num_vectors=n,
        num_products=used,
        estimator=method,
        interval=how,
        low_rank_part=low_rank,
        rank=rank,
        deflated=k,
        samples=tuple(float(a) for a in x),
        seed=int(seed),
        level=level,
        stopped_by=stopped_by,
        frobenius=fro,
        tolerance=tol,
        skewness=_skewness(x),
        sample_stderr=comp.sample_std() / math.sqrt(n) if n > 1 else float("nan"),
    )


def hutchpp_trace(
    op: Any,
    *,
    deflate: Any = None,
    sketch: int | None = None,
    rtol: float | None = 0.05,
    atol: float | None = None,
    max_products: int = DEFAULT_MAX_PRODUCTS,
    min_samples: int | None = None,
    seed: int = 0,
    level: float = 0.95,
) -> TraceInterval:
    """Hutch++ with optional deflation: ``estimate_trace(op, "hutch++", ...)``."""
    return estimate_trace(
        op,
        "hutch++",
        rtol=rtol,
        atol=atol,
        max_products=max_products,
        min_samples=min_samples,
        sketch=sketch,
        deflate=deflate,
        seed=seed,
        level=level,
    )


def hutchinson_interval(
    op: Any,
    *,
    rtol: float | None = 0.05,
    atol: float | None = None,
    max_products: int = DEFAULT_MAX_PRODUCTS,
    min_samples: int | None = None,
    seed: int = 0,
    level: float = 0.95,
) -> TraceInterval:
    """Plain Rademacher Hutchinson with the same interval and stop rule: ``estimate_trace(op, "hutchinson", ...)``."""
    return estimate_trace(
        op,
        "hutchinson",
        rtol=rtol,
        atol=atol,
        max_products=max_products,
        min_samples=min_samples,
        seed=seed,
        level=level,
    )
