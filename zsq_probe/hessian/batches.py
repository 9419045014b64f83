"""Batches as the Hessian operator and the exact diagonal see them: a tensor or any nesting of tuples, lists and
dicts of tensors (sliced, moved, cast and fed to the model alike), and the parameters an operator differentiates."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn


def select_params(model: nn.Module, params: str | Iterable[str] | None) -> list[tuple[str, nn.Parameter]]:
    """The ``(name, parameter)`` pairs ``params`` names (a name, a module prefix or a list of them; None: every
    parameter that requires grad), in the model's order; ValueError / TypeError naming what matched nothing."""
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


def map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``obj`` with ``fn`` applied to every tensor in it (tuples, lists and mappings rebuilt, the rest kept)."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(map_tensors(o, fn) for o in obj)
    if isinstance(obj, Mapping):
        return {k: map_tensors(v, fn) for k, v in obj.items()}
    return obj


def batch_size(inputs: Any) -> int:
    """The first dimension of the first tensor in ``inputs`` (TypeError when there is none)."""
    first = inputs
    while isinstance(first, (tuple, list)) and first:
        first = first[0]
    if isinstance(first, Mapping) and first:
        first = next(iter(first.values()))
    if isinstance(first, torch.Tensor) and first.dim() > 0:
        return int(first.shape[0])
    raise TypeError("cannot tell the batch size: inputs must be a tensor (batch first) or a tuple of tensors")


def slice_batch(obj: Any, start: int, stop: int, n: int) -> Any:
    """Rows [start, stop) of every batch-first tensor (first dimension n) in a tensor / tuple / mapping."""
    return map_tensors(obj, lambda t: t[start:stop] if t.dim() > 0 and t.shape[0] == n else t)


def batch_to(obj: Any, device: torch.device) -> Any:
    """Every tensor in ``obj`` moved to ``device``."""
    return map_tensors(obj, lambda t: t.to(device))


def cast_batch(obj: Any, dtype: torch.dtype) -> Any:
    """Every floating tensor in ``obj`` cast to ``dtype`` (labels and other integer tensors kept)."""
    return map_tensors(obj, lambda t: t.to(dtype) if t.is_floating_point() else t)


def call_model(model: nn.Module, inputs: Any) -> Any:
    """``model(*inputs)`` for a tuple or list of inputs, else ``model(inputs)``."""
    return model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
