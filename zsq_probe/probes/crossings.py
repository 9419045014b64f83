"""Integer-code crossings (paper §4.1, Fig. 3b/c, 4): per quantised layer, how many integer weight codes
changed in each student step, epoch totals and the share of the layer; kappa when GI is on.

Counts stay on the device during the epoch and are read back once at its end.  Under GI the optimiser
already counted the changed codes for its search; the probe takes those instead of recounting."""

from __future__ import annotations

import torch

from zsq_probe.probes.base import Probe
from zsq_probe.quant import integer_codes


def changed_codes(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> torch.Tensor:
    """Number of differing codes per layer, as one device tensor (no host sync)."""
    return torch.stack([(after[k] != before[k]).sum() for k in before])


def compact_codes(model) -> dict[str, torch.Tensor]:
    # codes lie in [-2^(k-1), 2^(k-1)-1] with k <= 8 bits: int8 holds them at a quarter of the memory
    return {k: v.to(torch.int8) for k, v in integer_codes(model).items()}


class CrossingsProbe(Probe):
    name = "crossings"
    tables = ("crossings",)

    def on_train_start(self, trainer):
        super().on_train_start(trainer)
        self.layers = list(trainer.quant_layers)
        self.sizes = [trainer.quant_layers[k].weight.numel() for k in self.layers]
        self.codes = compact_codes(trainer.student) if self.layers else {}

    def on_epoch_start(self, trainer, epoch):
        self.steps, self.counts, self.kappas, self.flags = [], [], [], []

    def on_step(self, trainer, event):
        if not self.layers or not event.student_stepped:
            return
        if event.gi is not None:
            counts = torch.tensor([event.gi["changed"].get(k, 0) for k in self.layers])
            self.kappas.append([event.gi["kappa"].get(k, float("nan")) for k in self.layers])
            self.flags.append([event.gi["flags"].get(k, "") or "" for k in self.layers])
        else:
            now = compact_codes(trainer.student)
            counts = changed_codes(self.codes, now)
            self.codes = now
        self.steps.append((event.step, event.global_step))
        self.counts.append(counts)

    def on_epoch_end(self, trainer, epoch, metrics):
        if self.steps:
            counts = torch.stack([c.to("cpu") for c in self.counts]).tolist()  # one read-back per epoch
            p = metrics.get("gi_p", float("nan"))
            for i, (step, gstep) in enumerate(self.steps):
                for j, layer in enumerate(self.layers):
                    self.emit("crossings", epoch=epoch, step=step, global_step=gstep, statistic="step",
                              origin=self.origin, layer=layer, changed=int(counts[i][j]), layer_size=self.sizes[j],
                              share=counts[i][j] / self.sizes[j],
                              kappa=self.kappas[i][j] if self.kappas else float("nan"),
                              gi_flag=self.flags[i][j] if self.flags else "", gi_p=p, steps=1)
            n = len(self.steps)
            for j, layer in enumerate(self.layers):
                total = sum(c[j] for c in counts)
                kappa = (sum(k[j] for k in self.kappas) / n) if self.kappas else float("nan")
                flagged = sorted({f[j] for f in self.flags if f[j]}) if self.flags else []
                self.emit("crossings", epoch=epoch, step=-1, global_step=-1, statistic="epoch_total",
                          origin=self.origin, layer=layer, changed=int(total), layer_size=self.sizes[j],
                          share=total / (self.sizes[j] * n), kappa=kappa, gi_flag=",".join(flagged), gi_p=p, steps=n)
            if self.kappas:  # under GI the probe did not track codes itself: refresh for a later non-GI use
                self.codes = compact_codes(trainer.student)
        self.flush(trainer.run, epoch)


def checkpoint_diff_rows(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[dict]:
    """Net code changes per layer between two checkpoints (a code that flips and flips back counts 0)."""
    counts = changed_codes(before, after).tolist()
    return [{"layer": k, "changed": int(c), "layer_size": before[k].numel(), "share": c / before[k].numel()}
            for k, c in zip(before, counts)]

