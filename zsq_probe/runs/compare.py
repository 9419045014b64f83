"""`compare_runs`: the KD-versus-ZQ comparison of run folders read from disk (what `zsq-probe compare` prints),
built from the pure summaries of `zsq_probe.analysis.probe_tables`."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

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
from zsq_probe.config import config_from_dict
from zsq_probe.errors import UserError
from zsq_probe.rundir.store import PathArg, RunDir
from zsq_probe.teachers.metadata import dataset_for_teacher

# a side of a comparison: one run (folder or RunDir) or the seeds of one setting
RunsArg: TypeAlias = "PathArg | RunDir | list[PathArg | RunDir] | tuple[PathArg | RunDir, ...]"


def _run_method(run: RunDir) -> str:
    return str(run.read_config_doc().get("config", {}).get("method") or "?")


def _run_data(run: RunDir) -> str | None:
    """The data set a run was trained on (its config's, else its teacher's); None when not known."""
    try:
        doc = run.read_config_doc()
        cfg = config_from_dict(doc.get("config", {}))
        recorded = doc.get("teacher") or {}  # a teacher module of your own: its DatasetSpec's name
        if recorded.get("source") == "module":
            return str(recorded["dataset"]) if recorded.get("dataset") else None
        return cfg.dataset.name or dataset_for_teacher(cfg.teacher)
    except Exception:  # noqa: BLE001 - an unknown data set only means no warning
        return None


def _open_seeds(side: RunsArg, role: str) -> list[RunDir]:
    """RunDirs of one side of a comparison; UserError when they are more than seeds of one setting."""
    given = list(side) if isinstance(side, (list, tuple)) else [side]
    runs = [r if isinstance(r, RunDir) else RunDir.open(r) for r in given]
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


def _carrying(runs: list[RunDir], table: str, role: str) -> tuple[list[RunDir], list[RunDir]]:
    """(the runs of a side that hold `table`, those that do not); UserError when none does."""
    used = [r for r in runs if r.part_keys(table)]
    if not used:
        how = HOW_TO_GET.get(table, "")
        if len(runs) == 1:
            raise UserError(f"{role} run {runs[0].name} has no probes/{table} ({how})")
        raise UserError(f"no {role} run ({', '.join(r.name for r in runs)}) has probes/{table} ({how})")
    return used, [r for r in runs if r not in used]


@dataclass(frozen=True)
class Comparison:
    """What `compare_runs` found: one probe's summary numbers for the KD side and the ZQ side, their contrast and
    the verdict (`zsq-probe compare` prints it; `to_dict()` is its `--json`).

    Attributes:
        probe: 'cosine', 'hessian' or 'inter_epoch'.
        kd: The KD side's summary (zsq_probe.analysis.probe_tables.SUMMARIZERS), the mean over its seeds.
        zq: The ZQ side's summary, likewise.
        zq_minus_kd: ZQ - KD of the cosine numbers (cosine, inter_epoch); None for the Hessian.
        zq_over_kd: ZQ / KD of the trace numbers (hessian); None otherwise.
        kd_span: Per number, the KD seeds' [min, max] (None for one seed).
        zq_span: The same for the ZQ side.
        n: Seeds per side that hold the probe's table ({"kd": n, "zq": n}).
        verdict: The headline verdict (probe_tables.headline_verdict: key, zq_vs_kd, intervals, basis).
        per_seed: Each side's per-seed summaries when a side has several seeds, else None.
        runs: The first run of each side, by name.
        seeds: Each side's runs used, by name.
        paths: Each side's runs used, by path.
        left_out: Each side's runs without the probe's table, by name.
        differences: Every training setting the two sides differ in ({key: {"KD": v, "ZQ": v}}).
        methods: Each side's method.
        warnings: Lines worth a look (a KD side not trained with 'kd', different data sets, thread counts).
    """

    probe: str
    kd: dict[str, Any]
    zq: dict[str, Any]
    zq_minus_kd: dict[str, float | None] | None
    zq_over_kd: dict[str, float | None] | None
    kd_span: dict[str, Any]
    zq_span: dict[str, Any]
    n: dict[str, int]
    verdict: dict[str, Any]
    per_seed: dict[str, list[dict[str, Any]]] | None
    runs: dict[str, str]
    seeds: dict[str, list[str]]
    paths: dict[str, list[str]]
    left_out: dict[str, list[str]]
    differences: dict[str, dict[str, object]]
    methods: dict[str, str]
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The comparison as JSON-ready dict (`zsq-probe compare --json`); contrasts and per-seed summaries a
        probe does not have are left out.

        Returns:
            A new dict of the fields.
        """
        out = dataclasses.asdict(self)
        return {k: v for k, v in out.items() if not (k in ("zq_minus_kd", "zq_over_kd", "per_seed") and v is None)}


