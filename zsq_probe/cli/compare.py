"""`zsq-probe compare KD_RUN ZQ_RUN`: one probe's summary for a KD and a ZQ run (and their curves overlaid)."""

from __future__ import annotations

import json
import sys

HELP = "compare a KD run with a ZQ run on one probe: summary table (and overlaid curves with --out)"

ROWS = {  # probe -> (summary key, row label, number format)
    "cosine": [("steps", "steps (rows)", "int"), ("share_negative", "share of steps with cos < 0", "pct"),
               ("epochs", "epochs", "int"), ("mean_epoch_cosine", "mean epoch-mean cosine", "signed"),
               ("median_epoch_cosine", "median epoch-mean cosine", "signed"),
               ("last_epoch_cosine", "last epoch-mean cosine", "signed")],
    "hessian": [("epochs", "epochs", "int"), ("median_trace_ce", "median Tr(H) CE", "num"),
                ("median_trace_kl", "median Tr(H) KL", "num"), ("kl_over_ce", "ratio KL / CE", "num")],
    "inter_epoch": [("epochs", "epochs", "int"), ("mean_inter_epoch_cosine", "mean inter-epoch cosine", "signed"),
                    ("median_inter_epoch_cosine", "median inter-epoch cosine", "signed"),
                    ("last_inter_epoch_cosine", "last inter-epoch cosine", "signed")],
}


def register(subparsers) -> None:
    p = subparsers.add_parser("compare", help=HELP, description=HELP)
    p.add_argument("kd_run", metavar="KD_RUN", help="the real-data KD run (or any reference run)")
    p.add_argument("zq_run", metavar="ZQ_RUN", help="the zero-shot run")
    p.add_argument("--probe", default="cosine", choices=tuple(ROWS))
    p.add_argument("--out", help="folder for a PNG of the overlaid curves")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.set_defaults(handler=run)


def run(args) -> int:
    from zsq_probe.compare import compare_runs

    result = compare_runs(args.kd_run, args.zq_run, args.probe, out=args.out)
    for w in result.pop("warnings"):
        print(f"warning: {w}", file=sys.stderr)
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print(summary_text(result))
    if result["figure"]:
        print(f"wrote {result['figure']}")
    return 0


def _fmt(v, kind="num") -> str:
    if v is None:
        return "-"
    if kind == "pct":
        return f"{100 * v:.1f}%"
    if kind == "int":
        return str(int(v))
    if kind == "signed":
        return f"{v:+.4f}"
    return f"{v:.4g}"


def summary_text(result: dict) -> str:
    """The KD / ZQ table of a compare_runs result."""
    kd, zq, probe = result["kd"], result["zq"], result["probe"]
    lines = [f"compare {probe}: KD {result['runs']['kd']} ({result['methods']['kd']})  vs  "
             f"ZQ {result['runs']['zq']} ({result['methods']['zq']})"]
    if probe == "hessian":
        lines.append(f"estimator: KD {kd['estimator']}, ZQ {zq['estimator']} (median over epochs, model scope)")
    w = 30
    lines.append(f"{'':<{w}}{'KD':>12}{'ZQ':>12}")
    for key, name, kind in ROWS[probe]:
        lines.append(f"{name:<{w}}{_fmt(kd.get(key), kind):>12}{_fmt(zq.get(key), kind):>12}")
    if probe == "hessian":
        r = result["zq_over_kd"]
        lines.append(f"ZQ / KD: Tr(H) CE {_fmt(r['median_trace_ce'])}, Tr(H) KL {_fmt(r['median_trace_kl'])}, "
                     f"KL/CE {_fmt(r['kl_over_ce'])}")
    return "\n".join(lines)
