"""Curvature probes (paper §3.2): Hessian trace of CE and of KL separately (Fig. 2b, 9), signed top
eigenvalues, SLQ eigenvalue density (Fig. 2d), and 1-D loss slices L(theta + k*e*delta) along the top
eigenvector (Fig. 2c).

Both run every `hessian_every_epochs` epochs on a fixed-size probe batch drawn from the probe's own
stream (ProbeContext.probe_batch).  The student is evaluated in eval mode (BN running statistics) with its
activation ranges frozen; every mode, buffer and parameter is put back afterwards."""

from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from zsq_probe.hessian import HessianOperator, slq_density, slq_trace, top_eigenpairs
from zsq_probe.module_state import preserved_state
from zsq_probe.probes.base import Probe, grouped_indices
from zsq_probe.quantization.losses import ce_to_labels, kl_to_teacher
from zsq_probe.seeds import PROBE_VECTOR_STREAM, epoch_seed

SMALL_PROBE_BATCH = 200  # top eigenvalues from 128 samples are known to vary 10x between draws


def loss_functions(cfg) -> dict:
    """The two loss terms the paper separates, with the target each takes from a ProbeBatch."""
    T = cfg.temperature
    return {
        "ce": (lambda logits, labels: ce_to_labels(logits, labels, cfg.label_smoothing), "labels"),
        # the KL term as trained (KLDiv reduction='mean' times T^2), docs/reference.md#student-loss
        "kl": (lambda logits, t_logits: kl_to_teacher(logits, t_logits, T) * T * T, "teacher_logits"),
    }


def warn_small_batch(size: int) -> None:
    if size < SMALL_PROBE_BATCH:
        warnings.warn(
            f"Hessian probe batch of {size} samples: top eigenvalues from small batches vary up to 10x "
            f"between draws; raise hessian_batch_size to >= {SMALL_PROBE_BATCH}",
            stacklevel=2,
        )


def _trace_row(t, estimator: str, seed: int) -> dict:
    return {
        "estimator": estimator,
        "trace": t.estimate,
        "stderr": t.stderr,
        "ci_low": t.ci_low,
        "ci_high": t.ci_high,
        "interval": t.interval,
        "num_vectors": t.num_vectors,
        "num_hvps": t.num_products,
        "seed": seed,
    }


def curvature(student, param_names, batch, cfg, seed: int) -> tuple[dict[str, list[dict]], dict]:
    """Traces with 95 % intervals, signed top-k eigenvalues and SLQ density of the CE and KL Hessians.

    Model scope: top eigenpairs first (seed `seed`, the one the slice probe uses), then each estimator of
    `probing.trace_estimators` with a seed of its own per loss (independent vectors): Hutch++ deflated by
    those eigenvectors (adaptive to `trace_rtol`), plain Hutchinson, SLQ (independent runs; its trace and
    interval from the runs), the exact trace (Gauss-Newton diagonal: exact for piecewise-linear nets).
    Block / layer scopes: Hutchinson with `hessian_vectors` vectors and its t interval.  Returns rows per table and {loss: top eigenvector}."""
    from zsq_probe.hessian.trace import estimate_trace
    from zsq_probe.seeds import sub_seed

    pc = cfg.probing
    rows = {"hessian_trace": [], "hessian_eigenvalues": [], "hessian_density": []}
    top = {}
    from zsq_probe.hessian.distributed import world_size

    # world_size: processes the Hessian was split over (zsq_probe.hessian.distributed; 1 = one process)
    common = {"probe_batch_size": batch.size, "probe_batch_source": batch.source, "world_size": world_size()}
    for loss, (fn, target_name) in loss_functions(cfg).items():
        target = getattr(batch, target_name)
        for scope in pc.scopes:
            for group, idx in grouped_indices(param_names, scope).items():
                names = None if scope == "model" else [param_names[i] for i in idx]
                where = dict(loss=loss, scope=scope, group=group, **common)
                with HessianOperator(student, fn, [(batch.inputs, target)], params=names, mode="eval") as op:
                    where["num_params"] = op.dim
                    if scope != "model":
                        s = sub_seed(seed, loss, scope, group, "hutchinson")
                        # fixed-size Hutchinson per group (the adaptive budget is for the model-scope estimate)
                        t = estimate_trace(
                            op,
                            "hutchinson",
                            rtol=None,
                            max_products=pc.hessian_vectors,
                            min_samples=pc.hessian_vectors,
                            seed=s,
                        )
                        rows["hessian_trace"].append({**where, **_trace_row(t, "hutchinson", s)})
                        continue
                    eig = top_pairs(op, cfg, seed)
                    for rank, value in enumerate(eig.eigenvalues, start=1):
                        rows["hessian_eigenvalues"].append(
                            dict(
                                loss=loss,
                                rank=rank,
                                eigenvalue=float(value),
                                num_hvps=eig.num_products,
                                seed=seed,
                                **common,
                            )
                        )
                    top[loss] = eig.eigenvectors[0].clone()
                    for est in pc.trace_estimators:
                        s = sub_seed(seed, loss, est)
                        if est in ("hutch++", "hutchinson"):
                            t = estimate_trace(
                                op,
                                est,
                                rtol=pc.trace_rtol,
                                max_products=pc.trace_max_products,
                                deflate=eig.eigenvectors if est == "hutch++" else None,
                                seed=s,
                            )
                            rows["hessian_trace"].append({**where, **_trace_row(t, est, s)})
                        elif est == "slq":
                            density = slq_density(op, pc.slq_runs, pc.slq_steps, seed=s)
                            rows["hessian_trace"].append({**where, **_trace_row(slq_trace(density), "slq", s)})
                            rows["hessian_density"] += density_rows(density, loss, s, pc, common)
                        else:
                            rows["hessian_trace"].append({**where, **exact_trace_row(student, loss, batch, cfg)})
    return rows, top


