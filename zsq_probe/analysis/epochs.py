"""Epochs as users write them (`--epochs 0,5,10-12`) and as messages show them; shared by the post-hoc
probes, the figures and `zsq_probe.analysis.probe_tables`."""

from __future__ import annotations

from zsq_probe.errors import UserError


def parse_epochs(value) -> list[int] | None:
    """Epoch numbers from '0,5,10-12' (ranges inclusive), a list of ints or one int, in the order given.

    None or '' -> None (the caller's default).  Anything else that is not numbers and ranges is a
    UserError naming the value.
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return [value]
    if not isinstance(value, str):
        try:
            return [int(e) for e in value]
        except (TypeError, ValueError):
            raise UserError(f"epochs must be whole numbers, got {value!r}") from None
    out: list[int] = []
    try:
        for part in value.split(","):
            part = part.strip()
            if not part:
                continue
            if "-" in part[1:]:
                first, last = (int(x) for x in part.split("-", 1))
                if last < first:
                    raise ValueError
                out += range(first, last + 1)
            else:
                out.append(int(part))
    except ValueError:
        raise UserError(f"--epochs expects numbers and ranges like 0,5,10-12, got {value!r}") from None
    return out or None


def epoch_list(epochs) -> str:
    """Epochs for a message: '1, 2, 3', '1..400 (400 epochs)' when long, 'none' when empty."""
    epochs = list(epochs)
    if len(epochs) > 8:
        return f"{epochs[0]}..{epochs[-1]} ({len(epochs)} epochs)"
    return ", ".join(str(e) for e in epochs) or "none"
