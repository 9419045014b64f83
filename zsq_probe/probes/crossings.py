"""Integer-code crossings (paper §4.1, Fig. 3b/c, 4): per quantised layer, how many integer weight codes
changed in each student step, epoch totals and the share of the layer; kappa when GI is on.

Two counts per layer: `changed` counts the codes q the reference implementations count (and GI targets);
`changed_level` counts changes of q + zero_point, the weight's position on the quantisation grid.  They
differ because a per-channel zero point round(scale*min) often sits on a rounding boundary: when it flips,
every q of the channel shifts by one while the dequantised weights barely move.

Epoch totals add two counts of grid levels (q + zero_point), so neither counts zero-point flips: `changed_net`,
the weights whose level at the epoch's end differs from the previous epoch end's (a flip and flip back counts 0),
and `changed_weights`, the distinct weights whose level changed at least once within the epoch.

Counts stay on the device during the epoch and are read back once at its end."""

from __future__ import annotations

import torch
import torch.nn as nn

from zsq_probe.errors import UserError
from zsq_probe.events import MetricsRow, ProbeContext, StepEvent
from zsq_probe.probe_registry import BUILTIN_PROBES
from zsq_probe.probes.base import Probe, Row
from zsq_probe.quantization.quantizer import quantized_layers, rounded_codes, weight_quant_params


def changed_codes(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> torch.Tensor:
    """Number of differing codes per layer, as one device tensor (no host sync)."""
    return torch.stack([(after[k] != before[k]).sum() for k in before])


def changed_marking(
    before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], ever: dict[str, torch.Tensor]
) -> torch.Tensor:
    """Number of differing codes per layer (one device tensor, no host sync); marks them in `ever` (bool masks,
    created on first use) so that `ever` holds the weights that changed at least once."""
    counts = []
    for k in before:
        diff = after[k] != before[k]
        ever[k] = ever[k] | diff if k in ever else diff
        counts.append(diff.sum())
    return torch.stack(counts)


CodesAndLevels = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]  # (codes, levels) per quantised layer


@torch.no_grad()
def codes_and_levels(model: nn.Module) -> CodesAndLevels:
    """Integer codes q (int8: k <= 8 bits) and grid levels q + zero_point (int16) of every quantised layer."""
    codes: dict[str, torch.Tensor] = {}
    levels: dict[str, torch.Tensor] = {}
    for name, m in quantized_layers(model).items():
        scale, zp = weight_quant_params(m.weight, m.w_bits)
        q = rounded_codes(m.weight.detach(), scale, zp, m.w_bits)
        codes[name], levels[name] = q.to(torch.int8), (q + zp).to(torch.int16)
    return codes, levels


