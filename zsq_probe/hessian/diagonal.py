"""Exact Hessian diagonals and traces: the reference the stochastic trace estimates are checked against.

Two ways to the exact diagonal ``H_ii = d^2 L / d theta_i^2``:

* :func:`exact_diagonal` on a :class:`HessianOperator` (or with ``method="unit"``): one product
  ``e_i^T H e_i`` per coordinate -- exact for any network, affordable on small ones (``dim``
  products). :func:`coordinate_products` gives the same for a chosen set of coordinates.
* :func:`ggn_diagonal`: the diagonal of the generalised Gauss--Newton matrix ``G = sum_n J_n^T
  H_out,n J_n`` (``J_n`` the Jacobian of sample ``n``'s logits w.r.t. the parameters, ``H_out,n``
  the Hessian of the loss w.r.t. those logits), computed exactly from ``C - 1`` vector--Jacobian
  products per sample. ``H = G + sum_n sum_c dL/dz_nc * d^2 z_nc / d theta^2``; for a network that
  is piecewise linear in each single parameter (ReLU/ReLU6/max/avg pooling, convolutions, linear
  layers, residual sums, BatchNorm in eval mode -- an affine map per channel -- and the
  straight-through fake quantisers of :mod:`zsq_probe.quantization.quantizer`, whose backward is the identity) the
  second term's diagonal is zero away from the kinks (a null set), so ``diag(H) = diag(G)``
  exactly. Only the diagonal: off-diagonal entries of the two differ (``z`` is bilinear in two
  parameters of different layers). Networks with smooth activations (GELU, sigmoid, tanh, ...),
  normalisation by batch or sample statistics (BatchNorm in train mode, LayerNorm, GroupNorm) or a
  parameter used twice on one path are detected and refused (``check="raise"``, the default) or
  warned about (``check="warn"``; the result then says ``exact=False``: it is the GGN diagonal, a
  different matrix).

The losses (``loss="ce"`` / ``"kl"``) are the two terms the curvature probes separate
(:func:`loss_function` returns the matching ``loss_fn`` for a :class:`HessianOperator`):

* ``"ce"``: ``ce_to_labels(z, y, label_smoothing)``, mean over the batch. With target
  distribution ``q_n`` (one-hot, smoothed ``(1-e) onehot + e/C``, or soft rows) the loss is
  ``(1/N) sum_n [-q_n.z_n + (sum_c q_nc) logsumexp(z_n)]``, so
  ``H_out,n = (sum_c q_nc)/N * (diag(p_n) - p_n p_n^T)``, ``p_n = softmax(z_n)``; ``sum_c q_nc = 1``
  for hard labels, smoothed or not.
* ``"kl"``: ``kl_to_teacher(s, t, T) * T^2`` (KLDivLoss reduction='mean': divided by ``N*C``).
  ``d^2/ds^2 [-sum_c pt_c log softmax(s/T)_c] = (1/T^2)(diag(q) - q q^T)``, ``q = softmax(s/T)``,
  because ``sum_c pt_c = 1``; the ``T^2`` factor cancels the ``1/T^2``:
  ``H_out,n = (1/(N*C)) * (diag(q_n) - q_n q_n^T)``.

Both are ``a_n (diag(p) - p p^T)`` and ``diag(p) - p p^T = M M^T`` with
``M = diag(sqrt p) - p sqrt(p)^T`` (column ``k``: ``sqrt(p_k) (e_k - p)``; uses ``sum p = 1``), so
``diag(G)_i = sum_n a_n sum_k p_nk (dz_nk/dtheta_i - sum_c p_nc dz_nc/dtheta_i)^2``.  ``diag(p) - p p^T``
has rank ``C - 1`` (the all-ones vector is its null direction), so :func:`low_rank_factor` rewrites ``M`` with
``C - 1`` columns (eigenvectors scaled by the roots of their eigenvalues): ``C - 1`` per-sample
vector--Jacobian products, squared and summed (``torch.func``: ``vmap`` over samples and over the
cotangents; a plain-autograd loop as fallback).  Cost: ``N (C - 1)`` products, each about 1/140-1/170 of a
Hessian-vector product (measured, docs/benchmarks.md), so the exact trace of a batch of 64 at 10 classes costs
about 4 Hessian-vector products' time; at 1000 classes it is ~100x dearer.

Results are :class:`HessianDiagonal` (per-parameter tensors, ``trace()``, per-layer / per-block
traces) and :class:`ExactTrace` (``estimator="exact"``, no interval).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn as nn
from torch.func import functional_call, vjp, vmap

from zsq_probe.hessian.batches import (
    batch_size,
    batch_to,
    call_model,
    cast_batch,
    map_tensors,
    select_params,
    slice_batch,
)
from zsq_probe.hessian.linearity import NotPiecewiseLinearError, piecewise_linear_problems
from zsq_probe.hessian.operator import HessianOperator
from zsq_probe.hessian.results import ExactTrace, HessianDiagonal
from zsq_probe.module_state import preserved_state
from zsq_probe.quantization.losses import check_loss, loss_function

__all__ = [
    "coordinate_products",
    "exact_diagonal",
    "exact_trace",
    "ggn_diagonal",
    "low_rank_factor",
    "loss_function",
    "output_hessian",
    "output_hessian_factor",
]

CHECKS = ("raise", "warn", "off")  # what ggn_diagonal does with a network that fails the linearity check


# --------------------------------------------------------------------------- H_out
# (the losses themselves: zsq_probe.quantization.losses.loss_function)


def output_hessian_factor(
    loss: str,
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    temperature: float | None = None,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``U`` of shape ``(N, C, C)`` with ``H_out,n = U[n]^T U[n]`` (rows of ``U[n]`` are the
    cotangents): the Hessian of the (batch-mean) loss w.r.t. sample ``n``'s logits, see the module
    docstring. ``logits``: ``(N, C)``; ``target``: labels ``(N,)`` or soft labels ``(N, C)`` for
    ``"ce"``, teacher logits ``(N, C)`` for ``"kl"``."""
    loss = check_loss(loss, temperature, label_smoothing)
    z = logits.detach()
    if z.dim() != 2:
        raise ValueError(f"the model must return logits of shape (batch, classes), got {tuple(z.shape)}")
    n, c = z.shape
    if loss == "ce":
        p = torch.softmax(z, dim=1)
        if target.dim() == 1:
            if target.shape[0] != n:
                raise ValueError(f"{target.shape[0]} labels for {n} samples")
            if target.is_floating_point() or bool((target < 0).any()) or bool((target >= c).any()):
                raise ValueError("hard labels must be class indices in [0, classes) (ignore_index is not supported)")
            mass = torch.ones(n, dtype=z.dtype, device=z.device)
        elif target.shape == z.shape:
            t = target.detach().to(z.dtype)
            mass = (1 - label_smoothing) * t.sum(1) + label_smoothing
        else:
            raise ValueError(
                f"CE target must be labels (N,) or soft labels {tuple(z.shape)}, got {tuple(target.shape)}"
            )
        scale = mass / n
    else:
        if target.shape != z.shape:
            raise ValueError(f"KL target must be teacher logits of shape {tuple(z.shape)}, got {tuple(target.shape)}")
        assert temperature is not None  # check_loss refuses "kl" without one
        p = torch.softmax(z / float(temperature), dim=1)
        scale = torch.full((n,), 1.0 / (n * c), dtype=z.dtype, device=z.device)
    sp = p.sqrt()
    eye = torch.eye(c, dtype=z.dtype, device=z.device)
    # U[n, k, :] = sqrt(scale_n * p_nk) * (e_k - p_n)
    return (scale.sqrt()[:, None, None] * sp[:, :, None]) * (eye[None] - p[:, None, :])


