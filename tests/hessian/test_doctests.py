"""The runnable examples in the Hessian estimators' docstrings (trace, top eigenpairs, exact diagonal): each is
run as written and must print what it shows (docs/development.md, "Code blocks in the docs")."""

import doctest
import importlib

import pytest

MODULES = ("zsq_probe.hessian.trace", "zsq_probe.hessian.estimators", "zsq_probe.hessian.diagonal")


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in {name} failed (output above)"
