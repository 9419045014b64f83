"""Post-hoc probes on a saved run's checkpoints: `zsq-probe cosine|hessian|slice|crossings --run RUN`.

Under torchrun the Hessian products are split across the ranks (zsq_probe.hessian.distributed); torchrun's parser
takes `--run` for its own `--run-path`, so put `--` before the command:
`torchrun --nproc-per-node 2 -m zsq_probe -- hessian --run RUN`.  Rank 0 writes the rows and prints the table."""

from __future__ import annotations

import argparse
import json

from zsq_probe.cli.common import add_output_args
from zsq_probe.probe_registry import BUILTIN_PROBES, posthoc_probe_names

# one command per built-in probe that measures checkpoints (zsq_probe.probe_registry), with its help line;
# --help lists them in this order (a post-hoc probe missing here fails at import)
_HELP_ORDER = ("cosine", "hessian", "slice", "crossings")
COMMANDS = {name: BUILTIN_PROBES[name].posthoc_help for name in sorted(posthoc_probe_names(), key=_HELP_ORDER.index)}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add one post-hoc command per probe of COMMANDS."""
    for name, help_ in COMMANDS.items():
        p = subparsers.add_parser(name, help=help_, description=help_)
        p.add_argument("--run", required=True, help="a run folder written by `zsq-probe train`")
        p.add_argument("--epochs", help="checkpoint epochs to probe, e.g. 0,5,10 or 2-8 (default: every checkpoint)")
        p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (default cpu)")
        p.add_argument("--overwrite", action="store_true", help="recompute epochs already probed post hoc")
        p.add_argument("--json", action="store_true", help="print the per-epoch table as JSON records")
        add_output_args(p, threads=True)
        p.set_defaults(handler=run, probe=name)


def run(args: argparse.Namespace) -> int:
    """Probe the run's checkpoints and print the per-epoch summary (rank 0 under torchrun)."""
    import pandas as pd  # loads when the command runs (zsq_probe.cli)

    from zsq_probe.analysis.epochs import parse_epochs  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.analysis.probe_tables import epoch_summary  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.hessian import distributed  # loads when the command runs (zsq_probe.cli)
    from zsq_probe.runs.posthoc import last_epoch, probe_run  # loads when the command runs (zsq_probe.cli)

    epochs = parse_epochs(args.epochs, last=last_epoch(args.run), what="this run")  # before any work
    if distributed.launched_by_torchrun():  # torchrun: split the Hessian across the ranks, rank 0 writes
        device = distributed.local_device(args.device) or args.device
        with distributed.split_across_ranks(device=device):
            df = probe_run(
                args.run,
                args.probe,
                epochs=epochs,
                device=device,
                overwrite=args.overwrite,
                threads=args.threads,
            )
            if not distributed.is_writer():
                return 0
    else:
        df = probe_run(
            args.run,
            args.probe,
            epochs=epochs,
            device=args.device,
            overwrite=args.overwrite,
            threads=args.threads,
        )
    table = epoch_summary(args.probe, df)
    if args.json:
        flat = table.copy()
        if isinstance(flat.columns, pd.MultiIndex):
            flat.columns = ["/".join(map(str, c)) for c in flat.columns]
        print(json.dumps(flat.reset_index().to_dict(orient="records"), default=float))
        return 0
    with pd.option_context("display.width", 140, "display.max_columns", 20, "display.float_format", "{:.5g}".format):
        print(table.to_string() if not table.empty else "(no rows)")
    return 0
