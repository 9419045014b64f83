"""The straight-through surrogate whose Hessian the curvature probes measure on a quantised student.

A quantised student's forward (zsq_probe.quantization.quantizer) is straight-through: every quantised weight is
``w + (q(w) - w).detach()`` and every activation quantiser returns ``x + (q(x) - x).detach()`` (ranges
frozen).  Differentiating that graph twice at theta treats both offsets ``q(.) - .`` as constants: the
Hessian (and the gradient) the probes report are those of the *surrogate*

    L_s(theta') = L(net with weights theta' + (q(theta) - theta) and activations a(theta') + (q(a(theta)) - a(theta)))

in which the quantisation offsets are frozen at theta, per weight and, for the batch the Hessian is built
on, per activation element.  Everything else (ReLU masks, BN in eval mode, biases) moves with theta'.
L_s equals the quantised loss at theta (same values, same first and second derivatives as the STE graph),
but away from theta it is smooth where the re-quantised loss L(theta') is piecewise constant in the
rounding.  `frozen_quantization` makes a quantised model compute L_s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING

import torch
import torch.nn as nn

from zsq_probe.errors import UserError
from zsq_probe.quantization.quantizer import (
    QUANT_LAYER_TYPES,
    ActivationQuantizer,
    dequantize,
    integer_codes_of,
    weight_quant_params,
)

if TYPE_CHECKING:
    from zsq_probe.quantization.quantizer import QuantConv2d, QuantLinear


def is_quantized(model: nn.Module) -> bool:
    """Whether `model` holds quantised layers or activation quantisers (zsq_probe.quantization.quantizer)."""
    return any(isinstance(m, (*QUANT_LAYER_TYPES, ActivationQuantizer)) for m in model.modules())


def _weight_offset(layer: QuantConv2d | QuantLinear) -> torch.Tensor:
    """q(w) - w of a quantised layer at its current weight: the constant its straight-through forward adds."""
    w = layer.weight.detach()
    scale, zero_point = weight_quant_params(w, layer.w_bits)
    return dequantize(integer_codes_of(w, layer.w_bits), scale, zero_point) - w


@contextlib.contextmanager
def frozen_quantization(model: nn.Module, inputs: torch.Tensor | Sequence[torch.Tensor]) -> Iterator[nn.Module]:
    """Inside the block `model(inputs)` computes the straight-through surrogate at the current parameters
    theta (module docstring): quantised weights are `w + (q(theta) - theta)`, activation quantisers add the
    offsets `q(a) - a` recorded on one forward of `inputs` at theta.

    Enter it in the state the surrogate should describe (the curvature probes: eval mode, activation ranges
    frozen, e.g. inside `preserved_state(model, mode="eval")`): the recording forward runs in that state.
    Only batches shaped like `inputs` can be evaluated inside (the activation offsets are per element; a
    UserError otherwise).  A float model is left as it is.  After the block the model computes its own
    forward again; nothing else is changed."""
    layers = [m for m in model.modules() if isinstance(m, QUANT_LAYER_TYPES)]
    quantizers = [m for m in model.modules() if isinstance(m, ActivationQuantizer)]
    for m in layers + quantizers:
        if "forward" in vars(m) or "quantized_weight" in vars(m):
            raise UserError("frozen_quantization: the model's quantisers are already frozen (nested use)")
    with torch.no_grad():
        weight_offsets = [_weight_offset(m) for m in layers]
    recorded = _record_activation_offsets(model, quantizers, inputs)

    names = {id(m): n for n, m in model.named_modules()}
    try:
        # instance attributes shadow the methods inside the block (popped again in `finally`)
        for m, offset in zip(layers, weight_offsets):
            vars(m)["quantized_weight"] = _frozen_weight(m, offset)
        for q in quantizers:
            vars(q)["forward"] = _frozen_activation(names.get(id(q), "?"), recorded[id(q)])
        yield model
    finally:
        for m in layers:
            vars(m).pop("quantized_weight", None)
        for q in quantizers:
            vars(q).pop("forward", None)


def _record_activation_offsets(
    model: nn.Module, quantizers: Sequence[nn.Module], inputs: torch.Tensor | Sequence[torch.Tensor]
) -> dict[int, list[torch.Tensor]]:
    """Per activation quantiser (by id), the offsets `q(a) - a` of one forward of `inputs`, in call order."""
    recorded: dict[int, list[torch.Tensor]] = {id(q): [] for q in quantizers}

    def record(module: nn.Module, args: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        recorded[id(module)].append((output - args[0]).detach())

    if quantizers:
        handles = [q.register_forward_hook(record) for q in quantizers]
        try:
            with torch.no_grad():
                model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
        finally:
            for h in handles:
                h.remove()
    return recorded


def _frozen_weight(layer: QuantConv2d | QuantLinear, offset: torch.Tensor) -> Callable[[], torch.Tensor]:
    return lambda: layer.weight + offset


def _frozen_activation(name: str, offsets: list[torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    calls = [0]

    def forward(x: torch.Tensor) -> torch.Tensor:
        if not offsets:
            raise UserError(f"frozen_quantization: activation quantiser {name} was not used on the recorded batch")
        offset = offsets[calls[0] % len(offsets)]  # a quantiser used twice per forward keeps its order
        calls[0] += 1
        if x.shape != offset.shape:
            raise UserError(
                f"frozen_quantization: the surrogate was recorded on a batch of shape "
                f"{tuple(offset.shape)} at {name}, not {tuple(x.shape)}"
            )
        return x + offset

    return forward
