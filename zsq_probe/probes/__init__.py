"""Probes: one observer per paper measurement, each writing RUN/probes/<table>/part-*.parquet.

| probe        | tables                                                    | paper            | post hoc |
| ------------ | --------------------------------------------------------- | ---------------- | -------- |
| cosine       | cosine                                                    | Fig. 1, 5b, 7, 8 | yes      |
| inter_epoch  | inter_epoch                                               | Fig. 3a          | no       |
| crossings    | crossings                                                 | Fig. 3b/c, 4     | yes      |
| hessian      | hessian_trace, hessian_eigenvalues, hessian_density       | Fig. 2b, 2d, 9   | yes      |
| slice        | slice                                                     | Fig. 2c          | yes      |

A probe of your own: subclass `Probe`, give it a `name` and its `tables` (and `posthoc_tables` plus
`measure_checkpoint` to run it on saved checkpoints), and `register_probe(MyProbe)`; then `probes=[name]`
in a config switches it on like a built-in one.
"""

from zsq_probe.probes.base import Probe
from zsq_probe.probes.crossings import CrossingsProbe
from zsq_probe.probes.curvature import HessianProbe, SliceProbe
from zsq_probe.probes.gradients import CosineProbe, InterEpochProbe

PROBES: dict[str, type[Probe]] = {}


def register_probe(cls: type[Probe]) -> type[Probe]:
    """Make a Probe subclass available by its `name` (usable as a class decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Probe)):
        raise TypeError(f"register_probe expects a Probe subclass, got {cls!r}")
    if not cls.name or cls.name == Probe.name:
        raise ValueError(f"{cls.__name__} needs a `name` of its own")
    if cls.name in PROBES and PROBES[cls.name] is not cls:
        raise ValueError(f"a probe named {cls.name!r} is already registered ({PROBES[cls.name].__name__})")
    PROBES[cls.name] = cls
    return cls


for _cls in (CosineProbe, InterEpochProbe, CrossingsProbe, HessianProbe, SliceProbe):
    register_probe(_cls)


def probe_names() -> tuple[str, ...]:
    return tuple(PROBES)


def build_probes(cfg, origin: str = "online") -> list[Probe]:
    """The probes cfg.probing.probes names, in registration order (the slice probe reuses the Hessian probe's batch
    and eigenvectors of the same epoch, so it comes after it)."""
    out, hessian = [], None
    unknown = sorted(set(cfg.probing.probes) - set(PROBES))
    if unknown:
        from zsq_probe.errors import UserError

        raise UserError(f"unknown probe(s) {unknown} (registered: {', '.join(PROBES)})")
    for name, cls in PROBES.items():
        if name not in cfg.probing.probes:
            continue
        if cls is SliceProbe:
            out.append(SliceProbe(cfg, origin, hessian=hessian))
        else:
            probe = cls(cfg, origin)
            hessian = probe if cls is HessianProbe else hessian
            out.append(probe)
    return out


__all__ = ["PROBES", "Probe", "build_probes", "probe_names", "register_probe"]
