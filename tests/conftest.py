"""Shared test fixtures.

* Every test session runs with ``ZSQ_PROBE_CACHE`` pointing at a temporary folder, so no test
  reads or writes the user's cache (``~/.cache/zsq-probe``).
* ``digits_teacher``: the embedded digits teacher ``(model, TeacherInfo)``, trained once per
  session into that temporary cache. It is shared by every test: do not modify it in place
  (quantise / train a ``copy.deepcopy`` of it, or use ``digits_teacher_copy``).
* ``three_epoch_run``: a tiny three-epoch AIT run (tests/tiny_runs.py's ``TINY_AIT``), trained once per test
  module that uses it; ``run_copy`` is a private copy of it that a test may change.
* Tiers: ``-m "not slow"`` is the quick tier; ``slow`` marks the end-to-end tests (wheel build, torchrun,
  kill -9, Ray / submitit, coverage benchmarks), the checks whose point is a fresh interpreter (``python -m``
  entry points, import-time guarantees, piped output), real-size model builds, the bit-exact reference
  runs (tests/e2e/test_reference_parquet.py: run it after a refactor), every figure through ``zsq-probe figures``
  and the figures' many-runs scale check (the quick tier draws each figure in process).  A test that splits
  into an in-process half and a fresh-interpreter half is two tests, one per tier.  The full suite runs both.
* Threads: torch runs on one intra-op thread in every test process (``pytest_configure``).
* In parallel (pytest-xdist, ``-n 2``): each worker is a process of its own with one thread, so two workers
  use two cores without oversubscribing them; the controller trains the teacher once, while the workers start,
  into a cache folder they share.  The tests of a module that use a module-scoped fixture (its own or a
  conftest.py's: a trained run, a built wheel) run on one worker, so that fixture is built once
  (``pytest_xdist_make_scheduler``).  Modules marked ``teacher_free`` run first and do not wait for that teacher
  (``pytest_runtest_setup``); a test so marked that loads the teacher anyway is an error (it would train a
  private copy).
"""

import ast
import copy
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest


def pytest_configure(config):
    """One intra-op torch thread per test process (``$ZSQ_TEST_THREADS`` to change it), set with
    ``torch.set_num_threads`` only: ``$OMP_NUM_THREADS`` would also move OpenBLAS (scipy's ARPACK) off the thread
    count the reference parquet was written with, and its eigenvalues then differ in the last bits.  Inherited by the
    subprocesses the tests start and by pytest-xdist's workers.  The tests' nets are tiny: a second thread gains
    little on an idle machine, and on a busy one (or beside a second worker) multi-threaded kernels ran the
    curvature tests 10-20x slower."""
    os.environ.setdefault("ZSQ_TEST_THREADS", "1")
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        _start_shared_teacher(config)  # pytest-xdist's controller runs no test: its workers set their threads
        return
    import torch

    torch.set_num_threads(int(os.environ["ZSQ_TEST_THREADS"]))


SHARED_CACHE_ENV = "ZSQ_PROBE_TEST_SHARED_CACHE"  # the xdist controller's cache folder, for its workers
_SHARED_TEACHER = pytest.StashKey[tuple]()  # (the training process, its cache folder, its log file)
_TRAIN_TEACHER = """
import pathlib, sys
ready = pathlib.Path(sys.argv[1])
try:
    from zsq_probe.teachers.loader import load_teacher
    load_teacher("digits")
except BaseException:
    (ready / "failed").touch()
    raise
(ready / "ready").touch()
"""


def _start_shared_teacher(config):
    """pytest-xdist's controller: train the digits teacher once for all workers, in a process of its own that
    runs while the workers start and collect (each would otherwise train its own, ~6 s on one core), into a
    cache folder the workers then share read-only (``zsq_cache_dir``)."""
    cache = Path(tempfile.mkdtemp(prefix="zsq-probe-test-cache-"))
    os.environ[SHARED_CACHE_ENV] = str(cache)
    log = open(cache / "teacher.log", "wb")  # closed in pytest_unconfigure
    env = dict(os.environ, ZSQ_PROBE_CACHE=str(cache))
    proc = subprocess.Popen([sys.executable, "-c", _TRAIN_TEACHER, str(cache)], env=env, stdout=log, stderr=log)
    config.stash[_SHARED_TEACHER] = (proc, cache, log)


