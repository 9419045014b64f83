"""Epochs as users write them (`--epochs 0,5,10-12`) and as messages show them; shared by the post-hoc
probes, the figures and `zsq_probe.analysis.probe_tables`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import SupportsInt

from zsq_probe.errors import UserError, one_line

MAX_EPOCH = 1_000_000  # the most epochs a run config allows (zsq_probe.config): no epoch list goes past it


def parse_epochs(
    value: str | int | Iterable[SupportsInt] | None, last: int | None = None, what: str = "the run"
) -> list[int] | None:
    """Epoch numbers from '0,5,10-12' (ranges inclusive), a list of ints or one int, in the order given.

    Messages are one line of at most 200 characters.

    Args:
        value: '0,5,10-12', a list of ints or one int; None or '' for the caller's default.
        last: `what`'s last epoch (default MAX_EPOCH).
        what: what the epochs belong to, for messages ('this run').

    Returns:
        The epochs, or None for None or ''.

    Raises:
        UserError: `value` is not numbers and ranges (naming it), or an epoch is below 0 or past `last` (found
            before a range is expanded).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    bound = MAX_EPOCH if last is None else last
    shown = one_line(repr(value), limit=40)
    if isinstance(value, int):
        if isinstance(value, bool):  # True is an int to Python, not an epoch
            raise UserError(f"epochs must be whole numbers, got {shown}")
        return _bounded([value], bound, shown, what)
    if not isinstance(value, str):
        try:
            epochs = [int(e) for e in value]
        except (TypeError, ValueError):
            raise UserError(f"epochs must be whole numbers, got {shown}") from None
        return _bounded(epochs, bound, shown, what)
    out: list[int] = []
    try:
        for part in value.split(","):
            part = part.strip()
            if not part:
                raise UserError(f"epochs {shown} has an empty item (write them as 0,5,10-12)")
            if "-" in part[1:]:
                first, final = (int(x) for x in part.split("-", 1))
                if final < first:
                    raise ValueError
                _bounded([first, final], bound, shown, what)
                out += range(first, final + 1)
            else:
                out += _bounded([int(part)], bound, shown, what)
    except UserError:
        raise
    except ValueError:
        raise UserError(f"--epochs expects numbers and ranges like 0,5,10-12, got {shown}") from None
    return out or None


def _bounded(epochs: list[int], last: int, shown: str, what: str) -> list[int]:
    for e in epochs:
        if e < 0 or e > last:
            raise UserError(f"--epochs {shown}: epoch {e} is outside {what}'s epochs 0..{last}")
    return epochs


def epoch_list(epochs: Iterable[int]) -> str:
    """Epochs for a message.

    Args:
        epochs: the epochs, in the order shown.

    Returns:
        '1, 2, 3', '1..400 (400 epochs)' when long, 'none' when empty.
    """
    listed = list(epochs)
    if len(listed) > 8:
        return f"{listed[0]}..{listed[-1]} ({len(listed)} epochs)"
    return ", ".join(str(e) for e in listed) or "none"
