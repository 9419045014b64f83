"""Gradient inundation (GI), AIT paper §4.2, as a wrapper around any torch optimiser.

Per quantised layer l (docs/reference.md#gradient-inundation):

* ``q0`` = the layer's integer codes before the step;
* the base optimiser proposes ``d = w_base - w_old`` (for Nesterov SGD ``-lr*(g + m*(m*buf + g))``);
  the optimiser's own state (momentum, Adam moments) is updated by the base step,
  unscaled: κ scales the applied step only;
* ``frac(κ)`` = share of codes that differ from ``q0`` when ``w' = w_old + κ*d``, with the
  per-channel min/max recomputed on ``w'`` (paper eq. 10-12, ``T = p*dim(θ_l)``);
* κ = 1 if ``frac(1) >= p`` (never scaled down); else κ doubles until ``frac(κ) >= p``,
  then a binary search between κ/2 and κ (at most ``bisection_steps`` = 5 steps, early stop
  when ``|frac - p| < p/100``) keeps the smallest κ found with ``frac >= p``;
* warm-up (first GI epoch): κ <= 128; afterwards κ <= ``kappa_cap`` (2**20), a hard cap
  the reference lacks (it loops forever on a zero gradient). A layer that cannot reach p
  stops at the cap and is flagged ``"cap"``.

BN parameters, biases and every other parameter take the plain base step.

Where we differ from the AIT reference code, on purpose: ``d`` is whatever the base
optimiser did (weight decay included; the reference re-derives a Nesterov direction without
it), the result is the smallest κ *found* with ``frac >= p`` (the reference keeps the last
midpoint, which may fall short of p), and a layer at the cap is not bisected further.
``rule="reference"`` (config ``gi_rule``) runs the reference's κ search instead, layer by layer
(``_inundate_reference``; GDFQ_AIT/optimizer.py:204-233): no early stop while doubling, bisection also at
the warm-up bound (ending near 126), the last midpoint applied; ``last_probes`` records its (κ, count) pairs.

The search runs for all layers at once on a copy of the GI weights grouped by channel
length (one dense (channels, length) matrix per group, per-channel scale/zero point and
per-layer κ broadcast along rows): κ, the bounds and the counts are device tensors, with
one host sync per search iteration (to stop) and one at the end (κ and the statistics).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn as nn

from zsq_probe.errors import UserError
from zsq_probe.quantization.quantizer import (
    QUANT_LAYER_TYPES,
    QuantConv2d,
    QuantLinear,
    check_bits,
    scale_and_zero_point,
)

FLAG_CAP = "cap"  # frac(κ) < p even at the cap (zero gradient, tiny step, p unreachable)
FLAG_NONFINITE = "nonfinite"  # the proposed step is NaN/inf: κ not applied (base result kept)
FLAG_NOGRAD = "nograd"  # weight.grad is None: the base optimiser did not step this layer
_FLAG_CODES = {1: FLAG_CAP, 2: FLAG_NONFINITE, 3: FLAG_NOGRAD}
# κ search rules: "ours" (module docstring) | "reference" (the AIT code's SGD_adalr.step, GDFQ_AIT/optimizer.py:204-233)
GI_RULES = ("ours", "reference")


class _Bucket:
    """GI layers whose output channels have the same length L, stacked as one (rows, L) matrix.

    Every evaluation of frac(κ) is a handful of dense ops per bucket with per-row κ, scale and
    zero point broadcast along the row: no per-element index arrays, few kernels.
    """

    def __init__(self, layer_ids: list[int], weights: list[torch.Tensor], bits: list[int]) -> None:
        self.layer_ids = layer_ids
        self.weights = weights
        self.rows = [w.shape[0] for w in weights]
        self.length = weights[0].numel() // weights[0].shape[0]
        dev, dtype = weights[0].device, weights[0].dtype
        n_rows = sum(self.rows)
        rows_t = torch.tensor(self.rows)
        self.row_layer = torch.repeat_interleave(torch.tensor(layer_ids), rows_t).to(dev)
        self.row_start = [0, *torch.tensor(self.rows).cumsum(0).tolist()[:-1]]
        bits_row = torch.repeat_interleave(torch.tensor(bits, dtype=torch.float64), rows_t).unsqueeze(1)
        self.levels = (2.0**bits_row - 1).to(device=dev, dtype=dtype)  # 2^k - 1 per row
        self.half = (2.0 ** (bits_row - 1)).to(device=dev, dtype=dtype)  # 2^(k-1) per row
        if len(set(bits)) == 1:
            self.qmin: Any = -(2 ** (bits[0] - 1))
            self.qmax: Any = 2 ** (bits[0] - 1) - 1
        else:
            self.qmin = -self.half
            self.qmax = self.half - 1
        shape = (n_rows, self.length)
        self.old = torch.empty(shape, device=dev, dtype=dtype)  # weights before the step
        self.d = torch.empty(shape, device=dev, dtype=dtype)  # the base optimiser's step
        self.w = torch.empty(shape, device=dev, dtype=dtype)  # old + κ d
        self.t = torch.empty(shape, device=dev, dtype=dtype)  # codes of w
        self.q0 = torch.empty(shape, device=dev, dtype=dtype)  # codes before the step
        self.ne = torch.empty(shape, device=dev, dtype=torch.bool)

    def snapshot(self, out: torch.Tensor) -> None:
        torch.cat([w.detach().view(r, self.length) for w, r in zip(self.weights, self.rows)], dim=0, out=out)

    def codes(self, w: torch.Tensor, out: torch.Tensor, r0: int = 0) -> torch.Tensor:
        """Per-row (= per output channel) codes of ``w`` (this bucket's rows r0:r0+len(w)) into
        ``out``; returns the rows whose min/max is not finite. Same arithmetic as
        ``zsq_probe.quantization.quantizer.integer_codes_of``."""
        r1 = r0 + w.shape[0]
        lo = w.amin(dim=1, keepdim=True)  # amin/amax: torch.aminmax is ~10x slower on CPU
        hi = w.amax(dim=1, keepdim=True)
        scale, zero_point = scale_and_zero_point(lo, hi, self.levels[r0:r1], self.half[r0:r1])
        qmin = self.qmin if isinstance(self.qmin, int) else self.qmin[r0:r1]
        qmax = self.qmax if isinstance(self.qmax, int) else self.qmax[r0:r1]
        torch.mul(w, scale, out=out)
        out.sub_(zero_point).round_().clamp_(qmin, qmax)
        return ~(torch.isfinite(lo) & torch.isfinite(hi)).squeeze(1)

    def count_changed(self, counts: torch.Tensor, r0: int = 0, r1: int | None = None) -> None:
        """Add, per layer, the codes in ``t`` (rows r0:r1) that differ from ``q0`` to ``counts``."""
        r1 = self.t.shape[0] if r1 is None else r1
        ne = self.ne[r0:r1]
        torch.ne(self.t[r0:r1], self.q0[r0:r1], out=ne)
        counts.index_add_(0, self.row_layer[r0:r1], ne.sum(dim=1))

    def scaled(self, kappa: torch.Tensor, r0: int = 0, r1: int | None = None) -> torch.Tensor:
        """``old + κ_l * d`` for rows r0:r1, into ``w`` (a mul then an add, never fused)."""
        r1 = self.t.shape[0] if r1 is None else r1
        k = kappa.to(self.d.dtype).index_select(0, self.row_layer[r0:r1]).unsqueeze(1)
        w = self.w[r0:r1]
        torch.mul(self.d[r0:r1], k, out=w)
        return w.add_(self.old[r0:r1])

    def row_span(self, active: list[bool]) -> tuple[int, int] | None:
        """Rows covering this bucket's layers that are still searching (None if none is)."""
        js = [j for j, i in enumerate(self.layer_ids) if active[i]]
        if not js:
            return None
        return self.row_start[js[0]], self.row_start[js[-1]] + self.rows[js[-1]]


class _Layout:
    """The GI layers grouped into buckets of equal channel length."""

    def __init__(self, names: list[str], weights: list[torch.Tensor], bits: list[int]) -> None:
        self.names = names
        self.weights = weights
        self.device = weights[0].device
        self.shapes = [tuple(w.shape) for w in weights]
        self.numels = [w.numel() for w in weights]
        by_length: dict[int, list[int]] = {}
        for i, w in enumerate(weights):
            by_length.setdefault(w.numel() // w.shape[0], []).append(i)
        self.buckets = [
            _Bucket(ids, [weights[i] for i in ids], [bits[i] for i in ids]) for _, ids in sorted(by_length.items())
        ]
        self.numel_t = torch.tensor(self.numels, dtype=torch.float64, device=self.device)
        self.bits = list(bits)
        self._masks: dict[tuple[bool, ...], torch.Tensor] = {}

    def matches(self, weights: list[torch.Tensor], bits: list[int]) -> bool:
        return (
            len(weights) == len(self.weights)
            and all(
                a is b and tuple(a.shape) == s and a.device == self.device
                for a, b, s in zip(weights, self.weights, self.shapes)
            )
            and all(a.dtype == self.buckets[0].d.dtype for a in weights)
            and bits == self.bits
        )

    def mask(self, values: list[bool]) -> torch.Tensor:
        """A device bool tensor of ``values``, cached: no host-to-device copy when unchanged."""
        key = tuple(values)
        if key not in self._masks:
            self._masks[key] = torch.tensor(values, dtype=torch.bool, device=self.device)
        return self._masks[key]

    def new_counts(self) -> torch.Tensor:
        return torch.zeros(len(self.names), dtype=torch.int64, device=self.device)

    def per_layer_any(self, bucket: _Bucket, row_mask: torch.Tensor, hits: torch.Tensor) -> None:
        hits.index_add_(0, bucket.row_layer, row_mask.to(torch.int64))


class GradientInundation:
    """Wrap ``base_optimizer`` so each quantised layer in ``layers`` changes at least a share
    ``p`` of its integer codes per step (AIT §4.2). See the module docstring for the rule.

    ``layers`` maps names to :class:`~zsq_probe.quantization.quantizer.QuantConv2d` /
    :class:`~zsq_probe.quantization.quantizer.QuantLinear` modules whose weights the base optimiser holds
    (``zsq_probe.quantization.quantizer.quantized_layers(student)``). Attach learning-rate schedulers to
    ``gi.base`` (they need a ``torch.optim.Optimizer``); ``param_groups`` are shared.

    After every :meth:`step`: ``last_kappa`` (κ applied per layer), ``last_changed_codes``
    (codes that changed this step), ``last_fraction`` (that count / weights of the layer)
    and ``last_flags`` (only flagged layers: ``"cap"``, ``"nonfinite"``, ``"nograd"``).
    A ``"nonfinite"`` layer keeps the base optimiser's result unscaled (κ reported 1.0);
    a ``"nograd"`` layer (grad None) is left to the base optimiser (κ 1.0).
    """

    def __init__(
        self,
        base_optimizer: torch.optim.Optimizer,
        layers: Mapping[str, nn.Module],
        p: float,
        kappa_cap_warmup: float = 128,
        kappa_cap: float = 2**20,
        bisection_steps: int = 5,
        warmup: bool = True,
        rule: str = "ours",
    ) -> None:
        if not hasattr(base_optimizer, "step") or not hasattr(base_optimizer, "param_groups"):
            raise UserError(f"GradientInundation needs a torch optimiser, got {type(base_optimizer).__name__}")
        if not isinstance(layers, Mapping) or not layers:
            raise UserError("GradientInundation needs a non-empty dict of quantised layers (name -> module)")
        held = {id(p) for g in base_optimizer.param_groups for p in g["params"]}
        quant_layers: dict[str, QuantConv2d | QuantLinear] = {}
        for name, m in layers.items():
            if not isinstance(m, QUANT_LAYER_TYPES):
                raise UserError(f"GI layer '{name}' is a {type(m).__name__}, not a QuantConv2d/QuantLinear")
            check_bits(m.w_bits, f"w_bits of GI layer '{name}'")
            if id(m.weight) not in held:
                raise UserError(f"the weight of GI layer '{name}' is not among the base optimiser's parameters")
            quant_layers[name] = m
        if len({id(m.weight) for m in quant_layers.values()}) != len(layers):
            raise UserError("GI layers must have distinct weights")
        for what, cap in (("kappa_cap_warmup", kappa_cap_warmup), ("kappa_cap", kappa_cap)):
            if isinstance(cap, bool) or not isinstance(cap, (int, float)) or not 1 <= cap < math.inf:
                raise UserError(f"{what} must be a finite number >= 1, got {cap!r}")
        if isinstance(bisection_steps, bool) or not isinstance(bisection_steps, int) or bisection_steps < 0:
            raise UserError(f"bisection_steps must be an integer >= 0, got {bisection_steps!r}")
        if rule not in GI_RULES:
            raise UserError(f"gi_rule={rule!r} (one of {', '.join(GI_RULES)})")
        self.rule = rule
        self.base = base_optimizer
        self.layers = quant_layers
        self.p = p
        self.kappa_cap_warmup = float(kappa_cap_warmup)
        self.kappa_cap = float(kappa_cap)
        self.bisection_steps = bisection_steps
        self.warmup = bool(warmup)
        self._layout: _Layout | None = None
        self.last_kappa: dict[str, float] = {}
        self.last_changed_codes: dict[str, int] = {}
        self.last_fraction: dict[str, float] = {}
        self.last_flags: dict[str, str] = {}
        self.last_search_iterations = 0
        self.last_probes: dict[str, list[tuple[float, int]]] = {}  # rule="reference" only: (κ, changed codes)

    # ----------------------------------------------------------------- settings

    @property
    def p(self) -> float:
        """The share of each layer's codes a step must change (in [0, 1]; the trainer schedules it)."""
        return self._p

    @p.setter
    def p(self, value: float) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise UserError(f"GI proportion p must be a number in [0, 1], got {value!r}")
        self._p = float(value)

    @property
    def kappa_limit(self) -> float:
        """The cap in force: ``kappa_cap_warmup`` during warm-up, ``kappa_cap`` after."""
        return min(self.kappa_cap_warmup, self.kappa_cap) if self.warmup else self.kappa_cap

    def set_warmup(self, on: bool) -> None:
        """Switch the warm-up cap (``kappa_cap_warmup``) on or off."""
        self.warmup = bool(on)

    # ----------------------------------------------------------------- optimiser protocol

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The base optimiser's parameter groups (shared: a learning rate set here is the base's)."""
        return self.base.param_groups

    @property
    def state(self) -> Any:
        """The base optimiser's per-parameter state (momentum, moments)."""
        return self.base.state

    @property
    def defaults(self) -> dict[str, Any]:
        """The base optimiser's default hyper-parameters."""
        return self.base.defaults

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """Add a parameter group to the base optimiser (its layers take the plain base step)."""
        self.base.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the gradients, as the base optimiser does."""
        self.base.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The base optimiser's state and GI's settings (p, warm-up, caps, bisection steps, rule, layers)."""
        return {
            "base": self.base.state_dict(),
            "gradient_inundation": {
                "p": self.p,
                "warmup": self.warmup,
                "kappa_cap_warmup": self.kappa_cap_warmup,
                "kappa_cap": self.kappa_cap,
                "bisection_steps": self.bisection_steps,
                "rule": self.rule,
                "layers": list(self.layers),
            },
        }

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Put back a :meth:`state_dict` of an optimiser over the same layers."""
        if not isinstance(state_dict, Mapping) or set(state_dict) != {"base", "gradient_inundation"}:
            raise UserError("not a GradientInundation state dict (expected keys 'base' and 'gradient_inundation')")
        gi = state_dict["gradient_inundation"]
        if list(gi.get("layers", [])) != list(self.layers):
            raise UserError("GradientInundation state dict is for other layers than this optimiser's")
        self.base.load_state_dict(state_dict["base"])
        self.p = gi["p"]
        self.warmup = bool(gi["warmup"])
        self.kappa_cap_warmup = float(gi["kappa_cap_warmup"])
        self.kappa_cap = float(gi["kappa_cap"])
        self.bisection_steps = int(gi["bisection_steps"])
        self.rule = gi.get("rule", "ours")

    def __repr__(self) -> str:
        return (
            f"GradientInundation(p={self.p}, rule={self.rule}, layers={len(self.layers)}, warmup={self.warmup}, "
            f"kappa_limit={self.kappa_limit:g}, base={self.base!r})"
        )

    # ----------------------------------------------------------------- the step

    def _current_layout(self) -> _Layout:
        names = list(self.layers)
        weights = [self.layers[n].weight for n in names]
        bits = [check_bits(self.layers[n].w_bits, f"w_bits of GI layer '{n}'") for n in names]
        if self._layout is None or not self._layout.matches(weights, bits):
            if len({(w.device, w.dtype) for w in weights}) != 1:
                raise UserError("all GI layers' weights must share one device and dtype")
            if weights[0].dtype not in (torch.float32, torch.float64):
                raise UserError(f"GI needs float32 or float64 weights, got {weights[0].dtype}")
            self._layout = _Layout(names, weights, bits)
        return self._layout

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One base-optimiser step, then κ per GI layer (see the class docstring)."""
        layout = self._current_layout()
        with torch.no_grad():
            for b in layout.buckets:
                b.snapshot(b.old)
        loss = self.base.step(closure) if closure is not None else self.base.step()
        with torch.no_grad():
            if self.rule == "reference":
                self._inundate_reference(layout)
            else:
                self._inundate(layout)
        return loss

    def _inundate(self, layout: _Layout) -> None:
        """rule="ours": κ per layer, searched for all layers at once (module docstring), then applied."""
        names = layout.names
        count1, nonfinite = _base_step_counts(layout)
        nograd = layout.mask([self.layers[n].weight.grad is None for n in names])
        search = _KappaSearch(count1, (count1 / layout.numel_t >= self.p) | nonfinite | nograd, self)
        iterations = search.run(layout)
        kappa = torch.where(nonfinite | nograd, torch.ones_like(search.hi), search.hi)
        flag = torch.zeros(len(names), dtype=torch.float64, device=layout.device)
        flag = torch.where(search.at_cap, 1.0, flag)
        flag = torch.where(nonfinite, 2.0, flag)
        flag = torch.where(nograd, 3.0, flag)
        stats = torch.stack([kappa, search.count_hi.to(torch.float64), flag]).cpu().tolist()  # the final sync
        _apply_kappa(layout, kappa, stats[0])
        self.last_search_iterations = iterations
        self.last_kappa = dict(zip(names, stats[0]))
        self.last_changed_codes = {n: int(c) for n, c in zip(names, stats[1])}
        self.last_fraction = {n: int(c) / k for n, c, k in zip(names, stats[1], layout.numels)}
        self.last_flags = {n: _FLAG_CODES[int(f)] for n, f in zip(names, stats[2]) if f}

    def _inundate_reference(self, layout: _Layout) -> None:
        """rule="reference": the κ search of the AIT code, layer by layer (GDFQ_AIT/optimizer.py:204-233,
        commit 13a6c8c).  κ doubles until frac(κ) >= p, with no early stop, or until κ reaches the cap
        (the reference stops doubling at κ > 100 in warm-up, i.e. at 128, and has no cap after warm-up; we
        keep ``kappa_cap``); then ``bisection_steps`` midpoints between κ/2 and κ, stopping when
        |frac - p| < p/100, and the *last midpoint* is applied, also when its frac < p or when the
        doubling hit the cap.  The step d is still the base optimiser's (weight decay included)."""
        names = layout.names
        kappas: dict[str, float] = {}
        changed: dict[str, int] = {}
        flags: dict[str, str] = {}
        probes: dict[str, list[tuple[float, int]]] = {}
        iterations = 0
        for b in layout.buckets:
            for j, i in enumerate(b.layer_ids):
                name = names[i]
                nograd = self.layers[name].weight.grad is None
                kappas[name], changed[name], flag, seq = self._reference_layer(b, j, layout.numels[i], nograd)
                if flag is not None:
                    flags[name] = flag
                if seq is not None:
                    iterations = max(iterations, len(seq) - 1)
                    probes[name] = seq
        self.last_search_iterations = iterations
        self.last_kappa = {n: kappas[n] for n in names}
        self.last_changed_codes = {n: changed[n] for n in names}
        self.last_fraction = {n: changed[n] / k for n, k in zip(names, layout.numels)}
        self.last_flags = {n: flags[n] for n in names if n in flags}
        self.last_probes = probes

    def _reference_layer(
        self, b: _Bucket, j: int, numel: int, nograd: bool
    ) -> tuple[float, int, str | None, list[tuple[float, int]] | None]:
        """rule="reference" for layer j of bucket b: (κ applied, codes changed, flag or None, the (κ, count)
        pairs probed or None for a layer left to the base optimiser)."""
        r0, r1 = b.row_start[j], b.row_start[j] + b.rows[j]
        old, q0, t = b.old[r0:r1], b.q0[r0:r1], b.t[r0:r1]
        b.codes(old, out=q0, r0=r0)
        b.d[r0:r1].copy_(b.weights[j].detach().view(r1 - r0, b.length))
        nonfinite = bool(b.codes(b.d[r0:r1], out=t, r0=r0).any())
        count = int(torch.ne(t, q0).sum())
        b.d[r0:r1].sub_(old)
        if nograd or nonfinite:
            return 1.0, count, FLAG_NOGRAD if nograd else FLAG_NONFINITE, None
        if count / numel >= self.p:
            return 1.0, count, None, [(1.0, count)]
        kappa, count, seq, capped = self._reference_search(b, r0, r1, numel, count)
        b.weights[j].copy_(_scaled_rows(b, r0, r1, kappa, old).view_as(b.weights[j]))
        return kappa, count, FLAG_CAP if capped else None, seq

    def _reference_search(
        self, b: _Bucket, r0: int, r1: int, numel: int, count: int
    ) -> tuple[float, int, list[tuple[float, int]], bool]:
        """The reference's doubling (no early stop; it ends at p or at the cap) and bisection of κ for rows
        r0:r1 of bucket b, whose base step changed `count` codes; returns (the last midpoint, its changed
        codes, every (κ, count) probed, whether the doubling ended at the cap short of p)."""
        p, cap = self.p, self.kappa_limit
        seq = [(1.0, count)]
        kappa = 1.0
        while True:  # doubling (reference: no early stop, break at p or past the warm-up bound)
            kappa = min(kappa * 2, cap)
            count = _changed_at(b, r0, r1, kappa)
            seq.append((kappa, count))
            if count / numel >= p or kappa >= cap:
                break
        capped = count / numel < p
        start, end, mid = kappa / 2, kappa, kappa
        for _ in range(self.bisection_steps):
            mid = (start + end) / 2
            count = _changed_at(b, r0, r1, mid)
            seq.append((mid, count))
            if abs(count / numel - p) < p / 100.0:
                break
            if count / numel < p:
                start = mid
            else:
                end = mid
        if seq[-1][0] != mid:  # the last midpoint is applied, as the reference (GDFQ_AIT/optimizer.py:233)
            count = _changed_at(b, r0, r1, mid)
        return mid, count, seq, capped


def _scaled_rows(b: _Bucket, r0: int, r1: int, kappa: float, old: torch.Tensor) -> torch.Tensor:
    """``old + κ d`` for rows r0:r1 of bucket ``b`` (a mul then an add, as :meth:`_Bucket.scaled`)."""
    return torch.mul(b.d[r0:r1], kappa, out=b.w[r0:r1]).add_(old)


def _changed_at(b: _Bucket, r0: int, r1: int, kappa: float) -> int:
    """Codes of ``old + κ d`` for rows r0:r1 of bucket ``b`` (into ``t``) that differ from ``q0``."""
    t = b.t[r0:r1]
    b.codes(_scaled_rows(b, r0, r1, kappa, b.old[r0:r1]), out=t, r0=r0)
    return int(torch.ne(t, b.q0[r0:r1]).sum())


def _base_step_counts(layout: _Layout) -> tuple[torch.Tensor, torch.Tensor]:
    """After the base step: ``q0`` (codes before it) and ``d`` (the step) in every bucket; returns per layer the
    codes the base step changed and whether its result is non-finite."""
    count1 = layout.new_counts()
    bad = layout.new_counts()
    for b in layout.buckets:
        b.codes(b.old, out=b.q0)  # q0: codes before the step
        b.snapshot(b.d)  # the base optimiser's result ...
        bad_rows = b.codes(b.d, out=b.t)  # ... its codes: frac(1) on the base's own tensor
        layout.per_layer_any(b, bad_rows, bad)
        b.count_changed(count1)
        b.d.sub_(b.old)  # d = w_base - w_old, the proposed step
    return count1, bad > 0


def _apply_kappa(layout: _Layout, kappa: torch.Tensor, kappas: list[float]) -> None:
    """Write ``old + κ d`` into the weights of every layer whose κ (``kappas``, on the host) is not 1."""
    for b in layout.buckets:
        scaled = [j for j, i in enumerate(b.layer_ids) if kappas[i] != 1.0]
        if not scaled:
            continue  # κ = 1: the weights stay the base optimiser's result, bit for bit
        for j in scaled:
            r0, r1 = b.row_start[j], b.row_start[j] + b.rows[j]
            b.weights[j].copy_(b.scaled(kappa, r0, r1).view_as(b.weights[j]))


class _KappaSearch:
    """rule="ours": the per-layer κ search state as device tensors (float64 for κ and fractions), all layers
    stepping together: doubling until frac(κ) >= p (or the cap), then bisection between κ/2 and κ."""

    def __init__(self, count1: torch.Tensor, done: torch.Tensor, gi: GradientInundation) -> None:
        n_layers, dev = count1.shape[0], count1.device
        self.p, self.tol, self.cap, self.bisection_steps = gi.p, gi.p / 100.0, gi.kappa_limit, gi.bisection_steps
        self.done = done
        self.doubling = ~done
        self.cur = torch.ones(n_layers, dtype=torch.float64, device=dev)  # largest κ known with frac < p
        self.hi = torch.ones_like(self.cur)  # κ to apply: smallest found with frac >= p (1 when done at once)
        self.count_hi = count1.clone()
        self.steps = torch.zeros(n_layers, dtype=torch.int64, device=dev)
        self.at_cap = torch.zeros(n_layers, dtype=torch.bool, device=dev)

    def run(self, layout: _Layout) -> int:
        """Search until every layer is done (one host sync per iteration); returns the iterations run."""
        max_iterations = math.ceil(math.log2(self.cap)) + 1 + self.bisection_steps
        iterations = 0
        for _ in range(max_iterations):
            searching = (~self.done).tolist()  # the one host sync per search iteration
            if not any(searching):
                break
            iterations += 1
            doubled = torch.clamp(self.cur * 2, max=self.cap)
            trial = torch.where(self.doubling, doubled, (self.cur + self.hi) / 2)
            trial = torch.where(self.done, torch.ones_like(trial), trial)
            count = layout.new_counts()
            for b in layout.buckets:  # evaluate only the rows of layers still searching
                span = b.row_span(searching)
                if span is not None:
                    b.codes(b.scaled(trial, *span), out=b.t[span[0] : span[1]], r0=span[0])
                    b.count_changed(count, *span)
            self.update(trial, doubled, count, count / layout.numel_t)
        return iterations

    def update(self, trial: torch.Tensor, doubled: torch.Tensor, count: torch.Tensor, frac: torch.Tensor) -> None:
        """One iteration's outcome: the codes changed at κ = ``trial`` (``doubled`` where a layer doubles)."""
        ok = frac >= self.p
        near = (frac - self.p).abs() < self.tol
        active = ~self.done
        in_doubling = active & self.doubling
        in_bisection = active & ~self.doubling
        found = in_doubling & ok  # p reached: bisect between κ/2 (cur) and κ
        capped = in_doubling & ~ok & (doubled >= self.cap)
        grow = in_doubling & ~ok & ~capped
        accept = found | (in_bisection & ok) | capped
        self.hi = torch.where(accept, trial, self.hi)
        self.count_hi = torch.where(accept, count, self.count_hi)
        self.cur = torch.where(grow | (in_bisection & ~ok), trial, self.cur)
        self.steps = self.steps + in_bisection.to(torch.int64)
        self.at_cap = self.at_cap | capped
        finished = (
            capped
            | (found & (near | (self.bisection_steps == 0)))
            | (in_bisection & (near | (self.steps >= self.bisection_steps)))
        )
        self.doubling = self.doubling & ~found
        self.done = self.done | finished
