"""What a checkpoint holds and how it is put back; the run summary.

A checkpoint (RUN/checkpoints/epoch-NNNN.pt, docs/run-directory.md) holds the student, its optimiser, the
batch source's state (generator and its optimiser), torch's RNG state and each observer's state, so a
resumed run continues bit for bit on CPU.  It also records the run it belongs to -- its config (preset,
method, seed) and its teacher's fingerprint -- which a resume and a post-hoc probe check against config.json
(`check_checkpoint_identity`) before they use it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from zsq_probe.errors import UserError, one_line
from zsq_probe.rundir.atomic import atomic_write_bytes
from zsq_probe.rundir.schema import tripped_health_checks
from zsq_probe.teachers.accuracy import top1_and_ce
from zsq_probe.training.errors import NonFiniteError

if TYPE_CHECKING:
    import pandas as pd

    from zsq_probe.events import Observer
    from zsq_probe.quantization.gi import GradientInundation
    from zsq_probe.rundir.store import CheckpointState, RunDir
    from zsq_probe.teachers.loader import TeacherInfo
    from zsq_probe.training.parts import RunParts

# what a checkpoint records of the run it belongs to: these config keys, and its teacher's fingerprint (the
# sha256 of the weight file, or of the state dict of a teacher passed as a module; config.json's teacher record)
IDENTITY_KEYS = ("preset", "method", "seed")
TEACHER_FINGERPRINT = "teacher_weights_sha256"


def training_state(
    parts: RunParts, epoch: int, global_step: int, observers: Iterable[Observer] = ()
) -> CheckpointState:
    """The checkpoint of a run after `epoch` epochs and `global_step` iterations: everything a resume needs.

    Args:
        parts: The run (student, optimiser, batch source, config, device).
        epoch: Epochs completed.
        global_step: Iterations done.
        observers: Observers whose `state_dict` is saved under "observers" by name.

    Returns:
        The checkpoint's state.

    Raises:
        RuntimeError: `parts` was built without an optimiser (`build_run(..., for_training=False)`).
    """
    rng: dict[str, torch.Tensor] = {"torch": torch.get_rng_state()}
    state: CheckpointState = {
        "epoch": epoch,
        "global_step": global_step,
        "student": parts.student.state_dict(),
        "optimizer": training_optimizer(parts).state_dict(),
        "config": parts.cfg.to_dict(),
        TEACHER_FINGERPRINT: parts.teacher_info.weights_sha256,
        "rng": rng,
        "observers": {o.name: o.state_dict() for o in observers},
    }
    if torch.cuda.is_available() and parts.device.type == "cuda":
        rng["cuda"] = torch.cuda.get_rng_state(parts.device)
    state.update(parts.source.state_dict())
    return state


def check_checkpoint_identity(
    state: Mapping[str, Any], doc: Mapping[str, Any], checkpoint: Path, config_path: Path
) -> None:
    """Refuse (one-line UserError naming the key, both values and the files) a checkpoint whose run is not the one
    config.json describes: its preset, method or seed (IDENTITY_KEYS of its `config`) or its teacher's
    fingerprint differ from config.json's (`config`, `teacher.weights_sha256`).  config.json labels every row a
    post-hoc probe writes and is what a resume rebuilds, so an edited config.json, or checkpoints copied from
    another run, must not be used.  A checkpoint that records no identity (an earlier development version) is
    refused too."""
    recorded = state.get("config")
    if not isinstance(recorded, Mapping) or TEACHER_FINGERPRINT not in state:
        raise UserError(
            f"checkpoint {checkpoint} does not record which run it belongs to (no config or teacher fingerprint: "
            f"written by an earlier zsq-probe); train the run again with this version"
        )
    config, teacher = doc.get("config"), doc.get("teacher")
    config = config if isinstance(config, Mapping) else {}
    teacher = teacher if isinstance(teacher, Mapping) else {}
    pairs = [(key, config.get(key), recorded.get(key)) for key in IDENTITY_KEYS]
    pairs.append(("teacher.weights_sha256", teacher.get("weights_sha256"), state[TEACHER_FINGERPRINT]))
    for key, said, held in pairs:
        if said != held:
            raise UserError(
                f"{config_path} says {key}={_shown(said)} but checkpoint {checkpoint} records {key}={_shown(held)}: "
                f"config.json was edited or the checkpoints come from another run; put back {key}={_shown(held)} "
                f"or use the run folder the checkpoints belong to"
            )


def check_teacher_fingerprint(doc: Mapping[str, Any], teacher_info: TeacherInfo, config_path: Path) -> None:
    """Refuse (one-line UserError) a teacher whose fingerprint (`TeacherInfo.weights_sha256`: its weight file's
    sha256, or a module's state-dict sha256) differs from the one config.json records for the run (`teacher`):
    the run's checkpoints were distilled from that teacher.  Nothing to check when config.json records none."""
    recorded = doc.get("teacher")
    said = recorded.get("weights_sha256") if isinstance(recorded, Mapping) else None
    if said is not None and said != teacher_info.weights_sha256:
        raise UserError(
            f"the teacher loaded now ({teacher_info.weights_path or teacher_info.name}, weights_sha256="
            f"{_shown(teacher_info.weights_sha256)}) is not the one this run was trained with ({config_path} "
            f"teacher.weights_sha256={_shown(said)}); give the run its own teacher's weights"
        )


def _shown(value: object) -> str:
    """A value for a one-line message: repr, a sha256 cut to its first 16 digits."""
    if isinstance(value, str) and len(value) == 64:
        return repr(value[:16] + "...")
    return repr(value)


def training_optimizer(parts: RunParts) -> torch.optim.Optimizer | GradientInundation:
    """The student's optimiser of a run built for training.

    Args:
        parts: The run.

    Returns:
        `parts.optimizer`.

    Raises:
        RuntimeError: The run was built without one (`build_run(..., for_training=False)`, for probes).
    """
    if parts.optimizer is None:
        raise RuntimeError("the run was built without an optimiser (build_run(..., for_training=False))")
    return parts.optimizer


def first_nonfinite_tensor(obj: object, prefix: str = "") -> str | None:
    """The key path of the first floating tensor holding inf/NaN in a nested state, else None.

    Args:
        obj: A tensor, or dicts, lists and tuples of them (other values are skipped, as is any "rng" key).
        prefix: The key path of `obj` itself.

    Returns:
        The dotted key path ("tensor" for a bare tensor without a prefix), or None when all are finite.
    """
    if isinstance(obj, torch.Tensor):
        if obj.is_floating_point() or obj.is_complex():
            return None if bool(torch.isfinite(obj).all()) else (prefix or "tensor")
        return None
    items: Iterable[tuple[object, object]]
    if isinstance(obj, dict):
        items = obj.items()
    elif isinstance(obj, (list, tuple)):
        items = enumerate(obj)
    else:
        return None
    for k, v in items:
        if k == "rng":
            continue
        bad = first_nonfinite_tensor(v, f"{prefix}.{k}" if prefix else str(k))
        if bad:
            return bad
    return None


def check_finite_state(state: Mapping[str, object], epoch: int) -> None:
    """Refuse to write a checkpoint holding inf/NaN weights (student, generator): a checkpoint on disk is always
    one a run can resume from.

    Args:
        state: The checkpoint's state (`training_state`).
        epoch: The epoch it is written for (named in the message).

    Raises:
        NonFiniteError: A weight of the student or the generator holds inf/NaN.
    """
    for key in ("student", "generator"):  # the weights (optimiser states may hold inf by design)
        if key in state:
            bad = first_nonfinite_tensor(state[key], key)
            if bad:
                raise NonFiniteError(
                    f"not writing checkpoint epoch {epoch}: {bad} holds inf/NaN values; the run "
                    "stopped with the previous checkpoint kept (lower the learning rates and "
                    "resume with --force)"
                )


def restore_models(parts: RunParts, state: CheckpointState) -> None:
    """Put the student and the batch source (generator) back to a checkpoint's state — what probes need.

    Args:
        parts: The run to restore into.
        state: A checkpoint's state.

    Raises:
        UserError: The checkpoint does not fit the run's models.
    """
    try:
        parts.student.load_state_dict(state["student"])
        parts.source.load_state_dict(state, optimizer=parts.optimizer is not None)
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"the checkpoint does not fit this run's models ({one_line(e)})") from None


