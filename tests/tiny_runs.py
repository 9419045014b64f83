"""The tiny digits runs that the end-to-end tests train: a few steps of batch 16, no warm-up epoch, one validation
batch (seconds on one core)."""

from __future__ import annotations

from collections.abc import Sequence


def tiny_train(
    preset: str, *, epochs: int | None = None, iters: int = 2, sets: Sequence[str] = (), extra: Sequence[str] = ()
) -> list[str]:
    """`zsq-probe train` flags of a tiny run: `--preset`, `--epochs` (left out when None), `--iters-per-epoch`,
    batch 16, no warm-up, one validation batch, then `--set S` for each of `sets` and the `extra` flags."""
    flags = ["--preset", preset]
    if epochs is not None:
        flags += ["--epochs", str(epochs)]
    flags += ["--iters-per-epoch", str(iters), "--batch-size", "16"]
    for setting in ("warmup_epochs=0", "val_max_batches=1", *sets):
        flags += ["--set", setting]
    return [*flags, *extra]
