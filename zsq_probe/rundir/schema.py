"""The parquet tables a run writes: names, columns and their meaning (units included).

One source of truth: probes write these columns, figure scripts check them (`require_columns`), and the
"Table columns" section of docs/run-directory.md is printed from here (`python -m zsq_probe.rundir.schema`).
Every table also carries `schema_version` (an int per row, and in the parquet metadata).  Epochs count from 1;
`step` is the iteration within the epoch, from 0; `global_step` counts iterations since the start of the run.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from zsq_probe.errors import UserError

if TYPE_CHECKING:
    import pandas as pd

COMMON = {
    "run": "run folder name",
    "method": "training method label (gdfq, kl-only, ait, kd, ...)",
    "epoch": "epoch, from 1 (0 = before training)",
}

TABLES: dict[str, dict[str, str]] = {
    "metrics": {
        **COMMON,
        "preset": "preset name",
        "iterations": "iterations in the epoch",
        "student_stepped": "whether the student took optimiser steps (false during the generator warm-up)",
        "act_ranges_frozen": "whether activation ranges were frozen in this epoch",
        "loss_kl": "mean KL(teacher || student) at temperature T, PyTorch reduction='mean' (over batch x classes)",
        "loss_kl_scaled": "loss_kl * T^2, the KL term as trained",
        "loss_ce": "mean cross-entropy of the student against the hard (or Qimera soft) labels",
        "loss_student": "mean training loss of the student: kd_weight*loss_kl_scaled + ce_weight*loss_ce",
        "loss_generator_ce": "mean CE of the teacher on generated samples (generator loss term)",
        "loss_bns": "mean BN-statistics loss of the generator (MSE of batch vs running mean and variance)",
        "loss_generator": "mean generator loss: gen_ce_weight*loss_generator_ce + bns_weight*loss_bns",
        "lr": "student learning rate in this epoch",
        "gen_lr": "generator learning rate in this epoch (NaN without a generator)",
        "gi_p": "gradient-inundation share p in this epoch (NaN without GI)",
        "skipped_steps": "iterations whose student or generator update was skipped for a NaN/inf loss or gradient "
        "(on_nonfinite=skip; their losses are left out of the loss_* means)",
        "val_top1": "top-1 accuracy on the real test split, in [0, 1] (NaN when no test data)",
        "val_ce": "cross-entropy on the real test split against the hard labels (nats)",
        "val_top_class_share": "share of the test split given the student's most often predicted class, in [0, 1]",
        "val_entropy_ratio": "mean entropy of the student's softmax on the test split / ln C (1 = uniform output)",
        "health": "health checks tripped at the epoch's end, comma-separated ('' = none; zsq_probe.training.health)",
        "health_range_ratio": "widest activation range of the student / the teacher's on real images (NaN without "
        "real data or ranges; > 4 trips wide_ranges)",
        "wall_time_s": "wall-clock seconds of the epoch (training + validation)",
    },
    "cosine": {
        **COMMON,
        "step": "iteration within the epoch (-1 for an epoch mean or a post-hoc checkpoint row)",
        "global_step": "iteration since the start of the run (-1 for an epoch mean)",
        "statistic": "'step' (one training batch), 'epoch_mean' (mean of the epoch's step rows) or 'checkpoint'",
        "origin": "'online' (recorded during training) or 'posthoc' (from a checkpoint)",
        "scope": "'model' (all parameters), 'block' or 'layer'",
        "group": "parameter group the row covers ('all', or a block / layer name)",
        "cosine": "cos(grad CE, grad KL) of the student's loss terms on the batch",
        "grad_norm_ce": "L2 norm of the gradient of the CE term (unweighted)",
        "grad_norm_kl": "L2 norm of the gradient of the KL term (KLDiv mean, unweighted by T^2)",
        "angle_deg": "angle between the two gradients in degrees (the paper's 2-D snapshot: grad CE on the x-axis)",
        "batch_size": "samples in the batch",
    },
    "inter_epoch": {
        **COMMON,
        "cosine": "cos(mean grad KL of this epoch, mean grad KL of the previous epoch)",
        "grad_norm": "L2 norm of this epoch's mean grad KL",
        "previous_grad_norm": "L2 norm of the previous epoch's mean grad KL",
        "steps_averaged": "number of steps whose gradient entered this epoch's mean",
    },
    "crossings": {
        **COMMON,
        "step": "iteration within the epoch (-1 for epoch totals and post-hoc rows)",
        "global_step": "iteration since the start of the run (-1 for totals)",
        "statistic": "'step', 'epoch_total' or 'checkpoint_diff' (net change between consecutive checkpoints)",
        "origin": "'online' or 'posthoc'",
        "layer": "quantised layer (module name)",
        "changed": "integer codes q that changed (count; what the reference code counts and GI targets)",
        "changed_level": "weights whose grid level q + zero_point changed (ignores per-channel zero-point flips)",
        "changed_net": "epoch totals: weights whose grid level q + zero_point at the epoch's end differs from the "
        "previous epoch end's (net change: a flip and flip back counts 0; zero-point flips ignored); checkpoint_diff: "
        "the same between the two checkpoints; -1 in step rows",
        "changed_weights": "epoch totals: distinct weights whose grid level q + zero_point changed at least once in "
        "the epoch; -1 in step and checkpoint_diff rows",
        "layer_size": "number of weights (integer codes) in the layer",
        "share": "changed / layer_size (for epoch totals: per step on average, changed / (layer_size*steps))",
        "kappa": "gradient-inundation step multiplier of the layer (NaN without GI; epoch totals: mean)",
        "gi_flag": "'' or why GI stopped at its cap ('cap', 'nonfinite')",
        "gi_p": "gradient-inundation share p (NaN without GI)",
        "steps": "student steps covered by the row",
    },
    "hessian_trace": {
        **COMMON,
        "origin": "'online' or 'posthoc'",
        "loss": "'ce' or 'kl' (the KL term as trained: KLDiv mean * T^2)",
        "scope": "'model', 'block' or 'layer'",
        "group": "parameter group ('all' or a block / layer name)",
        "estimator": "'hutch++' (adaptive, deflated by the top eigenvectors), 'hutchinson' (Rademacher), 'slq' "
        "(stochastic Lanczos quadrature, independent runs) or 'exact' (Gauss-Newton diagonal; a point, no interval)",
        "reason": "why this estimator ran when trace_estimators named 'auto' ('auto: exact (...)' / 'auto: hutch++ "
        "(...)'), or that a block / layer trace was read from the model-scope exact diagonal; '' otherwise",
        "trace": "estimated trace of the Hessian of the loss w.r.t. the group's parameters",
        "stderr": "standard error of the estimate (0 for exact)",
        "ci_low": "lower bound of the 95 % interval (the estimate itself for exact)",
        "ci_high": "upper bound of the 95 % interval",
        "interval": "how the interval was made",
        "num_vectors": "probe vectors (Hutchinson, Hutch++ complement) or Lanczos runs (SLQ); 0 for exact",
        "num_hvps": "Hessian-vector products spent; for hutch++ including the top-eigenvector search that found its "
        "deflation vectors (trace_max_products bounds the rest: deflated Rayleigh quotients, sketch, samples); "
        "0 for exact",
        "num_vjps": "vector-Jacobian products of the logits spent (exact: one per sample and class; 0 otherwise)",
        "stopped_by": "why the estimate stopped: 'tolerance' (95 % half-width <= trace_rtol), 'budget' "
        "(trace_max_products spent, or a fixed-size estimate: block / layer Hutchinson, SLQ), 'exact' (no "
        "sampling) or 'refused' (exact on a model that is not piecewise linear: trace NaN, reason in interval)",
        "num_params": "parameters in the group",
        "probe_batch_size": "samples in the probe batch",
        "probe_batch_source": "'generator' (synthetic from the run's generator), 'real' or 'zeroq'",
        "seed": "seed of this estimator's probe vectors (its own per loss and estimator; -1 for exact)",
        "world_size": "processes the Hessian products were split over (torchrun; 1 = one process)",
    },
    "hessian_eigenvalues": {
        **COMMON,
        "origin": "'online' or 'posthoc'",
        "loss": "'ce' or 'kl'",
        "rank": "1 = largest algebraic (signed) eigenvalue",
        "eigenvalue": "eigenvalue (signed)",
        "num_hvps": "Hessian-vector products spent (plain Lanczos for k = 1, ARPACK otherwise)",
        "probe_batch_size": "samples in the probe batch",
        "probe_batch_source": "'generator', 'real' or 'zeroq'",
        "seed": "seed of the Lanczos start vector",
        "world_size": "processes the Hessian products were split over (torchrun; 1 = one process)",
    },
    "hessian_density": {
        **COMMON,
        "origin": "'online' or 'posthoc'",
        "loss": "'ce' or 'kl'",
        "slq_run": "SLQ run index",
        "node": "Ritz value (eigenvalue location)",
        "weight": "quadrature weight; weights of a run sum to 1/num_runs so all rows of (origin, loss, epoch) sum to 1",
        "sigma": "Gaussian smoothing the figure applies (absolute, in eigenvalue units)",
        "sigma_rule": "'range' (density_sigma_fraction of the spectral range) or 'pyhessian' "
        "(sqrt(1e-5 * max(1, range)))",
        "probe_batch_size": "samples in the probe batch",
        "probe_batch_source": "'generator', 'real' or 'zeroq'",
        "seed": "seed of the SLQ start vectors (its own per loss)",
        "world_size": "processes the Hessian products were split over (torchrun; 1 = one process)",
    },
    "slice": {
        **COMMON,
        "origin": "'online' or 'posthoc'",
        "loss": "'ce' or 'kl' (the KL term as trained: KLDiv mean * T^2), the loss evaluated along the line",
        "loss_kind": "'surrogate' (quantised student, straight-through: weight and activation quantisation "
        "offsets frozen at theta; the loss whose Hessian gives the eigenvector and delta), 'requantized' "
        "(re-quantised at every point) or 'float' (full-precision student); BN in eval mode, ranges frozen",
        "direction": "'eigenvector' (top Hessian eigenvector of that loss, unit norm), 'random' (unit norm) or "
        "'filter' (filter-normalised)",
        "scaling": "'gradient' (delta = gradient of the loss along the direction, the paper's Fig. 2c; differs "
        "between CE and KL), 'norm' (|delta| * ||direction|| = slice_norm_fraction * ||theta||, one "
        "parameter-norm scale for CE and KL, signed like the gradient) or 'unit' (delta = 1)",
        "delta": "the step scale delta (signed)",
        "step_norm": "parameter-space L2 length of the displacement at k = 1, |delta| * ||direction||",
        "theta_norm": "L2 norm of the student's parameters theta (all trainable ones) at the slice",
        "k": "position along the line theta + k * delta * direction, k in [-0.5, 0.5] (k > 0 uphill with 'gradient' "
        "and 'norm' scaling); the displacement's length is |k| * step_norm",
        "loss_value": "loss at that point",
        "probe_batch_size": "samples in the probe batch",
        "seed": "seed of the probe batch (and random direction)",
    },
    "zeroq_distillation": {
        "batch": "distilled batch index",
        "iteration": "Adam iteration on that batch's images",
        "loss": "ZeroQ's BN-statistics loss (sum over BN layers of squared distances of per-channel mean and std)",
        "lr": "learning rate of the image optimiser",
    },
}


# the columns that hold text; every other column of TABLES holds numbers (or booleans) and readers compute on it
TEXT_COLUMNS = frozenset(
    {
        "run", "method", "preset", "statistic", "origin", "scope", "group", "layer", "gi_flag", "loss", "estimator",
        "interval", "probe_batch_source", "sigma_rule", "loss_kind", "direction", "scaling", "stopped_by", "health",
        "reason",
    }
)  # fmt: skip


def tripped_health_checks(metrics: pd.DataFrame) -> dict[str, list[int]]:
    """The health checks that tripped, from a metrics table's `health` column.

    Args:
        metrics: A run's metrics table.

    Returns:
        {check: [epochs]}; {} when none tripped or the column is absent.
    """
    tripped: dict[str, list[int]] = {}
    if "health" in metrics:
        for epoch, checks in zip(metrics["epoch"], metrics["health"]):
            for check in filter(None, checks.split(",") if isinstance(checks, str) else ()):
                tripped.setdefault(check, []).append(int(epoch))
    return tripped


def text_in_numeric_columns(df: pd.DataFrame, table: str) -> list[str]:
    """The columns of `table` that must hold numbers but hold text in `df` (a damaged or hand-edited part).

    Args:
        df: Rows of `table`.
        table: The table's name in `TABLES`.

    Returns:
        The names of those columns, in the schema's order.
    """
    cols = [c for c in TABLES.get(table, {}) if c not in TEXT_COLUMNS and c in df.columns]
    return [
        c for c in cols if df[c].dtype.kind not in "biufcmM" and df[c].map(lambda v: isinstance(v, (str, bytes))).any()
    ]


def require_columns(df: pd.DataFrame, table: str, columns: Iterable[str] | None = None, where: str = "") -> None:
    """Fail loudly when a table lacks columns a reader needs.

    Args:
        df: Rows of `table`.
        table: The table's name in `TABLES`.
        columns: The columns needed; None: every column of `table`.
        where: What to name in the message (default: the table).

    Raises:
        UserError: One or more of the columns are missing.
    """
    needed = list(columns if columns is not None else TABLES[table])
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise UserError(f"{where or table}: table {table!r} lacks column(s) {', '.join(missing)}")


def markdown() -> str:
    """The "Table columns" section of docs/run-directory.md: every table and its columns as markdown."""
    lines = []
    for table, cols in TABLES.items():
        lines.append(f"\n**`probes/{table}/`**\n\n| column | meaning |\n| --- | --- |")
        lines += [f"| `{c}` | {d} |" for c, d in cols.items()]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
