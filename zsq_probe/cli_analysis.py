"""Post-hoc probe commands on saved runs: `zsq-probe cosine|hessian|slice|crossings --run RUN`."""

from __future__ import annotations

import json

import pandas as pd

from zsq_probe.cli import arguments, command
from zsq_probe.errors import UserError


def _posthoc_args(p):
    p.add_argument("--run", required=True, help="a run folder written by `zsq-probe train`")
    p.add_argument("--epochs", help="checkpoint epochs to probe, e.g. 0,5,10 or 2-8 (default: every checkpoint)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--overwrite", action="store_true", help="recompute epochs already probed post hoc")
    p.add_argument("--json", action="store_true", help="print the per-epoch table as JSON records")


def parse_epochs(text: str | None) -> list[int] | None:
    if not text:
        return None
    out = []
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                a, b = part.split("-", 1)
                out += list(range(int(a), int(b) + 1))
            elif part:
                out.append(int(part))
    except ValueError:
        raise UserError(f"--epochs expects numbers and ranges like 0,5,10-12, got {text!r}") from None
    return out


# what each command prints per epoch: (table filter, columns, index)
def _summarise(probe: str, df: pd.DataFrame) -> pd.DataFrame:
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
        g = d.groupby(["epoch", "loss"])["loss_value"]
        centre = d[d["k"].abs() < 1e-12].set_index(["epoch", "loss"])["loss_value"]
        out = pd.DataFrame({"at_theta": centre, "max_along_line": g.max(), "min_along_line": g.min()})
        return out.unstack("loss")
    d = df.groupby("epoch")[["changed", "layer_size"]].sum()
    d["share"] = d["changed"] / d["layer_size"]
    d["layers_without_change"] = df.groupby("epoch")["changed"].apply(lambda s: int((s == 0).sum()))
    return d


def _run_posthoc(probe: str, args) -> int:
    from zsq_probe.posthoc import probe_run

    df = probe_run(args.run, probe, epochs=parse_epochs(args.epochs), device=args.device,
                   overwrite=args.overwrite, log=(lambda *a: None) if args.json else print)
    table = _summarise(probe, df)
    if args.json:
        flat = table.copy()
        if isinstance(flat.columns, pd.MultiIndex):
            flat.columns = ["/".join(map(str, c)) for c in flat.columns]
        print(json.dumps(flat.reset_index().to_dict(orient="records"), default=float))
    else:
        with pd.option_context("display.width", 140, "display.max_columns", 20, "display.float_format", "{:.5g}".format):
            print(table.to_string() if not table.empty else "(no rows)")
    return 0


@command("cosine", "post hoc: cos(grad CE, grad KL) of each checkpoint on its probe batch")
@arguments(_posthoc_args)
def cmd_cosine(args) -> int:
    return _run_posthoc("cosine", args)


@command("hessian", "post hoc: Hessian traces, top eigenvalues and SLQ density (CE and KL) per checkpoint")
@arguments(_posthoc_args)
def cmd_hessian(args) -> int:
    return _run_posthoc("hessian", args)


@command("slice", "post hoc: loss along the top Hessian eigenvector (CE and KL) per checkpoint")
@arguments(_posthoc_args)
def cmd_slice(args) -> int:
    return _run_posthoc("slice", args)


@command("crossings", "post hoc: integer codes changed per layer between consecutive checkpoints")
@arguments(_posthoc_args)
def cmd_crossings(args) -> int:
    return _run_posthoc("crossings", args)
