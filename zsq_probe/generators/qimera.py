"""Qimera generator (Choi et al., NeurIPS 2021): superposed class embeddings -> boundary samples.

Facts (docs/reference.md#qimera; Qimera's published code and run scripts):

* class embedding ``Embedding(C, D)`` with D = in_features of the teacher's last layer,
  initialised from that layer's weight matrix (rows = classes), trainable (the scripts never pass
  ``--freeze``).  Some of the published scripts start from a random embedding instead
  (``--randemb``); :data:`QIMERA_DEFAULTS` records which.
* generator input ``norm(embedding + noise)`` with noise ``~ N(0,1)^D`` (noise scale 1): an
  affine-free BatchNorm1d without running statistics applied to the *transposed* matrix, i.e. each
  sample's ``D`` features are standardised (biased variance, eps 1e-5).  The default "DM" variant of
  the scripts has no extra linear layer: the normalised vector goes straight into GDFQ's body
  (CIFAR body, or the class-conditional ImageNet body for ImageNet).
* with probability ``mix_prob`` a whole batch is superposed: every sample draws K classes (with
  replacement) and K noise vectors, ``w = softmax(randn(K))``; the input is ``sum_k w_k norm(e_k + z_k)``
  where, in the reference, ``norm`` then standardises each of the K slots over batch and features
  (BatchNorm1d over the transposed (B, K, D) tensor).  Soft labels are ``w`` scattered onto the
  chosen classes (scatter-add, so duplicates merge and rows sum to 1).  In the ImageNet generator the
  conditional BN's gamma/beta of the K slots are weighted by ``w`` and *averaged* over K (the
  reference divides by K; kept).
* one uniform draw per batch decides mixing; draws follow the reference order: mix flag, z, labels,
  weights.

Labels convention here: :meth:`QimeraGenerator.sample` returns ``(z, soft_labels)`` where
``soft_labels`` is a float tensor ``(B, num_classes)`` (one-hot for plain batches).  ``z`` is a tensor
``(B, D)`` for a plain batch and a :class:`SlotLatent` (``shape`` ``(B, K, D)``) for a superposed batch.
``forward(z, labels)`` accepts hard LongTensor labels ``(B,)`` or soft labels ``(B, num_classes)``:

* :class:`SlotLatent` (what :meth:`QimeraGenerator.sample` returns for a superposed batch) + soft labels:
  the slots exactly as drawn -- noise ``(B, K, D)``, classes ``(B, K)`` and weights ``(B, K)`` in draw
  order -- so the input is the reference's ``sum_k w_k norm(e_{c_k} + z_k)``, a class drawn twice
  keeping both of its noise draws and weights (Qimera_AIT/trainer.py:259-267, main.py:74-81);
* a plain tensor ``z (B, K, D)`` + soft labels (no slot record): noise slot k goes with the k-th largest
  label weight of each row.  Exact when no row repeats a class; a repeated class was merged by the
  scatter-add and occupies one slot (a zero-weight slot pads the row), an approximation;
* ``z (B, D)`` + soft labels: every class with non-zero weight shares the sample's noise and is
  standardised per sample (for one-hot labels this is exactly the plain path).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypedDict

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.types import Device

from zsq_probe.errors import UserError
from zsq_probe.generators.common import (
    check_batch_size,
    check_hard_labels,
    check_image_shape,
    check_latent,
    check_num_classes,
    check_rng,
    rand,
    randint,
    randn,
)
from zsq_probe.generators.gdfq import GDFQBody, resolve_variant


class QimeraScriptSettings(TypedDict):
    """One run script's Qimera settings (a value of :data:`QIMERA_DEFAULTS`)."""

    mix_prob: float  # --multi_label_prob
    mix_k: int  # --multi_label_num
    embedding_init: str  # "random" with --randemb, else "teacher"