def compare_runs(kd_run: RunsArg, zq_run: RunsArg, probe: str = "cosine") -> Comparison:
    """Compare one probe between a KD side and a ZQ side, each a run or the seeds of one setting.

    Each side is a run folder (or RunDir) or a list of runs that differ only by seed (aggregated: the mean of
    each number over the seeds, the seed interval [min, max], the headline verdict).  A side uses the seeds that
    hold the probe's table (the others are `left_out`).  The overlay figure of the same runs:
    zsq_probe.plots.plot_compare.

    Args:
        kd_run: The KD side.
        zq_run: The ZQ side.
        probe: 'cosine', 'hessian' or 'inter_epoch'.

    Returns:
        The comparison.

    Raises:
        UserError: An unknown probe, a folder that is not a run, no run of a side holds the probe's table, or a
            side mixes settings or names a run twice.
    """
    if probe not in PROBE_TABLE:
        raise UserError(f"unknown probe {probe!r}: choose one of {', '.join(COMPARABLE_PROBES)}")
    table = PROBE_TABLE[probe]
    (kd_runs, kd_out), (zq_runs, zq_out) = (
        _carrying(_open_seeds(side, role), table, role) for side, role in ((kd_run, "KD"), (zq_run, "ZQ"))
    )
    per_seed = {
        side: [SUMMARIZERS[probe](run.read_table(table), f"{run.name} probes/{table}") for run in runs]
        for side, runs in (("kd", kd_runs), ("zq", zq_runs))
    }
    (kd, kd_span), (zq, zq_span) = aggregate_seeds(per_seed["kd"]), aggregate_seeds(per_seed["zq"])
    contrast = contrast_summaries(probe, kd, zq)
    n = {"kd": len(kd_runs), "zq": len(zq_runs)}
    methods = {"kd": _run_method(kd_runs[0]), "zq": _run_method(zq_runs[0])}
    return Comparison(
        probe=probe,
        kd=kd,
        zq=zq,
        zq_minus_kd=contrast.get("zq_minus_kd"),
        zq_over_kd=contrast.get("zq_over_kd"),
        kd_span=kd_span,
        zq_span=zq_span,
        n=n,
        verdict=headline_verdict(probe, kd, zq, kd_span, zq_span, n),
        per_seed=per_seed if max(n.values()) > 1 else None,
        runs={"kd": kd_runs[0].name, "zq": zq_runs[0].name},
        seeds={"kd": [r.name for r in kd_runs], "zq": [r.name for r in zq_runs]},
        paths={"kd": [str(r.path) for r in kd_runs], "zq": [str(r.path) for r in zq_runs]},
        left_out={"kd": [r.name for r in kd_out], "zq": [r.name for r in zq_out]},
        differences=setting_differences({"KD": training_setting(kd_runs[0]), "ZQ": training_setting(zq_runs[0])}),
        methods=methods,
        warnings=_comparison_warnings(kd_runs, zq_runs, methods),
    )


def _comparison_warnings(kd_runs: list[RunDir], zq_runs: list[RunDir], methods: dict[str, str]) -> list[str]:
    """A KD side not trained with 'kd', a ZQ side that was, two sides on different data sets, thread counts."""
    warnings = []
    kd_name, zq_name = kd_runs[0].name, zq_runs[0].name
    if methods["kd"] != "kd":
        warnings.append(f"KD_RUN {kd_name} has method {methods['kd']!r}, not 'kd'")
    if methods["zq"] == "kd":
        warnings.append(f"ZQ_RUN {zq_name} has method 'kd' (a real-data run)")
    kd_data, zq_data = _run_data(kd_runs[0]), _run_data(zq_runs[0])
    if kd_data and zq_data and kd_data != zq_data:  # compared all the same, but not like for like
        warnings.append(
            f"KD_RUN {kd_name} was trained on {kd_data}, ZQ_RUN {zq_name} on "
            f"{zq_data}: the runs come from different data sets (and teachers)"
        )
    return warnings + _thread_count_warnings([*kd_runs, *zq_runs])


def _thread_count_warnings(runs: list[RunDir]) -> list[str]:
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