def density_rows(density, loss: str, seed: int, pc, common: dict) -> list[dict]:
    """One row per Ritz node; weights sum to 1 over all rows of (loss, epoch); `sigma`: the Gaussian
    smoothing the figure applies, from `density_sigma` ('range': a fraction of the spectral range,
    'pyhessian': PyHessian's sqrt(1e-5 * max(1, range)))."""
    nodes = np.concatenate(density.run_nodes)
    spread = float(nodes.max() - nodes.min()) if nodes.size else 0.0
    if pc.density_sigma == "pyhessian":
        sigma = math.sqrt(1e-5 * max(1.0, spread))
    else:
        sigma = max(pc.density_sigma_fraction * spread, 1e-12)
    out = []
    for r, (xs, ws) in enumerate(zip(density.run_nodes, density.run_weights)):
        out += [
            dict(
                loss=loss,
                slq_run=r,
                node=float(x),
                weight=float(w) / density.num_runs,
                sigma=sigma,
                sigma_rule=pc.density_sigma,
                seed=seed,
                **common,
            )
            for x, w in zip(xs, ws)
        ]
    return out


def exact_trace_row(student, loss: str, batch, cfg) -> dict:
    """The exact trace through the Gauss-Newton diagonal (refused for nets that are not piecewise linear)."""
    from zsq_probe.hessian.diagonal import exact_trace

    target = batch.labels if loss == "ce" else batch.teacher_logits
    t = exact_trace(
        student,
        loss,
        batch.inputs,
        target,
        method="ggn",
        temperature=cfg.temperature,
        label_smoothing=cfg.label_smoothing if loss == "ce" else 0.0,
    )
    nan = float("nan")
    return {
        "estimator": "exact",
        "trace": t.trace,
        "stderr": 0.0,
        "ci_low": t.trace,
        "ci_high": t.trace,
        "interval": "exact (Gauss-Newton diagonal; no sampling)",
        "num_vectors": 0,
        "num_hvps": t.num_products,
        "seed": -1,
    } | ({} if t.exact else {"stderr": nan, "ci_low": nan, "ci_high": nan})


def top_pairs(op, cfg, seed: int):
    """The signed top-k eigenpairs the probes report; one call shared by the Hessian and slice probes so an
    online slice (reusing the Hessian probe's vector) and a post-hoc one (computing it) agree."""
    return top_eigenpairs(op, k=min(cfg.probing.hessian_top_k, op.dim - 1), tol=1e-3, seed=seed)


SLICE_K_MAX = 0.5  # k in [-0.5, 0.5], the paper's Fig. 2c range
SLICE_LOSS_KINDS = ("surrogate", "requantized")  # for a quantised student; a float one gives "float"


