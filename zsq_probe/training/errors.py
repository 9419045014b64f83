"""How training stops on bad numbers: the one exception the loop and the checkpoint writer both raise."""

from __future__ import annotations

from zsq_probe.errors import ComputeError


class NonFiniteError(ComputeError):
    """A loss or gradient became NaN/inf; the message names the epoch, step and term, and the last good
    checkpoint (nothing of the failed epoch is written); the command line exits 1.  `on_nonfinite=skip` skips
    such updates instead."""
