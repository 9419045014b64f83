"""Epochs as users write them (`--epochs 0,5,10-12`) and as messages show them; shared by the post-hoc
probes, the figures and `zsq_probe.analysis.probe_tables`."""

from __future__ import annotations

from zsq_probe.errors import UserError, one_line

MAX_EPOCH = 1_000_000  # the most epochs a run config allows (zsq_probe.config): no epoch list goes past it


def parse_epochs(value, last: int | None = None, what: str = "the run") -> list[int] | None:
    """Epoch numbers from '0,5,10-12' (ranges inclusive), a list of ints or one int, in the order given.

    None or '' -> None (the caller's default).  Anything else that is not numbers and ranges is a
    UserError naming the value, and so is an epoch below 0 or past `last` (`what`'s last epoch; default
    MAX_EPOCH), found before a range is expanded.  Messages are one line of at most 200 characters.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    bound = MAX_EPOCH if last is None else last
    shown = one_line(repr(value), limit=40)
    if isinstance(value, int) and not isinstance(value, bool):
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


def epoch_list(epochs) -> str:
    """Epochs for a message: '1, 2, 3', '1..400 (400 epochs)' when long, 'none' when empty."""
    epochs = list(epochs)
    if len(epochs) > 8:
        return f"{epochs[0]}..{epochs[-1]} ({len(epochs)} epochs)"
    return ", ".join(str(e) for e in epochs) or "none"
