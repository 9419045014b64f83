"""The Hessian-vector operator: flat parameter vectors, `HessianOperator` (v -> H v over a loss on batches),
the protocol every estimator takes (`HessianVectorProduct`) and the helpers they share."""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn as nn

from zsq_probe.errors import ComputeError
from zsq_probe.hessian import distributed
from zsq_probe.hessian.batches import (
    batch_size,
    batch_to,
    call_model,
    select_params,
    slice_batch,
)
from zsq_probe.module_state import preserved_state

if TYPE_CHECKING:
    from scipy.sparse.linalg import LinearOperator


class NonFiniteHessianError(ComputeError):
    """A Hessian-vector product came out inf/NaN: no curvature estimate exists at this point."""


_MODES = ("eval", "train", "as_is")


# --------------------------------------------------------------------------- the protocol


@runtime_checkable
class HessianVectorProduct(Protocol):
    """What every estimator takes: a symmetric ``dim x dim`` map ``v -> H v`` on flat vectors of ``dtype``
    on ``device`` (:class:`HessianOperator`, or e.g. a dense matrix behind ``matvec``).  An optional
    ``num_products`` attribute, counting products, is read when present."""

    @property
    def dim(self) -> int:
        """Length of the flat vectors."""
        ...

    @property
    def dtype(self) -> torch.dtype:
        """Floating dtype of the vectors."""
        ...

    @property
    def device(self) -> torch.device:
        """Device the vectors live on."""
        ...

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v``."""
        ...


def products_of(op: object) -> int:
    """Products ``op`` has made so far (its ``num_products``; 0 for an operator that does not count)."""
    return int(getattr(op, "num_products", 0))


def as_linear_operator(op: HessianVectorProduct) -> LinearOperator:
    """``op`` as a ``scipy.sparse.linalg.LinearOperator`` in float64 (for ARPACK); products count."""
    from scipy.sparse.linalg import LinearOperator  # scipy: only where a spectrum is estimated

    def mv(x: np.ndarray) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(np.asarray(x, dtype=np.float64).reshape(-1)))
        out: np.ndarray = (
            op.matvec(t.to(device=op.device, dtype=op.dtype)).to(device="cpu", dtype=torch.float64).numpy()
        )
        return out

    return LinearOperator((op.dim, op.dim), matvec=mv, rmatvec=mv, dtype=np.float64)


# --------------------------------------------------------------------------- flat vectors


def flatten_params(tensors: nn.Module | Mapping[str, torch.Tensor] | Iterable[torch.Tensor]) -> torch.Tensor:
    """One flat (detached) vector from a module's requires-grad parameters, a name->tensor
    mapping (in its order) or an iterable of tensors."""
    if isinstance(tensors, nn.Module):
        items: list[torch.Tensor] = [p for p in tensors.parameters() if p.requires_grad]
    elif isinstance(tensors, Mapping):
        items = list(tensors.values())
    else:
        items = list(tensors)
    if not items:
        raise ValueError("flatten_params got no tensors")
    if not all(isinstance(t, torch.Tensor) for t in items):
        raise TypeError("flatten_params needs torch tensors")
    return torch.cat([t.detach().reshape(-1) for t in items])


def unflatten(flat: torch.Tensor, like: HessianOperator | Mapping[str, Any]) -> dict[str, torch.Tensor]:
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
    return {n: chunk.view(s) for (n, s), chunk in zip(shapes.items(), torch.split(flat, sizes))}


def rademacher(
    dim: int, generator: torch.Generator, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """A vector of independent +-1 entries drawn from ``generator`` (a CPU generator, so a seed
    gives the same vectors on every device)."""
    bits = torch.randint(0, 2, (dim,), generator=generator, dtype=torch.int8)
    return (bits.to(dtype) * 2 - 1).to(device)


# --------------------------------------------------------------------------- the operator


# --------------------------------------------------------------------------- batches
# A batch's inputs are a tensor (batch first), or tuples / lists / mappings of them; one walker serves every
# helper below (the operator's and the exact diagonal's).


def _batch_pairs(batches: Iterable[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """The ``(inputs, target)`` pairs of ``batches`` as a list (TypeError for a bare pair or a non-pair)."""
    if (
        isinstance(batches, tuple)
        and len(batches) == 2
        and isinstance(batches[0], torch.Tensor)
        and isinstance(batches[1], torch.Tensor)
    ):
        raise TypeError("batches must be an iterable of (inputs, target) pairs: wrap a single batch as [(x, y)]")
    pairs: list[tuple[Any, Any]] = []
    for b in batches:
        if not isinstance(b, (tuple, list)) or len(b) != 2:
            raise TypeError("each batch must be an (inputs, target) pair")
        pairs.append((b[0], b[1]))
    if not pairs:
        raise ValueError("HessianOperator got no batches")
    return pairs


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


def _check_options(model: object, loss_fn: object, mode: str, keep_graphs: bool | None, memory_fraction: float) -> None:
    """HessianOperator's argument checks (TypeError for a non-module model or loss, ValueError for options)."""
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
    free memory. ``freeze_activation_ranges``: run activation quantisers (zsq_probe.quantization.quantizer) with
    their ranges frozen, so the loss is the one the current ranges give.

    ``process_group``: split the batches over processes (zsq_probe.hessian.distributed): ``"active"``
    (default) the group of an enclosing ``split_across_ranks()`` (none outside one: nothing split),
    ``None`` never, or a ``torch.distributed`` process group. Split, each rank keeps its contiguous share
    of every batch, gradients and products are all-reduced and every product multiplies rank 0's vector
    (broadcast), so every rank gets the whole batch's ``H v``; all ranks must make the same calls.

    Vectors are flat torch tensors of length ``dim`` (parameters concatenated in order) on
    ``device`` with ``dtype``. The operator holds the graph (and references to the parameters):
    changing the parameters in place afterwards makes products fail; build a new operator.
    Call :meth:`close` (or use ``with``) to free the graph.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: Callable[[Any, Any], torch.Tensor],
        batches: Iterable[tuple[Any, Any]],
        params: str | Iterable[str] | None = None,
        device: torch.device | str | None = None,
        mode: str = "eval",
        keep_graphs: bool | None = None,
        memory_fraction: float = 0.5,
        freeze_activation_ranges: bool = True,
        process_group: Any = "active",
    ) -> None:
        _check_options(model, loss_fn, mode, keep_graphs, memory_fraction)
        self.model = model
        self.loss_fn = loss_fn
        self.mode = mode
        self.freeze_activation_ranges = bool(freeze_activation_ranges)
        self._select(params, device)

        self._batches: list[tuple[Any, Any]] = _batch_pairs(batches)
        sizes = [batch_size(x) for x, _ in self._batches]
        if min(sizes) <= 0:
            raise ValueError("every batch must hold at least one sample")
        total = float(sum(sizes))
        self.batch_sizes: list[int] = sizes  # whole batches (all ranks together)
        self._weights: list[float] = [n / total for n in sizes]
        self._group = self._split(process_group, sizes, total)
        self.world_size: int = self._group.size if self._group is not None else 1

        self.num_products: int = 0
        self._closed = False
        self._grads: list[torch.Tensor] | None = None  # weighted sum of per-batch gradients, with graph
        if keep_graphs is None:
            keep_graphs = True if len(self._batches) == 1 else self._graphs_fit(memory_fraction)
        self.keep_graphs: bool = keep_graphs
        if keep_graphs:
            self._grads = self._build_graphs()

    def _select(self, params: str | Iterable[str] | None, device: torch.device | str | None) -> None:
        """The selected parameters, their names, shapes, ``dim``, their one ``dtype`` and ``device``."""
        selected = select_params(self.model, params)
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

    # ----------------------------------------------------------------- model state

    def _forward_state(self) -> contextlib.AbstractContextManager[None]:
        """The forward runs in ``self.mode`` on clones of every buffer; flags and buffers are put back."""
        return preserved_state(
            self.model, mode=None if self.mode == "as_is" else self.mode, freeze_ranges=self.freeze_activation_ranges
        )

    def _batch_gradient(self, index: int, create_graph: bool = True) -> list[torch.Tensor]:
        inputs, target = self._batches[index]
        inputs, target = batch_to(inputs, self.device), batch_to(target, self.device)
        with torch.enable_grad(), self._forward_state():
            loss = self.loss_fn(call_model(self.model, inputs), target)
        if not isinstance(loss, torch.Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        loss = loss.reshape(())
        if not torch.isfinite(loss.detach()):
            warnings.warn(
                f"loss on batch {index} is not finite ({loss.item()}); Hessian products will be too", stacklevel=3
            )
        if not loss.requires_grad:
            return [torch.zeros_like(p) for p in self._params]
        with torch.enable_grad():
            grads = torch.autograd.grad(loss, self._params, create_graph=create_graph, allow_unused=True)
        return [torch.zeros_like(p) if g is None else g for g, p in zip(grads, self._params)]

    def _split(self, process_group: Any, sizes: list[int], total: float) -> distributed.Group | None:
        """Keep this rank's share of every batch (weights: its samples over all samples); the group or None."""
        if isinstance(process_group, str) and process_group == "active":
            group = distributed.active()
        elif process_group is None:
            group = None
        else:
            group = distributed.Group(process_group)
        if group is None or group.size == 1:
            return group
        if self.mode == "train":
            raise ValueError(
                "a Hessian split across ranks needs a forward that treats samples independently: "
                "mode='eval' (BN running statistics) or 'as_is' with such a model, not 'train'"
            )
        batches: list[tuple[Any, Any]] = []
        weights: list[float] = []
        for (x, t), n in zip(self._batches, sizes):
            start, stop = distributed.shard(n, group.rank, group.size)
            if stop > start:
                batches.append((slice_batch(x, start, stop, n), slice_batch(t, start, stop, n)))
                weights.append((stop - start) / total)
        self._batches, self._weights = batches, weights
        self.local_batch_sizes: list[int] = [batch_size(x) for x, _ in batches]
        return group

    def _build_graphs(self) -> list[torch.Tensor]:
        total: list[torch.Tensor] | None = None
        for i, w in enumerate(self._weights):
            g = self._batch_gradient(i)
            if len(self._weights) == 1 and w == 1.0:
                return g
            total = [w * gi for gi in g] if total is None else [t + w * gi for t, gi in zip(total, g)]
        if total is None:  # this rank holds no sample (a batch smaller than the world): it adds zeros
            return [torch.zeros_like(p) for p in self._params]
        return total

    def _graphs_fit(self, fraction: float) -> bool:
        """Measure the tensors one batch's graph saves; keep all graphs if they fit."""
        if not self._batches:
            return True
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
        t = torch.as_tensor(v)
        if t.dim() != 1 or t.numel() != self.dim:
            raise ValueError(f"vector must have shape ({self.dim},), got {tuple(t.shape)}")
        return t.detach().to(device=self.device, dtype=self.dtype)

    def _hvp(self, grads: Sequence[torch.Tensor], v_parts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        live = [(i, g) for i, g in enumerate(grads) if g.requires_grad]
        out = [torch.zeros_like(p) for p in self._params]
        if not live:
            return out
        try:
            hv = torch.autograd.grad(
                [g for _, g in live],
                self._params,
                grad_outputs=[v_parts[i] for i, _ in live],
                retain_graph=self.keep_graphs,
                allow_unused=True,
            )
        except RuntimeError as e:
            if "modified by an inplace operation" in str(e):
                raise ValueError(
                    "model parameters changed since this HessianOperator was built; build a new one"
                ) from e
            raise
        return [o if h is None else h for o, h in zip(out, hv)]

    def matvec(self, v: torch.Tensor) -> torch.Tensor:
        """``H v`` for a flat vector ``v`` (length ``dim``); returns a detached flat tensor.  Split across
        ranks: ``v`` is rank 0's (broadcast), the result the sum over the ranks (the same on every rank)."""
        v = self._check_vector(v)
        if self._group is not None:
            v = self._group.broadcast(v.clone().contiguous())
        parts = [c.view(s) for c, s in zip(torch.split(v, self._numels), self.param_shapes)]
        if self.keep_graphs:
            assert self._grads is not None
            hv = self._hvp(self._grads, parts)
        else:
            hv = [torch.zeros_like(p) for p in self._params]
            for i, w in enumerate(self._weights):
                part = self._hvp(self._batch_gradient(i), parts)
                hv = [a + w * b for a, b in zip(hv, part)]
        self.num_products += 1
        out = torch.cat([h.reshape(-1) for h in hv]).detach()
        out = self._group.all_reduce(out) if self._group is not None else out
        if not bool(torch.isfinite(out).all()):  # NaN would otherwise crash ARPACK/eigh_tridiagonal far away
            raise NonFiniteHessianError(
                "a Hessian-vector product is non-finite (the loss surface at these parameters and batch holds inf/NaN)"
            )
        return out

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
        out = torch.cat([x.detach().reshape(-1) for x in g])
        return self._group.all_reduce(out.clone()) if self._group is not None else out

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: tensor}`` views of a flat vector, shaped like the selected parameters."""
        return unflatten(flat, self)

    def to_dense(self, max_dim: int = 4096) -> torch.Tensor:
        """The full ``dim x dim`` matrix from ``dim`` products (small models only)."""
        if self.dim > max_dim:
            raise ValueError(f"to_dense: dim {self.dim} exceeds max_dim {max_dim}")
        eye = torch.eye(self.dim, dtype=self.dtype, device=self.device)
        return torch.stack([self.matvec(eye[i]) for i in range(self.dim)], dim=1)

    def as_linear_operator(self) -> LinearOperator:
        """A ``scipy.sparse.linalg.LinearOperator`` in float64 (for ARPACK); products count."""
        return as_linear_operator(self)

    # ----------------------------------------------------------------- lifetime

    def close(self) -> None:
        """Free the gradient graph; later products raise ValueError."""
        self._grads = None
        self._closed = True

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def __enter__(self) -> HessianOperator:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"HessianOperator(dim={self.dim}, params={len(self.param_names)}, batches={len(self._batches)}, "
            f"mode={self.mode!r}, keep_graphs={self.keep_graphs}, dtype={self.dtype}, device={self.device}, "
            f"num_products={self.num_products}{f', world_size={self.world_size}' if self.world_size > 1 else ''}"
            f"{', closed' if self._closed else ''})"
        )