@torch.no_grad()
def loss_along(
    student, fn, inputs, target, direction: torch.Tensor, ks, params, surrogate: bool = False
) -> list[float]:
    """fn(student(inputs), target) at theta + k*direction for each k.

    The student runs as the Hessian probe sees it, whatever its own mode: BN in eval mode (running
    statistics), activation ranges frozen, every buffer a private clone, so no forward here moves BN
    statistics or ranges.  `surrogate`: evaluate the straight-through surrogate of a quantised student, its
    quantisation offsets frozen at theta (zsq_probe.probes.surrogate; the loss whose Hessian the probe
    reports); else the student as it is (re-quantised at every point for a quantised one).  Parameters,
    flags and buffers are restored exactly."""
    import contextlib

    from zsq_probe.probes.surrogate import frozen_quantization

    saved = [p.detach().clone() for p in params]
    values = []
    with preserved_state(student, mode="eval"):
        with frozen_quantization(student, inputs) if surrogate else contextlib.nullcontext():
            try:
                for k in ks:
                    offset = 0
                    for p, p0 in zip(params, saved):
                        n = p.numel()
                        p.copy_(p0 + float(k) * direction[offset : offset + n].view_as(p))
                        offset += n
                    values.append(float(fn(student(inputs), target)))
            finally:
                for p, p0 in zip(params, saved):
                    p.copy_(p0)
    return values


def random_direction(params, generator: torch.Generator, filter_normalized: bool) -> torch.Tensor:
    """A Gaussian direction: unit norm, or filter-normalised (Li et al. 2018: each output filter rescaled
    to the norm of the weights' filter; biases and BN parameters get no component)."""
    parts = []
    for p in params:
        d = torch.randn(p.shape, generator=generator, dtype=torch.float64)
        if filter_normalized:
            if p.dim() <= 1:
                d = torch.zeros_like(d)
            else:
                w = p.detach().double().cpu()
                dims = tuple(range(1, p.dim()))
                w_norm = torch.linalg.vector_norm(w, dim=dims, keepdim=True)
                d_norm = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
                d = d * (w_norm / d_norm.clamp_min(1e-12))
        parts.append(d.reshape(-1))
    flat = torch.cat(parts)
    if not filter_normalized:
        flat = flat / flat.norm()
    return flat.to(device=params[0].device, dtype=params[0].dtype)


def slice_delta(
    scaling: str, gradient_along: float, direction_norm: float, theta_norm: float, norm_fraction: float
) -> float:
    """The step scale delta of a slice theta + k*delta*d.

    'gradient': delta = grad L . d (the paper's Fig. 2c; differs between CE and KL); 'unit': delta = 1;
    'norm': |delta| * ||d|| = norm_fraction * ||theta||, the same parameter-norm length for every loss, signed
    like grad L . d so that k > 0 points uphill as with 'gradient'."""
    if scaling == "gradient":
        return gradient_along
    if scaling == "unit":
        return 1.0
    if scaling == "norm":
        if direction_norm == 0.0:
            return 0.0
        return float(np.copysign(norm_fraction * theta_norm / direction_norm, gradient_along))
    raise ValueError(f"unknown slice scaling {scaling!r}")


def slice_rows(student, params, batch, cfg, seed: int, top: dict | None) -> list[dict]:
    """Loss slices for CE and KL along each configured direction and scaling (paper Fig. 2c uses the top
    eigenvector of that loss's Hessian and delta = the gradient along it).

    Everything runs on the eval-mode student (BN running statistics, frozen activation ranges) the Hessian
    probe differentiates, whatever mode the student trains in.  A quantised student gives each slice as the
    straight-through surrogate (the loss whose Hessian the eigenvector and delta come from) and as the
    re-quantised loss (cfg.probing.slice_losses); a float student its one loss ('float')."""
    from zsq_probe.probes.surrogate import is_quantized

    rows = []
    p_cfg = cfg.probing
    ks = np.linspace(-SLICE_K_MAX, SLICE_K_MAX, p_cfg.slice_points)
    kinds = [k for k in SLICE_LOSS_KINDS if k in p_cfg.slice_losses] if is_quantized(student) else ["float"]
    theta_norm = float(torch.cat([p.detach().reshape(-1).double() for p in params]).norm())
    for loss, (fn, target_name) in loss_functions(cfg).items():
        target = getattr(batch, target_name)
        with HessianOperator(student, fn, [(batch.inputs, target)], mode="eval") as op:
            gradient = op.gradient()
            if "eigenvector" in p_cfg.slice_directions and (top is None or loss not in top):
                vector = top_pairs(op, cfg, seed).eigenvectors[0]  # what the Hessian probe would find
            elif top is not None and loss in top:
                vector = top[loss]
            else:
                vector = None
        directions = {}
        if "eigenvector" in p_cfg.slice_directions:
            directions["eigenvector"] = vector
        rng = torch.Generator().manual_seed(seed)
        if "random" in p_cfg.slice_directions:
            directions["random"] = random_direction(params, rng, filter_normalized=False)
        if "filter" in p_cfg.slice_directions:
            directions["filter"] = random_direction(params, rng, filter_normalized=True)
        for name, d in directions.items():
            d = d.to(device=gradient.device, dtype=gradient.dtype)
            along = float(gradient.double() @ d.double())
            d_norm = float(d.double().norm())
            for scaling in p_cfg.slice_scalings:
                delta = slice_delta(scaling, along, d_norm, theta_norm, p_cfg.slice_norm_fraction)
                for kind in kinds:
                    values = loss_along(
                        student, fn, batch.inputs, target, d * delta, ks, params, surrogate=kind == "surrogate"
                    )
                    rows += [
                        {
                            "loss": loss,
                            "loss_kind": kind,
                            "direction": name,
                            "scaling": scaling,
                            "delta": delta,
                            "step_norm": abs(delta) * d_norm,
                            "theta_norm": theta_norm,
                            "k": float(k),
                            "loss_value": v,
                            "probe_batch_size": batch.size,
                            "seed": seed,
                        }
                        for k, v in zip(ks, values)
                    ]
    return rows


