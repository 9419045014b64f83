"""Where the student's batches come from: one protocol, three sources.

* `GeneratorSource` (zero-shot: GDFQ / Qimera / ARC).  Each iteration the generator takes its own step on
  gen_ce_weight * CE(teacher(G(z, y)), y) + bns_weight * BNS (AIT paper Eq. 5; GDFQ's weights 1 and 0.1) and
  hands the detached samples on.
* `RealDataSource` (the KD baseline, paper §3.1): shuffled real training images, one order per epoch.
* `DistilledSource` (ZeroQ): a fixed set distilled from the teacher's BN statistics once, sampled per step.

The training loop calls `start_epoch`, then `next_batch` per iteration; probes call `draw` for a batch from
their own stream.  Sources never touch the global RNG.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
import torch.nn as nn
from torch.utils.data import DataLoader, Dataset

from zsq_probe.data.datasets import make_loader
from zsq_probe.errors import UserError
from zsq_probe.events import ProbeBatch
from zsq_probe.generators import BNStatisticsLoss, distill_zeroq
from zsq_probe.generators.common import crop_to
from zsq_probe.generators.zeroq import calibrate_running_minmax
from zsq_probe.module_state import preserved_state
from zsq_probe.quantization.losses import ce_to_labels
from zsq_probe.quantization.quantizer import calibrate_activation_ranges
from zsq_probe.seeds import DATA_ORDER_STREAM, SAMPLE_STREAM, ZEROQ_STREAM, epoch_seed, stream
from zsq_probe.training.schedule import generator_lr

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig
    from zsq_probe.data.datasets import DatasetSpec
    from zsq_probe.rundir.store import CheckpointState


@dataclass
class NonFinite:
    """A non-finite loss or gradient: which term, the loss, and the terms to report."""

    what: str
    loss: torch.Tensor
    terms: dict[str, torch.Tensor]


@dataclass
class Batch:
    """One training batch for the student, with the teacher's logits (and what the source's own step saw)."""

    inputs: torch.Tensor
    labels: torch.Tensor
    teacher_logits: torch.Tensor
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # metric terms the source computed (generator losses)
    nonfinite: NonFinite | None = None  # the source's own update hit a NaN/inf (it was not applied)


def all_finite(loss: torch.Tensor, params: Iterable[torch.Tensor]) -> bool:
    """Whether the loss and every gradient are finite, with one host sync."""
    flags = [torch.isfinite(loss).all()] + [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
    return bool(torch.stack(flags).all())


def first_nonfinite(total: torch.Tensor, terms: dict[str, torch.Tensor], total_name: str) -> str | None:
    """None when `total` is finite; else the name of the first non-finite term (or of the total)."""
    if bool(torch.isfinite(total).all()):
        return None
    for name, value in terms.items():
        if not bool(torch.isfinite(value).all()):
            return name
    return total_name


class BatchSource(Protocol):
    """What the loop and the probes need from a source of student batches."""

    name: str  # generator | real | zeroq (the probe batch's `source` column)

    def iterations(self) -> int | None:
        """Its own epoch length (real data), else None."""

    def lr(self, epoch: int) -> float:
        """Its own optimiser's learning rate (generator), else NaN."""

    def start_epoch(self, epoch: int) -> None:
        """Set the epoch's schedules and random stream."""

    def next_batch(self) -> Batch:
        """One training batch (a generator steps first)."""

    def draw(self, seed: int, size: int) -> ProbeBatch:
        """A probe batch from the stream `seed`."""

    def state_dict(self) -> CheckpointState:
        """What the source needs to resume (merged into the checkpoint)."""

    def load_state_dict(self, state: CheckpointState, optimizer: bool = True) -> None:
        """Restore `state_dict`'s state (`optimizer=False`: the models only, for post-hoc probes)."""