def pytest_unconfigure(config):
    caches = config.stash.get(_CACHES, None)
    if caches is not None:
        for folder in caches["own"]:
            shutil.rmtree(folder, ignore_errors=True)
        if caches["env"] is None:
            os.environ.pop("ZSQ_PROBE_CACHE", None)
        else:
            os.environ["ZSQ_PROBE_CACHE"] = caches["env"]
    started = config.stash.get(_SHARED_TEACHER, None)
    if started is None:
        return
    proc, cache, log = started
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    log.close()
    shutil.rmtree(cache, ignore_errors=True)
    os.environ.pop(SHARED_CACHE_ENV, None)


def _shared_cache() -> Path | None:
    """In a pytest-xdist worker: the controller's cache once its teacher is trained (None if that failed)."""
    folder = os.environ.get(SHARED_CACHE_ENV)
    if not folder or not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    folder = Path(folder)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if (folder / "ready").exists():
            return folder
        if (folder / "failed").exists() or not folder.is_dir():
            return None
        time.sleep(0.1)
    return None


_CACHES = pytest.StashKey[dict]()  # this process's cache folders and the $ZSQ_PROBE_CACHE it started with


def _caches(config) -> dict:
    if _CACHES not in config.stash:
        config.stash[_CACHES] = {"env": os.environ.get("ZSQ_PROBE_CACHE"), "own": []}
    return config.stash[_CACHES]


def _own_cache(config) -> Path:
    """A cache folder of this process's own (removed when the session ends)."""
    folder = Path(tempfile.mkdtemp(prefix="zsq-probe-test-cache-"))
    _caches(config)["own"].append(folder)
    return folder


def _teacher_cache(config) -> Path:
    """The cache folder the digits teacher is in: under pytest-xdist the controller's once its teacher is trained
    (this waits for it), else (or if that failed) one of this process's own, where the first test that needs the
    teacher trains it."""
    caches = _caches(config)
    if "teacher" not in caches:
        caches["teacher"] = _shared_cache() or _own_cache(config)
    return caches["teacher"]


def _teacher_free_cache(config) -> Path | None:
    """Under pytest-xdist, the cache folder of the tests marked ``teacher_free``: not the controller's, which
    they must not wait for (they run while it trains).  None outside pytest-xdist."""
    if not os.environ.get(SHARED_CACHE_ENV) or not os.environ.get("PYTEST_XDIST_WORKER"):
        return None
    caches = _caches(config)
    if "teacher_free" not in caches:
        caches["teacher_free"] = _own_cache(config)
    return caches["teacher_free"]


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Point ``$ZSQ_PROBE_CACHE`` at the test's cache folder before any fixture of it is set up (a module-scoped
    run trains with the teacher too), so no test reads or writes the user's cache."""
    folder = _teacher_free_cache(item.config) if item.get_closest_marker("teacher_free") else None
    os.environ["ZSQ_PROBE_CACHE"] = str(folder or _teacher_cache(item.config))


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item):
    if not item.get_closest_marker("teacher_free"):
        return
    folder = _teacher_free_cache(item.config)
    if folder is not None and (folder / "teachers").exists():
        shutil.rmtree(folder / "teachers")  # the next teacher-free test is judged on its own
        pytest.fail(f"{item.nodeid} is marked teacher_free but loaded the digits teacher: remove the mark")


