"""The Hessian estimators' result types, in a module of their own (no maths here): a trace interval
(`TraceInterval`), an exact trace and diagonal (`ExactTrace`, `HessianDiagonal`), eigenpairs (`Eigenpairs`), a
Lanczos tridiagonalisation (`LanczosResult`) and a spectral density (`SpectralDensity`); plus how parameters group
into a probe's scopes (`parameter_group`, `group_traces`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from numpy.typing import ArrayLike


def parameter_group(name: str, scope: str) -> str:
    """The group a parameter belongs to: 'all' (model), its module ('layer'), or its block ('block':
    pytorchcv's `features.stageN.unitM` / `features.init_block` / top-level module)."""
    if scope == "model":
        return "all"
    module = name.rsplit(".", 1)[0] if "." in name else name
    if scope == "layer":
        return module
    parts = name.split(".")
    if parts[0] == "features" and len(parts) > 2:
        return ".".join(parts[:3]) if parts[1].startswith("stage") else ".".join(parts[:2])
    return parts[0]


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
        """Half the interval's width."""
        return 0.5 * (self.ci_high - self.ci_low)

    @property
    def relative_half_width(self) -> float:
        """The half-width over ``|estimate|`` (inf for an estimate of 0)."""
        return self.half_width / abs(self.estimate) if self.estimate != 0 else float("inf")

    def covers(self, value: float) -> bool:
        """Whether ``value`` lies in ``[ci_low, ci_high]``."""
        return self.ci_low <= value <= self.ci_high


@dataclass(frozen=True)
class LanczosResult:
    """``T = tridiag(betas, alphas, betas)`` with ``Q^T H Q = T`` for the orthonormal basis
    ``Q`` (rows of ``basis``, kept only when asked for). Fewer steps than asked mean the Krylov
    space became invariant (exact breakdown): the quadrature is then exact."""

    alphas: np.ndarray
    betas: np.ndarray
    basis: torch.Tensor | None = field(repr=False, default=None)
    num_products: int = 0

    @property
    def num_steps(self) -> int:
        """Lanczos steps taken (the size of ``T``)."""
        return len(self.alphas)

    def tridiagonal(self) -> np.ndarray:
        """``T`` as a dense matrix."""
        out: np.ndarray = np.diag(self.alphas) + np.diag(self.betas, 1) + np.diag(self.betas, -1)
        return out

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and Gauss-quadrature weights (squared first components of
        the eigenvectors of ``T``, normalised to sum 1)."""
        from scipy.linalg import eigh_tridiagonal  # scipy: only where a spectrum is estimated

        if len(self.alphas) == 1:
            return self.alphas.copy(), np.ones(1)
        nodes, vecs = eigh_tridiagonal(self.alphas, self.betas)
        weights = vecs[0] ** 2
        return nodes, weights / weights.sum()


@dataclass(frozen=True)
class SpectralDensity:
    """Stochastic Lanczos quadrature: ``nodes`` (Ritz values of every run) and ``weights``
    (each run's Gauss weights, normalised to sum 1, divided by the number of runs: all weights
    sum to 1). ``sum(weights * nodes**j)`` estimates ``tr(H^j) / dim``."""

    nodes: np.ndarray
    weights: np.ndarray
    run_nodes: tuple[np.ndarray, ...] = field(repr=False)
    run_weights: tuple[np.ndarray, ...] = field(repr=False)
    dim: int
    num_runs: int
    num_steps: int
    seed: int
    num_products: int = 0

    def moment(self, j: int) -> float:
        """``sum(weights * nodes**j)``, the estimate of ``tr(H^j) / dim``."""
        return float(np.sum(self.weights * self.nodes ** int(j)))

    def smooth(self, grid: ArrayLike, sigma: float) -> np.ndarray:
        """The density smoothed by a Gaussian of width ``sigma``, on ``grid``."""
        return gaussian_density(self.nodes, self.weights, grid, sigma)


def gaussian_density(nodes: ArrayLike, weights: ArrayLike, grid: ArrayLike, sigma: float) -> np.ndarray:
    """``sum_k weights_k * N(grid; nodes_k, sigma^2)`` on ``grid`` (integrates to ``sum(weights)``)."""
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    x = np.asarray(nodes, dtype=np.float64).reshape(-1)
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if x.shape != w.shape:
        raise ValueError(f"nodes and weights differ in length ({x.size} vs {w.size})")
    g = np.asarray(grid, dtype=np.float64)
    z = (g[..., None] - x) / sigma
    out: np.ndarray = np.sum(w * np.exp(-0.5 * z * z), axis=-1) / (sigma * math.sqrt(2 * math.pi))
    return out


@dataclass(frozen=True)
class Eigenpairs:
    """Eigenvalues (``"LA"``: descending; ``"SA"``: ascending; ``"LM"``: by magnitude,
    descending) and unit eigenvectors as rows of a ``(k, dim)`` tensor on the operator's device,
    each with its largest-magnitude entry positive. ``converged`` is False when ARPACK stopped
    at ``maxiter``; then only the converged pairs are returned."""

    eigenvalues: np.ndarray
    eigenvectors: torch.Tensor = field(repr=False)
    num_products: int
    converged: bool = True
    which: str = "LA"


@dataclass(frozen=True)
class ExactTrace:
    """An exact trace (``estimator="exact"``; no interval) with its per-parameter parts."""

    trace: float
    per_parameter: dict[str, float]
    method: str
    loss: str | None
    exact: bool
    num_params: int
    num_products: int
    seconds: float
    estimator: str = "exact"

    def by(self, scope: str = "layer") -> dict[str, float]:
        """Traces summed per ``"model"`` / ``"layer"`` (module) / ``"block"`` group, as the probes group."""
        return group_traces(self.per_parameter, scope)

    def as_row(self) -> dict[str, Any]:
        """The trace as a row of the ``hessian_trace`` table's columns."""
        return {
            "estimator": self.estimator,
            "trace": self.trace,
            "loss": self.loss,
            "method": self.method,
            "exact": self.exact,
            "num_params": self.num_params,
            "num_hvps": self.num_products,
        }


@dataclass(frozen=True)
class HessianDiagonal:
    """The Hessian diagonal per parameter (``values[name]`` shaped like the parameter, detached).

    ``method``: ``"unit"`` (one product per coordinate) or ``"ggn"`` (Gauss--Newton diagonal);
    ``exact``: whether it is the Hessian diagonal (``False`` only for a GGN diagonal computed with
    ``check="warn"`` on a network that failed the piecewise-linearity check; ``notes`` says why).
    ``num_products``: Hessian-vector products (unit) or per-sample vector--Jacobian products (ggn)."""

    values: dict[str, torch.Tensor]
    method: str
    exact: bool
    loss: str | None = None
    num_samples: int = 0
    num_products: int = 0
    seconds: float = 0.0
    notes: tuple[str, ...] = field(default=(), repr=False)

    @property
    def param_names(self) -> list[str]:
        """Names of the parameters, in order."""
        return list(self.values)

    @property
    def dim(self) -> int:
        """Entries of the diagonal."""
        return sum(v.numel() for v in self.values.values())

    def flat(self) -> torch.Tensor:
        """The diagonal as one flat vector in parameter order."""
        return torch.cat([v.reshape(-1) for v in self.values.values()])

    def trace(self) -> float:
        """The sum of the diagonal (float64)."""
        return float(sum(float(v.sum(dtype=torch.float64)) for v in self.values.values()))

    def parameter_traces(self) -> dict[str, float]:
        """The trace of each parameter's block: ``{name: sum of its diagonal}``."""
        return {n: float(v.sum(dtype=torch.float64)) for n, v in self.values.items()}

    def traces(self, scope: str = "layer") -> dict[str, float]:
        """Traces per ``"model"`` (``{"all": tr}``), ``"layer"`` (module) or ``"block"`` group."""
        return group_traces(self.parameter_traces(), scope)

    def to_trace(self) -> ExactTrace:
        """The diagonal's trace as an :class:`ExactTrace`."""
        per = self.parameter_traces()
        return ExactTrace(
            trace=float(sum(per.values())),
            per_parameter=per,
            method=self.method,
            loss=self.loss,
            exact=self.exact,
            num_params=self.dim,
            num_products=self.num_products,
            seconds=self.seconds,
        )


def group_traces(per_parameter: Mapping[str, float], scope: str) -> dict[str, float]:
    """Sum ``per_parameter`` over the groups of ``scope`` (:func:`~zsq_probe.hessian.operator.parameter_group`)."""
    if scope not in ("model", "layer", "block"):
        raise ValueError(f"scope must be 'model', 'layer' or 'block', got {scope!r}")
    out: dict[str, float] = {}
    for name, value in per_parameter.items():
        g = parameter_group(name, scope)
        out[g] = out.get(g, 0.0) + value
    return out