# Per teacher (pytorchcv name) and bit width: the settings of Qimera's published run scripts
# (run_*_4bit.sh and other_train_scripts/run_*_5bit.sh): --multi_label_prob, --multi_label_num,
# and whether --randemb (random embedding instead of the teacher's last-layer weights) is passed.  The
# `qimera` preset uses these; `qimera+ait` sets the AIT repository's own values (presets.QIMERA_AIT_SCRIPTS).
QIMERA_DEFAULTS: dict[str, dict[int, QimeraScriptSettings]] = {
    "resnet20_cifar10": {
        4: {"mix_prob": 0.4, "mix_k": 2, "embedding_init": "random"},
        5: {"mix_prob": 0.4, "mix_k": 2, "embedding_init": "random"},
    },
    "resnet20_cifar100": {
        4: {"mix_prob": 0.4, "mix_k": 10, "embedding_init": "teacher"},
        5: {"mix_prob": 0.4, "mix_k": 50, "embedding_init": "teacher"},
    },
    "resnet18": {
        4: {"mix_prob": 0.4, "mix_k": 500, "embedding_init": "random"},
        5: {"mix_prob": 0.4, "mix_k": 100, "embedding_init": "random"},
    },
    "resnet50": {
        4: {"mix_prob": 0.7, "mix_k": 500, "embedding_init": "teacher"},
        5: {"mix_prob": 0.7, "mix_k": 100, "embedding_init": "teacher"},
    },
    "mobilenetv2_w1": {
        4: {"mix_prob": 0.4, "mix_k": 100, "embedding_init": "random"},
        5: {"mix_prob": 0.4, "mix_k": 100, "embedding_init": "random"},
    },
}
NORM_EPS = 1e-5  # BatchNorm1d's default eps, as in the reference's embedding normaliser


class SlotLatent:
    """The latent of a superposed Qimera batch, slot by slot in draw order.

    ``noise`` ``(B, K, D)``, ``classes`` ``(B, K)`` (a class may repeat within a row), ``weights`` ``(B, K)``
    (softmax of a normal draw, rows sum to 1).  Keeping the slots -- rather than only the scatter-added soft
    labels -- lets a class drawn twice keep both noise draws, as in the reference
    (Qimera_AIT/trainer.py:259-267).  Behaves like the noise tensor for ``shape``/``dim()``/``to()``.

    Args:
        noise: The noise of each slot (B, K, D).
        classes: The class of each slot (B, K).
        weights: The weight of each slot (B, K).

    Raises:
        UserError: They are not tensors of those shapes.
    """

    __slots__ = ("noise", "classes", "weights")

    def __init__(self, noise: torch.Tensor, classes: torch.Tensor, weights: torch.Tensor) -> None:
        if not (
            isinstance(noise, torch.Tensor) and isinstance(classes, torch.Tensor) and isinstance(weights, torch.Tensor)
        ):
            raise UserError("Qimera SlotLatent: noise, classes and weights must be tensors")
        if noise.dim() != 3 or classes.shape != noise.shape[:2] or weights.shape != noise.shape[:2]:
            raise UserError(
                f"Qimera SlotLatent: noise (B, K, D) with classes and weights (B, K), got "
                f"{tuple(noise.shape)}, {tuple(classes.shape)}, {tuple(weights.shape)}"
            )
        self.noise, self.classes, self.weights = noise, classes, weights

    @property
    def shape(self) -> torch.Size:
        """The noise's shape (B, K, D)."""
        return self.noise.shape

    def dim(self) -> int:
        """3, like the noise tensor."""
        return 3

    @property
    def device(self) -> torch.device:
        """The noise's device."""
        return self.noise.device

    def to(self, *args: Any, **kwargs: Any) -> SlotLatent:
        """The latent moved (and cast) like `Tensor.to`; the class indices only change device.

        Args:
            *args: As for `Tensor.to`.
            **kwargs: As for `Tensor.to`.

        Returns:
            A new latent; noise and weights moved and cast, classes moved to the noise's device.
        """
        noise = self.noise.to(*args, **kwargs)
        return SlotLatent(noise, self.classes.to(noise.device), self.weights.to(*args, **kwargs))

    def soft_labels(self, num_classes: int) -> torch.Tensor:
        """Scatter-added soft labels ``(B, num_classes)`` (duplicates merge; rows sum to 1)."""
        b = self.classes.shape[0]
        return torch.zeros(b, num_classes, device=self.weights.device, dtype=self.weights.dtype).scatter_add_(
            1, self.classes, self.weights
        )