def _sample(
    generator: nn.Module, size: int, rng: torch.Generator | None, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(z, labels) of `size` samples from a zsq_probe.generators generator (each of them has `sample`)."""
    sample = cast(Callable[..., tuple[torch.Tensor, torch.Tensor]], generator.sample)
    return sample(size, generator=rng, device=device)


def _teacher_logits(teacher: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with preserved_state(teacher, mode="eval"):
        logits: torch.Tensor = teacher(x)
    return logits


class GeneratorSource:
    """Zero-shot batches: the generator steps on CE + BNS against the teacher, then hands its samples on."""

    name = "generator"

    def __init__(
        self,
        generator: nn.Module,
        teacher: nn.Module,
        cfg: RunConfig,
        device: torch.device,
        image_shape: Sequence[int] | None = None,
    ) -> None:
        self.generator, self.teacher, self.cfg, self.device = generator, teacher, cfg, device
        # the teacher's input shape; a generator drawing larger (299 -> 300) is centre-cropped to it
        shape = image_shape if image_shape is not None else cast(Sequence[int], generator.image_shape)
        self.image_shape = tuple(shape)
        self.optimizer = torch.optim.Adam(
            generator.parameters(), lr=cfg.synthesis.lr, betas=(cfg.synthesis.beta1, cfg.synthesis.beta2)
        )
        self.rng: torch.Generator | None = None

    def iterations(self) -> int | None:
        """None: a generator has no epoch length of its own."""
        return None

    def lr(self, epoch: int) -> float:
        """The generator's learning rate at `epoch`."""
        return generator_lr(self.cfg, epoch)

    def start_epoch(self, epoch: int) -> None:
        """Set the generator's learning rate and the epoch's sample stream."""
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr(epoch)
        self.rng = stream(self.cfg.seed, epoch, SAMPLE_STREAM)

    def next_batch(self) -> Batch:
        """Sample a batch, step the generator on CE + BNS; the samples come back detached."""
        cfg = self.cfg
        z, labels = _sample(self.generator, cfg.batch_size, self.rng, self.device)
        self.generator.train()
        x = crop_to(self.generator(z, labels), self.image_shape)
        with BNStatisticsLoss(self.teacher) as bns:
            t_logits = self.teacher(x)
        gen_ce = ce_to_labels(t_logits, labels)
        bns_loss = bns.loss()
        gen_loss = cfg.synthesis.ce_weight * gen_ce + cfg.synthesis.bns_weight * bns_loss
        self.optimizer.zero_grad(set_to_none=True)
        torch.autograd.backward(gen_loss)  # Tensor.backward, which torch leaves unannotated
        nonfinite = None
        if all_finite(gen_loss, self.generator.parameters()):
            self.optimizer.step()
        else:
            self.optimizer.zero_grad(set_to_none=True)
            bad = first_nonfinite(
                gen_loss, {"generator CE term": gen_ce, "generator BNS term": bns_loss}, "generator loss"
            )
            nonfinite = NonFinite(
                bad or "gradient of the generator loss", gen_loss, {"generator_ce": gen_ce, "bns": bns_loss}
            )
        terms = {"generator_ce": gen_ce.detach(), "bns": bns_loss.detach(), "generator": gen_loss.detach()}
        return Batch(x.detach(), labels.detach(), t_logits.detach(), terms, nonfinite)

    @torch.no_grad()
    def draw(self, seed: int, size: int) -> ProbeBatch:
        """A probe batch of generated samples from the stream `seed` (the generator's modes are kept)."""
        rng = torch.Generator().manual_seed(seed)
        with preserved_state(self.generator, mode="train"):
            z, labels = _sample(self.generator, size, rng, self.device)
            x = crop_to(self.generator(z, labels), self.image_shape)
        return ProbeBatch(x.detach(), labels.detach(), _teacher_logits(self.teacher, x).detach(), self.name, seed)

    def state_dict(self) -> CheckpointState:
        """The generator's weights and its optimiser's state."""
        return {"generator": self.generator.state_dict(), "generator_optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: CheckpointState, optimizer: bool = True) -> None:
        """Restore the generator (and its optimiser unless `optimizer=False`: post hoc)."""
        self.generator.load_state_dict(state["generator"])
        if optimizer:
            self.optimizer.load_state_dict(state["generator_optimizer"])


class RealDataSource:
    """The KD baseline's batches: the real training set, shuffled in one order per epoch.

    Args:
        train_set: The training images, (image tensor, int label) items.
        teacher: The teacher (its logits come with each batch).
        cfg: The run's config (batch size, seed, loader settings).
        device: Where the batches go.
    """

    name = "real"

    def __init__(self, train_set: Dataset[Any], teacher: nn.Module, cfg: RunConfig, device: torch.device) -> None:
        self.train_set, self.teacher, self.cfg, self.device = train_set, teacher, cfg, device
        self.batches: Iterator[tuple[torch.Tensor, torch.Tensor]] | None = None

    def iterations(self) -> int:
        """One pass over the training set."""
        return math.ceil(len(cast(Sized, self.train_set)) / self.cfg.batch_size)

    def lr(self, epoch: int) -> float:
        """NaN: no optimiser of its own."""
        return float("nan")

    def start_epoch(self, epoch: int) -> None:
        """Shuffle the training set in the epoch's order."""
        data = self.cfg.dataset
        loader = make_loader(
            self.train_set,
            self.cfg.batch_size,
            shuffle=True,
            seed=epoch_seed(self.cfg.seed, epoch, DATA_ORDER_STREAM),
            drop_last=True,
            num_workers=data.num_workers,
            pin_memory=data.pin_memory and self.device.type == "cuda",
        )
        self.batches = _cycle(loader)

    def next_batch(self) -> Batch:
        """The next real batch and the teacher's logits on it."""
        if self.batches is None:
            raise RuntimeError("RealDataSource.next_batch before start_epoch")
        x, y = next(self.batches)
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)  # pinned: asynchronous
        with torch.no_grad():
            t_logits = self.teacher(x)
        return Batch(x, y, t_logits)

    @torch.no_grad()
    def draw(self, seed: int, size: int) -> ProbeBatch:
        """A probe batch of `size` training images drawn without replacement from the stream `seed`."""
        rng = torch.Generator().manual_seed(seed)
        idx = torch.randperm(len(cast(Sized, self.train_set)), generator=rng)[:size].tolist()
        items = [self.train_set[i] for i in idx]
        x = torch.stack([a for a, _ in items]).to(self.device)
        labels = torch.tensor([int(b) for _, b in items], device=self.device)
        return ProbeBatch(x, labels, _teacher_logits(self.teacher, x).detach(), self.name, seed)

    def state_dict(self) -> CheckpointState:
        """Nothing: the order of an epoch follows from the seed."""
        return {}

    def load_state_dict(self, state: CheckpointState, optimizer: bool = True) -> None:
        """Nothing to restore."""


class DistilledSource:
    """ZeroQ: images distilled once from the teacher's BN statistics (labels: the teacher's argmax)."""

    name = "zeroq"

    def __init__(self, teacher: nn.Module, spec: DatasetSpec, cfg: RunConfig, device: torch.device) -> None:

        self.teacher, self.cfg, self.device = teacher, cfg, device
        syn = cfg.synthesis
        n = syn.zeroq_images or cfg.batch_size * 10
        self.distill_batch = min(n, syn.zeroq_batch_size or n)  # 0: one batch of all images (ZeroQ's code)
        self.images, self.history = distill_zeroq(
            teacher,
            n,
            tuple(spec.image_shape),
            batch_size=self.distill_batch,
            iterations=syn.zeroq_iterations,
            init=syn.zeroq_init,
            generator=stream(cfg.seed, 0, ZEROQ_STREAM),
            device=device,
        )
        with torch.no_grad():
            logits = torch.cat([teacher(self.images[i : i + 256]) for i in range(0, len(self.images), 256)])
        self.labels = logits.argmax(1)
        self.rng: torch.Generator | None = None

    def iterations(self) -> int | None:
        """None: the distilled set has no epoch length."""
        return None

    def lr(self, epoch: int) -> float:
        """NaN: no optimiser of its own."""
        return float("nan")

    def start_epoch(self, epoch: int) -> None:
        """Start the epoch's sample stream."""
        self.rng = stream(self.cfg.seed, epoch, SAMPLE_STREAM)

    def next_batch(self) -> Batch:
        """A batch sampled with replacement from the distilled set, and the teacher's logits on it."""
        idx = torch.randint(len(self.images), (self.cfg.batch_size,), generator=self.rng).to(self.images.device)
        x, y = self.images[idx], self.labels[idx]
        with torch.no_grad():
            t_logits = self.teacher(x)
        return Batch(x, y, t_logits)

    def calibration_batches(self) -> list[torch.Tensor]:
        """The distilled images in the batches the calibration sees (`zeroq_calibration`)."""
        bs = self.distill_batch if self.cfg.synthesis.zeroq_calibration == "minmax" else self.cfg.batch_size
        return [self.images[i : i + bs] for i in range(0, len(self.images), bs)]

    def calibrate(self, model: nn.Module) -> int:
        """Set the student's activation ranges from the distilled images (zeroq_calibration: minmax = ZeroQ's
        running min/max from 0, ema = quant.calibrate_activation_ranges); returns the number of batches."""
        if self.cfg.synthesis.zeroq_calibration == "minmax":
            return calibrate_running_minmax(model, self.calibration_batches())

        return calibrate_activation_ranges(model, self.calibration_batches())

    @torch.no_grad()
    def draw(self, seed: int, size: int) -> ProbeBatch:
        """A probe batch sampled with replacement from the distilled set, from the stream `seed`."""
        rng = torch.Generator().manual_seed(seed)
        idx = torch.randint(len(self.images), (size,), generator=rng).to(self.images.device)
        x, labels = self.images[idx], self.labels[idx]
        return ProbeBatch(x, labels, _teacher_logits(self.teacher, x).detach(), self.name, seed)

    def state_dict(self) -> CheckpointState:
        """Nothing: the distilled set is rebuilt from the seed."""
        return {}

    def load_state_dict(self, state: CheckpointState, optimizer: bool = True) -> None:
        """Nothing to restore."""


def _cycle(loader: DataLoader[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from loader


def check_iterations(cfg: RunConfig, source: BatchSource) -> int:
    """Iterations per epoch: the config's, or one pass over real data when it says 0."""
    if cfg.iters_per_epoch:
        return cfg.iters_per_epoch
    n = source.iterations()
    if n is None:
        raise UserError("iters_per_epoch=0 is only meaningful with real data (source=real)")
    return n