def low_rank_factor(u: torch.Tensor) -> torch.Tensor:
    """``(N, C-1, C)`` factors ``V`` with ``V[n]^T V[n] = U[n]^T U[n]`` for the ``(N, C, C)`` factors of
    :func:`output_hessian_factor`: ``diag(p) - p p^T`` maps the all-ones vector to 0 (``sum p = 1``), so each
    ``H_out,n`` has rank ``C - 1`` and one cotangent per sample is wasted.  The rows are ``sqrt(lambda_j) v_j``
    of the ``C - 1`` largest eigenpairs (float64, then the factor's dtype): ``C - 1`` vector-Jacobian products
    per sample instead of ``C`` (10 % fewer at 10 classes), the diagonal unchanged up to round-off."""
    c = u.shape[-1]
    if c < 2:
        return u
    h = u.double().transpose(1, 2) @ u.double()
    values, vectors = torch.linalg.eigh(h)  # ascending: the first is the null direction (~0)
    top = values[:, 1:].clamp_min(0).sqrt()  # (N, C-1)
    factor: torch.Tensor = (vectors[:, :, 1:] * top[:, None, :]).transpose(1, 2).to(u.dtype)
    return factor


def output_hessian(loss: str, logits: torch.Tensor, target: torch.Tensor, **kw: Any) -> torch.Tensor:
    """``(N, C, C)``: the per-sample Hessians ``H_out,n`` of the loss w.r.t. the logits (closed form)."""
    u = output_hessian_factor(loss, logits, target, **kw)
    return u.transpose(1, 2) @ u


