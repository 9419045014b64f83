"""Shared test fixtures.

* Every test session runs with ``ZSQ_PROBE_CACHE`` pointing at a temporary folder, so no test
  reads or writes the user's cache (``~/.cache/zsq-probe``).
* ``digits_teacher``: the embedded digits teacher ``(model, TeacherInfo)``, trained once per
  session into that temporary cache. It is shared by every test: do not modify it in place
  (quantise / train a ``copy.deepcopy`` of it, or use ``digits_teacher_copy``).
"""

import copy
import os

import pytest


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
