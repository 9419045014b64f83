"""The student's loss terms (docs/reference.md#student-loss; paper Eq. 5-6).

Defined once here: the trainer's terms (`student_terms`), and the two terms the curvature probes and the exact
Hessian diagonal differentiate (`loss_function`: CE to the labels, KL to the teacher times T^2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(logits, target) -> scalar``: what a HessianOperator differentiates."""

LOSS_TERMS = ("ce", "kl")


def kl_to_teacher(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(softmax(t/T) || softmax(s/T)) averaged over batch x classes.

    This is PyTorch's `KLDivLoss(reduction='mean')` scale that GDFQ/AIT train with (it divides by the
    number of classes too, unlike 'batchmean'); the trainer multiplies it by T^2 as they do."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    pointwise: torch.Tensor = torch.special.xlogy(p_teacher, p_teacher) - p_teacher * log_p_student
    return pointwise.mean()


def kl_term(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """The KL term as trained: ``kl_to_teacher * T * T`` (KLDivLoss reduction='mean' times T^2, as GDFQ/AIT;
    docs/reference.md#student-loss)."""
    return kl_to_teacher(student_logits, teacher_logits, temperature) * temperature * temperature


def ce_to_labels(student_logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy against hard labels (class indices) or soft labels (rows summing to 1, Qimera)."""
    return F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)


def check_loss(loss: str, temperature: float | None, label_smoothing: float) -> str:
    """``loss`` if it names a term of LOSS_TERMS with valid settings (KL needs T > 0; smoothing in [0, 1])."""
    if loss not in LOSS_TERMS:
        raise ValueError(f"loss must be one of {', '.join(LOSS_TERMS)}, got {loss!r}")
    if loss == "kl":
        if temperature is None or not float(temperature) > 0:
            raise ValueError(f"loss='kl' needs a temperature > 0, got {temperature!r}")
    if not 0.0 <= float(label_smoothing) <= 1.0:
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return loss


def loss_function(loss: str, temperature: float | None = None, label_smoothing: float = 0.0) -> LossFn:
    """``loss_fn(logits, target)`` for ``loss="ce"`` (target: labels; :func:`ce_to_labels`) or ``"kl"``
    (target: teacher logits; :func:`kl_term`): the two terms the curvature probes separate (paper §3.2)."""
    loss = check_loss(loss, temperature, label_smoothing)
    if loss == "ce":
        return lambda logits, labels: ce_to_labels(logits, labels, label_smoothing)
    assert temperature is not None  # check_loss refuses "kl" without one
    T = float(temperature)
    return lambda logits, t_logits: kl_term(logits, t_logits, T)


def hard_labels(labels: torch.Tensor) -> torch.Tensor:
    """Class indices of hard or soft labels."""
    return labels.argmax(1) if labels.dim() == 2 else labels


def student_terms(
    student: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    teacher_logits: torch.Tensor,
    temperature: float,
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The student's logits and its two unweighted loss terms (KL to the teacher at temperature T, CE to the
    labels); the trainer weights them as kd_weight * KL * T^2 + ce_weight * CE."""
    logits = student(inputs)
    return logits, kl_to_teacher(logits, teacher_logits, temperature), ce_to_labels(logits, labels, label_smoothing)


def term_gradients(kl: torch.Tensor, ce: torch.Tensor, params: Sequence[torch.Tensor]) -> dict[str, list[torch.Tensor]]:
    """Gradients of the unweighted KL and CE terms w.r.t. `params` from one forward graph."""
    g_kl = torch.autograd.grad(kl, params, retain_graph=True, allow_unused=True)
    g_ce = torch.autograd.grad(ce, params, allow_unused=True)
    return {
        "kl": [torch.zeros_like(p) if g is None else g for g, p in zip(g_kl, params)],
        "ce": [torch.zeros_like(p) if g is None else g for g, p in zip(g_ce, params)],
    }