# --------------------------------------------------------------------------- results


# --------------------------------------------------------------------------- unit products


def coordinate_products(op: HessianOperator, indices: Iterable[int] | torch.Tensor) -> torch.Tensor:
    """``e_i^T H e_i`` for the flat coordinates ``indices`` (one product each), float64 on CPU."""
    idx = torch.as_tensor(list(indices) if not isinstance(indices, torch.Tensor) else indices).reshape(-1).long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= op.dim):
        raise ValueError(f"coordinates must be in [0, {op.dim})")
    out = torch.empty(idx.numel(), dtype=torch.float64)
    e = torch.zeros(op.dim, dtype=op.dtype, device=op.device)
    for j, i in enumerate(idx.tolist()):
        e[i] = 1
        out[j] = float(op.matvec(e)[i])
        e[i] = 0
    return out


def _unit_diagonal(op: HessianOperator, max_dim: int, loss: str | None) -> HessianDiagonal:
    if op.dim > max_dim:
        raise ValueError(
            f"the unit-product diagonal needs {op.dim} Hessian products (dim {op.dim} > max_dim "
            f"{max_dim}); raise max_dim, select fewer parameters, or use method='ggn'"
        )
    start, before = time.perf_counter(), op.num_products
    flat = coordinate_products(op, range(op.dim)).to(op.dtype)
    values = {n: t.clone() for n, t in op.unflatten(flat).items()}
    return HessianDiagonal(
        values=values,
        method="unit",
        exact=True,
        loss=loss,
        num_samples=sum(op.batch_sizes),
        num_products=op.num_products - before,
        seconds=time.perf_counter() - start,
    )


# --------------------------------------------------------------------------- GGN diagonal


