"""LARS: layer-wise adaptive rate scaling (You, Gitman, Ginsburg 2017, "Large Batch Training of Convolutional
Networks", Algorithm 1), pure PyTorch, any device.

For every parameter tensor w (a "layer") with gradient g, weight decay beta, momentum m, global lr gamma and
trust coefficient eta:

    local_lr = eta * ||w|| / (||g|| + beta * ||w||)
    v        = m * v + gamma * local_lr * (g + beta * w)
    w        = w - v

When ||w|| or ||g|| is 0 the local lr is 1 (the ratio is undefined; the common choice in LARS implementations).
Used by the `gdfq-lars` preset (paper Tab. 3, Baseline-LARS); gradient inundation wraps it like any optimiser.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import overload

import torch
from torch.optim.optimizer import ParamsT

from zsq_probe.errors import UserError


class LARS(torch.optim.Optimizer):
    """LARS with heavy-ball momentum; state per parameter: ``momentum_buffer``.

    Args:
        params: The parameters (or parameter groups) to optimise.
        lr: The global learning rate gamma (> 0).
        momentum: The heavy-ball momentum m, in [0, 1).
        weight_decay: The weight decay beta (>= 0).
        trust_coef: The trust coefficient eta (> 0).

    Raises:
        UserError: A hyper-parameter is out of its range.
    """

    def __init__(
        self, params: ParamsT, lr: float, momentum: float = 0.9, weight_decay: float = 0.0, trust_coef: float = 1e-3
    ) -> None:
        if not lr > 0:
            raise UserError(f"LARS: lr={lr} (must be > 0)")
        if not 0.0 <= momentum < 1.0:
            raise UserError(f"LARS: momentum={momentum} (in [0, 1))")
        if not weight_decay >= 0:
            raise UserError(f"LARS: weight_decay={weight_decay} (must be >= 0)")
        if not trust_coef > 0:
            raise UserError(f"LARS: trust_coef={trust_coef} (must be > 0)")
        super().__init__(
            params, {"lr": lr, "momentum": momentum, "weight_decay": weight_decay, "trust_coef": trust_coef}
        )

    @staticmethod
    def local_lr(w: torch.Tensor, g: torch.Tensor, weight_decay: float, trust_coef: float) -> torch.Tensor:
        """Eta * ||w|| / (||g|| + beta * ||w||), or 1 where a norm is zero (a 0-dim tensor on w's device)."""
        w_norm = torch.linalg.vector_norm(w)
        g_norm = torch.linalg.vector_norm(g)
        ratio = trust_coef * w_norm / (g_norm + weight_decay * w_norm)
        ok = (w_norm > 0) & (g_norm > 0)
        return torch.where(ok, ratio, torch.ones_like(ratio))  # no host sync

    @overload
    def step(self, closure: None = None) -> None: ...

    @overload
    def step(self, closure: Callable[[], float]) -> float: ...

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:
        """One LARS step on every parameter with a gradient: momentum SGD scaled per layer by `local_lr`.

        Args:
            closure: Re-evaluates the model and returns the loss (run with gradients enabled), or None.

        Returns:
            The closure's loss, or None without a closure.

        Raises:
            UserError: A parameter has a sparse gradient.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, m, wd, eta = group["lr"], group["momentum"], group["weight_decay"], group["trust_coef"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if g.is_sparse:
                    raise UserError("LARS does not support sparse gradients")
                scale = self.local_lr(p, g, wd, eta) * lr
                update = g.add(p, alpha=wd) if wd != 0 else g.clone()
                update.mul_(scale)
                state = self.state[p]
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = update  # v_1 = m * 0 + update
                else:
                    buf.mul_(m).add_(update)
                p.sub_(buf)
        return loss
