"""Shared test fixtures.

* Every test session runs with ``ZSQ_PROBE_CACHE`` pointing at a temporary folder, so no test
  reads or writes the user's cache (``~/.cache/zsq-probe``).
* ``digits_teacher``: the embedded digits teacher ``(model, TeacherInfo)``, trained once per
  session into that temporary cache. It is shared by every test: do not modify it in place
  (quantise / train a ``copy.deepcopy`` of it, or use ``digits_teacher_copy``).
* Tiers: ``-m "not slow"`` is the quick tier; ``slow`` marks the end-to-end tests (wheel build, torchrun,
  kill -9, Ray / submitit, coverage benchmarks).  The full suite runs both.
* Threads: torch runs on one intra-op thread in every test process (``pytest_configure``).
* In parallel (pytest-xdist, ``-n 2 --dist loadgroup``): each worker is a process of its own with its own
  session (its own cache and teacher) and one thread, so two workers use two cores without oversubscribing
  them.  The tests of a module that use a module-scoped fixture (a trained run, a built wheel) share one
  worker, so that fixture is built once.
"""

import copy
import os

import pytest


def pytest_configure(config):
    """One intra-op torch thread per test process (unless $OMP_NUM_THREADS says otherwise), inherited by the
    subprocesses the tests start and by pytest-xdist's workers.  The tests' nets are tiny: a second thread gains
    little on an idle machine, and on a busy one (or beside a second worker) multi-threaded kernels ran the
    curvature tests 10-20x slower."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return  # pytest-xdist's controller runs no test: its workers set their own threads
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items):
    """Under ``--dist loadgroup``, the tests of a module that use its module- or class-scoped fixtures run on one
    worker (one group per module), so each such fixture is built once; every other test is scheduled alone."""
    for item in items:
        info = getattr(item, "_fixtureinfo", None)
        if info is None or item.get_closest_marker("xdist_group"):
            continue
        scopes = {defs[-1].scope for defs in info.name2fixturedefs.values() if defs}
        if scopes & {"module", "class", "package"}:
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))


@pytest.fixture(scope="session", autouse=True)
def zsq_cache_dir(tmp_path_factory):
    """The session's private zsq-probe cache folder (``$ZSQ_PROBE_CACHE``)."""
    path = tmp_path_factory.mktemp("zsq-cache")
    old = os.environ.get("ZSQ_PROBE_CACHE")
    os.environ["ZSQ_PROBE_CACHE"] = str(path)
    yield path
    if old is None:
        os.environ.pop("ZSQ_PROBE_CACHE", None)
    else:
        os.environ["ZSQ_PROBE_CACHE"] = old


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
