"""The probe protocol: what a probe observes, when it runs, and how its rows reach parquet.

A probe is a trainer Observer (zsq_probe.train) that
  * says when it wants the per-term gradients (`wants_term_gradients`, every `probe_every_steps`);
  * measures in `on_step` / `on_epoch_end` without changing training: it draws from its own random
    streams, and leaves modes, buffers and activation ranges as it found them (`observing`);
  * collects rows with `emit(table, **columns)`; at each epoch end the rows of the epoch are written as
    one parquet part per table (`RUN/probes/<table>/part-e<epoch>.parquet`), so a crash never loses an
    earlier epoch and a resumed run rewrites, never duplicates, the epochs after its checkpoint.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from zsq_probe.store import epoch_key
from zsq_probe.train import Observer, epoch_seed

# stream ids for epoch_seed(): the trainer uses 1 (samples) and 2 (data order); probes use their own
PROBE_BATCH_STREAM = 5
PROBE_VECTOR_STREAM = 6


class Probe(Observer):
    tables: tuple[str, ...] = ()

    def __init__(self, cfg, origin: str = "online"):
        self.cfg = cfg
        self.origin = origin
        self.rows: dict[str, list[dict]] = {t: [] for t in self.tables}
        self.run_name = ""

    def on_train_start(self, trainer) -> None:
        self.run_name = trainer.run.name

    def emit(self, table: str, **columns) -> None:
        self.rows[table].append({"run": self.run_name, "method": self.cfg.method, **columns})

    def flush(self, run, epoch: int, suffix: str = "") -> None:
        for table, rows in self.rows.items():
            if rows:
                run.write_part(table, rows, epoch_key(epoch, suffix))
        self.rows = {t: [] for t in self.tables}

    def every_step(self, step: int) -> bool:
        return step % self.cfg.probe_every_steps == 0

    def every_epoch(self, epoch: int) -> bool:
        return epoch % self.cfg.hessian_every_epochs == 0 or epoch == self.cfg.epochs


@contextlib.contextmanager
def observing(*models, mode: str | None = None):
    """Run probe code on models and put back exactly what it found: train/eval flags, every buffer
    (BN running statistics, activation-quantiser ranges and their frozen flags)."""
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
                            current.copy_(b)  # in place: whoever holds the buffer sees the old values
                    else:
                        m._buffers[k] = b


@dataclass
class ProbeBatch:
    inputs: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor
    source: str
    seed: int

    @property
    def size(self) -> int:
        return int(self.inputs.shape[0])


@torch.no_grad()
def draw_probe_batch(trainer, epoch: int, size: int) -> ProbeBatch:
    """A fixed-size batch for curvature probes, from the probe's own stream (seeded by run seed and
    epoch, so an online probe and a post-hoc probe of the same checkpoint see the same batch):
    synthetic from the run's current generator (ZQ), real training images (KD) or the ZeroQ set."""
    cfg = trainer.cfg
    seed = epoch_seed(cfg.seed, epoch, PROBE_BATCH_STREAM)
    rng = torch.Generator().manual_seed(seed)
    if cfg.source == "generator":
        with observing(trainer.generator, mode="train"):
            z, labels = trainer.generator.sample(size, generator=rng, device=trainer.device)
            x = trainer.generator(z, labels)
        source = "generator"
    elif cfg.source == "real":
        idx = torch.randperm(len(trainer.train_set), generator=rng)[:size].tolist()
        items = [trainer.train_set[i] for i in idx]
        x = torch.stack([a for a, _ in items]).to(trainer.device)
        labels = torch.tensor([int(b) for _, b in items], device=trainer.device)
        source = "real"
    else:
        idx = torch.randint(len(trainer.distilled), (size,), generator=rng).to(trainer.distilled.device)
        x, labels = trainer.distilled[idx], trainer.distilled_labels[idx]
        source = "zeroq"
    with observing(trainer.teacher, mode="eval"):
        t_logits = trainer.teacher(x)
    return ProbeBatch(x.detach(), labels.detach(), t_logits.detach(), source, seed)


def parameter_group(name: str, scope: str) -> str:
    """The group a parameter belongs to: 'all' (model), its module ('layer'), or its block ('block':
    pytorchcv's `features.stageN.unitM` / `features.init_block` / top-level module)."""
    if scope == "model":
        return "all"
    module = name.rsplit(".", 1)[0] if "." in name else name
    if scope == "layer":
        return module
    parts = name.split(".")
    if parts[0] == "features" and len(parts) > 2:
        return ".".join(parts[:3]) if parts[1].startswith("stage") else ".".join(parts[:2])
    return parts[0]


def grouped_indices(names: list[str], scope: str) -> dict[str, list[int]]:
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(parameter_group(n, scope), []).append(i)
    return groups
