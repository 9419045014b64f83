"""`zsq-probe train`: flags (or a config file) -> a RunConfig -> `zsq_probe.runs.train`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from zsq_probe.analysis.epochs import epoch_list
from zsq_probe.cli.common import DEFAULT_TEACHER, add_output_args, add_teacher_args, show_progress
from zsq_probe.config import config_from_dict, parse_assignment, validate
from zsq_probe.errors import UserError
from zsq_probe.presets import resolve_config
from zsq_probe.probe_registry import BUILTIN_PROBE_NAMES

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig
    from zsq_probe.events import Observer

DEFAULT_PRESET = "ait"
HELP = "train a quantised student (ZQ presets) or the KD baseline into a run folder"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `train` command."""
    p = subparsers.add_parser("train", help=HELP, description=HELP)
    p.add_argument(
        "--preset", default=None, help=f"a preset (`zsq-probe presets` lists them; default {DEFAULT_PRESET})"
    )
    add_teacher_args(p)
    p.add_argument("--epochs", type=int, help="training epochs (default: the preset's for the data set)")
    p.add_argument("--iters-per-epoch", type=int, help="student steps per epoch (default: the preset's)")
    p.add_argument("--batch-size", type=int, help="images per step (default: the preset's)")
    p.add_argument("--w-bits", type=int, help="weight bits of the quantised student, 2..8 (default: the preset's)")
    p.add_argument("--a-bits", type=int, help="activation bits of the quantised student, 2..8 (default: the preset's)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument(
        "--probes", help="comma-separated probes to switch on (cosine,inter_epoch,crossings,hessian,slice) or 'all'"
    )
    p.add_argument("--out", required=True, help="run folder (must be new or empty unless --resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--force", action="store_true", help="with --resume: accept a changed config (recorded)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override any config field")
    p.add_argument(
        "--config",
        help="a config JSON file (a run's config.json works) used instead of the preset; "
        "with --resume the run's own config.json is the default",
    )
    p.add_argument(
        "--num-workers",
        type=int,
        help="data-loading worker processes for real data (validation, KD training data); default 0: in this process",
    )
    p.add_argument("--pin-memory", action="store_true", help="pinned host memory for real-data batches (CUDA)")
    p.add_argument(
        "--tensorboard",
        nargs="?",
        const=True,
        default=None,
        metavar="DIR",
        help="also log live curves to TensorBoard (default DIR: RUN/tensorboard; extra [tensorboard])",
    )
    add_output_args(p, threads=True)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Train (or resume) the run the flags describe, with the probes its config names; exit status 0."""
    from zsq_probe.runs import train  # loads when the command runs (zsq_probe.cli)

    cfg = build_config(args)
    observers: list[Observer] | None = None
    if args.tensorboard:
        from zsq_probe.probes import build_probes  # loads when the command runs (zsq_probe.cli)
        from zsq_probe.training.tensorboard import TensorBoardObserver  # the optional [tensorboard] extra

        observers = [*build_probes(cfg), TensorBoardObserver(None if args.tensorboard is True else args.tensorboard)]
    summary = train(
        cfg,
        args.out,
        resume=args.resume,
        force=args.force,
        progress=show_progress(args),
        observers=observers,
        threads=args.threads,
    ).to_dict()
    print(json.dumps(summary, indent=2))
    if summary.get("skipped_steps"):  # the last line: a run that skipped updates must not pass unnoticed
        print(
            f"warning: {summary['skipped_steps']} training step(s) of this run were skipped with a non-finite "
            f"loss, gradient or batch (on_nonfinite=skip; skipped_steps in summary.json and per epoch in "
            f"probes/metrics)",
            file=sys.stderr,
        )
    health = summary.get("health")
    if isinstance(health, dict) and health.get("tripped"):  # a collapsed student must not pass unnoticed either
        where = ", ".join(f"{check} (epochs {epoch_list(epochs)})" for check, epochs in health["tripped"].items())
        print(
            f"warning: health checks tripped: {where} (the warning lines above say why; `health` in "
            f"probes/metrics and summary.json)",
            file=sys.stderr,
        )
    return 0


def build_config(args: argparse.Namespace) -> RunConfig:
    """The RunConfig the flags ask for: the preset resolved for teacher and data, or --config's file
    (the run's own config.json when resuming), then the flags given, then --set.

    Args:
        args: the parsed `train` flags.

    Returns:
        The validated config.

    Raises:
        UserError: an unreadable --config, a bad flag or --set value, or a resume naming another preset, teacher
            or data set than the run's.
    """
    probes = None
    if args.probes:
        probes = list(BUILTIN_PROBE_NAMES) if args.probes == "all" else [s for s in args.probes.split(",") if s]
    flags = {
        "teacher": args.teacher,
        "weights": args.weights,
        "weights_root": args.weights_root,
        "download": args.download or None,
        "data": args.data,
        "data_root": args.data_root,
        "device": args.device,
        "epochs": args.epochs,
        "iters_per_epoch": args.iters_per_epoch,
        "batch_size": args.batch_size,
        "w_bits": args.w_bits,
        "a_bits": args.a_bits,
        "seed": args.seed,
        "probes": probes,
        "num_workers": args.num_workers,
        "pin_memory": args.pin_memory or None,
    }
    config_file = args.config
    if args.resume and (Path(args.out) / "config.json").is_file():
        _refuse_other_teacher_or_data(args, Path(args.out) / "config.json")
    if args.resume and not config_file and (Path(args.out) / "config.json").is_file():
        config_file = str(Path(args.out) / "config.json")  # resume what was started; flags given still apply
    if not config_file:
        return resolve_config(
            args.preset or DEFAULT_PRESET,
            teacher=args.teacher or DEFAULT_TEACHER,
            data=args.data,
            flags=flags,
            overrides=args.set,
        )
    return _config_from_file(config_file, flags, args.set)


def _config_from_file(config_file: str, flags: Mapping[str, object], sets: list[str]) -> RunConfig:
    """--config's file (a bare config object or a run's config.json), then the `flags` given (not None; the
    teacher stays the file's), then the --set assignments `sets`; validated."""
    try:
        with open(config_file) as f:
            doc = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"--config {config_file}: cannot read JSON ({e.__class__.__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config", doc), dict):
        raise UserError(
            f"--config {config_file}: expected a JSON object of config keys, got "
            f"{type(doc.get('config', doc) if isinstance(doc, dict) else doc).__name__}"
        )
    cfg = config_from_dict(doc.get("config", doc))
    for k, v in flags.items():
        if v is not None and k != "teacher":  # the teacher comes from the file
            cfg.set(k, v)
    for a in sets:
        cfg.set(*parse_assignment(a))
    validate(cfg)
    return cfg


