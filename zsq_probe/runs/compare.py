"""`compare_runs`: the KD-versus-ZQ comparison of run folders read from disk (what `zsq-probe compare` prints),
built from the pure summaries of `zsq_probe.analysis.probe_tables`."""

from __future__ import annotations

from pathlib import Path

from zsq_probe.analysis.probe_tables import (
    COMPARABLE_PROBES,
    HOW_TO_GET,
    PROBE_TABLE,
    SUMMARIZERS,
    aggregate_seeds,
    contrast_summaries,
    headline_verdict,
)
from zsq_probe.analysis.run_settings import distinct_runs, run_setting, setting_differences, training_setting
from zsq_probe.errors import UserError


def _run_method(run) -> str:
    return str(run.read_config_doc().get("config", {}).get("method") or "?")


def _run_data(run) -> str | None:
    """The data set a run was trained on (its config's, else its teacher's); None when not known."""
    from zsq_probe.config import config_from_dict
    from zsq_probe.teachers.metadata import dataset_for_teacher

    try:
        doc = run.read_config_doc()
        cfg = config_from_dict(doc.get("config", {}))
        recorded = doc.get("teacher") or {}  # a teacher module of your own: its DatasetSpec's name
        if recorded.get("source") == "module":
            return recorded.get("dataset")
        return cfg.dataset.name or dataset_for_teacher(cfg.teacher)
    except Exception:  # noqa: BLE001 - an unknown data set only means no warning
        return None


def _open_seeds(runs, role: str) -> list:
    """RunDirs of one side of a comparison; UserError when they are more than seeds of one setting."""
    from zsq_probe.rundir.store import RunDir

    runs = [
        r if isinstance(r, RunDir) else RunDir.open(r)
        for r in ([runs] if not isinstance(runs, (list, tuple)) else runs)
    ]
    first = run_setting(runs[0])
    for r in runs[1:]:
        other = run_setting(r)
        if other != first:
            keys = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            raise UserError(
                f"{role} runs {runs[0].name} and {r.name} differ in more than the seed "
                f"({', '.join(keys)}): give only seeds of one setting per side"
            )
    paths = [Path(r.path).resolve() for r in runs]
    if len(set(paths)) < len(paths):
        raise UserError(f"{role} run given twice: {', '.join(str(p) for p in paths)}")
    return distinct_runs(runs)


def _carrying(runs: list, table: str, role: str) -> tuple[list, list]:
    """(the runs of a side that hold `table`, those that do not); UserError when none does."""
    used = [r for r in runs if r.part_keys(table)]
    if not used:
        how = HOW_TO_GET.get(table, "")
        if len(runs) == 1:
            raise UserError(f"{role} run {runs[0].name} has no probes/{table} ({how})")
        raise UserError(f"no {role} run ({', '.join(r.name for r in runs)}) has probes/{table} ({how})")
    return used, [r for r in runs if r not in used]


def compare_runs(kd_run, zq_run, probe: str = "cosine") -> dict:
    """compare_tables on two sides, each a run folder (or RunDir) or a list of runs that differ only by seed
    (aggregated: `kd` / `zq` hold the mean of each number over the seeds, `kd_span` / `zq_span` the seed
    interval [min, max], `n` the seeds, `verdict` the headline verdict), plus their names and methods,
    `warnings` (a KD run whose method is not 'kd', a ZQ run whose method is, two sides on different data
    sets), `differences` (every training setting the two sides differ in).  A side uses the seeds that hold
    the probe's table (`n`, `seeds`; `left_out`: the others, by name).  UserError when no run of a side holds
    it or a side mixes settings.  The overlay figure of the same runs: zsq_probe.plots.plot_compare."""
    if probe not in PROBE_TABLE:
        raise UserError(f"unknown probe {probe!r}: choose one of {', '.join(COMPARABLE_PROBES)}")
    table = PROBE_TABLE[probe]
    (kd_runs, kd_out), (zq_runs, zq_out) = (
        _carrying(_open_seeds(side, role), table, role) for side, role in ((kd_run, "KD"), (zq_run, "ZQ"))
    )
    frames = {}  # side -> one table per run (runs of two sides may share a folder name)
    for runs, role in ((kd_runs, "KD"), (zq_runs, "ZQ")):
        frames[role.lower()] = [run.read_table(table) for run in runs]
    per_seed = {
        side: [SUMMARIZERS[probe](df, f"{r.name} probes/{table}") for r, df in zip(runs, frames[side])]
        for side, runs in (("kd", kd_runs), ("zq", zq_runs))
    }
    (kd, kd_span), (zq, zq_span) = aggregate_seeds(per_seed["kd"]), aggregate_seeds(per_seed["zq"])
    result = contrast_summaries(probe, kd, zq)
    n = {"kd": len(kd_runs), "zq": len(zq_runs)}
    result.update(kd_span=kd_span, zq_span=zq_span, n=n, verdict=headline_verdict(probe, kd, zq, kd_span, zq_span, n))
    if max(n.values()) > 1:
        result["per_seed"] = per_seed
    result["runs"] = {"kd": kd_runs[0].name, "zq": zq_runs[0].name}
    result["seeds"] = {"kd": [r.name for r in kd_runs], "zq": [r.name for r in zq_runs]}
    result["paths"] = {"kd": [str(r.path) for r in kd_runs], "zq": [str(r.path) for r in zq_runs]}
    result["left_out"] = {"kd": [r.name for r in kd_out], "zq": [r.name for r in zq_out]}
    result["differences"] = setting_differences(
        {"KD": training_setting(kd_runs[0]), "ZQ": training_setting(zq_runs[0])}
    )
    result["methods"] = {"kd": _run_method(kd_runs[0]), "zq": _run_method(zq_runs[0])}
    result["warnings"] = []
    kd_name, zq_name = kd_runs[0].name, zq_runs[0].name
    if result["methods"]["kd"] != "kd":
        result["warnings"].append(f"KD_RUN {kd_name} has method {result['methods']['kd']!r}, not 'kd'")
    if result["methods"]["zq"] == "kd":
        result["warnings"].append(f"ZQ_RUN {zq_name} has method 'kd' (a real-data run)")
    kd_data, zq_data = _run_data(kd_runs[0]), _run_data(zq_runs[0])
    if kd_data and zq_data and kd_data != zq_data:  # compared all the same, but not like for like
        result["warnings"].append(
            f"KD_RUN {kd_name} was trained on {kd_data}, ZQ_RUN {zq_name} on "
            f"{zq_data}: the runs come from different data sets (and teachers)"
        )
    result["warnings"] += _thread_count_warnings([*kd_runs, *zq_runs])
    return result


def _thread_count_warnings(runs) -> list[str]:
    """A warning when the runs trained with different torch thread counts (config.json `threads`): not a setting
    that makes them different runs, but their numbers then differ by float round-off too (docs/cli.md: Threads)."""
    counts = {}
    for run in runs:
        threads = run.read_config_doc().get("threads")
        if isinstance(threads, int):
            counts[run.name] = threads
    if len(set(counts.values())) <= 1:
        return []
    listed = ", ".join(f"{name} {n}" for name, n in counts.items())
    return [
        f"the runs trained with different torch thread counts ({listed}): their numbers also differ by float "
        f"round-off from it"
    ]