class CrossingsProbe(Probe):
    """Online: integer codes that changed at every student step (and per epoch).  Post hoc: net changes
    between a checkpoint and the one before it."""

    name = "crossings"
    tables = BUILTIN_PROBES["crossings"].tables  # declared once, in the registry
    posthoc_tables = BUILTIN_PROBES["crossings"].posthoc_tables
    needs_activation_ranges = False  # weight codes do not depend on activation ranges

    def on_train_start(self, ctx: ProbeContext) -> None:
        """Record the quantised layers and their codes before the first step."""
        super().on_train_start(ctx)
        self.layers = list(ctx.quant_layers)
        self.sizes = [ctx.quant_layers[k].weight.numel() for k in self.layers]
        self.codes, self.levels = codes_and_levels(ctx.student) if self.layers else ({}, {})

    def on_epoch_start(self, ctx: ProbeContext, epoch: int) -> None:
        """Start the epoch's counts afresh; remember the levels the epoch starts from (its net change's base)."""
        self.epoch_start_levels = self.levels
        self.ever_changed: dict[str, torch.Tensor] = {}  # per layer: weights whose level changed in the epoch
        self.steps: list[tuple[int, int]] = []
        self.counts: list[torch.Tensor] = []
        self.level_counts: list[torch.Tensor] = []
        self.kappas: list[list[float]] = []
        self.flags: list[list[str]] = []

    def on_step(self, ctx: ProbeContext, event: StepEvent) -> None:
        """Count the codes this student step changed (kept on the device)."""
        if not self.layers or not event.student_stepped:
            return
        codes, levels = codes_and_levels(ctx.student)
        self.counts.append(changed_codes(self.codes, codes))
        self.level_counts.append(changed_marking(self.levels, levels, self.ever_changed))
        self.codes, self.levels = codes, levels
        if event.gi is not None:
            self.kappas.append([event.gi["kappa"].get(k, float("nan")) for k in self.layers])
            self.flags.append([event.gi["flags"].get(k, "") or "" for k in self.layers])
        self.steps.append((event.step, event.global_step))

    def on_epoch_end(self, ctx: ProbeContext, epoch: int, metrics: MetricsRow) -> None:
        """Per-step and epoch-total rows per layer (one read-back); write the epoch's part."""
        if self.steps:
            net = changed_codes(self.epoch_start_levels, self.levels)
            distinct = torch.stack([self.ever_changed[k].sum() for k in self.layers])
            counts, level_counts, totals = (  # one read-back per epoch
                t.cpu().tolist()
                for t in (torch.stack(self.counts), torch.stack(self.level_counts), torch.stack([net, distinct]))
            )
            p = metrics.get("gi_p", float("nan"))
            self._emit_steps(epoch, counts, level_counts, p)
            self._emit_totals(epoch, counts, level_counts, totals, p)
        self.flush(ctx.run, epoch)

    def _emit_steps(self, epoch: int, counts: list[list[int]], level_counts: list[list[int]], p: object) -> None:
        """One `step` row per student step and layer (net and distinct counts: -1, they are per epoch)."""
        for i, (step, gstep) in enumerate(self.steps):
            for j, layer in enumerate(self.layers):
                self.emit(
                    "crossings",
                    epoch=epoch,
                    step=step,
                    global_step=gstep,
                    statistic="step",
                    origin=self.origin,
                    layer=layer,
                    changed=int(counts[i][j]),
                    changed_level=int(level_counts[i][j]),
                    changed_net=-1,
                    changed_weights=-1,
                    layer_size=self.sizes[j],
                    share=counts[i][j] / self.sizes[j],
                    kappa=self.kappas[i][j] if self.kappas else float("nan"),
                    gi_flag=self.flags[i][j] if self.flags else "",
                    gi_p=p,
                    steps=1,
                )

    def _emit_totals(
        self, epoch: int, counts: list[list[int]], level_counts: list[list[int]], totals: list[list[int]], p: object
    ) -> None:
        """One `epoch_total` row per layer: step counts summed, net and distinct level changes, mean kappa."""
        n = len(self.steps)
        for j, layer in enumerate(self.layers):
            total = sum(c[j] for c in counts)
            kappa = (sum(k[j] for k in self.kappas) / n) if self.kappas else float("nan")
            flagged = sorted({f[j] for f in self.flags if f[j]}) if self.flags else []
            self.emit(
                "crossings",
                epoch=epoch,
                step=-1,
                global_step=-1,
                statistic="epoch_total",
                origin=self.origin,
                layer=layer,
                changed=int(total),
                changed_level=int(sum(c[j] for c in level_counts)),
                changed_net=int(totals[0][j]),
                changed_weights=int(totals[1][j]),
                layer_size=self.sizes[j],
                share=total / (self.sizes[j] * n),
                kappa=kappa,
                gi_flag=",".join(flagged),
                gi_p=p,
                steps=n,
            )

    def check_posthoc(self, ctx: ProbeContext) -> None:
        """A float student has no integer codes: UserError."""
        if not ctx.quant_layers:
            raise UserError(f"{ctx.run.path}: the student is not quantised, it has no integer codes")

    def posthoc_checkpoints(self, ctx: ProbeContext, epoch: int) -> list[int]:
        """The checkpoint and the one before it (the codes it is compared with)."""
        before = max((e for e in ctx.checkpoint_epochs if e < epoch), default=None)
        return [epoch] if before is None else [before, epoch]

    def measure_checkpoint(self, ctx: ProbeContext, epoch: int) -> None:
        """Net code changes since the previous checkpoint (a flip and flip back counts 0)."""
        before = max((e for e in ctx.checkpoint_epochs if e < epoch), default=None)
        if before is None:
            return  # nothing to compare the first checkpoint with
        cache: dict[int, CodesAndLevels] = getattr(self, "_checkpoint_codes", {})
        after = cache.get(epoch) or codes_and_levels(ctx.student)
        if before not in cache:
            if ctx.load_checkpoint is None:
                raise RuntimeError("crossings: measuring a checkpoint needs a post-hoc context (load_checkpoint)")
            ctx.load_checkpoint(before)
            cache[before] = codes_and_levels(ctx.student)
            ctx.load_checkpoint(epoch)
        self._checkpoint_codes = {epoch: after}  # consecutive checkpoints: the next call's "before"
        for r in checkpoint_diff_rows(cache[before], after):
            self.emit(
                "crossings",
                epoch=epoch,
                step=-1,
                global_step=-1,
                statistic="checkpoint_diff",
                origin=self.origin,
                kappa=float("nan"),
                gi_flag="",
                gi_p=float("nan"),
                steps=(epoch - before) * ctx.iterations_per_epoch,
                **r,
            )


def checkpoint_diff_rows(before: CodesAndLevels, after: CodesAndLevels) -> list[Row]:
    """Net changes per layer between two checkpoints' (codes, levels) (a flip and flip back counts 0)."""
    counts = changed_codes(before[0], after[0]).tolist()
    level_counts = changed_codes(before[1], after[1]).tolist()
    return [
        {
            "layer": k,
            "changed": int(c),
            "changed_level": int(lc),
            "changed_net": int(lc),  # the net change of grid levels between the two checkpoints
            "changed_weights": -1,  # not known between checkpoints
            "layer_size": before[0][k].numel(),
            "share": c / before[0][k].numel(),
        }
        for k, c, lc in zip(before[0], counts, level_counts)
    ]