def curvature_seed(cfg, epoch: int) -> int:
    return epoch_seed(cfg.seed, epoch, PROBE_VECTOR_STREAM)


class HessianProbe(Probe):
    name = "hessian"
    tables = posthoc_tables = ("hessian_trace", "hessian_eigenvalues", "hessian_density")

    def __init__(self, cfg, origin="online"):
        super().__init__(cfg, origin)
        self.last = None  # (epoch, batch, top eigenvectors) for the slice probe

    def on_epoch_end(self, ctx, epoch, metrics):
        if self.every_epoch(epoch):
            self.measure_checkpoint(ctx, epoch)
        self.flush(ctx.run, epoch)

    def measure_checkpoint(self, ctx, epoch):
        batch = ctx.probe_batch(epoch, self.cfg.probing.batch_size)
        warn_small_batch(batch.size)
        seed = curvature_seed(self.cfg, epoch)
        from zsq_probe.hessian.operator import NonFiniteHessianError

        try:
            with preserved_state(ctx.student):
                rows, top = curvature(ctx.student, ctx.param_names, batch, self.cfg, seed)
        except NonFiniteHessianError as e:
            _skip_nonfinite("hessian", epoch, e)
            self.last = None
            return
        for table, rs in rows.items():
            for r in rs:
                self.emit(table, epoch=epoch, origin=self.origin, **r)
        self.last = (epoch, batch, top)


def _skip_nonfinite(probe: str, epoch: int, e: Exception) -> None:
    """Probes never crash a run on a non-finite loss surface: the epoch gets no rows, and a warning says so."""
    import logging

    logging.getLogger("zsq_probe.probes").warning(
        f"{probe} probe: no rows for epoch {epoch}: {e}; the student at this epoch is degenerate (see the "
        f"metrics' skipped_steps)"
    )


class SliceProbe(Probe):
    name = "slice"
    tables = posthoc_tables = ("slice",)

    def __init__(self, cfg, origin="online", hessian: HessianProbe | None = None):
        super().__init__(cfg, origin)
        self.hessian = hessian

    def on_epoch_end(self, ctx, epoch, metrics):
        if self.every_epoch(epoch):
            self.measure_checkpoint(ctx, epoch)
        self.flush(ctx.run, epoch)

    def measure_checkpoint(self, ctx, epoch):
        shared = self.hessian.last if self.hessian is not None and self.hessian.last is not None else None
        if shared is not None and shared[0] == epoch:
            _, batch, top = shared  # same batch and eigenvectors the Hessian probe just computed
        else:
            batch, top = ctx.probe_batch(epoch, self.cfg.probing.batch_size), None
            warn_small_batch(batch.size)
        from zsq_probe.hessian.operator import NonFiniteHessianError

        try:
            with preserved_state(ctx.student, mode="eval"):  # the Hessian's student, whatever mode it trains in
                rows = slice_rows(ctx.student, ctx.params, batch, self.cfg, curvature_seed(self.cfg, epoch), top)
        except NonFiniteHessianError as e:
            _skip_nonfinite("slice", epoch, e)
            return
        for r in rows:
            self.emit("slice", epoch=epoch, origin=self.origin, **r)
