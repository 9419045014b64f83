"""Curvature probes (paper §3.2): Hessian trace of CE and of KL separately (Fig. 2b, 9), signed top
eigenvalues, SLQ eigenvalue density (Fig. 2d), and 1-D loss slices L(theta + k*e*delta) along the top
eigenvector (Fig. 2c).

Both run every `hessian_every_epochs` epochs on a fixed-size probe batch drawn from the probe's own
stream (ProbeContext.probe_batch).  The student is evaluated in eval mode (BN running statistics) with its
activation ranges frozen; every mode, buffer and parameter is put back afterwards."""

from __future__ import annotations

import warnings

import numpy as np
import torch

from zsq_probe.hessian import HessianOperator, hutchinson_trace, slq_density, slq_trace, top_eigenpairs
from zsq_probe.losses import ce_to_labels, kl_to_teacher
from zsq_probe.module_state import preserved_state
from zsq_probe.probes.base import Probe, grouped_indices
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
        warnings.warn(f"Hessian probe batch of {size} samples: top eigenvalues from small batches vary up to 10x "
                      f"between draws; raise hessian_batch_size to >= {SMALL_PROBE_BATCH}", stacklevel=2)


def curvature(student, param_names, batch, cfg, seed: int) -> tuple[dict[str, list[dict]], dict]:
    """Traces (Hutchinson and SLQ), signed top-k eigenvalues and SLQ density of the CE and KL Hessians.

    Returns rows per table and {loss: top eigenvector (flat, parameter order)} for the slice probe."""
    rows = {"hessian_trace": [], "hessian_eigenvalues": [], "hessian_density": []}
    top = {}
    common = {"probe_batch_size": batch.size, "seed": seed}
    for loss, (fn, target_name) in loss_functions(cfg).items():
        target = getattr(batch, target_name)
        for scope in cfg.probing.scopes:
            groups = grouped_indices(param_names, scope)
            for group, idx in groups.items():
                names = None if scope == "model" else [param_names[i] for i in idx]
                with HessianOperator(student, fn, [(batch.inputs, target)], params=names, mode="eval") as op:
                    h = hutchinson_trace(op, cfg.probing.hessian_vectors, seed=seed)
                    rows["hessian_trace"].append(dict(loss=loss, scope=scope, group=group, estimator="hutchinson",
                                                      trace=h.estimate, stderr=h.stderr, num_vectors=h.num_vectors,
                                                      num_hvps=h.num_products, num_params=op.dim,
                                                      probe_batch_source=batch.source, **common))
                    if scope != "model":
                        continue
                    density = slq_density(op, cfg.probing.slq_runs, cfg.probing.slq_steps, seed=seed)
                    s = slq_trace(density)
                    rows["hessian_trace"].append(dict(loss=loss, scope=scope, group=group, estimator="slq",
                                                      trace=s.estimate, stderr=s.stderr, num_vectors=s.num_vectors,
                                                      num_hvps=s.num_products, num_params=op.dim,
                                                      probe_batch_source=batch.source, **common))
                    for r, (nodes, weights) in enumerate(zip(density.run_nodes, density.run_weights)):
                        for x, w in zip(nodes, weights):
                            rows["hessian_density"].append(dict(loss=loss, slq_run=r, node=float(x),
                                                                weight=float(w) / density.num_runs, **common))
                    eig = top_pairs(op, cfg, seed)
                    for rank, value in enumerate(eig.eigenvalues, start=1):
                        rows["hessian_eigenvalues"].append(dict(loss=loss, rank=rank, eigenvalue=float(value),
                                                                num_hvps=eig.num_products,
                                                                probe_batch_source=batch.source, **common))
                    top[loss] = eig.eigenvectors[0].clone()
    return rows, top


def top_pairs(op, cfg, seed: int):
    """The signed top-k eigenpairs the probes report; one call shared by the Hessian and slice probes so an
    online slice (reusing the Hessian probe's vector) and a post-hoc one (computing it) agree."""
    return top_eigenpairs(op, k=min(cfg.probing.hessian_top_k, op.dim - 1), tol=1e-3, seed=seed)


@torch.no_grad()
def loss_along(student, fn, inputs, target, direction: torch.Tensor, ks, params) -> list[float]:
    """fn(student(inputs), target) at theta + k*direction for each k; parameters restored exactly."""
    saved = [p.detach().clone() for p in params]
    values = []
    try:
        for k in ks:
            offset = 0
            for p, p0 in zip(params, saved):
                n = p.numel()
                p.copy_(p0 + float(k) * direction[offset:offset + n].view_as(p))
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
                norm = lambda t: torch.linalg.vector_norm(t, dim=dims, keepdim=True)  # noqa: E731
                d = d * (norm(w) / norm(d).clamp_min(1e-12))
        parts.append(d.reshape(-1))
    flat = torch.cat(parts)
    if not filter_normalized:
        flat = flat / flat.norm()
    return flat.to(device=params[0].device, dtype=params[0].dtype)


def slice_rows(student, params, batch, cfg, seed: int, top: dict | None) -> list[dict]:
    """Loss slices for CE and KL along each configured direction and scaling (paper Fig. 2c uses the top
    eigenvector of that loss's Hessian and delta = the gradient along it)."""
    rows = []
    ks = np.linspace(-0.5, 0.5, cfg.probing.slice_points)
    for loss, (fn, target_name) in loss_functions(cfg).items():
        target = getattr(batch, target_name)
        with HessianOperator(student, fn, [(batch.inputs, target)], mode="eval") as op:
            gradient = op.gradient()
            if "eigenvector" in cfg.probing.slice_directions and (top is None or loss not in top):
                vector = top_pairs(op, cfg, seed).eigenvectors[0]  # what the Hessian probe would find
            elif top is not None and loss in top:
                vector = top[loss]
            else:
                vector = None
        directions = {}
        if "eigenvector" in cfg.probing.slice_directions:
            directions["eigenvector"] = vector
        rng = torch.Generator().manual_seed(seed)
        if "random" in cfg.probing.slice_directions:
            directions["random"] = random_direction(params, rng, filter_normalized=False)
        if "filter" in cfg.probing.slice_directions:
            directions["filter"] = random_direction(params, rng, filter_normalized=True)
        for name, d in directions.items():
            for scaling in cfg.probing.slice_scalings:
                delta = float(gradient @ d) if scaling == "gradient" else 1.0
                values = loss_along(student, fn, batch.inputs, target, d * delta, ks, params)
                rows += [dict(loss=loss, direction=name, scaling=scaling, delta=delta, k=float(k), loss_value=v,
                              probe_batch_size=batch.size, seed=seed) for k, v in zip(ks, values)]
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
        with preserved_state(ctx.student):
            rows, top = curvature(ctx.student, ctx.param_names, batch, self.cfg, seed)
        for table, rs in rows.items():
            for r in rs:
                self.emit(table, epoch=epoch, origin=self.origin, **r)
        self.last = (epoch, batch, top)


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
        with preserved_state(ctx.student):
            rows = slice_rows(ctx.student, ctx.params, batch, self.cfg, curvature_seed(self.cfg, epoch), top)
        for r in rows:
            self.emit("slice", epoch=epoch, origin=self.origin, **r)
