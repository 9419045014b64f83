"""Tab. 9 (appendix D): GDFQ with label smoothing at 4w4a — the GDFQ loss (CE + KL) and CE-only, each with label
smoothing c in {0, 0.1, 0.3, 0.5} on the student's CE, against AIT, on CIFAR-10/100 ResNet-20 and ImageNet
ResNet-18.

Paper scale:

    python -m analyses tab9 --data-root ~/data --device cuda --out runs/tab9

27 runs x 3 seeds; rough single-GPU estimate (A100/H100 class): ~200 GPU-hours (~65 for CIFAR:
--only 'resnet20_*').  The c=0 GDFQ run and the AIT run are the plain runs of Tab. 1 (shared when --out
is the same).  CE-only is the 'ce-only' preset (CE against the hard labels, no KL, no GI).

Tiny scale (2 CPU cores; ~12 min per seed on a busy 2-core box, summed from measured per-run times):

    python -m analyses tab9 --scale tiny --seeds 1

Keeps the CIFAR-10 ResNet-20 block (both losses at four c values, and AIT) at 3w3a on digits; loses the
CIFAR-100 and ImageNet blocks, the real models and data (see RECIPE["tiny"]).
"""

from typing import Any

from zsq_probe.recipes.setting_names import MODEL_NAMES
from zsq_probe.recipes.specs import RunSpec, cell, run, tiny

SMOOTHING = [0.0, 0.1, 0.3, 0.5]
PAPER = {  # teacher -> (baseline per c, CE-only per c, AIT)
    "resnet20_cifar10": ((90.25, 89.67, 88.85, 88.52), (88.36, 88.67, 88.21, 87.89), 91.23),
    "resnet20_cifar100": ((63.39, 60.50, 59.11, 58.53), (56.76, 60.10, 59.13, 57.81), 65.80),
    "resnet18": ((60.60, 62.41, 62.57, 62.25), (60.33, 62.48, 62.27, 62.18), 65.51),
}


def _baseline(teacher: str, c: float) -> RunSpec:
    return run("gdfq", teacher, 4, 4) if c == 0 else run("gdfq", teacher, 4, 4, tag=f"ls{c:g}", label_smoothing=c)


def _ce_only(teacher: str, c: float) -> RunSpec:
    extra: dict[str, Any] = {"label_smoothing": c} if c else {}
    return run("ce-only", teacher, 4, 4, tag="ce-only" + (f"-ls{c:g}" if c else ""), **extra)


RUNS: dict[tuple[str, str, float] | tuple[str, str], RunSpec] = {}  # (teacher, method, smoothing) or (teacher, "ait")
for t in PAPER:
    for c in SMOOTHING:
        RUNS[t, "baseline", c] = _baseline(t, c)
        RUNS[t, "ce-only", c] = _ce_only(t, c)
    RUNS[t, "ait"] = run("ait", t, 4, 4)

COLS = [f"c={c:.2f}" for c in SMOOTHING] + ["AIT"]

BLOCKS = []
for t, (base, ce, ait) in PAPER.items():
    rows = [
        {
            "label": "Baseline (GDFQ)",
            "cells": {
                **{f"c={c:.2f}": cell(RUNS[t, "baseline", c], v) for c, v in zip(SMOOTHING, base)},
                "AIT": cell(RUNS[t, "ait"], ait),
            },
        },
        {"label": "CE-only", "cells": {f"c={c:.2f}": cell(RUNS[t, "ce-only", c], v) for c, v in zip(SMOOTHING, ce)}},
    ]
    BLOCKS.append({"title": f"{MODEL_NAMES[t]}, 4w4a", "rows": rows})

RECIPE = {
    "name": "tab9",
    "paper": "Table 9 (appendix D)",
    "title": "GDFQ with label smoothing (4w4a)",
    "description": "Does label smoothing flatten CE enough?  GDFQ (CE + KL) and CE-only with label smoothing "
    "c = 0, 0.1, 0.3, 0.5, beside AIT (no smoothing).",
    "runs": list(RUNS.values()),
    "seeds": [0, 1, 2],
    "figures": [],
    "table": {
        "title": "Table 9. GDFQ with label smoothing, 4w4a (top-1 %)",
        "row_header": "loss",
        "columns": COLS,
        "blocks": BLOCKS,
        "notes": ["c=0.00: no smoothing; c is applied to the student's CE against the generator's labels."],
    },
    "tiny": tiny(
        only=["resnet20_cifar10-*"], keeps="the CIFAR-10 ResNet-20 block", loses="the CIFAR-100 and ImageNet blocks"
    ),
}
