"""Curvature measurements the Hessian and slice probes share (paper §3.2): the CE and KL loss terms, the
Hessian trace (exact where affordable, Hutch++ otherwise: `auto_choice`), signed top eigenpairs and the SLQ
density of each (`curvature`), the probe batch size warning and the curvature probes' random stream.

Both probes run every `hessian_every_epochs` epochs on a fixed-size probe batch drawn from the probe's own
stream (ProbeContext.probe_batch).  The student is evaluated in eval mode (BN running statistics) with its
activation ranges frozen; every mode, buffer and parameter is put back afterwards."""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn as nn

from zsq_probe.events import ProbeBatch
from zsq_probe.hessian import (
    Eigenpairs,
    ExactTrace,
    HessianOperator,
    SpectralDensity,
    TraceInterval,
    estimate_trace,
    exact_trace,
    slq_density,
    slq_trace,
    top_eigenpairs,
)
from zsq_probe.hessian.distributed import world_size
from zsq_probe.hessian.linearity import NotPiecewiseLinearError
from zsq_probe.probes.base import Row, grouped_indices
from zsq_probe.quantization.losses import LossFn, loss_function
from zsq_probe.seeds import PROBE_VECTOR_STREAM, epoch_seed, sub_seed

if TYPE_CHECKING:
    from zsq_probe.config import ProbeConfig, RunConfig

SMALL_PROBE_BATCH = 200  # top eigenvalues from 128 samples are known to vary 10x between draws
# trace_estimators "auto": the exact trace (Gauss-Newton diagonal) when the model qualifies and its
# batch x (classes - 1) per-sample vector-Jacobian products stay within EXACT_PRODUCTS_PER_BUDGET x
# trace_max_products, Hutch++ otherwise.
# Measured (docs/benchmarks.md, one thread): one Hessian-vector product costs as much as 173 per-sample products on
# the digits student (batch 200) and ~143 on a trained ResNet-20 (batch 64), and Hutch++ spends 0.19-0.8 of its
# budget to reach +-5 %.  At 32 x the budget the exact trace costs 32/143 = 0.22 of the budget in HVP time at most:
# no more than Hutch++ spent in any measured case, and it is exact.  Digits (200 x 9 = 1800 <= 32 x 100) and CIFAR
# (200 x 9 <= 32 x 400) get the exact trace; ImageNet (64 x 999 = 63,936 > 12,800) gets Hutch++.
EXACT_PRODUCTS_PER_BUDGET = 32
LOSS_TARGETS = {"ce": "labels", "kl": "teacher_logits"}  # the ProbeBatch field each loss term takes


def loss_functions(cfg: RunConfig) -> dict[str, tuple[LossFn, str]]:
    """The two loss terms the paper separates (zsq_probe.quantization.losses.loss_function: CE to the labels,
    the KL term as trained, KLDiv reduction='mean' times T^2, docs/reference.md#student-loss), each with the
    ProbeBatch field it takes as target."""
    return {
        "ce": (loss_function("ce", label_smoothing=cfg.label_smoothing), LOSS_TARGETS["ce"]),
        "kl": (loss_function("kl", temperature=cfg.temperature), LOSS_TARGETS["kl"]),
    }


def warn_small_batch(size: int) -> None:
    """Warn that a probe batch under SMALL_PROBE_BATCH samples gives unstable top eigenvalues."""
    if size < SMALL_PROBE_BATCH:
        warnings.warn(
            f"Hessian probe batch of {size} samples: top eigenvalues from small batches vary up to 10x "
            f"between draws; raise hessian_batch_size to >= {SMALL_PROBE_BATCH}",
            stacklevel=2,
        )


def _trace_row(t: TraceInterval, estimator: str, seed: int, deflation_products: int = 0) -> Row:
    """A sampled estimate's row; `num_hvps` adds the products of the eigenvector search that found Hutch++'s
    deflation vectors (`trace_max_products` bounds only the estimate's own)."""
    return {
        "estimator": estimator,
        "trace": t.estimate,
        "stderr": t.stderr,
        "ci_low": t.ci_low,
        "ci_high": t.ci_high,
        "interval": t.interval,
        "num_vectors": t.num_vectors,
        "num_hvps": t.num_products + deflation_products,
        "num_vjps": 0,
        "stopped_by": t.stopped_by,
        "seed": seed,
    }


