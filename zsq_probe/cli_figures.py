"""`zsq-probe figures` (every paper figure the runs have data for) and `zsq-probe compare` (KD vs ZQ)."""

from __future__ import annotations

import inspect
import json
import sys
from pathlib import Path

from zsq_probe.cli import arguments, command
from zsq_probe.errors import UserError


def _figures_package():
    """The `figures` package: installed, or the folder next to this package in a source checkout."""
    try:
        import figures
    except ImportError:
        root = Path(__file__).resolve().parent.parent
        if not (root / "figures" / "__init__.py").is_file():
            raise UserError("the figure scripts (package `figures`) are not installed with this zsq-probe; "
                            "reinstall from the source tree (pip install -e .)") from None
        sys.path.insert(0, str(root))
        import figures
    return figures


def _only(text: str | None, valid) -> list[str]:
    if not text:
        return list(valid)
    names = [s.strip() for s in text.split(",") if s.strip()]
    bad = [n for n in names if n not in valid]
    if bad or not names:
        raise UserError(f"unknown figure name(s) {', '.join(bad) or repr(text)} in --only: "
                        f"valid names are {', '.join(valid)}")
    return names


# ---------------------------------------------------------------- figures
@command("figures", "draw every paper figure the given runs have data for (PNG/PDF)")
@arguments(lambda p: (
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="run folders (KD and ZQ runs)"),
    p.add_argument("--out", required=True, help="output folder for the figure files"),
    p.add_argument("--only", help="comma-separated figure names (fig1,fig2b,fig2c,fig2d,fig3a,fig3bc,fig4,"
                                  "fig5,fig6,fig7_8,fig9)"),
    p.add_argument("--format", default="png", choices=("png", "pdf")),
    p.add_argument("--epoch", type=int,
                   help="snapshot epoch for fig1 (default: middle), fig2d and fig6 (default: last)"),
    p.add_argument("--epochs", help="two comma-separated epochs for fig3bc/fig4 (default: an early and the last)"),
))
def cmd_figures(args) -> int:
    written, failed = write_figures(args.runs, args.out, only=args.only, fmt=args.format, epoch=args.epoch,
                                    epochs=args.epochs)
    if failed:
        raise UserError(f"{failed} figure(s) failed (see above); {len(written)} file(s) written to {args.out}")
    if not written:
        raise UserError(f"no figure written: the runs ({', '.join(args.runs)}) hold none of the data "
                        f"the chosen figures need (see the skips above)")
    return 0


def write_figures(run_paths, out, only=None, fmt="png", epoch=None, epochs=None, log=print) -> tuple[list, int]:
    """Draw every chosen figure the runs have data for; returns (paths written, number failed)."""
    figures = _figures_package()
    from figures._common import SkipFigure, open_runs, parse_epochs

    names = _only(only, list(figures.SCRIPTS))
    runs = open_runs(run_paths)
    options = {"epoch": epoch, "epochs": parse_epochs(epochs)}
    written, failed = [], 0
    for name in names:
        module = figures.load(name)
        params = inspect.signature(module.plot).parameters
        kw = {k: v for k, v in options.items() if k in params}
        try:
            paths = module.plot(runs, out, fmt=fmt, **kw)
        except SkipFigure as e:
            log(f"skipped {name}: {e.reason}")
            continue
        except UserError as e:
            print(f"failed {name}: {e}", file=sys.stderr)
            failed += 1
            continue
        for path in paths:
            log(f"wrote {name}: {path}")
        written += list(paths)
    return written, failed


# ---------------------------------------------------------------- compare
def _read(run, table: str, role: str):
    from figures._common import HOW_TO_GET

    if not run.part_keys(table):
        raise UserError(f"{role} run {run.name} has no probes/{table} ({HOW_TO_GET.get(table, '')})")
    return run.read_table(table)


def _method(run) -> str:
    return str(run.read_config_doc().get("config", {}).get("method") or "?")


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


