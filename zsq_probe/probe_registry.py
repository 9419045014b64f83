"""The probe registry: which probes exist, by name, and the tables each writes.

One registry that the config (`probing.probes`), the command line (`--probes all`, the post-hoc commands) and
`zsq_probe.probes.build_probes` read:

* `BUILTIN_PROBES`: the probes this package ships, name -> `ProbeSpec` (its tables, those it writes post hoc,
  and the post-hoc command's help line).  `zsq_probe.probes` registers its classes against it (a class whose
  tables differ from its spec is refused).
* `REGISTERED`: name -> `ProbeSpec` of every registered probe (built in, then `register_probe` of your own);
  the classes themselves are `zsq_probe.probes.PROBES`.
* `probe_names()`: the names a config may switch on.

A leaf module: it imports nothing from zsq_probe, so the config and the command line read the names without
importing torch or the probes; the built-in probe classes take their tables from `BUILTIN_PROBES` (declared once).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class ProbeSpec:
    """What a built-in probe writes: its tables online, those `measure_checkpoint` writes post hoc (() = no
    post-hoc measurement), and the one-line help of its post-hoc command (`zsq-probe NAME --run RUN`)."""

    tables: tuple[str, ...]
    posthoc_tables: tuple[str, ...] = ()
    posthoc_help: str = ""
    quantized_only: bool = False  # measures integer codes: writes nothing for a full-precision student (KD)


_HESSIAN_TABLES = ("hessian_trace", "hessian_eigenvalues", "hessian_density")

BUILTIN_PROBES: dict[str, ProbeSpec] = {
    "cosine": ProbeSpec(
        ("cosine",), ("cosine",), "post hoc: cos(grad CE, grad KL) of each checkpoint on its probe batch"
    ),
    "inter_epoch": ProbeSpec(("inter_epoch",)),
    "crossings": ProbeSpec(
        ("crossings",),
        ("crossings",),
        "post hoc: integer codes changed per layer between consecutive checkpoints",
        quantized_only=True,
    ),
    "hessian": ProbeSpec(
        _HESSIAN_TABLES,
        _HESSIAN_TABLES,
        "post hoc: Hessian traces, top eigenvalues and SLQ density (CE and KL) per checkpoint",
    ),
    "slice": ProbeSpec(
        ("slice",), ("slice",), "post hoc: loss along the top Hessian eigenvector (CE and KL) per checkpoint"
    ),
}
BUILTIN_PROBE_NAMES: tuple[str, ...] = tuple(BUILTIN_PROBES)

# name -> what every registered probe writes; filled by zsq_probe.probes.register_probe (built-in ones first)
REGISTERED: dict[str, ProbeSpec] = {}


def probe_names() -> tuple[str, ...]:
    """The names a config may switch on: the built-in probes and every probe registered since."""
    return tuple(dict.fromkeys([*BUILTIN_PROBE_NAMES, *REGISTERED]))


def carried_probes(names: Iterable[str], full_precision_student: bool) -> tuple[str, ...]:
    """The probes of `names` that write tables for a run whose student is (not) full precision: a probe of integer
    codes (`ProbeSpec.quantized_only`) writes none for a full-precision student (the KD baseline)."""
    return tuple(
        n for n in names if not (full_precision_student and n in BUILTIN_PROBES and BUILTIN_PROBES[n].quantized_only)
    )


def posthoc_probe_names() -> tuple[str, ...]:
    """The built-in probes that measure saved checkpoints (the post-hoc commands)."""
    return tuple(name for name, spec in BUILTIN_PROBES.items() if spec.posthoc_tables)