@dataclass(frozen=True)
class _Measurement:
    """What every Hessian of one curvature measurement shares: the student, the probe batch, the config, the
    probe seed and the columns common to every row."""

    student: nn.Module
    batch: ProbeBatch
    cfg: RunConfig
    seed: int
    common: Row


def _hessian_jobs(param_names: list[str], cfg: RunConfig) -> list[tuple[str, str, str, list[str] | None]]:
    """``(loss, scope, group, parameter names or None for all)`` of every Hessian to measure, in order."""
    jobs: list[tuple[str, str, str, list[str] | None]] = []
    scopes = sorted(cfg.probing.scopes, key=lambda scope: scope != "model")  # model first: its exact diagonal
    for loss in LOSS_TARGETS:
        for scope in scopes:
            for group, idx in grouped_indices(param_names, scope).items():
                jobs.append((loss, scope, group, None if scope == "model" else [param_names[i] for i in idx]))
    return jobs


def _group_trace(op: HessianOperator, m: _Measurement, loss: str, scope: str, group: str) -> Row:
    """Block / layer scope: fixed-size Hutchinson (the adaptive budget is for the model-scope estimate)."""
    s = sub_seed(m.seed, loss, scope, group, "hutchinson")
    n = m.cfg.probing.hessian_vectors
    return _trace_row(
        estimate_trace(op, "hutchinson", rtol=None, max_products=n, min_samples=n, seed=s), "hutchinson", s
    )


def _eigenvalue_rows(eig: Eigenpairs, m: _Measurement, loss: str) -> list[Row]:
    return [
        {
            "loss": loss,
            "rank": rank,
            "eigenvalue": float(value),
            "num_hvps": eig.num_products,
            "seed": m.seed,
            **m.common,
        }
        for rank, value in enumerate(eig.eigenvalues, start=1)
    ]


def _estimator_rows(
    op: HessianOperator, m: _Measurement, loss: str, est: str, eig: Eigenpairs, exact: dict[str, ExactTrace]
) -> tuple[Row, list[Row]]:
    """One model-scope trace estimator of `probing.trace_estimators` (its own seed per loss): its trace row and,
    for SLQ, its density rows.  "auto" runs `exact` or Hutch++ (auto_choice) and says which and why in `reason`;
    an exact trace that ran is kept in `exact[loss]` (the block / layer scopes read their traces from it)."""
    pc = m.cfg.probing
    reason = ""
    if est == "auto":
        est, reason = auto_choice(m)
    s = sub_seed(m.seed, loss, est)
    if est in ("hutch++", "hutchinson"):
        deflate = eig.eigenvectors if est == "hutch++" else None
        t = estimate_trace(op, est, rtol=pc.trace_rtol, max_products=pc.trace_max_products, deflate=deflate, seed=s)
        return {**_trace_row(t, est, s, eig.num_products if est == "hutch++" else 0), "reason": reason}, []
    if est == "slq":
        density = slq_density(op, pc.slq_runs, pc.slq_steps, seed=s)
        return {**_trace_row(slq_trace(density), "slq", s), "reason": ""}, density_rows(density, loss, s, pc, m.common)
    result = exact_trace_or_reason(m.student, loss, m.batch, m.cfg)
    if isinstance(result, str) and reason:  # auto: the model does not qualify after all -> Hutch++
        why = f"auto: hutch++ (no exact trace: {result})"
        t = estimate_trace(
            op, "hutch++", rtol=pc.trace_rtol, max_products=pc.trace_max_products, deflate=eig.eigenvectors, seed=s
        )
        return {**_trace_row(t, "hutch++", s, eig.num_products), "reason": why}, []
    if isinstance(result, str):
        return {**_refused_exact_row(loss, result), "reason": ""}, []
    exact[loss] = result
    return {**exact_row(result), "reason": reason}, []


def auto_choice(m: _Measurement) -> tuple[str, str]:
    """("exact" or "hutch++", the reason) for trace_estimators "auto": exact when the probe batch's per-sample
    products (batch x (classes - 1)) fit EXACT_PRODUCTS_PER_BUDGET x trace_max_products; whether the model qualifies
    (piecewise linear) is checked when the exact trace runs, and a refusal falls back to Hutch++."""
    ranks = max(int(m.batch.teacher_logits.shape[-1]) - 1, 1)  # the output Hessian's rank: C - 1
    products = m.batch.size * ranks
    limit = EXACT_PRODUCTS_PER_BUDGET * m.cfg.probing.trace_max_products
    cost = f"{m.batch.size} x {ranks} = {products} per-sample products"
    if products <= limit:
        return "exact", f"auto: exact ({cost} <= {EXACT_PRODUCTS_PER_BUDGET} x trace_max_products = {limit})"
    return "hutch++", f"auto: hutch++ ({cost} > {EXACT_PRODUCTS_PER_BUDGET} x trace_max_products = {limit})"


