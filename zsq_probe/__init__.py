"""zsq-probe: loss-surface diagnostics for zero-shot quantization."""

__version__ = "0.1.0"
