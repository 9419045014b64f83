"""Probes: one observer per paper measurement, each writing RUN/probes/<table>/part-*.parquet.

| probe        | tables                                                    | paper            | post hoc |
| ------------ | --------------------------------------------------------- | ---------------- | -------- |
| cosine       | cosine                                                    | Fig. 1, 5b, 7, 8 | yes      |
| inter_epoch  | inter_epoch                                               | Fig. 3a          | no       |
| crossings    | crossings                                                 | Fig. 3b/c, 4     | yes      |
| hessian      | hessian_trace, hessian_eigenvalues, hessian_density       | Fig. 2b, 2d, 9   | yes      |
| slice        | slice                                                     | Fig. 2c          | yes      |

The names and tables live in `zsq_probe.probe_registry` (which the config and the command line read); the
classes register against it here.  A probe of your own: subclass `Probe`, give it a `name` and its `tables`
(and `posthoc_tables` plus `measure_checkpoint` to run it on saved checkpoints), and `register_probe(MyProbe)`;
then `probes=[name]` in a config switches it on like a built-in one.  A probe that reuses another's results
names it in `needs` and takes it in `connect` (the slice probe reuses the Hessian probe's eigenvectors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

from zsq_probe.errors import UserError
from zsq_probe.probe_registry import BUILTIN_PROBES, REGISTERED, ProbeSpec, probe_names
from zsq_probe.probes.base import Probe
from zsq_probe.probes.cosine import CosineProbe
from zsq_probe.probes.crossings import CrossingsProbe
from zsq_probe.probes.hessian import HessianProbe
from zsq_probe.probes.inter_epoch import InterEpochProbe
from zsq_probe.probes.slice import SliceProbe

if TYPE_CHECKING:
    from zsq_probe.config import RunConfig

_ProbeClass = TypeVar("_ProbeClass", bound=type[Probe])

# name -> class of every registered probe (built-in ones first); the registry holds what each writes
PROBES: dict[str, type[Probe]] = {}


def register_probe(cls: _ProbeClass) -> _ProbeClass:
    """Make a Probe subclass available by its `name` (usable as a class decorator).

    Raises:
        TypeError: `cls` is not a Probe subclass.
        ValueError: it has no name of its own, its name is taken by another class, or it is a built-in name
            whose tables differ from the registry's (zsq_probe.probe_registry.BUILTIN_PROBES).
    """
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(f"register_probe expects a Probe subclass, got {cls!r}")
    if not cls.name or cls.name == Probe.name:
        raise ValueError(f"{cls.__name__} needs a `name` of its own")
    if cls.name in PROBES and PROBES[cls.name] is not cls:
        raise ValueError(f"a probe named {cls.name!r} is already registered ({PROBES[cls.name].__name__})")
    spec = BUILTIN_PROBES.get(cls.name)
    if spec is not None and (cls.tables, cls.posthoc_tables) != (spec.tables, spec.posthoc_tables):
        raise ValueError(
            f"{cls.__name__}: the built-in probe {cls.name!r} writes {spec.tables} (post hoc {spec.posthoc_tables}), "
            f"not {cls.tables} (post hoc {cls.posthoc_tables})"
        )
    PROBES[cls.name] = cls
    REGISTERED[cls.name] = spec or ProbeSpec(tuple(cls.tables), tuple(cls.posthoc_tables))
    return cls


def unregister_probe(name: str) -> None:
    """Forget a probe registered with `register_probe` (a no-op for a name not registered).

    Args:
        name: The probe's name.
    """
    PROBES.pop(name, None)
    REGISTERED.pop(name, None)


for _cls in (CosineProbe, InterEpochProbe, CrossingsProbe, HessianProbe, SliceProbe):
    register_probe(_cls)


def build_order(names: list[str]) -> list[str]:
    """`names` in registration order, except that a probe comes after every probe it `needs` among them.

    Raises:
        UserError: a name is not registered.
        ValueError: a probe needs an unregistered probe, or needs form a cycle.
    """
    unknown = sorted(set(names) - set(PROBES))
    if unknown:
        raise UserError(f"unknown probe(s) {unknown} (registered: {', '.join(PROBES)})")
    chosen = set(names)
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order:
            return
        if name in visiting:
            raise ValueError(f"probe needs form a cycle through {name!r}")
        visiting.add(name)
        for need in PROBES[name].needs:
            if need not in PROBES:
                raise ValueError(f"probe {name!r} needs {need!r}, which is not registered")
            if need in chosen:
                visit(need)
        visiting.discard(name)
        order.append(name)

    for name in PROBES:
        if name in chosen:
            visit(name)
    return order


def build_probes(cfg: RunConfig, origin: str = "online") -> list[Probe]:
    """The probes `cfg.probing.probes` names, built in `build_order`; each probe's `needs` that are switched
    on too are handed to it (`Probe.connect`), so it reuses their results (the slice probe the Hessian probe's
    batch and eigenvectors of the same epoch).  A need that is not switched on is left out: the probe measures
    without it."""
    built: dict[str, Probe] = {}
    for name in build_order(list(cfg.probing.probes)):
        probe = PROBES[name](cfg, origin)
        for need in probe.needs:
            if need in built:
                probe.connect(built[need])
        built[name] = probe
    return list(built.values())


__all__ = ["PROBES", "Probe", "build_order", "build_probes", "probe_names", "register_probe", "unregister_probe"]