def _model_scope(
    op: HessianOperator,
    m: _Measurement,
    loss: str,
    where: Row,
    rows: dict[str, list[Row]],
    exact: dict[str, ExactTrace],
) -> torch.Tensor:
    """Model scope: the top eigenpairs (seed `seed`, the slice probe's), then each trace estimator; rows are
    added to `rows` (an exact trace that ran to `exact`); returns the top eigenvector."""
    eig = top_pairs(op, m.cfg, m.seed)
    rows["hessian_eigenvalues"] += _eigenvalue_rows(eig, m, loss)
    top = eig.eigenvectors[0].clone()
    for est in m.cfg.probing.trace_estimators:
        trace_row, density = _estimator_rows(op, m, loss, est, eig, exact)
        rows["hessian_trace"].append({**where, **trace_row})
        rows["hessian_density"] += density
    return top


def curvature(
    student: nn.Module, param_names: list[str], batch: ProbeBatch, cfg: RunConfig, seed: int
) -> tuple[dict[str, list[Row]], dict[str, torch.Tensor]]:
    """Traces with 95 % intervals, signed top-k eigenvalues and SLQ density of the CE and KL Hessians.

    Model scope: top eigenpairs first (seed `seed`, the one the slice probe uses), then each estimator of
    `probing.trace_estimators` with a seed of its own per loss (independent vectors): Hutch++ deflated by
    those eigenvectors (adaptive to `trace_rtol`), plain Hutchinson, SLQ (independent runs; its trace and
    interval from the runs), the exact trace (Gauss-Newton diagonal: exact for piecewise-linear nets).
    Block / layer scopes: Hutchinson with `hessian_vectors` vectors and its t interval.  Returns rows per
    table and {loss: top eigenvector}."""
    # world_size: processes the Hessian was split over (zsq_probe.hessian.distributed; 1 = one process)
    common: Row = {"probe_batch_size": batch.size, "probe_batch_source": batch.source, "world_size": world_size()}
    m = _Measurement(student, batch, cfg, seed, common)
    fns = loss_functions(cfg)
    rows: dict[str, list[Row]] = {"hessian_trace": [], "hessian_eigenvalues": [], "hessian_density": []}
    top: dict[str, torch.Tensor] = {}
    exact: dict[str, ExactTrace] = {}  # loss -> the model-scope exact trace, when one ran
    for loss, scope, group, names in _hessian_jobs(param_names, cfg):
        if scope != "model" and loss in exact:  # per-group traces from the same diagonal: no products
            where = {"loss": loss, "scope": scope, "group": group, **common, "num_params": _group_size(student, names)}
            rows["hessian_trace"].append({**where, **_group_exact_row(exact[loss], scope, group)})
            continue
        fn, target_name = fns[loss]
        with HessianOperator(
            student, fn, [(batch.inputs, getattr(batch, target_name))], params=names, mode="eval"
        ) as op:
            where = {"loss": loss, "scope": scope, "group": group, **common, "num_params": op.dim}
            if scope == "model":
                top[loss] = _model_scope(op, m, loss, where, rows, exact)
            else:
                rows["hessian_trace"].append({**where, **_group_trace(op, m, loss, scope, group), "reason": ""})
    return rows, top


def _group_size(student: nn.Module, names: list[str] | None) -> int:
    """Parameters in a block / layer group (`names`; None: all)."""
    wanted = None if names is None else set(names)
    return sum(p.numel() for n, p in student.named_parameters() if wanted is None or n in wanted)


def _group_exact_row(t: ExactTrace, scope: str, group: str) -> Row:
    """A block / layer trace read from the model-scope exact diagonal (no products of its own)."""
    value = t.by(scope)[group]
    return {
        **exact_row(t),
        "trace": value,
        "ci_low": value,
        "ci_high": value,
        "num_vjps": 0,
        "reason": "from the model-scope exact diagonal (no products of its own)",
    }


