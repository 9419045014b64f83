"""Module paths from before the package was grouped into subpackages keep importing.

`import zsq_probe.quant` (or `from zsq_probe.store import RunDir`) resolves to the module at its new path:
the same module object, so monkeypatching through either name patches the one module.  The table is the
only record of the move; docs/architecture.md lists the new layout.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

MOVED_MODULES = {
    "zsq_probe.quant": "zsq_probe.quantization.quantizer",
    "zsq_probe.gi": "zsq_probe.quantization.gi",
    "zsq_probe.lars": "zsq_probe.quantization.lars",
    "zsq_probe.losses": "zsq_probe.quantization.losses",
    "zsq_probe.store": "zsq_probe.rundir.store",
    "zsq_probe.run_lock": "zsq_probe.rundir.lock",
    "zsq_probe.safe_pickle": "zsq_probe.rundir.safe_pickle",
    "zsq_probe.schema": "zsq_probe.rundir.schema",
    "zsq_probe.models": "zsq_probe.teachers.loader",
    "zsq_probe.digits_teacher": "zsq_probe.teachers.digits",
    "zsq_probe.evaluate": "zsq_probe.teachers.accuracy",
    "zsq_probe.compare": "zsq_probe.analysis.probe_tables",
    "zsq_probe.selection": "zsq_probe.analysis.epochs",
    "zsq_probe.posthoc": "zsq_probe.probes.posthoc",
    "zsq_probe.tensorboard": "zsq_probe.training.tensorboard",
    "zsq_probe.plots.comparison": "zsq_probe.plots.overlay",
    "zsq_probe.recipes.models": "zsq_probe.recipes.setting_names",
}


class _MovedModuleLoader(importlib.abc.Loader):
    def __init__(self, target: str) -> None:
        self.target = target

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return None  # a placeholder; exec_module swaps in the real module

    def exec_module(self, module: ModuleType) -> None:
        # The import system returns whatever sys.modules holds under the old name after this call, so the
        # old name becomes an alias of the real module (whose own __spec__ stays untouched).
        sys.modules[module.__name__] = importlib.import_module(self.target)


class MovedModuleFinder(importlib.abc.MetaPathFinder):
    """Finds the old dotted names of moved modules and loads them as aliases of the new ones."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        new = MOVED_MODULES.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _MovedModuleLoader(new))


def install() -> None:
    """Put the finder on `sys.meta_path` once."""
    if not any(isinstance(f, MovedModuleFinder) for f in sys.meta_path):
        sys.meta_path.append(MovedModuleFinder())
