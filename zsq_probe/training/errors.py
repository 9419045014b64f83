"""How training stops on bad numbers: the one exception the loop and the checkpoint writer both raise."""

from __future__ import annotations

from zsq_probe.errors import UserError


class NonFiniteError(UserError):
    """A loss or gradient became NaN/inf; the message names the epoch, step and term, and the last good
    checkpoint (nothing of the failed epoch is written).  `on_nonfinite=skip` skips such updates instead."""
