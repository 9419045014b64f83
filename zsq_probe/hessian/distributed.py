"""The Hessian split across processes: each rank differentiates its share of the probe batch, every product is
summed over the ranks (all-reduce), and the estimators run on every rank in lockstep on rank 0's vectors.

From the command line, under torchrun (its own parser takes `--run` for its `--run-path`; everything after
`--` goes to zsq-probe unchanged):

    torchrun --nproc-per-node 4 -m zsq_probe -- hessian --run RUN --device cuda     # one GPU per rank
    torchrun --nproc-per-node 2 -m zsq_probe -- hessian --run RUN                   # CPU, gloo

From Python (launched by torchrun, or with the process group set up by you):

    from zsq_probe.hessian.distributed import split_across_ranks
    from zsq_probe.runs.posthoc import probe_run

    with split_across_ranks():            # joins torchrun's group (gloo on CPU, nccl on CUDA) if needed
        probe_run("RUN", "hessian")       # same rows as one process; only rank 0 writes them

Inside `split_across_ranks()` every `HessianOperator` built without an explicit `process_group` splits each of
its batches into contiguous shards, one per rank (`shard`), weights each shard's loss by its share of the
whole batch, and all-reduces every gradient and product, so `H v` is the Hessian of the loss on the whole batch
(to float summation order).  Before each product the vector is broadcast from rank 0, so every rank multiplies
rank 0's vector and the estimators (seeded alike on every rank) stay in lockstep; they run on every rank on
identical, replicated vectors.  Memory per rank is its shard's graph: a probe batch larger than one GPU fits
on several, and a rank's shard is micro-batched as before when it is given as several batches.

Requirements: the loss is a mean over samples (CE, KL), and the forward treats samples independently (BN in
eval mode, as the curvature probes run it; `mode="train"` BN would normalise per shard and is refused).
Estimators that do not go through the operator (the exact Gauss-Newton trace) run whole on every rank.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist

_ACTIVE: contextvars.ContextVar[Group | None] = contextvars.ContextVar("zsq_probe_hessian_group", default=None)


class Group:
    """A process group the Hessian is split over (`None` = torch.distributed's default group)."""

    def __init__(self, group: Any = None) -> None:
        self.dist = dist
        self.group = group
        self.rank: int = dist.get_rank(group)
        self.size: int = dist.get_world_size(group)
        self.src: int = dist.get_global_rank(group, 0) if group is not None else 0

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` summed over the ranks, in place."""
        if self.size > 1:
            self.dist.all_reduce(t, op=self.dist.ReduceOp.SUM, group=self.group)
        return t

    def broadcast(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` replaced, in place, by rank 0's."""
        if self.size > 1:
            self.dist.broadcast(t, src=self.src, group=self.group)
        return t

    def barrier(self) -> None:
        """Wait for every rank of the group."""
        if self.size > 1:
            self.dist.barrier(group=self.group)


def active() -> Group | None:
    """The group operators built now split over (inside `split_across_ranks`), else None."""
    return _ACTIVE.get()


def world_size() -> int:
    """Ranks the Hessian is split over here (1 outside `split_across_ranks`): the `world_size` column."""
    g = _ACTIVE.get()
    return g.size if g is not None else 1


def rank() -> int:
    """This process's rank in the active split (0 outside one)."""
    g = _ACTIVE.get()
    return g.rank if g is not None else 0


def is_writer() -> bool:
    """Whether this process writes results: rank 0 of the active split (every process outside one)."""
    return rank() == 0


def barrier() -> None:
    """Wait for every rank of the active split (nothing outside one)."""
    g = _ACTIVE.get()
    if g is not None:
        g.barrier()


def launched_by_torchrun() -> bool:
    """Whether this process is one of several torchrun started (WORLD_SIZE > 1 and RANK set)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1 and "RANK" in os.environ


def local_device(device: str | None) -> str | None:
    """Under torchrun, a bare 'cuda' becomes this rank's GPU (cuda:LOCAL_RANK)."""
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{int(os.environ['LOCAL_RANK'])}"
    return device


def shard(n: int, rank_: int, size: int) -> tuple[int, int]:
    """[start, stop) of rank `rank_`'s contiguous share of n samples (sizes differ by at most one)."""
    base, extra = divmod(n, size)
    start = rank_ * base + min(rank_, extra)
    return start, start + base + (1 if rank_ < extra else 0)


@contextlib.contextmanager
def split_across_ranks(
    group: Any = None, backend: str | None = None, device: str | None = None
) -> Iterator[Group | None]:
    """Split every HessianOperator built inside over the ranks of `group` (default: the whole world).

    Joins the process group from torchrun's environment when none is set up yet (backend: `backend`, else nccl
    for a CUDA `device` and gloo otherwise) and leaves it afterwards.  One process without a group: nothing is
    split (world_size 1)."""
    created = False
    if dist.is_available() and not dist.is_initialized() and launched_by_torchrun():
        want = backend or ("nccl" if device and str(device).startswith("cuda") else "gloo")
        local = local_device(device)
        if want == "nccl" and local:
            torch.cuda.set_device(torch.device(local))
        dist.init_process_group(backend=want)
        created = True
    g = Group(group) if dist.is_available() and dist.is_initialized() else None
    token = _ACTIVE.set(g)
    try:
        yield g
    finally:
        _ACTIVE.reset(token)
        if created:
            dist.destroy_process_group()