def teacher_class_weights(teacher: nn.Module) -> torch.Tensor:
    """Weight matrix (num_classes, features) of the teacher's last classifier layer.

    The last ``nn.Linear`` in module order; teachers without one (pytorchcv's MobileNetV2 ends in a
    1x1 conv) fall back to the last 1x1 ``nn.Conv2d`` (its weight squeezed, as Qimera's code does).
    """
    linears = [m for m in teacher.modules() if isinstance(m, nn.Linear)]
    convs = [m for m in teacher.modules() if isinstance(m, nn.Conv2d) and tuple(m.kernel_size) == (1, 1)]
    last = linears[-1] if linears else (convs[-1] if convs else None)
    if last is None:
        raise UserError(
            "Qimera: the teacher has no nn.Linear (nor 1x1 conv) classifier to take class embeddings "
            "from; pass embedding_init='random' and embedding_dim"
        )
    w = last.weight.detach()
    return w.reshape(w.shape[0], w.shape[1]).clone().float()


def _qimera_settings(
    preset: str | None,
    preset_bits: int,
    mix_prob: float | None,
    mix_k: int | None,
    embedding_init: str | None,
    has_teacher: bool,
) -> tuple[float, int, str]:
    """(mix_prob, mix_k, embedding_init): the defaults, then the preset's (QIMERA_DEFAULTS), then the
    arguments given; UserError for a value out of range."""
    who = "Qimera generator"
    settings: dict[str, Any] = {"mix_prob": 0.4, "mix_k": 2, "embedding_init": "teacher" if has_teacher else "random"}
    if preset is not None:
        if preset not in QIMERA_DEFAULTS:
            raise UserError(f"{who}: unknown preset {preset!r}; known: {', '.join(sorted(QIMERA_DEFAULTS))}")
        if preset_bits not in QIMERA_DEFAULTS[preset]:
            raise UserError(
                f"{who}: preset {preset!r} has settings for {sorted(QIMERA_DEFAULTS[preset])} bits, not {preset_bits!r}"
            )
        settings.update(QIMERA_DEFAULTS[preset][preset_bits])
    for key, value in (("mix_prob", mix_prob), ("mix_k", mix_k), ("embedding_init", embedding_init)):
        if value is not None:
            settings[key] = value
    prob, k, init = float(settings["mix_prob"]), settings["mix_k"], settings["embedding_init"]
    if not 0.0 <= prob <= 1.0:
        raise UserError(f"{who}: mix_prob must be a probability, got {prob}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UserError(f"{who}: mix_k must be a positive int, got {k!r}")
    if init not in ("teacher", "random"):
        raise UserError(f"{who}: embedding_init must be 'teacher' or 'random', got {init!r}")
    return prob, k, init


def _class_embedding(
    teacher: nn.Module | None, init: str, num_classes: int, embedding_dim: int | None
) -> tuple[torch.Tensor | None, int]:
    """(the teacher's class weights to start the label embedding from, or None for a random start; the
    embedding's dimension), checked against `num_classes` and `embedding_dim`."""
    who = "Qimera generator"
    weights = teacher_class_weights(teacher) if teacher is not None else None
    if weights is not None and weights.shape[0] != num_classes:
        raise UserError(
            f"{who}: the teacher's last layer has {weights.shape[0]} outputs, not num_classes={num_classes}"
        )
    if init == "teacher" and weights is None:
        raise UserError(
            f"{who}: embedding_init='teacher' needs the teacher; pass teacher=... or "
            f"embedding_init='random' with embedding_dim"
        )
    dim = weights.shape[1] if weights is not None else embedding_dim
    if embedding_dim is not None and dim != embedding_dim:
        raise UserError(f"{who}: embedding_dim={embedding_dim} but the teacher's last layer has {dim} inputs")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise UserError(f"{who}: embedding_dim must be a positive int (or pass the teacher), got {dim!r}")
    return (weights if init == "teacher" else None), dim


class QimeraGenerator(nn.Module):
    """Qimera's generator; see the module docstring for the label/latent conventions.

    Args:
        num_classes: The teacher's number of classes.
        image_shape: The (C, H, W) to draw; H and W multiples of 4.
        teacher: The teacher; its last layer's weights give the class embedding (embedding_init="teacher").
        mix_prob: The probability that a batch is superposed; None: the preset's, else 0.4.
        mix_k: The classes superposed per sample; None: the preset's, else 2.
        preset: A key of QIMERA_DEFAULTS (a teacher's name) whose run-script settings to start from.
        preset_bits: The bit width choosing the preset's settings.
        embedding_init: "teacher" or "random"; None: the preset's, else "teacher" when a teacher is given.
        embedding_dim: The embedding's size; needed without a teacher, else checked against it.
        freeze_embedding: Keep the class embedding fixed.
        noise_scale: The factor on the noise added to the embedding.
        variant: The GDFQ body's layout: "cifar", "imagenet" or "auto" (by image size).

    Raises:
        UserError: An argument is out of its range or does not fit the teacher.
    """

    label_kind = "soft"

    def __init__(
        self,
        num_classes: int,
        image_shape: Sequence[int],
        teacher: nn.Module | None = None,
        mix_prob: float | None = None,
        mix_k: int | None = None,
        preset: str | None = None,
        preset_bits: int = 4,
        embedding_init: str | None = None,
        embedding_dim: int | None = None,
        freeze_embedding: bool = False,
        noise_scale: float = 1.0,
        variant: str = "auto",
    ) -> None:
        super().__init__()
        who = "Qimera generator"
        self.num_classes = check_num_classes(num_classes, who)
        self.image_shape = check_image_shape(image_shape, 4, who)
        self.mix_prob, self.mix_k, init = _qimera_settings(
            preset, preset_bits, mix_prob, mix_k, embedding_init, has_teacher=teacher is not None
        )
        weights, dim = _class_embedding(teacher, init, self.num_classes, embedding_dim)
        self.latent_dim = dim
        self.embedding_init = init
        self.noise_scale = float(noise_scale)
        self.label_emb = nn.Embedding(self.num_classes, dim)  # random init: N(0, 1), as nn.Embedding
        if weights is not None:  # embedding_init="teacher"
            with torch.no_grad():
                self.label_emb.weight.copy_(weights)
        self.label_emb.weight.requires_grad_(not freeze_embedding)
        self.variant = resolve_variant(variant, self.image_shape, who)
        self.body = GDFQBody(dim, self.num_classes, self.image_shape, conditional=self.variant == "imagenet")

    # ------------------------------------------------------------------ forward
    def _slots(
        self, z: torch.Tensor | SlotLatent, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, bool, torch.Tensor]:
        """-> (class indices (B,K), weights (B,K), noise (B,K,D), per-slot normalisation?, BN condition)."""
        who = "Qimera generator"
        b = z.shape[0]
        if isinstance(z, SlotLatent):
            # the slots as drawn (reference order and duplicates); labels only have to agree with them
            if labels.dim() != 2 or labels.shape != (b, self.num_classes) or not labels.is_floating_point():
                raise UserError(f"{who}: a SlotLatent goes with soft labels (batch, {self.num_classes})")
            if int(z.classes.min()) < 0 or int(z.classes.max()) >= self.num_classes:
                raise UserError(f"{who}: SlotLatent classes must lie in [0, {self.num_classes})")
            noise = check_latent(z.noise, self.latent_dim, who, allow_slots=True)
            return z.classes, z.weights, noise, True, labels / noise.shape[1]
        if labels.dim() == 1:
            if z.dim() != 2:
                raise UserError(f"{who}: hard labels go with z of shape (batch, {self.latent_dim})")
            labels = check_hard_labels(labels, b, self.num_classes, who)
            ones = torch.ones(b, 1, device=z.device, dtype=z.dtype)
            return labels[:, None], ones, z[:, None, :], False, labels
        if labels.dim() != 2 or labels.shape != (b, self.num_classes) or not labels.is_floating_point():
            raise UserError(
                f"{who}: labels must be hard (batch,) ints or soft (batch, {self.num_classes}) floats, "
                f"got {tuple(labels.shape)} {labels.dtype} for a batch of {b}"
            )
        nnz = int((labels != 0).sum(1).max())
        if z.dim() == 3:
            k = z.shape[1]
            if nnz > k:
                raise UserError(f"{who}: soft labels with {nnz} classes in a row do not fit z's {k} slots")
            w, idx = labels.topk(k, dim=1)
            # Reference ImageNet generator: per-slot gamma/beta weighted by w, then averaged over K slots.
            return idx, w, z, True, labels / k
        k = max(nnz, 1)
        w, idx = labels.topk(k, dim=1)
        return idx, w, z[:, None, :].expand(b, k, z.shape[1]), False, labels

    def generator_input(self, z: torch.Tensor | SlotLatent, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The vector fed to the GDFQ body, and the condition for the conditional BNs.

        Args:
            z: Latents (B, D) or (B, K, D), or a SlotLatent.
            labels: Hard labels (B,) or soft labels (B, num_classes).

        Returns:
            (input (B, D), condition: the labels the conditional BNs get).

        Raises:
            UserError: `z` and `labels` have shapes that do not fit each other or the generator.
        """
        if not isinstance(z, SlotLatent):
            z = check_latent(z, self.latent_dim, "Qimera generator", allow_slots=True)
        idx, w, noise, per_slot, cond = self._slots(z, labels)
        x = self.label_emb(idx) + self.noise_scale * noise  # (B, K, D)
        dims = (0, 2) if per_slot else (2,)
        mean = x.mean(dim=dims, keepdim=True)
        var = x.var(dim=dims, unbiased=False, keepdim=True)
        x = (x - mean) / torch.sqrt(var + NORM_EPS)
        return (w.to(x.dtype)[:, :, None] * x).sum(1), cond

    def forward(self, z: torch.Tensor | SlotLatent, labels: torch.Tensor) -> torch.Tensor:
        """Images from latents and hard or soft labels (see the module docstring).

        Args:
            z: Latents (B, D) or (B, K, D), or a SlotLatent.
            labels: Hard labels (B,) or soft labels (B, num_classes).

        Returns:
            Images (B, C, H, W).

        Raises:
            UserError: `z` or `labels` is not a tensor, or their shapes do not fit.
        """
        if not isinstance(z, (torch.Tensor, SlotLatent)) or not isinstance(labels, torch.Tensor):
            raise UserError("Qimera generator: z must be a tensor or SlotLatent and labels a tensor")
        gen_input, cond = self.generator_input(z, labels)
        images: torch.Tensor = self.body(gen_input, cond)
        return images

    # ------------------------------------------------------------------ sampling
    def sample(
        self, batch_size: int, generator: torch.Generator, device: Device = None
    ) -> tuple[torch.Tensor | SlotLatent, torch.Tensor]:
        """Latents and soft labels, a superposed batch with probability mix_prob.

        Draw order as Qimera_AIT/trainer.py:253-271: mix flag, z, classes, weights.

        Args:
            batch_size: How many to draw.
            generator: The stream to draw from.
            device: Where the results go; None: the generator's device.

        Returns:
            (z, soft labels (B, num_classes)): z is (B, D) for a plain batch (one-hot labels) or a
            :class:`SlotLatent` (B, K, D) for a superposed one.

        Raises:
            UserError: `batch_size` is not a positive int or `generator` is not a torch.Generator.
        """
        check_batch_size(batch_size, "Qimera sample")
        rng = check_rng(generator, "Qimera sample")
        device = device if device is not None else rng.device
        b, c, d, k = batch_size, self.num_classes, self.latent_dim, self.mix_k
        mixed = bool(rand((1,), rng, "cpu").item() < self.mix_prob)
        if mixed:
            noise = randn((b, k, d), rng, device)
            classes = randint(c, (b, k), rng, device)
            w = F.softmax(randn((b, k), rng, device), dim=1)
            slots = SlotLatent(noise, classes, w)
            return slots, slots.soft_labels(c)
        z = randn((b, d), rng, device)
        classes = randint(c, (b,), rng, device)
        return z, F.one_hot(classes, c).float()
