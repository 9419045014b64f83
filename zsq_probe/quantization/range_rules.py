"""The activation-range update rules and what the reference's rule reads before it settles (no torch: the
settings check and the default rule read these without loading the quantiser).

"plain": range <- m*range + (1-m)*batch, the first batch initialises it.  "bias-corrected": the AIT/GDFQ
reference's QuantAct (GDFQ_AIT/quantization_utils/quant_modules.py:54,87-89, commit 13a6c8c): from 0,
beta <- m*beta; range <- (m*range + (1-m)*batch) / (1 - beta).  The stored range is fed back already divided,
so the division compounds (docs/reference.md#activation-quantiser).
"""

from __future__ import annotations

RANGE_EMA_RULES = ("plain", "bias-corrected")
EMA_MOMENTUM = 0.9  # docs/reference.md#activation-quantiser: activation range = EMA(0.9) of batch min/max
SETTLE_TOLERANCE = 0.01  # "settled": a constant batch range reads at most 1 % too wide


def bias_corrected_range_factor(updates: int, momentum: float = EMA_MOMENTUM) -> float:
    """What the reference's bias-corrected rule reads after `updates` batches of one constant range v, in units
    of v (the plain EMA reads 1.0 from the first batch on): 1.0, 5.26, ... 1103 after 10, 3904 after 20, 1283
    after 40, 22.6 after 80, 1.32 after 120 (the recurrence of RANGE_EMA_RULES, from r = 0, beta = 1)."""
    r, beta = 0.0, 1.0
    for _ in range(int(updates)):
        beta *= momentum
        r = (momentum * r + (1 - momentum)) / (1 - beta)
    return r


def bias_corrected_settle_updates(momentum: float = EMA_MOMENTUM, tolerance: float = SETTLE_TOLERANCE) -> int:
    """The fewest updates after which the reference's rule stays within `tolerance` of the batch range: 153 at
    momentum 0.9 and 1 %.  Ranges frozen earlier are too wide by the factor above (x1283 after 40 updates)."""
    r, beta, t, last_bad = 0.0, 1.0, 0, 0
    while t < 100_000:
        t += 1
        beta *= momentum
        r = (momentum * r + (1 - momentum)) / (1 - beta)
        if abs(r - 1.0) > tolerance:
            last_bad = t
        elif t - last_bad > 50 and beta < tolerance * 1e-3:  # past the peak and the division has died out
            return last_bad + 1
    raise ValueError(f"the bias-corrected range does not settle at momentum {momentum}")


BIAS_CORRECTED_SETTLE_UPDATES = bias_corrected_settle_updates()
