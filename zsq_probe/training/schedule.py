"""Per-epoch schedules (multi-step decay of the learning rates and of GI's p; paper §5.1)."""

from __future__ import annotations


def scheduled(value: float, milestones, gamma: float, epoch: int) -> float:
    """Multi-step decay: value * gamma^(number of milestones already reached).  `epoch` counts from 1, and
    a milestone m applies from epoch m+1 on (PyTorch's MultiStepLR after m scheduler steps)."""
    return value * gamma ** sum(1 for m in milestones if epoch > m)


def student_lr(cfg, epoch: int) -> float:
    """The student's learning rate at `epoch` (its step schedule)."""
    return scheduled(cfg.optim.lr, cfg.optim.lr_milestones, cfg.optim.lr_gamma, epoch)


def generator_lr(cfg, epoch: int) -> float:
    """The generator's learning rate at `epoch` (the student's milestones and decay)."""
    return scheduled(cfg.synthesis.lr, cfg.optim.lr_milestones, cfg.optim.lr_gamma, epoch)


def gi_share(cfg, epoch: int) -> float:
    """GI's p for the epoch (paper §4.2: the share of weights each step must move past a threshold)."""
    return scheduled(cfg.inundation.p, cfg.inundation.p_milestones, cfg.inundation.p_gamma, epoch)
