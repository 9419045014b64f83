"""zsq-probe's cache folder (the embedded teacher, the digits split): one place for its location."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """zsq-probe's cache: ``$ZSQ_PROBE_CACHE``, else ``$XDG_CACHE_HOME/zsq-probe``, else ``~/.cache/zsq-probe``."""
    env = os.environ.get("ZSQ_PROBE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "zsq-probe"
    return Path("~").expanduser() / ".cache" / "zsq-probe"
