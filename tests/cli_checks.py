"""Helpers the tests of several packages share to run the CLI in process and to see what it left on disk."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from zsq_probe.cli import main
from zsq_probe.rundir.lock import LOCK_NAME

# ------------------------------------------------------------------ running the CLI in this process


def cli(args, capsys) -> tuple[int, str, str]:
    """main(args), each argument as a string: (exit status, stdout, stderr)."""
    rc = main([str(a) for a in args])
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def cli_err_lines(argv, capsys) -> tuple[int, list[str]]:
    """main(argv), each argument as a string: (exit status, the non-empty stderr lines)."""
    rc = main([str(a) for a in argv])
    return rc, [line for line in capsys.readouterr().err.splitlines() if line.strip()]


def one_line_error(err: str, *phrases: str) -> str:
    """The one non-empty line of `err`, which must hold each of `phrases`."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    for phrase in phrases:
        assert phrase in lines[0], lines[0]
    return lines[0]


def one_error_line(argv, capsys, command: str) -> str:
    """Run the CLI: exit 2 and exactly one `zsq-probe <command>: error:` line on stderr, no traceback."""
    rc = main([str(a) for a in argv])
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert rc == 2 and len(err) == 1, (rc, err)
    assert err[0].startswith(f"zsq-probe {command}: error:"), err
    return err[0]


# ------------------------------------------------------------------ what is on disk (to see that nothing changed)


def snapshot(*folders) -> dict:
    """{path: (size, mtime_ns, bytes)} of every file and folder under the given paths (missing ones: absent)."""
    out: dict = {}
    for top in map(Path, folders):
        for p in [top, *top.rglob("*")] if top.exists() else []:
            st = p.lstat()
            out[str(p)] = (st.st_size, st.st_mtime_ns, p.read_bytes() if p.is_file() else None)
    return out


def file_hashes(folder: Path) -> dict:
    """Every file under `folder` (hidden ones too) -> sha256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def tree_hashes(path) -> dict[str, str] | None:
    """{relative path: sha256} of everything under `path` (or of the file itself); None where nothing is."""
    if not os.path.exists(path):
        return None
    if os.path.isfile(path):
        return {"": hashlib.sha256(Path(path).read_bytes()).hexdigest()}
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = os.path.join(root, f)
            out[os.path.relpath(p, path)] = hashlib.sha256(Path(p).read_bytes()).hexdigest()
    return out


def tree_hashes_without_links(path: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `path`, links left out (and not followed)."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            p = Path(root) / f
            if not p.is_symlink():
                out[str(p.relative_to(path))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def tree_bytes(folder) -> dict[str, bytes]:
    """{relative path: bytes} of every file under `folder`."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def unchanged(before, path) -> None:
    """Every file that was there is byte-identical and nothing is new, not even a writer lock file."""
    assert tree_hashes(path) == before


# ------------------------------------------------------------------ tiny digits configs and run folders


def tiny_cfg(**sets):
    """The tiny digits AIT config (2 epochs of 2 steps, no warm-up), with `sets` applied and validated."""
    from zsq_probe.presets import resolve_config

    cfg = resolve_config(
        "ait", teacher="digits", flags={"epochs": 2, "iters_per_epoch": 2, "batch_size": 16, "val_max_batches": 1}
    )
    cfg.set("warmup_epochs", 0)
    for k, v in sets.items():
        cfg.set(k, v)
    cfg.validate()
    return cfg


def fake_run(path, cfg=None):
    """A run folder holding only a config.json (the tiny digits ZQ config unless `cfg`)."""
    from zsq_probe.rundir.store import RunDir

    run = RunDir(path)
    run.write_config((cfg or tiny_cfg()).to_dict())
    return run


# the writer lock as a refusal test finds it (tests/rundir/test_lock.py, tests/training/test_checkpoint.py)
DEAD_WRITER = b'{"pid": 999999, "host": "elsewhere", "what": "zsq-probe train"}'


def files(folder: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, mtime_ns)} of every file under `folder`, hidden ones (the lock) included."""
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = Path(root, name)
            out[str(path.relative_to(folder))] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                path.stat().st_mtime_ns,
            )
    return out


def set_lock(run: Path, state: str) -> None:
    """The run's lock file as training leaves it ("empty"), missing ("absent", a copy without hidden files) or
    holding the record of a writer that was killed ("dead writer")."""
    lock = run / LOCK_NAME
    lock.unlink(missing_ok=True)
    if state == "empty":
        lock.write_bytes(b"")
    elif state == "dead writer":
        lock.write_bytes(DEAD_WRITER)
    if lock.exists():
        os.utime(lock, ns=(1_000_000_000, 1_000_000_000))  # a time no rewrite would give it back by chance
