"""`zsq-probe compare KD_RUN ZQ_RUN [--kd-seeds RUN ...] [--zq-seeds RUN ...]`: one probe's summary for a KD
and a ZQ side, each one run or the mean over its seeds (and their curves overlaid)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from zsq_probe.cli.common import add_output_args

HELP = (
    "compare a KD run with a ZQ run (each with its other seeds) on one probe: summary table and verdict "
    "(and overlaid curves with --out)"
)

ROWS = {  # probe -> (summary key, row label, number format)
    "cosine": [
        ("steps", "steps (rows)", "int"),
        ("share_negative", "share of steps with cos < 0", "pct"),
        ("epochs", "epochs", "int"),
        ("mean_epoch_cosine", "mean epoch-mean cosine", "signed"),
        ("median_epoch_cosine", "median epoch-mean cosine", "signed"),
        ("last_epoch_cosine", "last epoch-mean cosine", "signed"),
    ],
    "hessian": [
        ("epochs", "epochs", "int"),
        ("median_trace_ce", "median Tr(H) CE", "num"),
        ("median_trace_kl", "median Tr(H) KL", "num"),
        ("kl_over_ce", "ratio KL / CE", "num"),
        ("last_kl_over_ce", "ratio KL / CE, last epoch", "num"),
    ],
    "inter_epoch": [
        ("epochs", "epochs", "int"),
        ("mean_inter_epoch_cosine", "mean inter-epoch cosine", "signed"),
        ("median_inter_epoch_cosine", "median inter-epoch cosine", "signed"),
        ("last_inter_epoch_cosine", "last inter-epoch cosine", "signed"),
    ],
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `compare` command (one of the probes of ROWS: analysis.probe_tables.COMPARABLE_PROBES, spelled
    here so that the parser loads no pandas; tests/cli/test_cli.py checks that they agree)."""
    p = subparsers.add_parser("compare", help=HELP, description=HELP)
    p.add_argument("kd_run", metavar="KD_RUN", help="the real-data KD run (or any reference run)")
    p.add_argument("zq_run", metavar="ZQ_RUN", help="the zero-shot run")
    p.add_argument(
        "--kd-seeds",
        nargs="+",
        default=[],
        metavar="RUN",
        help="more KD runs that differ from KD_RUN only by seed: every number becomes the mean over "
        "the seeds with their interval [min, max]",
    )
    p.add_argument(
        "--zq-seeds", nargs="+", default=[], metavar="RUN", help="more ZQ runs that differ from ZQ_RUN only by seed"
    )
    p.add_argument("--probe", default="cosine", choices=tuple(ROWS), help="the probe compared (default cosine)")
    p.add_argument("--out", help="folder for a PNG of the overlaid curves (a new folder, or one `compare` wrote)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="with --out: replace an earlier `compare` figure there, and write beside files compare did not write "
        "(never replacing one)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    add_output_args(p, threads=True, threads_help="torch CPU threads while it reads and draws (default: torch's own)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Compare the two sides on one probe; print the table (or JSON) and the figure's path."""
    from zsq_probe.rundir.output import check_output  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.runs.compare import compare_runs  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.threads import torch_threads  # loads when the command runs (zsq_probe.cli)

    kd_runs, zq_runs = [args.kd_run, *args.kd_seeds], [args.zq_run, *args.zq_seeds]
    if args.out:
        check_output(args.out, "compare", overwrite=args.overwrite)  # the output policy (zsq_probe.rundir.output)
    with torch_threads(args.threads):
        result = compare_runs(kd_runs, zq_runs, args.probe).to_dict()  # the --json document
        used = result["paths"]  # per side, the seeds that carry the probe
        figure = _draw(args, used["kd"], used["zq"]) if args.out else None
    result["figure"] = str(figure) if figure else None
    for w in result.pop("warnings"):
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(summary_text(result))
    if result["figure"]:
        print(f"wrote {result['figure']}", file=sys.stderr)
    return 0


def _draw(args: argparse.Namespace, kd_runs: list[str], zq_runs: list[str]) -> Path:
    """The overlay into --out, never replacing a file `compare` did not write; listed in its manifest before it
    lands (zsq_probe.rundir.output.writing_output)."""
    from zsq_probe.plots import plot_compare  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.plots.overlay import compare_stem  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.plots.style import announce_writes, protect  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.rundir.output import foreign_entries, writing_output  # loads when the command runs (zsq_probe.cli)

    stem = compare_stem(args.probe, kd_runs, zq_runs)
    foreign = [Path(args.out) / n for n in foreign_entries(args.out, "compare")]
    with protect(foreign), writing_output(args.out, "compare", [f"{stem}.png", f"{stem}.txt"]) as claim:
        with announce_writes(claim):
            return plot_compare(args.probe, kd_runs, zq_runs, None, None, args.out)


def _fmt(v: float | None, kind: str = "num") -> str:
    if v is None:
        return "-"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "int":
        return str(int(v))
    if kind == "signed":
        return f"{v:+.4f}"
    return f"{v:.4g}"


def _cell(summary: Mapping[str, Any], span: Mapping[str, Any], key: str, kind: str) -> str:
    v = _fmt(summary.get(key), kind)
    lo_hi = span.get(key)
    return v if not lo_hi else f"{v} [{_fmt(lo_hi[0], kind)}, {_fmt(lo_hi[1], kind)}]"


def _left_out_and_differences(result: Mapping[str, Any]) -> list[str]:
    """Lines naming the seeds without the probe (left out: n counts the others) and every setting that differs."""
    from zsq_probe.analysis.probe_tables import PROBE_TABLE  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.analysis.run_settings import differences_text  # loads when the command runs (zsq_probe.cli)

    lines: list[str] = []
    left_out = result.get("left_out", {})
    if any(left_out.values()):
        table = PROBE_TABLE[result["probe"]]
        sides = [f"{side.upper()} {', '.join(names)}" for side, names in left_out.items() if names]
        lines.append(f"left out (no probes/{table}; n counts the seeds that have it): {'; '.join(sides)}")
    if "differences" in result:
        lines.append(f"settings that differ (KD vs ZQ): {differences_text(result['differences'])}")
        if result["methods"]["kd"] == "kd":
            lines.append(
                "  (by design: KD trains a randomly initialised full-precision student on real data, with its own "
                "lr, schedule and no generator warm-up)"
            )
    return lines


def summary_text(result: Mapping[str, Any]) -> str:
    """The KD / ZQ table of a compare_runs result.

    Args:
        result: what `zsq_probe.runs.compare.compare_runs` returns.

    Returns:
        The table as lines of text: means over seeds with [min, max] when a side has several, then the verdict.
    """
    kd, zq, probe = result["kd"], result["zq"], result["probe"]
    n = result.get("n", {"kd": 1, "zq": 1})
    spans = result.get("kd_span", {}), result.get("zq_span", {})
    lines = [
        f"compare {probe}: KD {result['runs']['kd']} ({result['methods']['kd']}, n={n['kd']})  vs  "
        f"ZQ {result['runs']['zq']} ({result['methods']['zq']}, n={n['zq']})"
    ]
    if max(n.values()) > 1:
        lines.append(
            "values: mean over seeds [min, max]; seeds: KD "
            + ", ".join(result["seeds"]["kd"])
            + "; ZQ "
            + ", ".join(result["seeds"]["zq"])
        )
    lines += _left_out_and_differences(result)
    if probe == "hessian":
        lines.append(f"estimator: KD {kd['estimator']}, ZQ {zq['estimator']} (median over epochs, model scope)")
    w, c = 30, 29 if max(n.values()) > 1 else 12
    lines.append(f"{'':<{w}}{'KD':>{c}}{'ZQ':>{c}}")
    for key, name, kind in ROWS[probe]:
        lines.append(f"{name:<{w}}{_cell(kd, spans[0], key, kind):>{c}}{_cell(zq, spans[1], key, kind):>{c}}")
    if probe == "hessian":
        r = result["zq_over_kd"]
        lines.append(
            f"ZQ / KD: Tr(H) CE {_fmt(r['median_trace_ce'])}, Tr(H) KL {_fmt(r['median_trace_kl'])}, "
            f"KL/CE {_fmt(r['kl_over_ce'])}"
        )
    v = result.get("verdict")
    if v:
        word = {"above": "above KD", "below": "below KD", "inconclusive": "inconclusive (intervals overlap or none)"}
        lines.append(f"verdict on {v['key']}: ZQ {word[v['zq_vs_kd']]} — ZQ {v['basis']['zq']}, KD {v['basis']['kd']}")
    return "\n".join(lines)