def _fixtures_and_tests(tree: ast.Module) -> tuple[dict[str, set[str]], set[str], dict[str, set[str]]]:
    """The fixtures of a parsed file (name -> argument names), those of them module-, class- or package-scoped, and
    its test functions (name -> argument names)."""
    fixtures: dict[str, set[str]] = {}
    wide: set[str] = set()
    tests: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        args = {a.arg for a in node.args.args + node.args.kwonlyargs}
        for dec in node.decorator_list:
            call = dec if isinstance(dec, ast.Call) else None
            target = call.func if call else dec
            if isinstance(target, ast.Attribute) and target.attr == "fixture":
                fixtures[node.name] = args
                scope = next((k.value for k in (call.keywords if call else []) if k.arg == "scope"), None)
                if isinstance(scope, ast.Constant) and scope.value in ("module", "class", "package"):
                    wide.add(node.name)
        if node.name.startswith("test") and node.name not in fixtures:
            tests[node.name] = args
    return fixtures, wide, tests


def _module_fixture_users(path: Path, root: Path) -> frozenset[str]:
    """Names of the test functions in the test module `path` that use a module- or class-scoped fixture of its own
    or of a conftest.py between it and `root` (directly or through other fixtures), read from the source: the xdist
    controller collects nothing itself."""
    fixtures, wide = {}, set()
    for conftest in reversed([d / "conftest.py" for d in path.parents if d == root or root in d.parents]):
        if conftest.is_file():  # the nearer conftest.py last: its fixtures hide the farther ones'
            found, found_wide, _ = _fixtures_and_tests(ast.parse(conftest.read_text()))
            fixtures.update(found)
            wide = (wide - set(found)) | found_wide
    own, own_wide, tests = _fixtures_and_tests(ast.parse(path.read_text()))
    fixtures.update(own)  # the module's own fixtures hide the conftest ones of the same name
    wide = (wide - set(own)) | own_wide
    changed = True
    while changed:  # fixtures that use a wide one share its worker too
        grown = {name for name, args in fixtures.items() if args & wide}
        changed = not grown <= wide
        wide |= grown
    return frozenset(name for name, args in tests.items() if args & wide)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist (``-n 2``): every test is a unit of its own, except that the tests of a module that use its
    module-scoped fixtures (a trained run, a built wheel) form one unit, on one worker, so such a fixture is
    built once.  (``--dist loadgroup`` would do this with ``xdist_group`` marks, but it does not group on
    pytest 9.2: pytest-xdist issue 1386.)  Only the default ``--dist load`` is replaced."""
    if config.getoption("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleFixtureScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _work_unit(config, nodeid)

        def schedule(self) -> None:
            # the workers' collection order (pytest_collection_modifyitems) is the order of work; xdist's reorder
            # (largest unit first) would undo its teacher-free start
            self.config.option.loadscopereorder = False
            super().schedule()

    return ModuleFixtureScheduling(config, log)


_USERS = pytest.StashKey[dict]()  # module path -> the names of its tests that share a module-scoped fixture


def _work_unit(config, nodeid: str) -> str:
    """pytest-xdist's unit of work for a test: its module if it uses one of the module's module-scoped
    fixtures, else the test itself."""
    users = config.stash.setdefault(_USERS, {})
    module = nodeid.split("::", 1)[0]
    if module not in users:
        path = Path(config.rootpath, module)
        users[module] = _module_fixture_users(path, Path(config.rootpath)) if path.suffix == ".py" else frozenset()
    name = nodeid.rsplit("::", 1)[-1].split("[", 1)[0]
    return module if name in users[module] else nodeid


def pytest_collection_modifyitems(config, items):
    """A pytest-xdist worker's order of work: the units of ``teacher_free`` tests first, so both workers run
    tests while the controller trains the teacher; then the rest; within each, units with a ``slow`` test
    first (the Ray or torchrun test, ~25 s, last would leave the other worker idle), then larger units first."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    units: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        units.setdefault(_work_unit(config, item.nodeid), []).append(i)
    waits = {u: any(not items[i].get_closest_marker("teacher_free") for i in idx) for u, idx in units.items()}
    slow = {u: any(items[i].get_closest_marker("slow") for i in idx) for u, idx in units.items()}
    order = sorted(units, key=lambda u: (waits[u], not slow[u], -len(units[u]), units[u][0]))
    items[:] = [items[i] for u in order for i in units[u]]


