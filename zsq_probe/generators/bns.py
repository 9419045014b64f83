"""GDFQ's BN-statistics (BNS) loss over a teacher's BatchNorm2d layers.

Fact (docs/reference.md#bn-statistics-loss): forward hooks on every BatchNorm2d of the teacher take
the BN *input*'s per-channel batch mean and biased variance; ``BNS = mean over BN layers of
MSE(batch_mean, running_mean) + MSE(batch_var, running_var)``.  The teacher stays in eval mode
(running statistics frozen); gradients flow through it to the generator.

Usage::

    with BNStatisticsLoss(teacher) as bns:
        logits = teacher(generator(z, y))
    loss = ce + 0.1 * bns.loss()     # works inside or after the block; hooks are gone after it

Each teacher forward inside the block overwrites the recorded statistics (the last forward wins).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.hooks import RemovableHandle

from zsq_probe.errors import UserError
from zsq_probe.generators.common import running_stats


class BNStatisticsLoss:
    """Context manager recording BN-input statistics of ``teacher``; :meth:`loss` gives GDFQ's BNS.

    Args:
        teacher: The model whose BatchNorm2d layers are matched.

    Raises:
        UserError: `teacher` is not a module, has no BatchNorm2d, or one of them tracks no running statistics.
    """

    def __init__(self, teacher: nn.Module) -> None:
        if not isinstance(teacher, nn.Module):
            raise UserError(f"BNStatisticsLoss: the teacher must be a torch.nn.Module, got {type(teacher).__name__}")
        self.layers = [m for m in teacher.modules() if isinstance(m, nn.BatchNorm2d)]
        if not self.layers:
            raise UserError(
                "BNStatisticsLoss: the teacher has no BatchNorm2d layer, so there are no BN "
                "statistics to match (GDFQ-style generators need a teacher with BatchNorm)"
            )
        for m in self.layers:
            if m.running_mean is None or m.running_var is None:
                raise UserError(f"BNStatisticsLoss: a BatchNorm2d of the teacher ({m}) tracks no running statistics")
        self._stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        self._handles: list[RemovableHandle] = []

    @property
    def num_layers(self) -> int:
        """The teacher's BatchNorm2d layers whose statistics are matched."""
        return len(self.layers)

    def _hook(self, index: int) -> Callable[[nn.Module, tuple[torch.Tensor, ...], torch.Tensor], None]:
        def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            x = inputs[0]
            self._stats[index] = (x.mean(dim=(0, 2, 3)), x.var(dim=(0, 2, 3), unbiased=False))

        return hook

    def attach(self) -> BNStatisticsLoss:
        """Start recording the BN layers' batch statistics (idempotent); returns self."""
        if not self._handles:
            self._handles = [m.register_forward_hook(self._hook(i)) for i, m in enumerate(self.layers)]
        return self

    def detach(self) -> None:
        """Stop recording: remove the hooks."""
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> BNStatisticsLoss:
        return self.attach()

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def clear(self) -> None:
        """Forget the statistics recorded so far (before the next forward pass)."""
        self._stats.clear()

    def batch_stats(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Recorded (mean, biased var) per BN layer that ran, in module order."""
        return [self._stats[i] for i in sorted(self._stats)]

    def loss(self) -> torch.Tensor:
        """Mean over the BN layers that ran of MSE(batch mean, running mean) + MSE(batch var, running var)."""
        if not self._stats:
            raise UserError(
                "BNStatisticsLoss: no teacher forward pass was recorded; run the teacher inside "
                "the `with BNStatisticsLoss(teacher)` block before asking for the loss"
            )
        terms = []
        for i in sorted(self._stats):
            mean, var = self._stats[i]
            running_mean, running_var = running_stats(self.layers[i], "BNStatisticsLoss")
            rm = running_mean.to(mean.dtype)
            rv = running_var.to(var.dtype)
            terms.append(F.mse_loss(mean, rm) + F.mse_loss(var, rv))
        return torch.stack(terms).mean()