def density_rows(density: SpectralDensity, loss: str, seed: int, pc: ProbeConfig, common: Row) -> list[Row]:
    """One row per Ritz node; weights sum to 1 over all rows of (loss, epoch); `sigma`: the Gaussian
    smoothing the figure applies, from `density_sigma` ('range': a fraction of the spectral range,
    'pyhessian': PyHessian's sqrt(1e-5 * max(1, range)))."""
    nodes = np.concatenate(density.run_nodes)
    spread = float(nodes.max() - nodes.min()) if nodes.size else 0.0
    if pc.density_sigma == "pyhessian":
        sigma = math.sqrt(1e-5 * max(1.0, spread))
    else:
        sigma = max(pc.density_sigma_fraction * spread, 1e-12)
    out: list[Row] = []
    for r, (xs, ws) in enumerate(zip(density.run_nodes, density.run_weights)):
        out += [
            {
                "loss": loss,
                "slq_run": r,
                "node": float(x),
                "weight": float(w) / density.num_runs,
                "sigma": sigma,
                "sigma_rule": pc.density_sigma,
                "seed": seed,
                **common,
            }
            for x, w in zip(xs, ws)
        ]
    return out


def exact_trace_or_reason(student: nn.Module, loss: str, batch: ProbeBatch, cfg: RunConfig) -> ExactTrace | str:
    """The exact trace through the Gauss-Newton diagonal, or why the diagonal refused the net (not piecewise
    linear, or it mixes samples)."""
    try:
        return exact_trace(
            student,
            loss,
            batch.inputs,
            getattr(batch, LOSS_TARGETS[loss]),
            method="ggn",
            temperature=cfg.temperature,
            label_smoothing=cfg.label_smoothing if loss == "ce" else 0.0,
        )
    except NotPiecewiseLinearError as e:
        return str(e)


def exact_row(t: ExactTrace) -> Row:
    """The row of an exact trace: no interval (the estimate is a point), no sampling."""
    nan = float("nan")
    return {
        "estimator": "exact",
        "trace": t.trace,
        "stderr": 0.0,
        "ci_low": t.trace,
        "ci_high": t.trace,
        "interval": "exact (Gauss-Newton diagonal; no sampling)",
        "num_vectors": 0,
        "num_hvps": 0,  # no Hessian-vector product: per-sample vector-Jacobian products of the logits
        "num_vjps": t.num_products,
        "stopped_by": "exact",
        "seed": -1,
    } | ({} if t.exact else {"stderr": nan, "ci_low": nan, "ci_high": nan})


def _refused_exact_row(loss: str, reason: str) -> Row:
    """The `exact` row of a model the exact diagonal refuses (asked for by name): NaN trace, the reason in
    `interval`, one warning."""
    logging.getLogger("zsq_probe.probes").warning(f"hessian probe: no exact {loss} trace: {reason}")
    nan = float("nan")
    return {
        "estimator": "exact",
        "trace": nan,
        "stderr": nan,
        "ci_low": nan,
        "ci_high": nan,
        "interval": f"refused: {reason}",
        "num_vectors": 0,
        "num_hvps": 0,
        "num_vjps": 0,
        "stopped_by": "refused",
        "seed": -1,
    }


def top_pairs(op: HessianOperator, cfg: RunConfig, seed: int) -> Eigenpairs:
    """The signed top-k eigenpairs the probes report; one call shared by the Hessian and slice probes so an
    online slice (reusing the Hessian probe's vector) and a post-hoc one (computing it) agree."""
    return top_eigenpairs(op, k=min(cfg.probing.hessian_top_k, op.dim - 1), tol=1e-3, seed=seed)


def curvature_seed(cfg: RunConfig, epoch: int) -> int:
    """The seed of the curvature probes' random vectors at `epoch` (their own stream)."""
    return epoch_seed(cfg.seed, epoch, PROBE_VECTOR_STREAM)


@dataclass(frozen=True)
class TopEigenpairs:
    """The Hessian probe's result of one epoch that the slice probe reuses: the probe batch it measured on and
    the top eigenvector of each loss's Hessian (model scope), so an online slice needs no eigensolve of its own."""

    epoch: int
    batch: ProbeBatch
    vectors: dict[str, torch.Tensor]  # loss (ce | kl) -> top eigenvector


def skip_nonfinite_epoch(probe: str, epoch: int, e: Exception) -> None:
    """Probes never crash a run on a non-finite loss surface: the epoch gets no rows, and a warning says so."""
    logging.getLogger("zsq_probe.probes").warning(
        f"{probe} probe: no rows for epoch {epoch}: {e}; the student at this epoch is degenerate (see the "
        f"metrics' skipped_steps)"
    )
