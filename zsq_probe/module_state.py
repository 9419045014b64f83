"""Run code on models and put back exactly what it found: train/eval flags and every buffer (BN running
statistics, activation-quantiser ranges), with activation ranges frozen inside the block.  Probes and the
Hessian operator use this so that measuring never changes what is measured."""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def preserved_state(*models, mode: str | None = None, freeze_ranges: bool = True):
    """Inside the block: `mode` ("eval", "train" or None = as found) and frozen activation ranges.  After it:
    every module's training flag and every buffer as found, buffers restored in place (whoever holds a
    buffer sees the old values)."""
    from zsq_probe.quant import activation_ranges_frozen

    saved = []
    for model in models:
        modules = list(model.modules())
        saved.append((modules, [m.training for m in modules],
                      [{k: (b.detach().clone() if b is not None else None) for k, b in m._buffers.items()}
                       for m in modules]))
    try:
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
                for k, b in bufs.items():
                    current = m._buffers.get(k)
                    if b is not None and current is not None and current.shape == b.shape:
                        with torch.no_grad():
                            current.copy_(b)
                    else:
                        m._buffers[k] = b
