"""Hessian of a training loss with respect to model parameters, as a matrix-free operator.

One abstraction, :class:`HessianOperator`, turns ``(model, loss_fn, batches)`` into a
symmetric linear map ``v -> H v`` on flat parameter vectors; every estimator is a small
function over anything with ``.dim``, ``.dtype``, ``.device`` and ``.matvec``:

* :func:`hutchinson_trace` -- Rademacher trace estimate with standard error (paper Fig. 2b, 9);
* :func:`lanczos` -- tridiagonalisation with full reorthogonalisation;
* :func:`slq_density` / :func:`slq_trace` / :func:`gaussian_density` -- stochastic Lanczos
  quadrature eigenvalue density (Fig. 2d) and the SLQ trace;
* :func:`top_eigenpairs` -- signed largest-algebraic eigenpairs through ARPACK (Fig. 2c needs
  the top eigenvector; power iteration on ``H`` finds the largest *magnitude*, which is a large
  negative eigenvalue when the loss is non-convex there).

The loss is ``sum_b n_b * loss_fn(model(x_b), t_b) / sum_b n_b`` over the batches (``n_b`` the
batch size), so several batches give the Hessian of the size-weighted mean loss. Products reuse
the gradient graph: the gradient is taken once with ``create_graph=True`` and every product is
one ``torch.autograd.grad`` over it (``retain_graph=True``). The model is left exactly as found:
train/eval flag of every module, every buffer (the forward runs on clones of the buffers, so BN
running statistics and activation-quantiser ranges are neither updated nor captured by the
graph) and the parameters (``.grad`` is never written).
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn


__all__ = [
    "HessianOperator",
    "TraceEstimate",
    "LanczosResult",
    "SpectralDensity",
    "Eigenpairs",
    "hutchinson_trace",
    "lanczos",
    "slq_density",
    "slq_trace",
    "gaussian_density",
    "top_eigenpairs",
    "rademacher",
    "flatten_params",
    "unflatten",
]

_MODES = ("eval", "train", "as_is")


# --------------------------------------------------------------------------- flat vectors


def flatten_params(tensors: nn.Module | Mapping[str, torch.Tensor] | Iterable[torch.Tensor]) -> torch.Tensor:
    """One flat (detached) vector from a module's requires-grad parameters, a name->tensor
    mapping (in its order) or an iterable of tensors."""
    if isinstance(tensors, nn.Module):
        items = [p for p in tensors.parameters() if p.requires_grad]
    elif isinstance(tensors, Mapping):
        items = list(tensors.values())
    else:
        items = list(tensors)
    if not items:
        raise ValueError("flatten_params got no tensors")
    if not all(isinstance(t, torch.Tensor) for t in items):
        raise TypeError("flatten_params needs torch tensors")
    return torch.cat([t.detach().reshape(-1) for t in items])


def unflatten(flat: torch.Tensor, like: "HessianOperator | Mapping[str, Any]") -> dict[str, torch.Tensor]:
    """Split a flat vector into ``{name: tensor}`` shaped like ``like``: a HessianOperator (its
    selected parameters) or a mapping of names to tensors or shapes. The results are views."""
    if isinstance(like, HessianOperator):
        shapes = dict(zip(like.param_names, like.param_shapes))
    elif isinstance(like, Mapping):
        shapes = {n: tuple(t.shape) if isinstance(t, torch.Tensor) else tuple(t) for n, t in like.items()}
    else:
        raise TypeError(f"unflatten needs a HessianOperator or a name->shape mapping, got {type(like).__name__}")
    flat = torch.as_tensor(flat)
    sizes = [math.prod(s) for s in shapes.values()]
    if flat.dim() != 1 or flat.numel() != sum(sizes):
        raise ValueError(f"unflatten: vector of shape {tuple(flat.shape)} does not match {sum(sizes)} parameters")
    return {n: chunk.view(s) for (n, s), chunk in zip(shapes.items(), flat.split(sizes))}


def rademacher(dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> torch.Tensor:
    """A vector of independent +-1 entries drawn from ``generator`` (a CPU generator, so a seed
    gives the same vectors on every device)."""
    bits = torch.randint(0, 2, (dim,), generator=generator, dtype=torch.int8)
    return (bits.to(dtype) * 2 - 1).to(device)


# --------------------------------------------------------------------------- the operator


def _select_params(model: nn.Module, params: str | Iterable[str] | None) -> list[tuple[str, nn.Parameter]]:
    named = list(model.named_parameters())
    if params is None:
        chosen = [(n, p) for n, p in named if p.requires_grad]
        if not chosen:
            raise ValueError("the model has no parameters that require grad")
        return chosen
    wanted = [params] if isinstance(params, str) else list(params)
    if not wanted or not all(isinstance(w, str) for w in wanted):
        raise TypeError("params must be a parameter name, a module prefix, or a list of them")
    keep: set[str] = set()
    for w in wanted:
        prefix = w.rstrip(".")
        hits = [n for n, _ in named if n == prefix or n.startswith(prefix + ".") or prefix == ""]
        if not hits:
            some = ", ".join(n for n, _ in named[:6])
            raise ValueError(f"no parameter named or under '{w}' (parameters are e.g. {some})")
        trainable = [n for n in hits if dict(named)[n].requires_grad]
        if not trainable:
            raise ValueError(f"parameters under '{w}' do not require grad")
        keep.update(trainable)
    return [(n, p) for n, p in named if n in keep]


def _batch_size(inputs: Any) -> int:
    first = inputs
    while isinstance(first, (tuple, list)) and first:
        first = first[0]
    if isinstance(first, Mapping) and first:
        first = next(iter(first.values()))
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return int(first.shape[0])
    raise TypeError("cannot tell the batch size: inputs must be a tensor (batch first) or a tuple of tensors")


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to(o, device) for o in obj)
    if isinstance(obj, Mapping):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _available_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type == "cpu":
        try:
            with open("/proc/meminfo") as f:
                for line in f:
                    if line.startswith("MemAvailable:"):
                        return int(line.split()[1]) * 1024
        except OSError:
            pass
        try:
            return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    return None


class HessianOperator:
    """``v -> H v`` for the Hessian of the loss with respect to the selected parameters.

    ``model``: any ``nn.Module``; ``loss_fn(outputs, target) -> scalar`` (target: hard labels,
    teacher logits or probabilities, anything ``loss_fn`` takes); ``batches``: an iterable of
    ``(inputs, target)`` pairs (inputs a tensor or a tuple of tensors passed as ``model(*inputs)``).
    ``params``: ``None`` for every parameter that requires grad, or a name / module prefix / list
    of them (``"layer1"`` selects ``layer1.*``) for a per-layer or per-block Hessian; order is the
    model's. Selected parameters the loss does not use give zero rows and columns.

    ``device``: where the products run; must be where the selected parameters are (default).
    ``mode``: ``"eval"`` (default) or ``"train"`` for the forward, ``"as_is"`` to keep the
    modules' flags. ``keep_graphs``: keep one gradient graph per batch (``True``), recompute the
    forward and gradient for every product (``False``), or ``None``: keep them when one batch or
    when the first batch's graph times the number of batches fits in ``memory_fraction`` of the
    free memory. ``freeze_activation_ranges``: run activation quantisers (zsq_probe.quant) with
    their ranges frozen, so the loss is the one the current ranges give.

    Vectors are flat torch tensors of length ``dim`` (parameters concatenated in order) on
    ``device`` with ``dtype``. The operator holds the graph (and references to the parameters):
    changing the parameters in place afterwards makes products fail; build a new operator.
    Call :meth:`close` (or use ``with``) to free the graph.
    """

    def __init__(self, model: nn.Module, loss_fn: Callable[[Any, Any], torch.Tensor],
                 batches: Iterable[tuple[Any, Any]], params: str | Iterable[str] | None = None,
                 device: torch.device | str | None = None, mode: str = "eval",
                 keep_graphs: bool | None = None, memory_fraction: float = 0.5,
                 freeze_activation_ranges: bool = True) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"HessianOperator needs a torch.nn.Module, got {type(model).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(outputs, target)")
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {', '.join(_MODES)}, got {mode!r}")
        if keep_graphs not in (None, True, False):
            raise ValueError(f"keep_graphs must be True, False or None, got {keep_graphs!r}")
        if not 0 < memory_fraction <= 1:
            raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.mode = mode
        self.freeze_activation_ranges = bool(freeze_activation_ranges)

        selected = _select_params(model, params)
        self.param_names: list[str] = [n for n, _ in selected]
        self._params: list[nn.Parameter] = [p for _, p in selected]
        self.param_shapes: list[tuple[int, ...]] = [tuple(p.shape) for p in self._params]
        self._numels: list[int] = [p.numel() for p in self._params]
        self.dim: int = sum(self._numels)
        dtypes = {p.dtype for p in self._params}
        if len(dtypes) != 1 or not next(iter(dtypes)).is_floating_point:
            raise ValueError(f"selected parameters must share one floating dtype, found {sorted(map(str, dtypes))}")
        self.dtype: torch.dtype = dtypes.pop()
        devices = {p.device for p in self._params}
        if len(devices) != 1:
            raise ValueError(f"selected parameters are on several devices ({sorted(map(str, devices))})")
        self.device: torch.device = devices.pop()
        if device is not None:
            want = torch.device(device)
            if want.type != self.device.type or (want.index is not None and want.index != self.device.index):
                raise ValueError(f"the model is on {self.device}, not {want}: move it there first (model.to('{want}'))")

        if isinstance(batches, tuple) and len(batches) == 2 and isinstance(batches[0], torch.Tensor) \
                and isinstance(batches[1], torch.Tensor):
            raise TypeError("batches must be an iterable of (inputs, target) pairs: wrap a single batch as [(x, y)]")
        self._batches: list[tuple[Any, Any]] = []
        for b in batches:
            if not isinstance(b, (tuple, list)) or len(b) != 2:
                raise TypeError("each batch must be an (inputs, target) pair")
            self._batches.append((b[0], b[1]))
        if not self._batches:
            raise ValueError("HessianOperator got no batches")
        sizes = [_batch_size(x) for x, _ in self._batches]
        if min(sizes) <= 0:
            raise ValueError("every batch must hold at least one sample")
        total = float(sum(sizes))
        self.batch_sizes: list[int] = sizes
        self._weights: list[float] = [n / total for n in sizes]

        self.num_products: int = 0
        self._closed = False
        self._grads: list[torch.Tensor] | None = None  # weighted sum of per-batch gradients, with graph

        if keep_graphs is None:
            keep_graphs = True if len(self._batches) == 1 else self._graphs_fit(memory_fraction)
        self.keep_graphs: bool = keep_graphs
        if keep_graphs:
            self._grads = self._build_graphs()

    # ----------------------------------------------------------------- model state

    @contextlib.contextmanager
    def _forward_state(self) -> Iterator[None]:
        """Run the forward in ``self.mode`` on clones of every buffer; put back flags and buffers."""
        modules = list(self.model.modules())
        flags = [m.training for m in modules]
        saved = [dict(m._buffers) for m in modules]
        try:
            for m, bufs in zip(modules, saved):
                for name, b in bufs.items():
                    if b is not None:
                        m._buffers[name] = b.detach().clone()
            if self.mode == "eval":
                self.model.eval()
            elif self.mode == "train":
                self.model.train()
            with contextlib.ExitStack() as stack:
                if self.freeze_activation_ranges:
                    stack.enter_context(_frozen_quantizers(self.model))
                yield
        finally:
            for m, flag, bufs in zip(modules, flags, saved):
                m.training = flag
                m._buffers.clear()
                m._buffers.update(bufs)

    def _batch_gradient(self, index: int, create_graph: bool = True) -> list[torch.Tensor]:
        inputs, target = self._batches[index]
        inputs, target = _to(inputs, self.device), _to(target, self.device)
        with torch.enable_grad(), self._forward_state():
            outputs = self.model(*inputs) if isinstance(inputs, (tuple, list)) else self.model(inputs)
            loss = self.loss_fn(outputs, target)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        loss = loss.reshape(())
        if not torch.isfinite(loss.detach()):
            warnings.warn(f"loss on batch {index} is not finite ({loss.item()}); Hessian products will be too",
                          stacklevel=3)
        if not loss.requires_grad:
            return [torch.zeros_like(p) for p in self._params]
        with torch.enable_grad():
            grads = torch.autograd.grad(loss, self._params, create_graph=create_graph, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self._params)]

    def _build_graphs(self) -> list[torch.Tensor]:
        total: list[torch.Tensor] | None = None
        for i, w in enumerate(self._weights):
            g = self._batch_gradient(i)
            if len(self._weights) == 1:
                return g
            total = [w * gi for gi in g] if total is None else [t + w * gi for t, gi in zip(total, g)]
        assert total is not None
        return total

    def _graphs_fit(self, fraction: float) -> bool:
        """Measure the tensors one batch's graph saves; keep all graphs if they fit."""
        seen: dict[tuple[int, int], int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            try:
                s = t.untyped_storage()
                seen[(s.data_ptr(), t.device.index or 0)] = s.nbytes()
            except (RuntimeError, NotImplementedError):
                pass
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            g = self._batch_gradient(0)
        del g
        per_batch = sum(seen.values())
        free = _available_bytes(self.device)
        if free is None:
            return True
        return per_batch * len(self._batches) <= fraction * free

    # ----------------------------------------------------------------- products

    def _check_vector(self, v: Any) -> torch.Tensor:
        if self._closed:
            raise ValueError("this HessianOperator is closed; build a new one")
        v = torch.as_tensor(v)
        if v.dim() != 1 or v.numel() != self.dim:
            raise ValueError(f"vector must have shape ({self.dim},), got {tuple(v.shape)}")
        return v.detach().to(device=self.device, dtype=self.dtype)

    def _hvp(self, grads: Sequence[torch.Tensor], v_parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        live = [(i, g) for i, g in enumerate(grads) if g.requires_grad]
        out = [torch.zeros_like(p) for p in self._params]
        if not live:
            return out
        try:
            hv = torch.autograd.grad([g for _, g in live], self._params,
                                     grad_outputs=[v_parts[i] for i, _ in live],
                                     retain_graph=self.keep_graphs, allow_unused=True)
        except RuntimeError as e:
            if "modified by an inplace operation" in str(e):
                raise ValueError("model parameters changed since this HessianOperator was built; build a new one") from e
            raise
        return [o if h is None else h for o, h in zip(out, hv)]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v`` (length ``dim``); returns a detached flat tensor."""
        v = self._check_vector(v)
        parts = [c.view(s) for c, s in zip(v.split(self._numels), self.param_shapes)]
        if self.keep_graphs:
            assert self._grads is not None
            hv = self._hvp(self._grads, parts)
        else:
            hv = [torch.zeros_like(p) for p in self._params]
            for i, w in enumerate(self._weights):
                part = self._hvp(self._batch_gradient(i), parts)
                hv = [a + w * b for a, b in zip(hv, part)]
        self.num_products += 1
        return torch.cat([h.reshape(-1) for h in hv]).detach()

    __matmul__ = matvec

    def gradient(self) -> torch.Tensor:
        """The flat gradient of the (size-weighted) loss, detached."""
        if self._closed:
            raise ValueError("this HessianOperator is closed; build a new one")
        if self.keep_graphs:
            assert self._grads is not None
            g = self._grads
        else:
            g = [torch.zeros_like(p) for p in self._params]
            for i, w in enumerate(self._weights):
                g = [a + w * b.detach() for a, b in zip(g, self._batch_gradient(i, create_graph=False))]
        return torch.cat([x.detach().reshape(-1) for x in g])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` views of a flat vector, shaped like the selected parameters."""
        return unflatten(flat, self)

    def to_dense(self, max_dim: int = 4096) -> torch.Tensor:
        """The full ``dim x dim`` matrix from ``dim`` products (small models only)."""
        if self.dim > max_dim:
            raise ValueError(f"to_dense: dim {self.dim} exceeds max_dim {max_dim}")
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(eye[i]) for i in range(self.dim)], dim=1)

    def as_linear_operator(self):
        """A ``scipy.sparse.linalg.LinearOperator`` in float64 (for ARPACK); products count."""
        from scipy.sparse.linalg import LinearOperator

        def mv(x: np.ndarray) -> np.ndarray:
            t = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1)))
            return self.matvec(t).to(device="cpu", dtype=torch.float64).numpy()

        return LinearOperator((self.dim, self.dim), matvec=mv, rmatvec=mv, dtype=np.float64)

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Free the gradient graph; later products raise ValueError."""
        self._grads = None
        self._closed = True

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> "HessianOperator":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"HessianOperator(dim={self.dim}, params={len(self.param_names)}, batches={len(self._batches)}, "
                f"mode={self.mode!r}, keep_graphs={self.keep_graphs}, dtype={self.dtype}, device={self.device}, "
                f"num_products={self.num_products}{', closed' if self._closed else ''})")


@contextlib.contextmanager
def _frozen_quantizers(model: nn.Module) -> Iterator[None]:
    try:
        from zsq_probe.quant import activation_ranges_frozen
    except ImportError:  # the quantisation module is optional for float models
        yield
        return
    with activation_ranges_frozen(model):
        yield


# --------------------------------------------------------------------------- estimators


def _check_int(value: Any, what: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_op(op: Any) -> None:
    for attr in ("dim", "dtype", "device", "matvec"):
        if not hasattr(op, attr):
            raise ValueError(f"expected a HessianOperator (or an object with .{attr}), got {type(op).__name__}")


@dataclass(frozen=True)
class TraceEstimate:
    """A stochastic trace estimate: mean of the per-vector samples, its standard error
    (sample std / sqrt(num_vectors); NaN with one vector), the vectors used and the seed."""

    estimate: float
    stderr: float
    num_vectors: int
    seed: int
    samples: tuple[float, ...] = field(repr=False, default=())
    method: str = "hutchinson"
    num_products: int = 0


def _mean_stderr(samples: Sequence[float]) -> tuple[float, float]:
    x = np.asarray(samples, dtype=np.float64)
    mean = float(x.mean())
    stderr = float(x.std(ddof=1) / math.sqrt(len(x))) if len(x) > 1 else float("nan")
    return mean, stderr


def hutchinson_trace(op: HessianOperator, num_vectors: int = 100, seed: int = 0, rtol: float | None = None,
                     min_vectors: int = 10) -> TraceEstimate:
    """Hutchinson estimate of ``tr(H)`` = mean of ``v^T H v`` over Rademacher vectors ``v``.

    The vectors come from a CPU ``torch.Generator`` seeded with ``seed`` (the global RNG is
    not touched; the same seed gives the same vectors on any device, and the same vectors as
    :func:`slq_density`). With ``rtol``, stop once at least ``min_vectors`` were used and the
    standard error is at most ``rtol * |estimate|`` (absolute value: correct for negative
    traces); ``num_vectors`` is then the maximum.
    """
    _check_op(op)
    num_vectors = _check_int(num_vectors, "num_vectors")
    min_vectors = _check_int(min_vectors, "min_vectors")
    if rtol is not None and not (isinstance(rtol, (int, float)) and rtol > 0):
        raise ValueError(f"rtol must be a positive number or None, got {rtol!r}")
    gen = torch.Generator().manual_seed(int(seed))
    start = getattr(op, "num_products", 0)
    samples: list[float] = []
    for k in range(1, num_vectors + 1):
        v = rademacher(op.dim, gen, op.dtype, op.device)
        samples.append(float(torch.dot(v, op.matvec(v))))
        if rtol is not None and k >= max(min_vectors, 2):
            mean, stderr = _mean_stderr(samples)
            if stderr <= rtol * abs(mean):
                break
    mean, stderr = _mean_stderr(samples)
    return TraceEstimate(mean, stderr, len(samples), int(seed), tuple(samples), "hutchinson",
                         getattr(op, "num_products", 0) - start)


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
        return len(self.alphas)

    def tridiagonal(self) -> np.ndarray:
        return np.diag(self.alphas) + np.diag(self.betas, 1) + np.diag(self.betas, -1)

    def ritz(self) -> tuple[np.ndarray, np.ndarray]:
        """Ritz values (ascending) and Gauss-quadrature weights (squared first components of
        the eigenvectors of ``T``, normalised to sum 1)."""
        from scipy.linalg import eigh_tridiagonal

        if len(self.alphas) == 1:
            return self.alphas.copy(), np.ones(1)
        nodes, vecs = eigh_tridiagonal(self.alphas, self.betas)
        weights = vecs[0] ** 2
        return nodes, weights / weights.sum()


def lanczos(op: HessianOperator, num_steps: int, v0: torch.Tensor | None = None, seed: int = 0,
            reorthogonalize: bool = True, return_basis: bool = False,
            until: Callable[[list, list, float], bool] | None = None) -> LanczosResult:
    """``num_steps`` steps of Lanczos on ``op`` from ``v0`` (default: a Rademacher vector from
    ``seed``), with full reorthogonalisation (classical Gram-Schmidt, twice) unless told not to.
    ``num_steps`` is capped at ``op.dim``; the run stops early at an invariant subspace, or when
    ``until(alphas, betas, next_beta)`` says so after a step."""
    _check_op(op)
    num_steps = min(_check_int(num_steps, "num_steps"), op.dim)
    if v0 is None:
        v0 = rademacher(op.dim, torch.Generator().manual_seed(int(seed)), op.dtype, op.device)
    v0 = torch.as_tensor(v0).detach().to(device=op.device, dtype=op.dtype)
    if v0.dim() != 1 or v0.numel() != op.dim:
        raise ValueError(f"v0 must have shape ({op.dim},), got {tuple(v0.shape)}")
    norm = torch.linalg.vector_norm(v0)
    if not torch.isfinite(norm) or norm == 0:
        raise ValueError("v0 must be a finite non-zero vector")
    keep = reorthogonalize or return_basis
    basis = torch.empty((num_steps if keep else 2, op.dim), dtype=op.dtype, device=op.device)
    eps = torch.finfo(op.dtype).eps
    start = getattr(op, "num_products", 0)
    alphas: list[float] = []
    betas: list[float] = []
    q = v0 / norm
    q_prev: torch.Tensor | None = None
    anorm = 0.0
    for j in range(num_steps):
        basis[j if keep else j % 2] = q
        w = op.matvec(q)
        a = float(torch.dot(q, w))
        alphas.append(a)
        w = w - a * q
        if q_prev is not None:
            w = w - betas[-1] * q_prev
        if reorthogonalize:
            Q = basis[: j + 1]
            for _ in range(2):
                w = w - Q.T @ (Q @ w)
        b = float(torch.linalg.vector_norm(w))
        anorm = max(anorm, abs(a) + b + (betas[-1] if betas else 0.0))
        if j == num_steps - 1 or b <= math.sqrt(eps) * max(anorm, 1e-300) or (until and until(alphas, betas, b)):
            break
        betas.append(b)
        q_prev, q = q, w / b
    n = len(alphas)
    return LanczosResult(np.asarray(alphas, dtype=np.float64), np.asarray(betas[: n - 1], dtype=np.float64),
                         basis[:n].clone() if return_basis else None, getattr(op, "num_products", 0) - start)


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

    def smooth(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        return gaussian_density(self.nodes, self.weights, grid, sigma)


def slq_density(op: HessianOperator, num_runs: int = 1, num_steps: int = 90, seed: int = 0,
                reorthogonalize: bool = True) -> SpectralDensity:
    """Eigenvalue density by stochastic Lanczos quadrature: ``num_runs`` Lanczos runs of
    ``num_steps`` steps, run ``r`` starting from the ``r``-th Rademacher vector of a generator
    seeded with ``seed`` (the vectors :func:`hutchinson_trace` uses with the same seed)."""
    _check_op(op)
    num_runs = _check_int(num_runs, "num_runs")
    num_steps = _check_int(num_steps, "num_steps")
    gen = torch.Generator().manual_seed(int(seed))
    run_nodes, run_weights, products = [], [], 0
    for _ in range(num_runs):
        res = lanczos(op, num_steps, v0=rademacher(op.dim, gen, op.dtype, op.device),
                      reorthogonalize=reorthogonalize)
        nodes, weights = res.ritz()
        run_nodes.append(nodes)
        run_weights.append(weights)
        products += res.num_products
    return SpectralDensity(np.concatenate(run_nodes), np.concatenate(run_weights) / num_runs,
                           tuple(run_nodes), tuple(run_weights), op.dim, num_runs, min(num_steps, op.dim),
                           int(seed), products)


def slq_trace(source: HessianOperator | SpectralDensity, num_runs: int = 10, num_steps: int = 30,
              seed: int = 0) -> TraceEstimate:
    """SLQ trace: ``dim`` times the mean over runs of ``sum(weights * nodes)``, with its standard
    error. ``source`` is a :class:`SpectralDensity` or an operator (then
    ``slq_density(source, num_runs, num_steps, seed)`` is computed first)."""
    density = source if isinstance(source, SpectralDensity) else slq_density(source, num_runs, num_steps, seed)
    samples = [density.dim * float(np.sum(w * x)) for x, w in zip(density.run_nodes, density.run_weights)]
    mean, stderr = _mean_stderr(samples)
    return TraceEstimate(mean, stderr, density.num_runs, density.seed, tuple(samples), "slq", density.num_products)


def gaussian_density(nodes: Any, weights: Any, grid: Any, sigma: float) -> np.ndarray:
    """``sum_k weights_k * N(grid; nodes_k, sigma^2)`` on ``grid`` (integrates to ``sum(weights)``)."""
    if not (isinstance(sigma, (int, float)) and sigma > 0):
        raise ValueError(f"sigma must be a positive number, got {sigma!r}")
    nodes = np.asarray(nodes, dtype=np.float64).reshape(-1)
    weights = np.asarray(weights, dtype=np.float64).reshape(-1)
    if nodes.shape != weights.shape:
        raise ValueError(f"nodes and weights differ in length ({nodes.size} vs {weights.size})")
    grid = np.asarray(grid, dtype=np.float64)
    z = (grid[..., None] - nodes) / sigma
    return np.sum(weights * np.exp(-0.5 * z * z), axis=-1) / (sigma * math.sqrt(2 * math.pi))


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


def top_eigenpairs(op: HessianOperator, k: int = 1, tol: float = 1e-6, seed: int = 0, maxiter: int | None = None,
                   which: str = "LA", ncv: int | None = None) -> Eigenpairs:
    """The ``k`` largest *algebraic* (signed) eigenpairs of ``op`` by implicitly restarted
    Lanczos (ARPACK ``eigsh``, ``which="LA"``); ``which="SA"`` gives the smallest, ``"LM"``
    the largest magnitude. ``v0`` is a Gaussian vector from ``seed``; ``tol`` is ARPACK's
    relative accuracy of the eigenvalues (0 for machine precision). ``ncv`` (Lanczos vectors per
    restart; ARPACK checks convergence only at restarts) defaults to ``max(2k+1, min(20, 4k+4))``
    (SciPy's default is ``max(2k+1, 20)``): small for k=1, where network Hessians usually have a well-separated top eigenvalue (resnet20:
    about 9 products instead of 21 with SciPy's default of 20)."""
    from scipy.sparse.linalg import ArpackNoConvergence, eigsh

    _check_op(op)
    k = _check_int(k, "k")
    if k == 1 and which == "LA" and ncv is None:
        return top_eigenpair(op, tol=tol, seed=seed, max_steps=maxiter or min(op.dim, 300))
    if k >= op.dim:
        raise ValueError(f"k must be smaller than the dimension ({op.dim}), got {k}")
    if which not in ("LA", "SA", "LM"):
        raise ValueError(f"which must be 'LA', 'SA' or 'LM', got {which!r}")
    if not (isinstance(tol, (int, float)) and tol >= 0):
        raise ValueError(f"tol must be a number >= 0, got {tol!r}")
    if maxiter is not None:
        maxiter = _check_int(maxiter, "maxiter")
    if ncv is not None:
        ncv = _check_int(ncv, "ncv", k + 1)
    else:
        ncv = max(2 * k + 1, min(20, 4 * k + 4))
    ncv = min(ncv, op.dim)
    v0 = torch.randn(op.dim, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64).numpy()
    linop = op.as_linear_operator() if hasattr(op, "as_linear_operator") else _linop(op)
    start = getattr(op, "num_products", 0)
    converged = True
    try:
        vals, vecs = eigsh(linop, k=k, which=which, tol=tol, v0=v0, maxiter=maxiter, ncv=ncv)
    except ArpackNoConvergence as e:
        converged = False
        vals, vecs = e.eigenvalues, e.eigenvectors
        warnings.warn(f"ARPACK did not converge in maxiter={maxiter}: {len(vals)} of {k} eigenpairs returned",
                      stacklevel=2)
    used = getattr(op, "num_products", 0) - start
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
    return Eigenpairs(vals.astype(np.float64), tvecs, used, converged, which)


def top_eigenpair(op: HessianOperator, tol: float = 1e-6, seed: int = 0, max_steps: int = 300) -> Eigenpairs:
    """The largest algebraic eigenpair by plain Lanczos, stopped as soon as the Ritz pair's residual
    ``|beta_m * s_m| = ||H y - theta y||`` is at most ``tol * |theta|`` (a residual bound, stricter
    than power iteration's relative change of the estimate).  One product per step, no restarts:
    for a well separated top eigenvalue this needs a handful of products."""
    tol = max(float(tol), 1e-12)

    def converged(alphas, betas, next_beta):
        theta, s = _top_ritz(alphas, betas)
        return abs(next_beta * s[-1]) <= tol * max(abs(theta), 1e-300)

    v0 = torch.randn(op.dim, generator=torch.Generator().manual_seed(int(seed)), dtype=torch.float64)
    res = lanczos(op, max_steps, v0=v0, return_basis=True, until=converged)
    theta, s = _top_ritz(list(res.alphas), list(res.betas))
    vec = torch.as_tensor(s, dtype=res.basis.dtype, device=res.basis.device) @ res.basis
    vec = vec / torch.linalg.vector_norm(vec)
    if vec[torch.argmax(vec.abs())] < 0:
        vec = -vec
    ok = res.num_steps < max_steps or res.num_steps == op.dim
    if not ok:
        warnings.warn(f"Lanczos did not reach tol={tol} in {max_steps} steps", stacklevel=2)
    return Eigenpairs(np.asarray([theta], dtype=np.float64), vec.reshape(1, -1), res.num_products, ok, "LA")


def _top_ritz(alphas, betas) -> tuple[float, np.ndarray]:
    from scipy.linalg import eigh_tridiagonal

    n = len(alphas)
    vals, vecs = eigh_tridiagonal(np.asarray(alphas, dtype=np.float64), np.asarray(betas[: n - 1], dtype=np.float64))
    return float(vals[-1]), vecs[:, -1]


def _linop(op: Any):
    from scipy.sparse.linalg import LinearOperator

    def mv(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.asarray(x, dtype=np.float64).reshape(-1)).to(device=op.device, dtype=op.dtype)
        return op.matvec(t).to(device="cpu", dtype=torch.float64).numpy()

    return LinearOperator((op.dim, op.dim), matvec=mv, rmatvec=mv, dtype=np.float64)
