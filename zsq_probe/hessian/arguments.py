"""Argument checks the Hessian estimators share (each raises ValueError naming the argument)."""

from __future__ import annotations

import numpy as np


def check_operator(op: object) -> None:
    """Refuse an ``op`` that lacks one of :class:`HessianVectorProduct`'s members, naming it."""
    for attr in ("dim", "dtype", "device", "matvec"):
        if not hasattr(op, attr):
            raise ValueError(f"expected a HessianOperator (or an object with .{attr}), got {type(op).__name__}")


def check_int(value: object, what: str, minimum: int = 1) -> int:
    """``value`` as an int if it is an integer (not a bool) ``>= minimum``; ValueError naming ``what`` else."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}")
    return int(value)