def _refuse_other_teacher_or_data(args: argparse.Namespace, config_path: Path) -> None:
    """--resume continues a run with the preset, teacher and data set it was started with: an explicit
    --preset, --teacher or --data naming others is refused (even with --force: the checkpoint belongs to them)."""
    from zsq_probe.teachers.metadata import dataset_for_teacher  # loads when the command runs (zsq_probe.cli)

    preset = getattr(args, "preset", None)  # (a caller's own Namespace may lack it)
    if args.teacher is None and args.data is None and preset is None:
        return
    try:
        with open(config_path) as f:
            doc = json.load(f)
        recorded = config_from_dict(doc["config"])
    except Exception:  # noqa: BLE001 - an unreadable config.json is reported where the run is opened
        return
    teacher = recorded.teacher
    data = recorded.dataset.name
    if preset is not None and preset != recorded.preset:
        raise UserError(
            f"--resume cannot change preset ({recorded.preset!r} -> {preset!r}), not even with --force: "
            f"the run's settings came from it; drop --preset, or start a new run in another --out"
        )
    if args.teacher is not None and args.teacher != teacher:
        raise UserError(
            f"--resume: --teacher {args.teacher} differs from this run's teacher {teacher!r} "
            f"({config_path}); a run resumes with its own teacher: drop --teacher, or start a new run "
            f"in another --out"
        )
    if data is None:
        try:
            data = dataset_for_teacher(teacher)
        except Exception:  # noqa: BLE001
            return
    if args.data is not None and args.data != data:
        raise UserError(
            f"--resume: --data {args.data} differs from this run's data set {data!r} ({config_path}); "
            f"a run resumes with its own data set: drop --data, or start a new run in another --out"
        )
