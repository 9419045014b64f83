"""A restricted unpickler for the CIFAR-10/100 python batches (never runs code from a data folder).

A genuine ``cifar-10-batches-py/`` or ``cifar-100-python/`` file is a pickled dict of str/bytes keys
holding lists of ints and bytes and one uint8 numpy array.  Its pickle references only numpy's array
reconstruction globals (``numpy.core.multiarray._reconstruct`` written by numpy 1, ``numpy._core...``
by numpy 2, ``numpy.ndarray``, ``numpy.dtype``, ``numpy.core.multiarray.scalar``) and, when written by
Python 3 with protocol < 3, ``_codecs.encode`` for bytes.  :class:`RestrictedUnpickler` resolves
exactly these and refuses every other global, so a file whose ``__reduce__`` names ``os.system``,
``subprocess.Popen``, ``builtins.eval``... fails before anything is called.
"""

from __future__ import annotations

import io
import pickle

import numpy as np

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "UnsafePickleError", "safe_load", "safe_loads"]


def _numpy_attr(*path: str):
    """The first of numpy's dotted attribute paths that exists (numpy 1 vs 2 module names)."""
    import importlib

    for dotted in path:
        module, _, name = dotted.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {path} in this numpy")


def _allowed() -> dict[tuple[str, str], object]:
    import codecs

    reconstruct = _numpy_attr("numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct")
    scalar = _numpy_attr("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar")
    table = {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): codecs.encode}
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = reconstruct
        table[(mod, "scalar")] = scalar
    return table


ALLOWED_GLOBALS = _allowed()


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside :data:`ALLOWED_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` resolving only :data:`ALLOWED_GLOBALS` (no other class or function)."""

    def find_class(self, module: str, name: str):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to unpickle global {module}.{name}: a CIFAR batch holds only dicts, lists, "
                f"str/bytes and numpy arrays") from None

    def persistent_load(self, pid):  # no persistent ids in a CIFAR batch
        raise UnsafePickleError("refused to unpickle a persistent id: not a CIFAR batch")


def safe_load(file, *, encoding: str = "latin1"):
    """Unpickle an open binary file with :class:`RestrictedUnpickler` (``encoding`` as in pickle.load)."""
    return RestrictedUnpickler(file, encoding=encoding).load()


def safe_loads(data: bytes, *, encoding: str = "latin1"):
    return safe_load(io.BytesIO(data), encoding=encoding)
