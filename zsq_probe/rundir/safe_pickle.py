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

import codecs
import importlib
import io
import os
import pickle
import pickletools
from typing import IO, Any, NoReturn

import numpy as np

__all__ = ["ALLOWED_GLOBALS", "RestrictedUnpickler", "UnsafePickleError", "safe_load", "safe_loads", "sniff_file"]


def _numpy_attr(*path: str) -> object:
    """The first of numpy's dotted attribute paths that exists (numpy 1 vs 2 module names)."""
    for dotted in path:
        module, _, name = dotted.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise ImportError(f"none of {path} in this numpy")


def _allowed() -> dict[tuple[str, str], object]:
    reconstruct = _numpy_attr("numpy._core.multiarray._reconstruct", "numpy.core.multiarray._reconstruct")
    scalar = _numpy_attr("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar")
    table: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        table[(mod, "_reconstruct")] = reconstruct
        table[(mod, "scalar")] = scalar
    return table


ALLOWED_GLOBALS = _allowed()


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle referenced a global outside :data:`ALLOWED_GLOBALS`."""


class RestrictedUnpickler(pickle.Unpickler):
    """``pickle.Unpickler`` resolving only :data:`ALLOWED_GLOBALS` (no other class or function)."""

    def find_class(self, module: str, name: str) -> object:
        """Resolve only the allowed numpy reconstruction globals; refuse everything else.

        Args:
            module: The global's module, as the pickle names it.
            name: The global's name in that module.

        Returns:
            The allowed object.

        Raises:
            UnsafePickleError: The global is not in `ALLOWED_GLOBALS`.
        """
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refused to unpickle global {module}.{name}: a CIFAR batch holds only dicts, lists, "
                f"str/bytes and numpy arrays"
            ) from None

    def persistent_load(self, pid: object) -> NoReturn:
        """Refuse: a CIFAR batch has no persistent ids.

        Args:
            pid: The persistent id the pickle holds.

        Raises:
            UnsafePickleError: Always.
        """
        raise UnsafePickleError("refused to unpickle a persistent id: not a CIFAR batch")


def safe_load(file: IO[bytes], *, encoding: str = "latin1") -> Any:
    """Unpickle an open binary file with :class:`RestrictedUnpickler`.

    Args:
        file: The file, opened for reading bytes.
        encoding: How to decode 8-bit strings written by Python 2 (as in pickle.load).

    Returns:
        The unpickled object (dicts, lists, str/bytes and numpy arrays only).

    Raises:
        UnsafePickleError: The pickle names a global outside `ALLOWED_GLOBALS` or holds a persistent id.
    """
    return RestrictedUnpickler(file, encoding=encoding).load()


def safe_loads(data: bytes, *, encoding: str = "latin1") -> Any:
    """`safe_load` over bytes.

    Args:
        data: The pickled bytes.
        encoding: How to decode 8-bit strings written by Python 2 (as in pickle.loads).

    Returns:
        The unpickled object.

    Raises:
        UnsafePickleError: As in `safe_load`.
    """
    return safe_load(io.BytesIO(data), encoding=encoding)


# the pickled magic number a non-zip (legacy, before PyTorch 1.6) torch.save file starts with
_TORCH_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."
_SNIFF_LIMIT = 1 << 20


def sniff_file(path: str | os.PathLike[str]) -> str:
    """What a file that torch.load(weights_only=True) refused most likely is, for the error message.

    Nothing is unpickled: the first MiB is only parsed opcode by opcode (pickletools.genops), and counts as
    a pickle when it parses cleanly to a STOP at the end of the file (or, for a larger file starting with a
    protocol-2+ header, up to where the MiB read ends).

    Args:
        path: The file.

    Returns:
        'zip' (torch.save's format), 'torch-legacy' (the pre-1.6 torch.save format), 'pickle' (a plain pickle
        stream: pickle.dump of a model or dict), 'empty', or 'unknown' (random bytes, text, an unreadable
        file, ...).
    """
    try:
        with open(path, "rb") as f:
            data = f.read(_SNIFF_LIMIT + 1)
    except OSError:
        return "unknown"
    if not data:
        return "empty"
    if data.startswith(b"PK\x03\x04"):
        return "zip"
    if data.startswith(_TORCH_LEGACY_MAGIC):
        return "torch-legacy"
    cut = len(data) > _SNIFF_LIMIT
    data = data[:_SNIFF_LIMIT]
    stream = io.BytesIO(data)
    ops = 0
    try:
        while stream.tell() < len(data):  # pickle.dump may have written several pickles one after another
            for op, _, _ in pickletools.genops(stream):
                ops += 1
                if op.name == "STOP":
                    break
            else:
                return "unknown"
    except Exception:  # noqa: BLE001 - not a well-formed opcode stream (or cut by the MiB read)
        return (
            "pickle"
            if cut and data[:1] == b"\x80" and data[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") and ops >= 8
            else "unknown"
        )
    return "pickle"