_ROWS = {
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


def print_summary(result: dict) -> None:
    kd, zq = result["kd"], result["zq"]
    probe = result["probe"]
    print(f"compare {probe}: KD {result['runs']['kd']} ({result['methods']['kd']})  vs  "
          f"ZQ {result['runs']['zq']} ({result['methods']['zq']})")
    if probe == "hessian":
        print(f"estimator: KD {kd['estimator']}, ZQ {zq['estimator']} (median over epochs, model scope)")
    w = 30
    print(f"{'':<{w}}{'KD':>12}{'ZQ':>12}")
    for key, name, kind in _ROWS[probe]:
        print(f"{name:<{w}}{_fmt(kd.get(key), kind):>12}{_fmt(zq.get(key), kind):>12}")
    if probe == "hessian":
        r = result["zq_over_kd"]
        print(f"ZQ / KD: Tr(H) CE {_fmt(r['median_trace_ce'])}, Tr(H) KL {_fmt(r['median_trace_kl'])}, "
              f"KL/CE {_fmt(r['kl_over_ce'])}")


def plot_compare(probe: str, kd_run, zq_run, kd_df, zq_df, out_dir, fmt="png") -> Path:
    _figures_package()  # the shared style lives in figures._common
    import matplotlib.pyplot as plt
    from figures import _common as C

    from zsq_probe import compare

    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    pairs = ((kd_run, kd_df, C.KD_COLOR, "-", "KD"), (zq_run, zq_df, C.ZQ_COLOR, "--", "ZQ"))
    if probe == "cosine":
        for run, df, color, _, kind in pairs:
            c = compare.cosine_epochs(df, f"{run.name} probes/cosine")
            ax.plot(c["epoch"], c["cosine"], color=color, lw=1.8, label=f"{kind}: {_method(run)} ({run.name})")
        C.zero_line(ax)
        ax.set_ylabel("cos(∇CE, ∇KL), epoch mean")
    elif probe == "inter_epoch":
        for run, df, color, _, kind in pairs:
            c = compare.inter_epoch_curve(df, f"{run.name} probes/inter_epoch")
            ax.plot(c["epoch"], c["cosine"], color=color, lw=1.8, label=f"{kind}: {_method(run)} ({run.name})")
        C.zero_line(ax)
        ax.set_ylabel("inter-epoch cosine of ∇KL")
    else:
        for run, df, _, ls, kind in pairs:
            curves = compare.trace_curves(df, f"{run.name} probes/hessian_trace")
            est = "hutchinson" if (curves["estimator"] == "hutchinson").any() else curves["estimator"].iloc[0]
            for loss, color in (("ce", C.CE_COLOR), ("kl", C.KL_COLOR)):
                c = curves[(curves["estimator"] == est) & (curves["loss"] == loss)]
                if len(c):
                    ax.plot(c["epoch"], c["trace"], color=color, ls=ls, lw=1.8,
                            label=f"{loss.upper()}-{kind} ({_method(run)}, {est})")
                    ax.fill_between(c["epoch"], c["trace"] - c["stderr"], c["trace"] + c["stderr"], color=color,
                                    alpha=0.15, lw=0)
        ax.set_ylabel("Tr(H)")
    C.epoch_axis(ax)
    ax.set_title(f"{probe}: KD {kd_run.name} vs ZQ {zq_run.name}")
    ax.legend(loc="best")
    fig.tight_layout()
    return C.save(fig, out_dir, f"compare_{probe}_{C.safe_name(kd_run.name)}_vs_{C.safe_name(zq_run.name)}", fmt)


@command("compare", "compare a KD run with a ZQ run on one probe: summary table (and overlaid curves with --out)")
@arguments(lambda p: (
    p.add_argument("kd_run", metavar="KD_RUN", help="the real-data KD run (or any reference run)"),
    p.add_argument("zq_run", metavar="ZQ_RUN", help="the zero-shot run"),
    p.add_argument("--probe", default="cosine", choices=("cosine", "hessian", "inter_epoch")),
    p.add_argument("--out", help="folder for a PNG of the overlaid curves"),
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table"),
))
def cmd_compare(args) -> int:
    from zsq_probe import compare
    from zsq_probe.store import RunDir

    _figures_package()
    kd_run, zq_run = RunDir.open(args.kd_run), RunDir.open(args.zq_run)
    table = compare.PROBE_TABLE[args.probe]
    kd_df, zq_df = _read(kd_run, table, "KD"), _read(zq_run, table, "ZQ")
    result = compare.compare_tables(kd_df, zq_df, args.probe, kd_run.name, zq_run.name)
    result["runs"] = {"kd": kd_run.name, "zq": zq_run.name}
    result["methods"] = {"kd": _method(kd_run), "zq": _method(zq_run)}
    warnings = []
    if result["methods"]["kd"] != "kd":
        warnings.append(f"KD_RUN {kd_run.name} has method {result['methods']['kd']!r}, not 'kd'")
    if result["methods"]["zq"] == "kd":
        warnings.append(f"ZQ_RUN {zq_run.name} has method 'kd' (a real-data run)")
    for w in warnings:
        print(f"warning: {w}", file=sys.stderr)
    path = plot_compare(args.probe, kd_run, zq_run, kd_df, zq_df, args.out) if args.out else None
    result["figure"] = str(path) if path else None
    if args.json:
        print(json.dumps(result, sort_keys=True))
        return 0
    print_summary(result)
    if path:
        print(f"wrote {path}")
    return 0