def restore_training_state(
    parts: RunParts, state: CheckpointState, observers: Iterable[Observer] = ()
) -> tuple[int, int]:
    """Everything training needs to continue: models, optimiser, RNG and observers.

    Args:
        parts: The run to restore into (built for training).
        state: A checkpoint's state.
        observers: Observers to give back their saved state (by name; those without one are left as they are).

    Returns:
        (epochs completed, global step).

    Raises:
        UserError: The checkpoint does not fit the run's models.
        RuntimeError: `parts` was built without an optimiser.
    """
    restore_models(parts, state)
    optimizer = training_optimizer(parts)
    try:
        epoch, global_step = int(state["epoch"]), int(state["global_step"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["rng"]["torch"])
    except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as e:
        raise UserError(f"the checkpoint does not fit this run's models ({one_line(e)})") from None
    if "cuda" in state["rng"] and parts.device.type == "cuda":
        torch.cuda.set_rng_state(state["rng"]["cuda"], parts.device)
    saved = state.get("observers", {})
    for o in observers:
        if o.name in saved:
            o.load_state_dict(saved[o.name])
    return epoch, global_step


def write_summary(run: RunDir, parts: RunParts, epochs_completed: int) -> dict[str, object]:
    """RUN/summary.json: what was trained, the final and best validation top-1 and the run's total
    `skipped_steps` (updates on_nonfinite=skip left out).

    Args:
        run: The run folder (its metrics table is read).
        parts: The run's models and config.
        epochs_completed: Epochs trained.

    Returns:
        The summary as written.
    """
    cfg = parts.cfg
    m = run.read_table("metrics")
    val = m["val_top1"].dropna()
    summary: dict[str, object] = {
        "run": run.name,
        "method": cfg.method,
        "preset": cfg.preset,
        "teacher": cfg.teacher,
        "teacher_class": parts.teacher_info.module_class or type(parts.teacher).__name__,
        "data": parts.spec.name,  # the data set's own name, or that of a DatasetSpec of your own
        "w_bits": cfg.quant.w_bits,
        "a_bits": cfg.quant.a_bits,
        "full_precision_student": cfg.quant.full_precision,
        "epochs_completed": epochs_completed,
        "seed": cfg.seed,
        "final_val_top1": float(val.iloc[-1]) if len(val) else None,
        "best_val_top1": float(val.max()) if len(val) else None,
        "teacher_top1": teacher_top1(parts),
        # on_nonfinite=skip: updates skipped over the whole run (every epoch's metrics row, resumes included)
        "skipped_steps": int(m["skipped_steps"].fillna(0).sum()) if "skipped_steps" in m else 0,
        "health": health_summary(m),
    }
    atomic_write_bytes(run.path / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
    return summary


def health_summary(metrics: pd.DataFrame) -> dict[str, object]:
    """{"ok": no health check tripped, "tripped": {check: [epochs]}} from the metrics table's `health` column
    (zsq_probe.training.health).

    Args:
        metrics: The run's metrics table.

    Returns:
        The summary's "health" entry.
    """
    tripped = tripped_health_checks(metrics)
    return {"ok": not tripped, "tripped": tripped}


def teacher_top1(parts: RunParts) -> float | None:
    """The teacher's validation top-1 (the run's ceiling), or None for a run without validation data.

    Args:
        parts: The run (teacher, validation loader, device, config).

    Returns:
        The top-1 in [0, 1], or None.
    """
    if parts.val_loader is None:
        return None
    return top1_and_ce(parts.teacher, parts.val_loader, parts.device, parts.cfg.val_max_batches)[0]