@pytest.fixture(scope="session")
def zsq_cache_dir(request) -> Path:
    """The cache folder the session's digits teacher is in (``$ZSQ_PROBE_CACHE`` of every test not marked
    ``teacher_free``): a temporary one of this process's own, or under pytest-xdist the one its controller trained
    the teacher into (every worker reads that teacher; no test writes to this folder)."""
    return _teacher_cache(request.config)


@pytest.fixture(scope="session")
def digits_teacher(zsq_cache_dir):
    """(model in eval mode, TeacherInfo) of the embedded digits teacher; shared, read-only."""
    from zsq_probe.teachers.loader import load_teacher

    with pytest.MonkeyPatch.context() as mp:  # train into the session cache even if a test changed the env
        mp.setenv("ZSQ_PROBE_CACHE", str(zsq_cache_dir))
        model, info = load_teacher("digits")
    return model, info


@pytest.fixture
def digits_teacher_copy(digits_teacher):
    """A private deep copy of the digits teacher (model, info) that a test may modify."""
    model, info = digits_teacher
    return copy.deepcopy(model), copy.deepcopy(info)


# ------------------------------------------------------------------ a trained run shared by several packages' tests


@pytest.fixture(scope="module")
def three_epoch_run(digits_teacher, tmp_path_factory) -> Path:
    """Three tiny AIT epochs (tiny_runs.TINY_AIT), a checkpoint each (0-3): trained once per test module that uses it
    (the tests of run folders received from someone else: rundir, runs, analysis, plots); tests copy it."""
    from tiny_runs import TINY_AIT

    from zsq_probe.cli import main

    out = tmp_path_factory.mktemp("received") / "run"
    assert main(["train", *TINY_AIT, "--epochs", "3", "--out", str(out)]) == 0
    return out


@pytest.fixture
def run_copy(three_epoch_run, tmp_path) -> Path:
    """A private copy of three_epoch_run that a test may change."""
    run = tmp_path / "run"
    shutil.copytree(three_epoch_run, run)
    return run


# ------------------------------------------------------------------ the reliability tests' uninterrupted run


@pytest.fixture(scope="module")
def reference(digits_teacher, tmp_path_factory) -> Path:
    """An uninterrupted run of tiny_runs.TINY_PROBED: the same command as the interrupted ones, in this process (no
    interpreter to start) with their one intra-op thread. (tests/e2e/test_kill_recovery.py and test_output_kills.py
    have a `reference` of their own.)"""
    from forked_cli import main_in_process
    from tiny_runs import TINY_PROBED

    out = tmp_path_factory.mktemp("reliability") / "reference"
    r = main_in_process(["train", *TINY_PROBED, "--out", out])
    assert r.returncode == 0, r.stderr
    return out


@pytest.fixture
def reference_copy(reference, tmp_path) -> Path:
    """A private copy of the reference run that a test may damage."""
    dst = tmp_path / "copy"
    shutil.copytree(reference, dst)
    return dst


# ------------------------------------------------- a pytorchcv teacher, no network (teachers, cli, training tests)

R20_FILE = "resnet20_cifar10-0597-9b0024ac.pth"  # pytorchcv's name of its resnet20_cifar10 weight file


@pytest.fixture
def no_network(monkeypatch):
    """Fail the test if anything reaches pytorchcv's download machinery."""
    from pytorchcv.models.common import model_store

    from zsq_probe.teachers import loader

    def refuse(*args, **kwargs):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(model_store, "_download", refuse)
    monkeypatch.setattr(model_store, "get_model_file", refuse)
    monkeypatch.setattr(loader, "_fetch", refuse)  # our own downloader (release files pytorchcv no longer lists)


@pytest.fixture(scope="module")
def r20_root(tmp_path_factory):
    """pytorchcv's cache with a (random) resnet20_cifar10 file and a fabricated CIFAR-10 folder."""
    import torch
    from fabricated_data import make_cifar10

    from zsq_probe.teachers import loader

    root = tmp_path_factory.mktemp("r20")
    torch.manual_seed(0)
    torch.save(loader.build_architecture("resnet20_cifar10").state_dict(), root / R20_FILE)
    make_cifar10(root / "data", per_batch=4, n_test=6)
    return root
