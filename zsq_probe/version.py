"""The package's version, in a leaf module: every layer may record it (config.json, the command line's
`--version`) without importing the package's top, which imports them (pyproject.toml reads it from here)."""

__version__ = "0.1.0"
