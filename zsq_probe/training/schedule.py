"""Per-epoch schedules (multi-step decay of the learning rates and of GI's p; paper §5.1)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig


def scheduled(value: float, milestones: Iterable[int], gamma: float, epoch: int) -> float:
    """Multi-step decay: value * gamma^(number of milestones already reached).

    A milestone m applies from epoch m+1 on (PyTorch's MultiStepLR after m scheduler steps).

    Args:
        value: The value before any milestone.
        milestones: The epochs after which the value decays.
        gamma: The factor of each decay.
        epoch: The epoch, counted from 1.

    Returns:
        The value in force during `epoch`.
    """
    return value * gamma ** sum(1 for m in milestones if epoch > m)


def student_lr(cfg: RunConfig, epoch: int) -> float:
    """The student's learning rate at `epoch` (its step schedule).

    Args:
        cfg: The run's config (`optim.lr`, `optim.lr_milestones`, `optim.lr_gamma`).
        epoch: The epoch, counted from 1.

    Returns:
        The learning rate.
    """
    return scheduled(cfg.optim.lr, cfg.optim.lr_milestones, cfg.optim.lr_gamma, epoch)


def generator_lr(cfg: RunConfig, epoch: int) -> float:
    """The generator's learning rate at `epoch` (the student's milestones and decay).

    Args:
        cfg: The run's config (`synthesis.lr` and the student's schedule).
        epoch: The epoch, counted from 1.

    Returns:
        The learning rate.
    """
    return scheduled(cfg.synthesis.lr, cfg.optim.lr_milestones, cfg.optim.lr_gamma, epoch)


def gi_share(cfg: RunConfig, epoch: int) -> float:
    """GI's p for the epoch (paper §4.2: the share of weights each step must move past a threshold).

    Args:
        cfg: The run's config (`inundation.p`, `inundation.p_milestones`, `inundation.p_gamma`).
        epoch: The epoch, counted from 1.

    Returns:
        The share p.
    """
    return scheduled(cfg.inundation.p, cfg.inundation.p_milestones, cfg.inundation.p_gamma, epoch)
