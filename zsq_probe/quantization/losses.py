"""The student's loss terms (docs/reference.md#student-loss; paper Eq. 5-6)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def kl_to_teacher(student_logits, teacher_logits, temperature: float):
    """KL(softmax(t/T) || softmax(s/T)) averaged over batch x classes.

    This is PyTorch's `KLDivLoss(reduction='mean')` scale that GDFQ/AIT train with (it divides by the
    number of classes too, unlike 'batchmean'); the trainer multiplies it by T^2 as they do."""
    log_p_student = F.log_softmax(student_logits / temperature, dim=1)
    p_teacher = F.softmax(teacher_logits / temperature, dim=1)
    pointwise = torch.special.xlogy(p_teacher, p_teacher) - p_teacher * log_p_student
    return pointwise.mean()


def ce_to_labels(student_logits, labels, label_smoothing: float = 0.0):
    """Cross-entropy against hard labels (class indices) or soft labels (rows summing to 1, Qimera)."""
    return F.cross_entropy(student_logits, labels, label_smoothing=label_smoothing)


def hard_labels(labels):
    """Class indices of hard or soft labels."""
    return labels.argmax(1) if labels.dim() == 2 else labels


def student_terms(student, inputs, labels, teacher_logits, temperature: float, label_smoothing: float = 0.0):
    """The student's logits and its two unweighted loss terms (KL to the teacher at temperature T, CE to the
    labels); the trainer weights them as kd_weight * KL * T^2 + ce_weight * CE."""
    logits = student(inputs)
    return logits, kl_to_teacher(logits, teacher_logits, temperature), ce_to_labels(logits, labels, label_smoothing)


def term_gradients(kl, ce, params) -> dict[str, list[torch.Tensor]]:
    """Gradients of the unweighted KL and CE terms w.r.t. `params` from one forward graph."""
    g_kl = torch.autograd.grad(kl, params, retain_graph=True, allow_unused=True)
    g_ce = torch.autograd.grad(ce, params, allow_unused=True)
    return {
        "kl": [torch.zeros_like(p) if g is None else g for g, p in zip(g_kl, params)],
        "ce": [torch.zeros_like(p) if g is None else g for g, p in zip(g_ce, params)],
    }