def _check_ggn_options(model: object, check: str, mode: str, backend: str) -> None:
    """ggn_diagonal's option checks (TypeError for a model that is not an ``nn.Module``)."""
    if check not in CHECKS:
        raise ValueError(f"check must be one of {', '.join(CHECKS)}, got {check!r}")
    if mode not in ("eval", "as_is", "train"):
        raise ValueError(f"mode must be 'eval', 'as_is' or 'train', got {mode!r}")
    if backend not in ("auto", "func", "loop"):
        raise ValueError(f"backend must be 'auto', 'func' or 'loop', got {backend!r}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"ggn_diagonal needs a torch.nn.Module, got {type(model).__name__}")


def _linearity_verdict(
    model: nn.Module, inputs: Any, names: list[str], mode: str, check: str
) -> tuple[bool, list[str]]:
    """``(exact, notes)``: whether the GGN diagonal is the Hessian diagonal here, and the problems found
    (``check="raise"`` raises them, ``"warn"`` warns, ``"off"`` looks for none)."""
    if check == "off":
        return True, []
    problems = piecewise_linear_problems(model, inputs, names, mode)
    if not problems:
        return True, []
    msg = (
        "the network is not (known to be) piecewise linear in each single parameter, so its "
        "Gauss-Newton diagonal is not its Hessian diagonal: "
        + "; ".join(problems[:6])
        + (f"; and {len(problems) - 6} more" if len(problems) > 6 else "")
        + ". Use exact_diagonal(..., method='unit') (one Hessian product per coordinate) for an "
        "exact diagonal"
    )
    if check == "raise":
        raise NotPiecewiseLinearError(msg)
    warnings.warn(msg, stacklevel=3)
    return False, list(problems)


def _accumulate(
    model: nn.Module,
    selected: Sequence[tuple[str, nn.Parameter]],
    inputs: Any,
    u: torch.Tensor,
    chunk: int,
    backend: str,
    notes: list[str],
) -> tuple[dict[str, torch.Tensor], str]:
    """Per-parameter sums of squared vector-Jacobian products (float64) and the backend that made them:
    ``torch.func`` unless told ``"loop"``, the autograd loop when ``"auto"``'s func attempt fails."""
    n = u.shape[0]
    acc = {name: torch.zeros_like(p, dtype=torch.float64) for name, p in selected}
    if backend in ("auto", "func"):
        try:
            _ggn_func(model, selected, inputs, u, n, chunk, acc)
            return acc, "func"
        except Exception as e:  # any failure under torch.func falls back to the plain loop (re-raised for 'func')
            if backend == "func":
                raise
            notes.append(f"torch.func failed ({type(e).__name__}: {str(e)[:200]}); used the autograd loop")
            for a in acc.values():
                a.zero_()
    _ggn_loop(model, selected, inputs, u, n, acc)
    return acc, "loop"


def _working_copy(
    model: nn.Module,
    params: str | Iterable[str] | None,
    dtype: torch.dtype | None,
    inputs: Any,
    target: torch.Tensor,
    loss: str,
) -> tuple[nn.Module, list[str], list[tuple[str, nn.Parameter]], Any, torch.Tensor]:
    """``(model, names, selected, inputs, target)`` in the working dtype (a private copy of the model when
    ``dtype`` differs from its) on the selected parameters' device."""
    names = [n for n, _ in select_params(model, params)]
    if dtype is not None and any(p.dtype != dtype for p in model.parameters() if p.is_floating_point()):
        model = copy.deepcopy(model).to(dtype)
    selected = select_params(model, names)
    work_dtype, device = selected[0][1].dtype, selected[0][1].device
    inputs = cast_batch(batch_to(inputs, device), work_dtype)
    target = batch_to(target, device)
    if loss == "kl" or target.is_floating_point():
        target = target.to(work_dtype)
    return model, names, selected, inputs, target


def ggn_diagonal(
    model: nn.Module,
    loss: str,
    inputs: Any,
    target: torch.Tensor,
    params: str | Iterable[str] | None = None,
    *,
    temperature: float | None = None,
    label_smoothing: float = 0.0,
    mode: str = "eval",
    check: str = "raise",
    dtype: torch.dtype | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
    memory_bytes: int = 512 * 2**20,
) -> HessianDiagonal:
    """The exact Gauss--Newton diagonal of ``loss`` (``"ce"`` / ``"kl"``, see :func:`loss_function`)
    on one batch, per selected parameter. It *is* the Hessian diagonal for networks that are
    piecewise linear in each single parameter (checked: ``check="raise"`` refuses others,
    ``"warn"`` warns and returns ``exact=False``, ``"off"`` trusts the caller and reports
    ``exact=True``).

    ``mode``: ``"eval"`` (default; the probes' mode) or ``"as_is"``; ``"train"`` is refused by the
    check (batch statistics couple the samples). The forward runs like :class:`HessianOperator`'s:
    private buffer clones, activation ranges frozen. ``dtype``: compute in this dtype on a private
    copy of the model (e.g. ``torch.float64``); default the model's. ``backend``: ``"func"``
    (``torch.func`` vmap over samples and cotangents), ``"loop"`` (plain autograd, one sample at a
    time) or ``"auto"`` (func, falling back to loop if the model does not run under ``torch.func``).
    ``chunk_size``: samples per vmap call (default from ``memory_bytes``).
    """
    loss = check_loss(loss, temperature, label_smoothing)
    _check_ggn_options(model, check, mode, backend)
    start = time.perf_counter()
    model, names, selected, inputs, target = _working_copy(model, params, dtype, inputs, target, loss)
    work_dtype = selected[0][1].dtype
    exact, notes = _linearity_verdict(model, inputs, names, mode, check)

    if (n := batch_size(inputs)) == 0:
        raise ValueError("ggn_diagonal got an empty batch")
    with preserved_state(model, mode=None if mode == "as_is" else mode):
        with torch.no_grad():
            logits = call_model(model, inputs)
        u = output_hessian_factor(loss, logits, target, temperature=temperature, label_smoothing=label_smoothing)
        u = low_rank_factor(u)  # rank C - 1: one vector-Jacobian product per sample fewer
        k = u.shape[1]  # u: (N, K, C)
        if chunk_size is None:  # samples whose K vector-Jacobian products (x3 for vmap's work) fit the memory
            per_sample = max(1, 3 * k * sum(p.numel() for _, p in selected) * torch.finfo(work_dtype).bits // 8)
            chunk_size = int(max(1, min(n, memory_bytes // per_sample)))
        acc, used = _accumulate(model, selected, inputs, u, chunk_size, backend, notes)
    notes.append(f"backend={used}")
    return HessianDiagonal(
        values={name: acc[name].to(work_dtype) for name in names},
        method="ggn",
        exact=exact,
        loss=loss,
        num_samples=n,
        num_products=n * k,
        seconds=time.perf_counter() - start,
        notes=tuple(notes),
    )


def _ggn_func(
    model: nn.Module,
    selected: Sequence[tuple[str, nn.Parameter]],
    inputs: Any,
    u: torch.Tensor,
    n: int,
    chunk: int,
    acc: dict[str, torch.Tensor],
) -> None:
    names = [name for name, _ in selected]
    primals = {name: p.detach() for name, p in selected}

    def per_sample(x: Any, u_n: torch.Tensor) -> dict[str, torch.Tensor]:
        def f(theta: dict[str, torch.Tensor]) -> torch.Tensor:
            xb = map_tensors(x, lambda t: t.unsqueeze(0))
            args = (xb,) if isinstance(xb, torch.Tensor) else tuple(xb)
            out: torch.Tensor = functional_call(model, theta, args, strict=False).squeeze(0)
            return out

        pull = vjp(f, primals)[1]
        g = vmap(pull)(u_n)[0]  # {name: (K, *shape)}
        return {name: (g[name] ** 2).sum(0) for name in names}

    batched = vmap(per_sample, randomness="error")
    for s in range(0, n, chunk):
        part = batched(slice_batch(inputs, s, min(n, s + chunk), n), u[s : min(n, s + chunk)])
        for name in names:
            acc[name] += part[name].sum(0).to(torch.float64)


def _ggn_loop(
    model: nn.Module,
    selected: Sequence[tuple[str, nn.Parameter]],
    inputs: Any,
    u: torch.Tensor,
    n: int,
    acc: dict[str, torch.Tensor],
) -> None:
    params = [p for _, p in selected]
    names = [name for name, _ in selected]
    k = u.shape[1]
    for i in range(n):
        with torch.enable_grad():
            z = call_model(model, slice_batch(inputs, i, i + 1, n))[0]
            for j in range(k):
                g = torch.autograd.grad(z, params, grad_outputs=u[i, j], retain_graph=j < k - 1, allow_unused=True)
                for name, gi in zip(names, g):
                    if gi is not None:
                        acc[name] += gi.detach().to(torch.float64) ** 2


# --------------------------------------------------------------------------- front doors


def exact_diagonal(
    op_or_model: HessianOperator | nn.Module,
    loss: str | None = None,
    inputs: Any = None,
    target: Any = None,
    params: str | Iterable[str] | None = None,
    *,
    method: str = "auto",
    temperature: float | None = None,
    label_smoothing: float = 0.0,
    mode: str = "eval",
    max_dim: int = 4096,
    **ggn_kwargs: Any,
) -> HessianDiagonal:
    """The exact Hessian diagonal, of an operator or of a model's loss.

    ``exact_diagonal(op)``: one product ``e_i^T H e_i`` per coordinate of a :class:`HessianOperator` (any
    network; ``op.dim <= max_dim``).  ``exact_diagonal(model, loss, inputs, target, params, ...)``: the
    Gauss--Newton diagonal where the network is piecewise linear in each parameter (:func:`ggn_diagonal`), else
    one product per coordinate.

    Args:
        op_or_model: A :class:`HessianOperator`, or the model whose loss to differentiate.
        loss: ``"ce"`` or ``"kl"`` (a model only).
        inputs: The batch's inputs (a model only).
        target: Labels (``"ce"``) or teacher logits (``"kl"``) (a model only).
        params: Parameter names or module prefixes to differentiate (default: all that require grad).
        method: ``"ggn"`` (refused unless the linearity check passes), ``"unit"`` (one product per coordinate)
            or ``"auto"``: ggn where the check passes, else unit where ``dim <= max_dim``, else an error.
        temperature: The KL term's temperature.
        label_smoothing: The CE term's label smoothing.
        mode: The modules' mode while differentiating (``"eval"``: BatchNorm running statistics).
        max_dim: The most coordinates a unit diagonal may cost products for.
        **ggn_kwargs: Passed to :func:`ggn_diagonal` (e.g. ``check``, ``backend``).

    Returns:
        The diagonal per parameter (:class:`HessianDiagonal`).

    Raises:
        ValueError: Arguments that do not fit the method, or a unit diagonal over ``max_dim`` coordinates.
        NotPiecewiseLinearError: ``method="ggn"`` on a network that fails the linearity check.

    Example:
        >>> import torch
        >>> from zsq_probe.hessian import HessianOperator, exact_diagonal
        >>> _ = torch.manual_seed(0)
        >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
        >>> x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
        >>> op = HessianOperator(model, torch.nn.functional.cross_entropy, [(x, y)])
        >>> dense = torch.stack([op.matvec(e) for e in torch.eye(op.dim)])  # the 67 x 67 Hessian, for the check
        >>> diag = exact_diagonal(op)
        >>> torch.allclose(diag.flat(), dense.diagonal(), atol=1e-6)
        True
        >>> ggn = exact_diagonal(model, "ce", x, y)  # no products: the Gauss-Newton diagonal, exact for ReLU nets
        >>> ggn.method, torch.allclose(ggn.flat(), dense.diagonal(), atol=1e-5)
        ('ggn', True)
    """
    if isinstance(op_or_model, HessianOperator):
        if any(a is not None for a in (loss, inputs, target, params)) or method not in ("auto", "unit"):
            raise TypeError("exact_diagonal(op) takes the operator alone (it already holds model, loss and batch)")
        return _unit_diagonal(op_or_model, max_dim, None)
    if not isinstance(op_or_model, nn.Module):
        raise TypeError(f"exact_diagonal needs a HessianOperator or an nn.Module, got {type(op_or_model).__name__}")
    if loss is None or inputs is None or target is None:
        raise TypeError("exact_diagonal(model, loss, inputs, target, ...) needs loss, inputs and target")
    if method not in ("auto", "ggn", "unit"):
        raise ValueError(f"method must be 'auto', 'ggn' or 'unit', got {method!r}")
    model = op_or_model
    kw: dict[str, Any] = {"temperature": temperature, "label_smoothing": label_smoothing, "mode": mode}
    if method == "auto":
        try:
            return ggn_diagonal(model, loss, inputs, target, params, check="raise", **kw, **ggn_kwargs)
        except NotPiecewiseLinearError:
            method = "unit"
    if method == "ggn":
        return ggn_diagonal(model, loss, inputs, target, params, **kw, **ggn_kwargs)
    dtype = ggn_kwargs.pop("dtype", None)
    if ggn_kwargs:
        raise TypeError(f"unexpected arguments for method='unit': {', '.join(ggn_kwargs)}")
    if dtype is not None:
        model = copy.deepcopy(model).to(dtype)
        inputs = cast_batch(inputs, dtype)
        if loss == "kl":
            target = target.to(dtype)
    fn = loss_function(loss, temperature, label_smoothing)
    with HessianOperator(model, fn, [(inputs, target)], params=params, mode=mode) as op:
        return _unit_diagonal(op, max_dim, loss)


def exact_trace(op_or_model: HessianOperator | nn.Module, *args: Any, **kwargs: Any) -> ExactTrace:
    """The exact trace (``estimator="exact"``, no interval) with per-parameter parts (``.by("layer")``,
    ``.by("block")``); arguments as :func:`exact_diagonal`."""
    return exact_diagonal(op_or_model, *args, **kwargs).to_trace()
