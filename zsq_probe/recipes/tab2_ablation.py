"""Tab. 2 (paper §5.3): ablation over GDFQ at 4w4a — KL-only, KL-only with a 100x learning rate, GDFQ + GI,
CE-only + GI and AIT (KL-only + GI) on the five main settings.

Paper scale:

    python -m analyses tab2 --data-root ~/data --device cuda --out runs/tab2

30 runs x 3 seeds; rough single-GPU estimate (A100/H100 class): ~380 GPU-hours (CIFAR ~1.2 h a run,
ImageNet 5-9 h).  Point --out at the folder of Tab. 1 to reuse its GDFQ and AIT 4w4a runs.

Tiny scale (2 CPU cores; measured ~5 min per seed on a busy 2-core box):

    python -m analyses tab2 --scale tiny --seeds 1

Keeps the six loss/optimiser variants of the CIFAR-10 ResNet-20 column at 3w3a on digits; loses the
other columns, the real models and data (see RECIPE["tiny"]).  'KL-only (high lr)' is 100 x the paper's
1e-4 = 1e-2 at paper scale and 10 x digits' 1e-3 = 1e-2 at the tiny scale (100x diverges there;
zsq_probe.presets.HIGH_LR_FACTOR).
"""

from zsq_probe.recipes.setting_names import MAIN_MODELS
from zsq_probe.recipes.specs import cell, run, tiny

ROWS = [  # (paper row, preset, paper values in MAIN_MODELS order)
    ("Baseline (GDFQ)", "gdfq", (90.25, 63.39, 60.60, 52.12, 59.43)),
    ("KL-only", "kl-only", (90.06, 58.93, 58.49, 42.64, 47.03)),
    ("KL-only (high lr)", "kl-only-high-lr", (92.20, 62.20, 65.34, 61.68, 64.70)),
    ("Baseline + GI", "baseline+gi", (89.32, 59.05, 55.01, 44.09, 43.57)),
    ("CE-only + GI", "ce-only+gi", (90.89, 51.57, 52.72, 27.86, 33.88)),
    ("AIT (KL-only + GI)", "ait", (91.23, 65.80, 65.51, 64.24, 65.39)),
]

RUNS = {(t, p): run(p, t, 4, 4) for _, p, _ in ROWS for t in MAIN_MODELS}

RECIPE = {
    "name": "tab2",
    "paper": "Table 2 (§5.3)",
    "title": "Ablation study over GDFQ (4w4a)",
    "description": "Which part of AIT helps: dropping CE (KL-only), a 100x learning rate instead of GI, GI on "
    "the GDFQ loss or on CE alone, and AIT itself, on ResNet-20 (CIFAR-10/100), ResNet-18, "
    "ResNet-50 and MobileNetV2 (ImageNet) at 4w4a.",
    "runs": list(RUNS.values()),
    "seeds": [0, 1, 2],
    "figures": [],
    "table": {
        "title": "Table 2. Ablation study (top-1 %, 4w4a)",
        "row_header": "method",
        "columns": list(MAIN_MODELS.values()),
        "blocks": [
            {
                "title": "4w4a",
                "rows": [
                    {
                        "label": label,
                        "cells": {MAIN_MODELS[t]: cell(RUNS[t, p], v) for t, v in zip(MAIN_MODELS, values)},
                    }
                    for label, p, values in ROWS
                ],
            }
        ],
        "notes": [
            "KL-only (high lr): the student's learning rate x100 (preset kl-only-high-lr; x10 at the tiny digits "
            "scale, where x100 diverges)."
        ],
    },
    "tiny": tiny(
        only=["resnet20_cifar10-*"],
        keeps="all six rows of the CIFAR-10 ResNet-20 column",
        loses="the CIFAR-100 and ImageNet columns",
    ),
}
