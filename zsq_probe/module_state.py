"""Run code on models and put back exactly what it found: train/eval flags and every buffer (BN running
statistics, activation-quantiser ranges), with activation ranges frozen inside the block.  Probes and the
Hessian operator use this so that measuring never changes what is measured."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING

from zsq_probe.quantization.quantizer import activation_ranges_frozen

if TYPE_CHECKING:
    import torch


@contextlib.contextmanager
def preserved_state(*models: torch.nn.Module, mode: str | None = None, freeze_ranges: bool = True) -> Iterator[None]:
    """Run a block on `models` and put back every training flag and buffer afterwards.

    Inside the block: `mode`, frozen activation ranges, and private clones of every buffer (so BN running
    statistics and activation ranges never move, and autograd graphs built inside keep their own copies).
    After it: every module's training flag and its original buffer objects, untouched.

    Args:
        *models: The modules to preserve.
        mode: "eval" or "train" to switch every model to that mode inside the block; None keeps each as found.
        freeze_ranges: Freeze the activation quantisers' ranges inside the block.

    Yields:
        None, once the models are prepared.
    """
    saved: list[tuple[list[torch.nn.Module], list[bool], list[dict[str, torch.Tensor | None]]]] = []
    for model in models:
        modules = list(model.modules())
        saved.append((modules, [m.training for m in modules], [dict(m._buffers) for m in modules]))
    try:
        for modules, _, buffers in saved:
            for m, bufs in zip(modules, buffers):
                for name, b in bufs.items():
                    if b is not None:
                        m._buffers[name] = b.detach().clone()
        with contextlib.ExitStack() as stack:
            for model in models:
                if freeze_ranges:
                    stack.enter_context(activation_ranges_frozen(model))
                if mode == "eval":
                    model.eval()
                elif mode == "train":
                    model.train()
            yield
    finally:
        for modules, flags, buffers in saved:
            for m, flag, bufs in zip(modules, flags, buffers):
                m.training = flag
                m._buffers.clear()
                m._buffers.update(bufs)
