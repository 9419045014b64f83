"""Torch's intra-op CPU thread count for the length of a block, put back afterwards.

Results depend on it: a different count splits reductions differently, so float round-off differs (by how much:
docs/cli.md, "Threads").  A run records the count it trained with in config.json (`threads`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from zsq_probe.errors import UserError


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Inside the block torch uses `threads` CPU threads (None: as it is); yields the count in force.  The
    previous count comes back afterwards.  A count below 1 is a UserError (`--threads`)."""
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserError(f"threads must be an integer >= 1, got {threads!r}")
    before = torch.get_num_threads()
    if threads is not None and threads != before:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
