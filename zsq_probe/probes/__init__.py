"""Probes: one observer per paper measurement, each writing RUN/probes/<table>/part-*.parquet.

| probe        | tables                                                    | paper            |
| ------------ | --------------------------------------------------------- | ---------------- |
| cosine       | cosine                                                    | Fig. 1, 5b, 7, 8 |
| inter_epoch  | inter_epoch                                               | Fig. 3a          |
| crossings    | crossings                                                 | Fig. 3b/c, 4     |
| hessian      | hessian_trace, hessian_eigenvalues, hessian_density       | Fig. 2b, 2d, 9   |
| slice        | slice                                                     | Fig. 2c          |
"""

from zsq_probe.config import PROBE_NAMES
from zsq_probe.probes.base import Probe, draw_probe_batch, observing
from zsq_probe.probes.crossings import CrossingsProbe
from zsq_probe.probes.curvature import HessianProbe, SliceProbe
from zsq_probe.probes.gradients import CosineProbe, InterEpochProbe

PROBES = {"cosine": CosineProbe, "inter_epoch": InterEpochProbe, "crossings": CrossingsProbe,
          "hessian": HessianProbe, "slice": SliceProbe}
assert tuple(PROBES) == PROBE_NAMES


def build_probes(cfg, origin: str = "online") -> list[Probe]:
    """The probes cfg.probes names, in a fixed order (the slice probe reuses the Hessian probe's batch and
    eigenvectors of the same epoch)."""
    out, hessian = [], None
    for name in PROBE_NAMES:
        if name not in cfg.probes:
            continue
        if name == "slice":
            out.append(SliceProbe(cfg, origin, hessian=hessian))
        else:
            probe = PROBES[name](cfg, origin)
            hessian = probe if name == "hessian" else hessian
            out.append(probe)
    return out


__all__ = ["PROBES", "Probe", "build_probes", "draw_probe_batch", "observing"]
