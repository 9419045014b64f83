"""Random streams.  Every consumer of randomness draws from its own `torch.Generator`, seeded from the run
seed, the epoch and a stream id, so a resumed run draws what an uninterrupted one drew and a probe never
moves the training streams."""

from __future__ import annotations

import zlib

import torch

# stream ids: the trainer's (1, 2, 9) and the probes' own (5, 6)
SAMPLE_STREAM = 1  # generator noise and labels, or indices into the distilled set
DATA_ORDER_STREAM = 2  # real-data shuffling (KD baseline)
PROBE_BATCH_STREAM = 5  # the curvature / checkpoint-cosine probe batch
PROBE_VECTOR_STREAM = 6  # Hutchinson / Lanczos / random slice directions
ZEROQ_STREAM = 9  # ZeroQ distillation (epoch 0)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent, resume-proof seeds: each (epoch, stream) gets its own generator."""
    return (seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63 - 1)


def stream(seed: int, epoch: int, stream_id: int) -> torch.Generator:
    """A CPU generator for (run seed, epoch, stream)."""
    return torch.Generator().manual_seed(epoch_seed(seed, epoch, stream_id))


def sub_seed(seed: int, *labels: str) -> int:
    """A seed of its own for each labelled consumer of one probe seed (CE and KL, each estimator), so their
    random vectors are independent and their errors do not move together."""
    mix = zlib.crc32("/".join(labels).encode())
    return (int(seed) * 1_000_003 + mix * 7_368_787) % (2**63 - 1)
