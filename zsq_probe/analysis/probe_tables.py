"""Pure functions on probe tables (pandas DataFrames in, DataFrames or plain dicts out).

The figures (`zsq_probe.plots`) and `zsq-probe compare` shape the parquet through these, so a number
printed by `compare` and a curve drawn by a figure always come from the same rows.  Every function checks the
columns it reads with `schema.require_columns` (a missing column is a UserError naming it).

Row selection rules (written once, here):
* cosine: model-scope rows (`scope == 'model'`).  Online rows are used when a run has any; a run
  with only post-hoc rows uses its `checkpoint` rows (one per checkpoint epoch).  Epoch values are the
  `epoch_mean` rows when present, else the mean of the epoch's `step` rows.
* hessian_trace: model-scope rows; for each (epoch, loss, estimator) the online row when there is one,
  else the post-hoc row (a post-hoc measurement of a checkpoint repeats the online one: the two are not
  independent, so they are never averaged).  The interval is the row's `ci_low`/`ci_high`; runs written
  before intervals were recorded get mean ± 1.96 stderr.  One estimate per loss is drawn and summarised:
  the first of TRACE_PREFERENCE the run has.
* crossings: per-layer `epoch_total` rows when present, else the epoch's `step` rows summed, else
  `checkpoint_diff` rows (post hoc; the net change between two checkpoints).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, SupportsFloat, TypeAlias

import numpy as np
import pandas as pd

from zsq_probe.analysis.epochs import epoch_list
from zsq_probe.errors import UserError
from zsq_probe.rundir.schema import require_columns

log = logging.getLogger(__name__)

# A probe's summary, what `compare` prints and JSON holds: numbers (float | int | None), names (str) and
# intervals ([low, high] | None), by key.
Summary: TypeAlias = dict[str, Any]
Interval: TypeAlias = list[float]  # [low, high]

# The probes `zsq-probe compare` summarises, each with the one of its tables (zsq_probe.probe_registry) it reads.
PROBE_TABLE = {"cosine": "cosine", "hessian": "hessian_trace", "inter_epoch": "inter_epoch"}
COMPARABLE_PROBES = tuple(PROBE_TABLE)

# How to produce each table (messages about a missing table name it).
HOW_TO_GET = {
    "metrics": "written by `zsq-probe train`",
    "cosine": "train with --probes cosine or run `zsq-probe cosine --run RUN`",
    "inter_epoch": "train with --probes inter_epoch",
    "crossings": "train with --probes crossings or run `zsq-probe crossings --run RUN`",
    "hessian_trace": "train with --probes hessian or run `zsq-probe hessian --run RUN`",
    "hessian_eigenvalues": "train with --probes hessian or run `zsq-probe hessian --run RUN`",
    "hessian_density": "train with --probes hessian or run `zsq-probe hessian --run RUN`",
    "slice": "train with --probes slice or run `zsq-probe slice --run RUN`",
}


def _finite(x: SupportsFloat | None) -> float | None:
    """A float for JSON: NaN / inf / None -> None."""
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


# ------------------------------------------------------------------------------------------- cosine
COSINE_COLUMNS = (
    "epoch",
    "step",
    "statistic",
    "origin",
    "scope",
    "cosine",
    "angle_deg",
    "grad_norm_ce",
    "grad_norm_kl",
)


def model_cosine(df: pd.DataFrame, where: str = "cosine") -> pd.DataFrame:
    """Model-scope cosine rows of one run; online rows preferred over post-hoc ones."""
    require_columns(df, "cosine", COSINE_COLUMNS, where)
    d = df[df["scope"] == "model"]
    if d.empty:
        raise UserError(f"{where}: table 'cosine' has no model-scope rows (scope == 'model')")
    online = d[d["origin"] == "online"]
    return (online if not online.empty else d).copy()


def cosine_steps(df: pd.DataFrame, where: str = "cosine") -> pd.DataFrame:
    """The per-step rows (statistic 'step'); for a post-hoc-only run its per-checkpoint rows."""
    d = model_cosine(df, where)
    steps = d[d["statistic"] == "step"]
    if steps.empty:
        steps = d[d["statistic"] == "checkpoint"]
    return steps.sort_values(["epoch", "step"]).reset_index(drop=True)


def cosine_epochs(df: pd.DataFrame, where: str = "cosine") -> pd.DataFrame:
    """One row per epoch: epoch, cosine, angle_deg, grad_norm_ce, grad_norm_kl, n (rows averaged)."""
    d = model_cosine(df, where)
    cols = ["cosine", "angle_deg", "grad_norm_ce", "grad_norm_kl"]
    means = d[d["statistic"] == "epoch_mean"]
    if not means.empty:
        out = means.groupby("epoch", as_index=False)[cols].mean()
        n = d[d["statistic"] == "step"].groupby("epoch").size()
        out["n"] = out["epoch"].map(n).fillna(1).astype(int)
    else:
        rows = d[d["statistic"] == "step"]
        if rows.empty:
            rows = d[d["statistic"] == "checkpoint"]
        if rows.empty:
            raise UserError(f"{where}: table 'cosine' has no 'step', 'epoch_mean' or 'checkpoint' rows")
        g = rows.groupby("epoch")
        out = g[cols].mean().reset_index()
        out["n"] = g.size().values
    return out.sort_values("epoch").reset_index(drop=True)


def summarize_cosine(df: pd.DataFrame, where: str = "cosine") -> Summary:
    """The cosine numbers `compare` prints.

    Args:
        df: a run's cosine table.
        where: what the table is, for messages.

    Returns:
        steps, share of negative steps, epoch-mean cosines (mean, median, last), and which rows they come from
        (`basis`).

    Raises:
        UserError: a column is missing, or the table has no rows to summarise.
    """
    steps = cosine_steps(df, where)
    epochs = cosine_epochs(df, where)
    cos = steps["cosine"].to_numpy(dtype=float)
    cos = cos[np.isfinite(cos)]
    basis = "step" if (steps["statistic"] == "step").any() else "checkpoint"
    return {
        "steps": int(cos.size),
        "basis": basis,
        "share_negative": _finite(np.mean(cos < 0)) if cos.size else None,
        "epochs": int(len(epochs)),
        "mean_epoch_cosine": _finite(epochs["cosine"].mean()),
        "median_epoch_cosine": _finite(epochs["cosine"].median()),
        "last_epoch_cosine": _finite(epochs["cosine"].iloc[-1]) if len(epochs) else None,
    }


# ------------------------------------------------------------------------------------------ hessian
TRACE_COLUMNS = ("epoch", "loss", "scope", "estimator", "trace", "stderr")
TRACE_PREFERENCE = ("exact", "hutch++", "hutchinson", "slq")  # the estimate a figure or summary shows


def trace_curves(df: pd.DataFrame, where: str = "hessian_trace") -> pd.DataFrame:
    """Model-scope traces, one row per (estimator, loss, epoch): trace, stderr, ci_low, ci_high, origin."""
    require_columns(df, "hessian_trace", TRACE_COLUMNS, where)
    d = df[df["scope"] == "model"]
    if d.empty:
        raise UserError(f"{where}: table 'hessian_trace' has no model-scope rows (scope == 'model')")
    if "origin" in d:
        d = d.assign(_post=(d["origin"] != "online").astype(int))
    else:
        d = d.assign(_post=0)
    d = d.sort_values(["estimator", "loss", "epoch", "_post"]).drop_duplicates(["estimator", "loss", "epoch"])
    out = pd.DataFrame(
        {
            "estimator": d["estimator"].astype(str),
            "loss": d["loss"].astype(str),
            "epoch": d["epoch"].astype(int),
            "trace": d["trace"].astype(float),
            "stderr": d["stderr"].astype(float),
        }
    )
    if {"ci_low", "ci_high"} <= set(d.columns):
        out["ci_low"], out["ci_high"] = d["ci_low"].astype(float), d["ci_high"].astype(float)
    else:
        out["ci_low"], out["ci_high"] = np.nan, np.nan
    fallback = out["ci_low"].isna() & out["stderr"].notna() & (out["estimator"] != "exact")
    out.loc[fallback, "ci_low"] = out["trace"] - 1.96 * out["stderr"]
    out.loc[fallback, "ci_high"] = out["trace"] + 1.96 * out["stderr"]
    out["origin"] = d["origin"].astype(str) if "origin" in d else "online"
    return out.reset_index(drop=True)


def preferred_estimator(curves: pd.DataFrame) -> str | None:
    """The estimator a figure or summary shows for a run (TRACE_PREFERENCE order)."""
    have = set(curves["estimator"])
    return next((e for e in TRACE_PREFERENCE if e in have), None)


def summarize_hessian(df: pd.DataFrame, where: str = "hessian_trace") -> Summary:
    """Median (over epochs) trace per loss, of the preferred estimator, with the median interval bounds.

    Args:
        df: a run's hessian_trace table.
        where: what the table is, for messages.

    Returns:
        The estimator, the epochs, per loss the median trace and interval bounds, their KL / CE ratio, and the
        last epoch with both losses: its traces, intervals, ratio and the ratio's range.

    Raises:
        UserError: a column is missing, or the table has no model-scope rows.
    """
    curves = trace_curves(df, where)
    est = preferred_estimator(curves) or str(curves["estimator"].iloc[0])
    c = curves[curves["estimator"] == est]
    out: dict[str, object] = {"estimator": est, "epochs": int(c["epoch"].nunique())}
    medians: dict[str, float | None] = {}
    for loss in ("ce", "kl"):
        g = c[c["loss"] == loss]
        medians[f"median_trace_{loss}"] = _finite(g["trace"].median()) if len(g) else None
        medians[f"median_ci_low_{loss}"] = _finite(g["ci_low"].median()) if len(g) else None
        medians[f"median_ci_high_{loss}"] = _finite(g["ci_high"].median()) if len(g) else None
    out.update(medians)
    ce, kl = medians["median_trace_ce"], medians["median_trace_kl"]
    out["kl_over_ce"] = _finite(kl / ce) if kl is not None and ce is not None and ce != 0 else None
    # the last epoch with both losses: point values and 95 % intervals (the verdicts use these)
    both = sorted(set(c.loc[c["loss"] == "ce", "epoch"]) & set(c.loc[c["loss"] == "kl", "epoch"]))
    last_epoch = int(both[-1]) if both else None
    out["last_epoch"] = last_epoch
    last: dict[str, float | None] = {}
    for loss in ("ce", "kl"):
        row = c[(c["loss"] == loss) & (c["epoch"] == last_epoch)]
        for k in ("trace", "ci_low", "ci_high"):
            last[f"last_{k}_{loss}"] = _finite(row[k].iloc[0]) if len(row) else None
    out.update(last)
    out["last_kl_over_ce"] = _ratio(last["last_trace_kl"], last["last_trace_ce"])
    out["last_kl_over_ce_range"] = ratio_range(
        last["last_ci_low_kl"], last["last_ci_high_kl"], last["last_ci_low_ce"], last["last_ci_high_ce"]
    )
    return out


def ratio_range(
    num_low: float | None, num_high: float | None, den_low: float | None, den_high: float | None
) -> Interval | None:
    """The range of num / den over two intervals.

    Args:
        num_low: the numerator's interval, low end.
        num_high: its high end.
        den_low: the denominator's interval, low end.
        den_high: its high end.

    Returns:
        [low, high] of num / den, when both intervals are known and positive; else None.
    """
    if num_low is None or num_high is None or den_low is None or den_high is None or num_low <= 0 or den_low <= 0:
        return None
    return [num_low / den_high, num_high / den_low]


def interval_verdict(a_low: float | None, a_high: float | None, b_low: float | None, b_high: float | None) -> str:
    """Where interval a lies with respect to interval b.

    Args:
        a_low: interval a, low end.
        a_high: its high end.
        b_low: interval b, low end.
        b_high: its high end.

    Returns:
        'below' / 'above' when a lies wholly below / above b, else 'inconclusive' (an end unknown included).
    """
    if a_low is None or a_high is None or b_low is None or b_high is None:
        return "inconclusive"
    if a_high < b_low:
        return "below"
    if a_low > b_high:
        return "above"
    return "inconclusive"


# -------------------------------------------------------------------------------------- inter-epoch
def inter_epoch_curve(df: pd.DataFrame, where: str = "inter_epoch") -> pd.DataFrame:
    """The inter-epoch cosine per epoch (mean over rows of the same epoch), sorted by epoch."""
    require_columns(df, "inter_epoch", ("epoch", "cosine"), where)
    return df.groupby("epoch", as_index=False)["cosine"].mean().sort_values("epoch").reset_index(drop=True)


def summarize_inter_epoch(df: pd.DataFrame, where: str = "inter_epoch") -> Summary:
    """The inter-epoch numbers `compare` prints.

    Args:
        df: a run's inter_epoch table.
        where: what the table is, for messages.

    Returns:
        The epochs and the mean, median and last inter-epoch cosine.

    Raises:
        UserError: a column is missing.
    """
    c = inter_epoch_curve(df, where)
    return {
        "epochs": int(len(c)),
        "mean_inter_epoch_cosine": _finite(c["cosine"].mean()),
        "median_inter_epoch_cosine": _finite(c["cosine"].median()),
        "last_inter_epoch_cosine": _finite(c["cosine"].iloc[-1]) if len(c) else None,
    }


SUMMARIZERS: dict[str, Callable[[pd.DataFrame, str], Summary]] = {
    "cosine": summarize_cosine,
    "hessian": summarize_hessian,
    "inter_epoch": summarize_inter_epoch,
}


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else _finite(a / b)


def compare_tables(
    kd: pd.DataFrame, zq: pd.DataFrame, probe: str, kd_name: str = "kd", zq_name: str = "zq"
) -> dict[str, Any]:
    """Summaries of the same probe for a KD run and a ZQ run, and their ZQ/KD ratios.

    Args:
        kd: the KD run's table of the probe.
        zq: the ZQ run's.
        probe: 'cosine', 'hessian' or 'inter_epoch'.
        kd_name: the KD run's name, for messages.
        zq_name: the ZQ run's.

    Returns:
        `contrast_summaries` of the two summaries.

    Raises:
        UserError: an unknown probe, or a table lacks what its summary needs.
    """
    if probe not in SUMMARIZERS:
        raise UserError(f"unknown probe {probe!r}: choose one of {', '.join(COMPARABLE_PROBES)}")
    table = PROBE_TABLE[probe]
    return contrast_summaries(
        probe, SUMMARIZERS[probe](kd, f"{kd_name} probes/{table}"), SUMMARIZERS[probe](zq, f"{zq_name} probes/{table}")
    )


def contrast_summaries(probe: str, s_kd: Summary, s_zq: Summary) -> dict[str, Any]:
    """Two summaries of one probe side by side.

    Args:
        probe: 'cosine', 'hessian' or 'inter_epoch'.
        s_kd: the KD side's summary.
        s_zq: the ZQ side's.

    Returns:
        {probe, kd, zq} and the ZQ - KD differences (`zq_minus_kd`: cosines) or ZQ / KD ratios (`zq_over_kd`:
        traces).
    """
    out: dict[str, Any] = {"probe": probe, "kd": s_kd, "zq": s_zq}
    if probe == "cosine":
        out["zq_minus_kd"] = {
            k: (None if s_kd[k] is None or s_zq[k] is None else s_zq[k] - s_kd[k])
            for k in ("share_negative", "mean_epoch_cosine", "median_epoch_cosine")
        }
    elif probe == "hessian":
        out["zq_over_kd"] = {k: _ratio(s_zq[k], s_kd[k]) for k in ("median_trace_ce", "median_trace_kl", "kl_over_ce")}
    else:
        out["zq_minus_kd"] = {
            "mean_inter_epoch_cosine": None
            if s_kd["mean_inter_epoch_cosine"] is None or s_zq["mean_inter_epoch_cosine"] is None
            else s_zq["mean_inter_epoch_cosine"] - s_kd["mean_inter_epoch_cosine"]
        }
    return out


# ---------------------------------------------------------------------------------------- crossings
CROSSING_COLUMNS = ("epoch", "statistic", "layer", "changed", "layer_size", "steps", "kappa", "gi_p")


def crossings_epochs(df: pd.DataFrame, where: str = "crossings") -> list[int]:
    """The epochs a crossings table has rows for.

    Args:
        df: a run's crossings table.
        where: what the table is, for messages.

    Returns:
        The epochs, sorted.

    Raises:
        UserError: a column is missing.
    """
    require_columns(df, "crossings", CROSSING_COLUMNS, where)
    return sorted(int(e) for e in df["epoch"].unique())


def crossings_per_layer(df: pd.DataFrame, epoch: int, where: str = "crossings") -> tuple[pd.DataFrame, str]:
    """Per layer (in model order) at `epoch`: changed_per_step, share_per_step, layer_size, kappa, gi_p.

    Returns (frame, basis) with basis 'epoch_total', 'step' or 'checkpoint_diff'.
    """
    require_columns(df, "crossings", CROSSING_COLUMNS, where)
    d = df[df["epoch"] == epoch]
    if d.empty:
        raise UserError(
            f"{where}: no crossings rows for epoch {epoch} (epochs with data: "
            f"{epoch_list(crossings_epochs(df, where))})"
        )
    order = list(dict.fromkeys(df["layer"]))  # first appearance = module order
    for basis in ("epoch_total", "step", "checkpoint_diff"):
        rows = d[d["statistic"] == basis]
        if not rows.empty:
            break
    else:
        raise UserError(f"{where}: epoch {epoch} has no 'epoch_total', 'step' or 'checkpoint_diff' rows")
    g = rows.groupby("layer", sort=False)
    out = pd.DataFrame(
        {
            "changed": g["changed"].sum().astype(float),
            "steps": g["steps"].sum().astype(float),
            "layer_size": g["layer_size"].max().astype(float),
            "kappa": g["kappa"].mean(),
            "gi_p": g["gi_p"].mean(),
        }
    )
    out["steps"] = out["steps"].where(out["steps"] > 0, 1.0)
    out["changed_per_step"] = out["changed"] / out["steps"]
    out["share_per_step"] = out["changed_per_step"] / out["layer_size"]
    out = out.reindex([layer for layer in order if layer in out.index])
    out.index.name = "layer"
    return out.reset_index(), basis


# ------------------------------------------------------------------------------ seeds and verdicts
def aggregate_seeds(summaries: list[Summary]) -> tuple[Summary, dict[str, list[float | None] | None]]:
    """The seeds of one setting as one summary.

    Args:
        summaries: one summary per seed (at least one).

    Returns:
        (mean of each number, seed interval [min, max] of each number); other values (names, estimators) are the
        first seed's, lists (one seed's intervals) None.  One seed: the summary itself, intervals None.
    """
    mean = dict(summaries[0])
    span: dict[str, list[float | None] | None] = {}
    for key, v in summaries[0].items():
        if isinstance(v, list) and len(summaries) > 1:  # one seed's interval: see `per_seed`
            mean[key] = None
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            given = [s.get(key) for s in summaries]
            if any(x is None for x in given):
                mean[key], span[key] = None, None
                continue
            vals = [x for x in given if x is not None]
            mean[key] = _finite(float(np.mean(vals))) if len(vals) > 1 else v
            span[key] = [_finite(min(vals)), _finite(max(vals))] if len(vals) > 1 else None
    return mean, span


HEADLINE = {"cosine": "mean_epoch_cosine", "hessian": "last_kl_over_ce", "inter_epoch": "mean_inter_epoch_cosine"}


def headline_verdict(
    probe: str,
    kd: Summary,
    zq: Summary,
    kd_span: Mapping[str, Sequence[float | None] | None],
    zq_span: Mapping[str, Sequence[float | None] | None],
    n: Mapping[str, int],
) -> dict[str, Any]:
    """The one verdict rule (docs/demo.md, "The verdict rule"): ZQ 'above' / 'below' KD on the probe's headline
    number when the two intervals do not overlap, else 'inconclusive'.

    Intervals: the seed interval [min, max] when a side has two seeds or more; for the Hessian with one seed, the
    estimators' 95 % intervals of the last epoch's KL/CE ratio; otherwise none (inconclusive).

    Args:
        probe: 'cosine', 'hessian' or 'inter_epoch'.
        kd: the KD side's summary (`aggregate_seeds`' mean).
        zq: the ZQ side's.
        kd_span: the KD side's seed intervals (`aggregate_seeds`).
        zq_span: the ZQ side's.
        n: the seeds per side, {"kd": count, "zq": count}.

    Returns:
        {key, zq_vs_kd (the verdict), zq_interval, kd_interval, basis: {zq, kd} (where each interval comes from)}.
    """
    key = HEADLINE[probe]

    def interval(
        s: Summary, span: Mapping[str, Sequence[float | None] | None], count: int
    ) -> tuple[Sequence[float | None] | None, str]:
        if count > 1:
            return span.get(key), "seeds [min, max]"
        if probe == "hessian" and s.get("last_kl_over_ce_range"):
            return s["last_kl_over_ce_range"], "estimator 95 % interval, last epoch"
        return None, "one seed: no interval"

    (a, why_a), (b, why_b) = interval(zq, zq_span, n["zq"]), interval(kd, kd_span, n["kd"])
    verdict = interval_verdict(*(a or (None, None)), *(b or (None, None)))
    return {"key": key, "zq_vs_kd": verdict, "zq_interval": a, "kd_interval": b, "basis": {"zq": why_a, "kd": why_b}}


# ----------------------------------------------------------------------------------- post hoc
def epoch_summary(probe: str, df: pd.DataFrame) -> pd.DataFrame:
    """One row per epoch of a post-hoc probe's rows, what `zsq-probe cosine|hessian|slice|crossings` prints.

    Args:
        probe: 'cosine', 'hessian', 'slice' or 'crossings'.
        df: the probe's rows.

    Returns:
        cosine: model-scope cosine, angle and gradient norms; hessian: model-scope trace per (loss, estimator);
        slice: the loss at theta and its max/min along the line per loss (eigenvector rows when present);
        crossings: codes changed, layer sizes, their share and the layers without change.  `df` itself when
        it is empty.

    Raises:
        UserError: an unknown probe.
    """
    if df.empty:
        return df
    if probe == "cosine":
        d = df[df["scope"] == "model"]
        return d.set_index("epoch")[["cosine", "angle_deg", "grad_norm_ce", "grad_norm_kl"]].sort_index()
    if probe == "hessian":
        d = df[(df["scope"] == "model")]
        return d.pivot_table(index="epoch", columns=["loss", "estimator"], values="trace").sort_index()
    if probe == "slice":
        d = df[df["direction"] == "eigenvector"] if (df["direction"] == "eigenvector").any() else df
        keys = ["epoch", "loss"] + [c for c in ("loss_kind", "scaling") if c in d.columns and d[c].nunique() > 1]
        g = d.groupby(keys)["loss_value"]
        centre = d[d["k"].abs() < 1e-12].groupby(keys)["loss_value"].mean()
        out = pd.DataFrame({"at_theta": centre, "max_along_line": g.max(), "min_along_line": g.min()})
        return out.unstack(keys[1:])
    if probe != "crossings":
        raise UserError(f"unknown post-hoc probe {probe!r} (cosine, hessian, slice or crossings)")
    d = df.groupby("epoch")[["changed", "layer_size"]].sum()
    d["share"] = d["changed"] / d["layer_size"]
    d["layers_without_change"] = df.groupby("epoch")["changed"].apply(lambda s: int((s == 0).sum()))
    return d
