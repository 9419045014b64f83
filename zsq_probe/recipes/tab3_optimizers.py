"""Tab. 3 (paper §5.3): GI on other optimisers — the GDFQ loss with SGD, Adam, RMSProp (and LARS) against AIT
(KL-only + GI) wrapped around SGD, Adam and RMSProp, on the five main settings at 4w4a.

Paper scale:

    python -m analyses tab3 --data-root ~/data --device cuda --out runs/tab3

35 runs x 3 seeds; rough single-GPU estimate (A100/H100 class): ~440 GPU-hours.  Point --out at the
folder of Tab. 1 to reuse its GDFQ (Baseline-SGD) and AIT (GI-SGD) 4w4a runs.  Baseline-LARS is the
`gdfq-lars` preset (zsq_probe.quantization.lars, You et al. 2017; the reference repositories have no LARS code).

Tiny scale (2 CPU cores; ~8 min per seed on a busy 2-core box, summed from measured per-run times):

    python -m analyses tab3 --scale tiny --seeds 1

Keeps the seven optimiser rows of the CIFAR-10 ResNet-20 column at 3w3a on digits; loses the other
columns, the real models and data (see RECIPE["tiny"]).
"""

from zsq_probe.recipes.setting_names import MAIN_MODELS
from zsq_probe.recipes.specs import cell, run, tiny

ROWS = [  # (paper row, preset or None when zsq-probe cannot run it, paper values in MAIN_MODELS order)
    ("Baseline-LARS", "gdfq-lars", (90.01, 63.84, 58.94, 52.98, 59.58)),
    ("Baseline-SGD", "gdfq", (90.25, 63.39, 60.60, 52.12, 59.43)),
    ("Baseline-Adam", "gdfq-adam", (91.12, 57.39, 40.97, 30.16, 26.35)),
    ("Baseline-RMSProp", "gdfq-rmsprop", (89.88, 63.18, 51.12, 40.65, 31.52)),
    ("GI-SGD (AIT)", "ait", (91.23, 65.80, 65.51, 64.24, 65.39)),
    ("GI-Adam", "ait-adam", (91.33, 64.38, 65.47, 65.67, 61.33)),
    ("GI-RMSProp", "ait-rmsprop", (90.82, 65.78, 65.73, 62.42, 65.41)),
]

RUNS = {(t, p): run(p, t, 4, 4) for _, p, _ in ROWS if p for t in MAIN_MODELS}

RECIPE = {
    "name": "tab3",
    "paper": "Table 3 (§5.3)",
    "title": "Gradient inundation on various optimisers (4w4a)",
    "description": "GDFQ's loss trained with LARS, SGD-Nesterov, Adam and RMSProp versus AIT with GI wrapped "
    "around SGD, Adam and RMSProp (the reference's Adam eps=1e-5, RMSprop eps=1.0, alpha=0.9).",
    "runs": list(RUNS.values()),
    "seeds": [0, 1, 2],
    "figures": [],
    "table": {
        "title": "Table 3. GI on various optimisers (top-1 %, 4w4a)",
        "row_header": "optimiser",
        "columns": list(MAIN_MODELS.values()),
        "blocks": [
            {
                "title": "4w4a",
                "rows": [
                    {
                        "label": label,
                        "cells": {
                            MAIN_MODELS[t]: cell(RUNS[t, p] if p else None, v) for t, v in zip(MAIN_MODELS, values)
                        },
                    }
                    for label, p, values in ROWS
                ],
            }
        ],
        "notes": [
            "Baseline-LARS: zsq-probe's LARS (trust coefficient 1e-3) with the GDFQ recipe; the paper "
            "gives no LARS settings and the reference repositories have no LARS code."
        ],
    },
    "tiny": tiny(
        only=["resnet20_cifar10-*"],
        keeps="the seven optimiser rows of the CIFAR-10 ResNet-20 column",
        loses="the CIFAR-100 and ImageNet columns",
    ),
}
