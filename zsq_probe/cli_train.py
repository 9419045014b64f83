"""`zsq-probe train` and `zsq-probe demo`."""

from __future__ import annotations

import json

from zsq_probe.cli import _teacher_args, arguments, command
from zsq_probe.errors import UserError


def _train_args(p):
    p.add_argument("--preset", default="ait", help="a preset (`zsq-probe presets` lists them)")
    _teacher_args(p)
    p.add_argument("--epochs", type=int)
    p.add_argument("--iters-per-epoch", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--w-bits", type=int)
    p.add_argument("--a-bits", type=int)
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--probes", help="comma-separated probes to switch on (cosine,inter_epoch,crossings,hessian,slice)"
                                    " or 'all'")
    p.add_argument("--out", required=True, help="run folder (must be new or empty unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="with --resume: accept a changed config (recorded)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field")
    p.add_argument("--config", help="a config JSON file (a run's config.json works) used instead of the preset; "
                                    "with --resume the run's own config.json is the default")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def build_config(args):
    from zsq_probe.config import PROBE_NAMES, config_from_dict, parse_assignment, resolve_config, validate

    probes = None
    if args.probes:
        probes = list(PROBE_NAMES) if args.probes == "all" else [s for s in args.probes.split(",") if s]
    flags = {"teacher": args.teacher, "weights": args.weights, "weights_root": args.weights_root,
             "download": args.download or None, "data": args.data, "data_root": args.data_root,
             "device": args.device, "epochs": args.epochs, "iters_per_epoch": args.iters_per_epoch,
             "batch_size": args.batch_size, "w_bits": args.w_bits, "a_bits": args.a_bits, "seed": args.seed,
             "probes": probes}
    if args.resume and not args.config:
        from pathlib import Path

        if (Path(args.out) / "config.json").is_file():
            args.config = str(Path(args.out) / "config.json")  # resume what was started; flags given still apply
    if args.config:
        try:
            with open(args.config) as f:
                doc = json.load(f)
        except (OSError, ValueError) as e:
            raise UserError(f"--config {args.config}: cannot read JSON ({e.__class__.__name__})") from None
        cfg = config_from_dict(doc.get("config", doc))
        for k, v in flags.items():
            if v is not None and k != "teacher":  # the teacher comes from the file
                setattr(cfg, k, v)
        for a in args.set:
            k, v = parse_assignment(a)
            setattr(cfg, k, v)
        validate(cfg)
        return cfg
    return resolve_config(args.preset, teacher=args.teacher, data=args.data, flags=flags, overrides=args.set)


@command("train", "train a quantised student (ZQ presets) or the KD baseline into a run folder")
@arguments(_train_args)
def cmd_train(args) -> int:
    from zsq_probe.train import train

    cfg = build_config(args)
    observers = make_observers(cfg)
    summary = train(cfg, args.out, resume=args.resume, force=args.force, observers=observers,
                    progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0


def make_observers(cfg):
    if not cfg.probes:
        return []
    from zsq_probe.probes import build_probes

    return build_probes(cfg)


@command("demo", "the whole story on the embedded digits default: teacher, KD/GDFQ/KL-only/AIT runs with every "
                 "probe, every figure, the four findings as measured")
@arguments(lambda p: (
    p.add_argument("--out", default="zsq-probe-demo", help="output folder (runs/, figures/, FINDINGS.md); "
                                                           "an interrupted demo resumes there"),
    p.add_argument("--device", default="cpu"),
    p.add_argument("--seed", type=int, default=0),
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config field of every demo run"),
    p.add_argument("--no-progress", action="store_true"),
))
def cmd_demo(args) -> int:
    from zsq_probe.demo import check_out, run_demo

    check_out(args.out)
    run_demo(args.out, device=args.device, seed=args.seed, overrides=args.set, progress=not args.no_progress)
    return 0
