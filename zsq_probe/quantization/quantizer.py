"""Fake quantisation as in the GDFQ/AIT reference code (docs/reference.md#quantisation).

The paper text says "symmetric"; the reference code is asymmetric, and we follow the code:

* weights: per output channel (dim 0), asymmetric, min/max recomputed on every forward,
  ``scale = (2^k-1)/max(max-min, 1e-8)``, ``zp = round(scale*min) + 2^(k-1)``,
  ``q = clamp(round(scale*w - zp), -2^(k-1), 2^(k-1)-1)``, dequantised ``(q+zp)/scale``;
* activations: one quantiser after every ``nn.ReLU`` / ``nn.ReLU6`` module, per tensor,
  asymmetric, range = EMA (momentum 0.9) of the batch min/max while not frozen (``range_ema``: plain,
  or the reference's bias-corrected update);
* straight-through estimator with identity backward and no clipping mask, written as
  ``x + (dequant(quant(x)) - x).detach()`` so that double backward (Hessians) works.

Every ``nn.Conv2d`` and ``nn.Linear`` is quantised, first and last layer included.
Not quantised: biases, the network input, residual additions, BatchNorm (not folded),
activation modules other than ReLU/ReLU6 and activations applied functionally.

One module (~490 lines) on purpose: the quantisers, the model conversion, integer codes and the
quantisation spec are one contract — GI, the crossings probe and the spec in every config read the same
codes — and splitting them would scatter the formulas this docstring states.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from zsq_probe.errors import UserError
from zsq_probe.quantization.range_rules import EMA_MOMENTUM, RANGE_EMA_RULES

MIN_BITS = 2
MAX_BITS = 8
RANGE_EPS = 1e-8  # docs/reference.md#weight-quantiser: scale = (2^k-1)/max(max-min, 1e-8)
# the activation-range rules (plain, bias-corrected) and the reference rule's blow-up: quantization/range_rules.py

SCHEME = (
    "asymmetric; weights per output channel, min/max recomputed every forward; activations per tensor, EMA 0.9 range"
)
ROUNDING = "torch.round (round half to even), then clamp to [-2^(k-1), 2^(k-1)-1]"
STE = (
    "straight-through estimator, identity backward without clipping mask, "
    "x + (dequant(quant(x)) - x).detach() (double backward supported)"
)

# Activation module types that are *not* quantised (only ReLU/ReLU6 are); reported by
# quantization_spec so a reader sees which activations stay full precision.
_OTHER_ACTIVATIONS: tuple[type[nn.Module], ...] = tuple(
    t
    for t in (
        getattr(nn, name, None)
        for name in (
            "LeakyReLU",
            "PReLU",
            "RReLU",
            "ELU",
            "CELU",
            "SELU",
            "GELU",
            "SiLU",
            "Mish",
            "Hardswish",
            "Hardsigmoid",
            "Hardtanh",
            "Sigmoid",
            "LogSigmoid",
            "Tanh",
            "Softplus",
            "Softsign",
            "Softmax",
            "LogSoftmax",
            "Tanhshrink",
            "Threshold",
            "GLU",
            "Hardshrink",
            "Softshrink",
        )
    )
    if t is not None
)  # nn.ReLU6 subclasses nn.Hardtanh: callers exclude ReLU/ReLU6 explicitly


def check_bits(bits: Any, what: str = "bits") -> int:
    """Return ``bits`` as int if it is an integer in [2, 8], else raise UserError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise UserError(f"{what} must be an integer from {MIN_BITS} to {MAX_BITS}, got {bits!r}")
    return bits


# --------------------------------------------------------------------------- weights


def weight_quant_params(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel asymmetric ``(scale, zero_point)`` of ``w`` (docs/reference.md#weight-quantiser).

    Min/max over every dim but 0, recomputed on each call. Both results have shape
    ``(C, 1, ..., 1)`` so they broadcast against ``w``; they carry no gradient.
    """
    check_bits(bits, "weight bits")
    if w.dim() < 1 or w.shape[0] == 0 or w.numel() == 0:
        raise UserError(f"cannot quantise an empty weight of shape {tuple(w.shape)}")
    with torch.no_grad():
        flat = w.detach().reshape(w.shape[0], -1)
        # amin/amax rather than torch.aminmax: same values, ~10x faster on CPU (torch 2.x)
        wmin, wmax = flat.amin(dim=1), flat.amax(dim=1)
        scale, zero_point = scale_and_zero_point(wmin, wmax, 2**bits - 1, 2 ** (bits - 1))
        shape = (w.shape[0],) + (1,) * (w.dim() - 1)
        return scale.reshape(shape), zero_point.reshape(shape)


def scale_and_zero_point(
    lo: torch.Tensor, hi: torch.Tensor, levels: float | torch.Tensor, half: float | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``scale = (2^k-1)/max(hi-lo, 1e-8)``, ``zp = round(scale*lo) + 2^(k-1)`` (docs/reference.md#weight-quantiser).

    Written as reciprocal-times-levels, which is what torch does for ``number / tensor`` (so
    the reference code's ``(2**k-1)/torch.clamp(...)`` gives the same bits); gradient
    inundation evaluates codes with this same function, so its counts match
    :func:`integer_codes_of` bit for bit.

    Args:
        lo: The range's lower ends.
        hi: The range's upper ends (same shape as `lo`).
        levels: 2^k-1, a number or a tensor broadcasting against `lo`.
        half: 2^(k-1), a number or a tensor broadcasting against `lo`.

    Returns:
        (scale, zero point), shaped as `lo` broadcast against `levels` and `half`.
    """
    scale = torch.reciprocal(torch.clamp(hi - lo, min=RANGE_EPS)) * levels
    return scale, torch.round(scale * lo) + half


def rounded_codes(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, bits: int) -> torch.Tensor:
    """The integer codes of `x` on the grid (`scale`, `zero_point`), still as floats:
    ``q = clamp(round(scale * x - zp), -2^(k-1), 2^(k-1) - 1)`` (docs/reference.md, "Weight quantiser").

    Args:
        x: The values (weights or activations).
        scale: The grid's scale (codes per unit).
        zero_point: The grid's zero point.
        bits: The bit width k.

    Returns:
        The codes, in x's dtype.
    """
    # two separate ops (no fused multiply-add) so every caller gets the same bits
    return torch.clamp(torch.round(scale * x - zero_point), -(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


def integer_codes_of(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes (``torch.int8``; every code fits for 2..8 bits) of ``w`` quantised per channel."""
    scale, zero_point = weight_quant_params(w, bits)
    with torch.no_grad():
        return rounded_codes(w.detach(), scale, zero_point, bits).to(torch.int8)


def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``(q + zp) / scale`` (docs/reference.md#weight-quantiser); ``q`` may be integer or float codes."""
    return (q.to(scale.dtype) + zero_point) / scale


def fake_quantize_weight(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantise-dequantise ``w`` per output channel; gradient passes straight through.

    Written as ``w + (dequant(quant(w)) - w).detach()`` so the result is differentiable
    any number of times (identity Jacobian), which the Hessian probes need.
    """
    scale, zero_point = weight_quant_params(w, bits)
    with torch.no_grad():
        dq = dequantize(rounded_codes(w.detach(), scale, zero_point, bits), scale, zero_point)
    return w + (dq - w.detach())


# --------------------------------------------------------------------------- layers


def _copy_param(src: torch.Tensor) -> nn.Parameter:
    """A parameter holding a copy of ``src`` (not shared), with its ``requires_grad``."""
    return nn.Parameter(src.detach().clone(), requires_grad=src.requires_grad)


def _copy_weight_and_bias(q: nn.Conv2d | nn.Linear, module: nn.Conv2d | nn.Linear) -> None:
    """Give the quantised layer ``q`` copies of ``module``'s weight and bias."""
    q.weight = _copy_param(module.weight)
    if module.bias is not None:  # else ``q`` was built without one
        q.bias = _copy_param(module.bias)


class QuantConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose weight is fake-quantised per output channel to ``w_bits`` on every forward.

    Its state dict holds exactly the float module's keys (``weight``, ``bias``).
    """

    w_bits: int

    def __init__(self, *args: Any, w_bits: int = 8, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.w_bits = check_bits(w_bits, "w_bits")

    @classmethod
    def from_float(cls, module: nn.Conv2d, w_bits: int) -> QuantConv2d:
        """A quantised copy of ``module`` (weight and bias copied, not shared)."""
        if not isinstance(module, nn.Conv2d) or isinstance(module, QuantConv2d):
            raise UserError(f"QuantConv2d.from_float needs a float nn.Conv2d, got {type(module).__name__}")
        check_bits(w_bits, "w_bits")
        q = cls(
            module.in_channels,
            module.out_channels,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            groups=module.groups,
            bias=module.bias is not None,
            padding_mode=module.padding_mode,
            device="meta",
            dtype=module.weight.dtype,
            w_bits=w_bits,
        )
        _copy_weight_and_bias(q, module)
        q.train(module.training)
        return q

    def quantized_weight(self) -> torch.Tensor:
        """The weight fake-quantised per output channel to `w_bits` (straight-through gradient)."""
        return fake_quantize_weight(self.weight, self.w_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The convolution with the fake-quantised weight."""
        out: torch.Tensor = self._conv_forward(x, self.quantized_weight(), self.bias)
        return out

    def extra_repr(self) -> str:
        """nn.Conv2d's description plus the weight bits."""
        conv: str = super().extra_repr()  # type: ignore[no-untyped-call]  # torch leaves _ConvNd's unannotated
        return conv + f", w_bits={self.w_bits}"


class QuantLinear(nn.Linear):
    """``nn.Linear`` whose weight is fake-quantised per output row to ``w_bits`` on every forward."""

    w_bits: int

    def __init__(self, *args: Any, w_bits: int = 8, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.w_bits = check_bits(w_bits, "w_bits")

    @classmethod
    def from_float(cls, module: nn.Linear, w_bits: int) -> QuantLinear:
        """A quantised copy of ``module`` (weight and bias copied, not shared)."""
        if not isinstance(module, nn.Linear) or isinstance(module, QuantLinear):
            raise UserError(f"QuantLinear.from_float needs a float nn.Linear, got {type(module).__name__}")
        check_bits(w_bits, "w_bits")
        q = cls(
            module.in_features,
            module.out_features,
            bias=module.bias is not None,
            device="meta",
            dtype=module.weight.dtype,
            w_bits=w_bits,
        )
        _copy_weight_and_bias(q, module)
        q.train(module.training)
        return q

    def quantized_weight(self) -> torch.Tensor:
        """The weight fake-quantised per output row to `w_bits` (straight-through gradient)."""
        return fake_quantize_weight(self.weight, self.w_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The linear map with the fake-quantised weight."""
        return F.linear(x, self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        """nn.Linear's description plus the weight bits."""
        return super().extra_repr() + f", w_bits={self.w_bits}"


QUANT_LAYER_TYPES = (QuantConv2d, QuantLinear)


# --------------------------------------------------------------------------- activations


class ActivationQuantizer(nn.Module):
    """Per-tensor asymmetric activation quantiser with an EMA (0.9) range (docs/reference.md#activation-quantiser).

    While not frozen, every forward updates ``range_min``/``range_max`` from the batch
    min/max (``range_ema="plain"``: the first batch initialises them; ``"bias-corrected"``: the
    reference's compounding update from 0, see ``RANGE_EMA_RULES``), whatever ``self.training`` is: like GDFQ's
    ``running_stat``. Buffers ``range_min``, ``range_max``, ``initialized`` and ``frozen``
    are all checkpointed. Change the frozen state with :meth:`set_frozen` (or the model-level
    helpers below), not by writing the buffer.
    """

    # registered buffers (checkpointed); declared so that they type as tensors, not as `Tensor | Module`
    range_min: torch.Tensor
    range_max: torch.Tensor
    initialized: torch.Tensor
    frozen: torch.Tensor
    beta_t: torch.Tensor  # range_ema="bias-corrected" only

    def __init__(self, a_bits: int, momentum: float = EMA_MOMENTUM, range_ema: str = "plain") -> None:
        super().__init__()
        self.a_bits = check_bits(a_bits, "a_bits")
        self.momentum = float(momentum)
        if range_ema not in RANGE_EMA_RULES:
            raise UserError(f"range_ema={range_ema!r} (one of {', '.join(RANGE_EMA_RULES)})")
        self.range_ema = range_ema
        if range_ema == "bias-corrected":  # beta_t = m**updates (reference buffer, checkpointed)
            self.register_buffer("beta_t", torch.ones(()))
        self.register_buffer("range_min", torch.zeros(()))
        self.register_buffer("range_max", torch.zeros(()))
        self.register_buffer("initialized", torch.tensor(False))
        self.register_buffer("frozen", torch.tensor(False))
        # Host mirrors of the two bool buffers: forward must not sync with the device.
        self._initialized = False
        self._frozen = False

    @property
    def is_frozen(self) -> bool:
        """Whether the range is held (no EMA update on forward)."""
        return self._frozen

    @property
    def is_initialized(self) -> bool:
        """Whether the range has been set (by a forward pass or calibration)."""
        return self._initialized

    def set_frozen(self, frozen: bool) -> None:
        """Hold (True) or release (False) the range; the buffer follows for checkpoints."""
        self._frozen = bool(frozen)
        self.frozen.fill_(self._frozen)

    def reset_range(self) -> None:
        """Forget the range: the next unfrozen forward initialises it again."""
        self.range_min.zero_()
        self.range_max.zero_()
        if self.range_ema == "bias-corrected":
            self.beta_t.fill_(1.0)
        self.initialized.fill_(False)
        self._initialized = False

    def _load_from_state_dict(
        self,
        state_dict: Mapping[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        names = ("range_min", "range_max", "initialized", "frozen")
        if not any(prefix + n in state_dict for n in names):
            # A full-precision state dict (the ReLU had no state): keep this quantiser as is.
            return
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        self._initialized = bool(self.initialized)
        self._frozen = bool(self.frozen)

    @torch.no_grad()
    def _update_range(self, x: torch.Tensor) -> None:
        xd = x.detach()
        bmin, bmax = xd.amin(), xd.amax()
        if self.range_ema == "bias-corrected":  # GDFQ_AIT/quantization_utils/quant_modules.py:87-89
            m = torch.tensor(self.momentum, dtype=self.range_min.dtype, device=self.range_min.device)
            self.beta_t.mul_(m)
            for r, v in ((self.range_min, bmin), (self.range_max, bmax)):
                r.copy_((r * m + v.to(r.dtype) * (1 - m)) / (1 - self.beta_t))
            if not self._initialized:
                self.initialized.fill_(True)
                self._initialized = True
        elif not self._initialized:
            self.range_min.copy_(bmin)
            self.range_max.copy_(bmax)
            self.initialized.fill_(True)
            self._initialized = True
        else:  # range = m * range + (1 - m) * batch  (GDFQ, beta = 0.9)
            self.range_min.mul_(self.momentum).add_(bmin.to(self.range_min.dtype), alpha=1 - self.momentum)
            self.range_max.mul_(self.momentum).add_(bmax.to(self.range_max.dtype), alpha=1 - self.momentum)

    def quant_params(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, zero point) of the current range at `a_bits`."""
        k = self.a_bits
        return scale_and_zero_point(self.range_min, self.range_max, 2**k - 1, 2 ** (k - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`x` fake-quantised with the range (updated first unless frozen), with a straight-through gradient."""
        if not self._frozen:
            self._update_range(x)
        if not self._initialized:
            raise UserError("activation quantiser has no range yet: unfreeze it or calibrate the model first")
        with torch.no_grad():
            scale, zero_point = self.quant_params()
            xd = x.detach()
            dq = dequantize(rounded_codes(xd, scale, zero_point, self.a_bits), scale, zero_point).to(x.dtype)
            delta = dq - xd
        # out-of-place STE (x may be the output of an inplace ReLU; we never write into it)
        return x + delta

    def extra_repr(self) -> str:
        """Bits, momentum, EMA rule and frozen state."""
        ema = "" if self.range_ema == "plain" else f", range_ema={self.range_ema}"
        return f"a_bits={self.a_bits}, momentum={self.momentum}{ema}, frozen={self._frozen}"


class QuantizedActivation(nn.Module):
    """``activation`` followed by an :class:`ActivationQuantizer` (replaces a ReLU/ReLU6 module).

    The activation keeps its own ``inplace`` flag; the quantiser is out of place.
    """

    def __init__(self, activation: nn.Module, quantizer: ActivationQuantizer) -> None:
        super().__init__()
        self.activation = activation
        self.quantizer = quantizer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The activation, then its quantiser."""
        out: torch.Tensor = self.quantizer(self.activation(x))
        return out


# --------------------------------------------------------------------------- models


def quantize_model(model: nn.Module, w_bits: int, a_bits: int, range_ema: str = "plain") -> nn.Module:
    """A deep copy of ``model`` with every Conv2d/Linear fake-quantised to ``w_bits`` and an
    ``a_bits`` activation quantiser after every ReLU/ReLU6 module; ``model`` is untouched.

    The copy keeps the float model's state-dict keys for weights, biases and BN, so float
    state dicts load into it (the quantisers keep their state when their keys are absent).
    """
    check_bits(w_bits, "w_bits")
    check_bits(a_bits, "a_bits")
    if range_ema not in RANGE_EMA_RULES:
        raise UserError(f"range_ema={range_ema!r} (one of {', '.join(RANGE_EMA_RULES)})")
    if not isinstance(model, nn.Module):
        raise UserError(f"quantize_model needs a torch.nn.Module, got {type(model).__name__}")
    for name, m in model.named_modules():
        if isinstance(m, (QuantConv2d, QuantLinear, ActivationQuantizer, QuantizedActivation)):
            raise UserError(f"model is already quantised (found {type(m).__name__} at '{name}')")
    student = copy.deepcopy(model)
    replaced: dict[int, nn.Module] = {}  # keep modules shared in the float model shared

    def convert(m: nn.Module) -> nn.Module | None:
        if isinstance(m, nn.Conv2d):
            return QuantConv2d.from_float(m, w_bits)
        if isinstance(m, nn.Linear):
            return QuantLinear.from_float(m, w_bits)
        if isinstance(m, (nn.ReLU, nn.ReLU6)):
            return QuantizedActivation(m, ActivationQuantizer(a_bits, range_ema=range_ema)).train(m.training)
        return None

    def visit(parent: nn.Module) -> None:
        for child_name, child in list(parent.named_children()):
            if id(child) in replaced:
                setattr(parent, child_name, replaced[id(child)])
                continue
            new = convert(child)
            if new is not None:
                replaced[id(child)] = new
                setattr(parent, child_name, new)
            else:
                visit(child)

    visit(student)
    _move_quantizers_next_to_weights(student)
    return student


def _move_quantizers_next_to_weights(model: nn.Module) -> None:
    p = next(iter(model.parameters()), None)
    if p is not None:
        for q in activation_quantizers(model).values():
            q.to(p.device)


def quantized_layers(model: nn.Module) -> dict[str, QuantConv2d | QuantLinear]:
    """Every quantised Conv2d/Linear by module name, in ``named_modules`` order."""
    return {n: m for n, m in model.named_modules() if isinstance(m, QUANT_LAYER_TYPES)}


def activation_quantizers(model: nn.Module) -> dict[str, ActivationQuantizer]:
    """Every activation quantiser by module name (``<activation name>.quantizer``)."""
    return {n: m for n, m in model.named_modules() if isinstance(m, ActivationQuantizer)}


def integer_codes(model: nn.Module) -> dict[str, torch.Tensor]:
    """Integer codes (int8) of every quantised weight, by layer name."""
    return {n: integer_codes_of(m.weight, m.w_bits) for n, m in quantized_layers(model).items()}


def set_activation_ranges_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (True) or unfreeze (False) every activation range of ``model``."""
    for q in activation_quantizers(model).values():
        q.set_frozen(frozen)


@contextlib.contextmanager
def activation_ranges_frozen(model: nn.Module) -> Iterator[nn.Module]:
    """Freeze every activation range inside the block; restore each quantiser's state after."""
    quantizers = list(activation_quantizers(model).values())
    before = [q.is_frozen for q in quantizers]
    for q in quantizers:
        q.set_frozen(True)
    try:
        yield model
    finally:
        for q, was in zip(quantizers, before):
            q.set_frozen(was)


def calibrate_activation_ranges(model: nn.Module, batches: Iterable[Any]) -> int:
    """Unfreeze the activation ranges, run ``batches`` through ``model`` under no_grad, freeze.

    Each batch is an input tensor or a tuple/list whose first item is the input. The model
    runs in eval mode (BN statistics untouched) and its train/eval flags are restored after.
    Ranges continue from their current state (call ``reset_range`` on the quantisers to
    start afresh). Returns the number of batches used.
    """
    quantizers = activation_quantizers(model)
    if not quantizers:
        raise UserError("model has no activation quantisers to calibrate (was it quantised?)")
    modes = {m: m.training for m in model.modules()}
    set_activation_ranges_frozen(model, False)
    count = 0
    try:
        model.eval()
        with torch.no_grad():
            for batch in batches:
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x)
                count += 1
    finally:
        set_activation_ranges_frozen(model, True)
        for m, mode in modes.items():
            m.training = mode
    if count == 0:
        raise UserError("calibrate_activation_ranges got no batches")
    return count


# weighted layers quantize_model leaves in full precision (reported by quantization_spec)
_UNQUANTIZED_WEIGHT_TYPES = (
    nn.Conv1d,
    nn.Conv3d,
    nn.ConvTranspose1d,
    nn.ConvTranspose2d,
    nn.ConvTranspose3d,
    nn.Embedding,
    nn.Bilinear,
)


def _one_or_each(values: list[int], per: dict[str, int]) -> Any:
    """Bits as one number when every layer has the same, else per layer (None when there is no layer)."""
    if not values:
        return None
    return values[0] if len(values) == 1 else per


def _not_quantized(model: nn.Module) -> dict[str, Any]:
    """What stays in full precision in a quantised ``model``: the fixed list and the modules found."""
    other_acts = [
        {"name": n, "type": type(m).__name__}
        for n, m in model.named_modules()
        if isinstance(m, _OTHER_ACTIVATIONS) and not isinstance(m, (nn.ReLU, nn.ReLU6))
    ]
    other_weights = [
        {"name": n, "type": type(m).__name__}
        for n, m in model.named_modules()
        if isinstance(m, _UNQUANTIZED_WEIGHT_TYPES)
    ]
    return {
        "biases": True,
        "network_input": True,
        "residual_adds": True,
        "batchnorm": "not folded; runs in full precision",
        "functional_activations": "activations applied as functions (F.relu, torch.sigmoid, ...) "
        "are invisible and stay full precision",
        "other_activation_modules": other_acts,
        "other_activation_module_count": len(other_acts),
        "other_weight_layers": other_weights,
    }


def quantization_spec(model: nn.Module) -> dict[str, Any]:
    """What is quantised in ``model`` and how, as a JSON-serialisable dict."""
    layers = quantized_layers(model)
    quantizers = activation_quantizers(model)
    names = list(layers)
    return {
        "scheme": SCHEME,
        "w_bits": _one_or_each(sorted({m.w_bits for m in layers.values()}), {n: m.w_bits for n, m in layers.items()}),
        "a_bits": _one_or_each(
            sorted({q.a_bits for q in quantizers.values()}), {n: q.a_bits for n, q in quantizers.items()}
        ),
        "rounding": ROUNDING,
        "weight_formula": "scale=(2^k-1)/max(max-min,1e-8); zp=round(scale*min)+2^(k-1); "
        "q=clamp(round(scale*w-zp),-2^(k-1),2^(k-1)-1); w_hat=(q+zp)/scale",
        "ste": STE,
        "activation_range": f"EMA momentum {EMA_MOMENTUM} of batch min/max while not frozen; first batch initialises",
        "quantized_layers": names,
        "first_quantized_layer": names[0] if names else None,
        "last_quantized_layer": names[-1] if names else None,
        "quantized_layer_count": len(names),
        "activation_quantizers": list(quantizers),
        "activation_quantizer_count": len(quantizers),
        "activation_ranges_frozen": sum(q.is_frozen for q in quantizers.values()),
        "not_quantized": _not_quantized(model),
    }
