"""The training loop: zero-shot quantisation (GDFQ / KL-only / AIT and other backbones) and the real-data
KD baseline, with hook points for observers (probes) and checkpoints that resume bit-exactly on CPU.

One epoch = `iters_per_epoch` iterations.  In a ZQ iteration the generator takes a step on
CE(teacher(G(z,y)), y) + bns_weight * BNS (DESIGN.md), then - after the warm-up epochs - the student
takes a step on kd*KL*T^2 + ce*CE on the detached samples.  Epochs are numbered from 1; checkpoint
epoch-0000 is the state before training.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from zsq_probe.config import RunConfig, config_diff, config_from_dict, validate
from zsq_probe.errors import UserError
from zsq_probe.losses import ce_to_labels, hard_labels, kl_to_teacher
from zsq_probe.store import RunDir, epoch_key, fault_point, key_epoch


class NonFiniteError(UserError):
    """A loss or gradient became NaN/inf; the message names the epoch, step and term, and the last good
    checkpoint (nothing of the failed epoch is written).  `on_nonfinite=skip` skips such updates instead."""


@dataclass
class StepEvent:
    """What observers see after every iteration (tensors are detached)."""

    epoch: int
    step: int  # iteration within the epoch, from 0
    global_step: int
    inputs: torch.Tensor  # the student's batch
    labels: torch.Tensor  # hard labels (class indices) or soft labels (B, C)
    teacher_logits: torch.Tensor
    student_logits: torch.Tensor | None
    losses: dict[str, float]  # the loss terms of this iteration (see Trainer.METRIC_TERMS)
    student_stepped: bool
    term_grads: dict[str, list[torch.Tensor]] | None = None  # {"kl": [...], "ce": [...]} per student param
    gi: dict | None = None  # {"kappa": {layer: k}, "changed": {layer: n}, "flags": {...}} when GI is on


class Observer:
    """A plug-in that watches training.  Probes subclass this; the trainer never knows which exist."""

    name = "observer"

    def wants_term_gradients(self, epoch: int, step: int) -> bool:
        return False

    def on_train_start(self, trainer: "Trainer") -> None: ...

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None: ...

    def on_step(self, trainer: "Trainer", event: StepEvent) -> None: ...

    def on_epoch_end(self, trainer: "Trainer", epoch: int, metrics: dict) -> None: ...

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None: ...


def scheduled(value: float, milestones, gamma: float, epoch: int) -> float:
    """Multi-step decay: value * gamma^(number of milestones already reached).  `epoch` counts from 1, and
    a milestone m applies from epoch m+1 on (PyTorch's MultiStepLR after m scheduler steps)."""
    return value * gamma ** sum(1 for m in milestones if epoch > m)


def epoch_seed(seed: int, epoch: int, stream: int) -> int:
    """Independent, resume-proof seeds: each (epoch, stream) gets its own generator."""
    return (seed * 1_000_003 + epoch * 7919 + stream * 104_729) % (2**63 - 1)


def _rng(seed: int) -> torch.Generator:
    g = torch.Generator()
    g.manual_seed(seed)
    return g


class Trainer:
    METRIC_TERMS = ("kl", "kl_scaled", "ce", "student", "generator_ce", "bns", "generator")

    def __init__(self, cfg: RunConfig, run: RunDir, observers=(), progress: bool = True, log=print):
        validate(cfg)
        self.cfg, self.run, self.observers, self.progress, self.log = cfg, run, list(observers), progress, log
        self.device = torch.device(cfg.device)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise UserError(f"--device {cfg.device}: CUDA is not available on this machine")
        self.epoch = 0  # epochs completed
        self.global_step = 0
        self._at, self._skipped_now = (0, 0), False  # (epoch, step) now; whether this step skipped an update
        self._build()

    # ------------------------------------------------------------------ set-up
    def _build(self) -> None:
        from zsq_probe.data import get_spec, load_dataset, make_loader
        from zsq_probe.models import build_architecture, load_teacher
        from zsq_probe.quant import quantize_model, quantized_layers

        from zsq_probe.data import dataset_for_teacher

        cfg = self.cfg
        expected = dataset_for_teacher(cfg.teacher)
        if cfg.data and get_spec(cfg.data).name != expected:
            raise UserError(f"teacher {cfg.teacher} was trained on {expected}, not on --data {cfg.data}: drop --data "
                            f"or pick a teacher for {cfg.data}")
        torch.manual_seed(cfg.seed)
        teacher, self.teacher_info = load_teacher(cfg.teacher, weights=cfg.weights, root=cfg.weights_root,
                                                  download=cfg.download)
        self.teacher = teacher.to(self.device).eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.spec = get_spec(cfg.data)
        self.num_classes = self.spec.num_classes

        if cfg.student_init == "random":
            torch.manual_seed(cfg.seed)
            base = build_architecture(cfg.teacher)
        else:
            base = teacher
        self.student = (base if cfg.full_precision_student else quantize_model(base, cfg.w_bits, cfg.a_bits))
        if self.student is teacher:
            import copy

            self.student = copy.deepcopy(teacher)
        self.student = self.student.to(self.device)
        for p in self.student.parameters():
            p.requires_grad_(True)
        # ZQ students keep BN statistics frozen (eval mode, GDFQ); a random KD student must learn them
        self.student_train_mode = cfg.student_init == "random"
        self.student.train(self.student_train_mode)
        self.param_names = [n for n, p in self.student.named_parameters() if p.requires_grad]
        self.params = [p for p in self.student.parameters() if p.requires_grad]
        self.quant_layers = {} if cfg.full_precision_student else quantized_layers(self.student)

        # real data: validation whenever the test split is there, training data for the KD baseline
        self.val_loader = None
        try:
            val = load_dataset(cfg.data, cfg.data_root, split="test", download=cfg.download)
            self.val_loader = make_loader(val, cfg.val_batch_size, shuffle=False, seed=cfg.seed)
        except UserError as e:
            if cfg.source == "real" or cfg.data_root is not None:  # a --data-root given is meant to be used
                raise
            self.log(f"note: no validation ({e})")
        self.train_set = None
        if cfg.source == "real":
            self.train_set = load_dataset(cfg.data, cfg.data_root, split="train", download=cfg.download)
            self.make_loader = make_loader

        self.generator = None
        self.gen_opt = None
        if cfg.source == "generator":
            from zsq_probe.generators import build_generator

            torch.manual_seed(cfg.seed)
            self.generator = build_generator(cfg.generator, self.num_classes, tuple(self.spec.image_shape),
                                             teacher=self.teacher, **self._generator_options()).to(self.device)
            self.gen_opt = torch.optim.Adam(self.generator.parameters(), lr=cfg.gen_lr,
                                            betas=(cfg.gen_beta1, cfg.gen_beta2))
        self.distilled = None
        if cfg.source == "zeroq":
            self.distilled = self._distill_zeroq()

        self.opt = self._build_optimizer()

    def _generator_options(self) -> dict:
        if self.cfg.generator == "qimera":
            from zsq_probe.generators import QIMERA_DEFAULTS

            cfg = self.cfg
            options = {}
            if cfg.w_bits in QIMERA_DEFAULTS.get(cfg.teacher, {}):
                options.update(preset=cfg.teacher, preset_bits=cfg.w_bits)  # the official per-model settings
            for key, value in (("mix_prob", cfg.qimera_mix_prob), ("mix_k", cfg.qimera_mix_k),
                               ("embedding_init", cfg.qimera_embedding_init)):
                if value is not None:
                    options[key] = value
            return options
        if self.cfg.generator == "arc":
            return {"model_name": self.cfg.teacher}
        return {}

    def _build_optimizer(self):
        cfg = self.cfg
        if cfg.optimizer == "sgd":
            base = torch.optim.SGD(self.params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                                   weight_decay=cfg.weight_decay)
        elif cfg.optimizer == "adam":
            base = torch.optim.Adam(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        else:
            base = torch.optim.RMSprop(self.params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        if not cfg.gi:
            return base
        from zsq_probe.gi import GradientInundation

        return GradientInundation(base, self.quant_layers, p=cfg.gi_p, kappa_cap_warmup=cfg.gi_warmup_cap)

    def _distill_zeroq(self) -> torch.Tensor:
        from zsq_probe.generators import distill_zeroq

        n = self.cfg.zeroq_images or self.cfg.batch_size * 10
        images, history = distill_zeroq(self.teacher, n, tuple(self.spec.image_shape),
                                        batch_size=min(n, self.cfg.batch_size),
                                        iterations=self.cfg.zeroq_iterations,
                                        generator=_rng(epoch_seed(self.cfg.seed, 0, 9)), device=self.device)
        self.zeroq_history = history
        with torch.no_grad():
            logits = torch.cat([self.teacher(images[i:i + 256]) for i in range(0, len(images), 256)])
        self.distilled_labels = logits.argmax(1)
        return images

    # ------------------------------------------------------------------ schedule
    def lr_at(self, epoch: int) -> float:
        return scheduled(self.cfg.lr, self.cfg.lr_milestones, self.cfg.lr_gamma, epoch)

    def gen_lr_at(self, epoch: int) -> float:
        return scheduled(self.cfg.gen_lr, self.cfg.lr_milestones, self.cfg.lr_gamma, epoch)

    def p_at(self, epoch: int) -> float:
        return scheduled(self.cfg.gi_p, self.cfg.gi_p_milestones, self.cfg.gi_p_gamma, epoch)

    def student_steps_in(self, epoch: int) -> bool:
        return epoch > self.cfg.warmup_epochs

    def iterations(self) -> int:
        if self.cfg.iters_per_epoch:
            return self.cfg.iters_per_epoch
        if self.cfg.source == "real":
            return math.ceil(len(self.train_set) / self.cfg.batch_size)
        raise UserError("iters_per_epoch=0 is only meaningful with real data (source=real)")

    # ------------------------------------------------------------------ one iteration
    def generator_step(self, rng: torch.Generator, train_generator: bool):
        """Sample a batch from the generator, step it on CE + BNS; return detached (x, labels, teacher logits)."""
        from zsq_probe.generators import BNStatisticsLoss

        cfg = self.cfg
        z, labels = self.generator.sample(cfg.batch_size, generator=rng, device=self.device)
        self.generator.train()
        x = self.generator(z, labels)
        with BNStatisticsLoss(self.teacher) as bns:
            t_logits = self.teacher(x)
        gen_ce = ce_to_labels(t_logits, labels)
        bns_loss = bns.loss()
        gen_loss = gen_ce + cfg.bns_weight * bns_loss
        if train_generator:
            self.gen_opt.zero_grad(set_to_none=True)
            gen_loss.backward()
            if self._all_finite(gen_loss, self.generator.parameters()):
                self.gen_opt.step()
            else:
                self.gen_opt.zero_grad(set_to_none=True)
                bad = self._nonfinite_term(gen_loss, {"generator CE term": gen_ce, "generator BNS term": bns_loss},
                                           "generator loss")
                self._on_nonfinite(bad or "gradient of the generator loss", gen_loss,
                                   {"generator_ce": gen_ce, "bns": bns_loss})
        terms = {"generator_ce": gen_ce.detach(), "bns": bns_loss.detach(), "generator": gen_loss.detach()}
        return x.detach(), labels.detach(), t_logits.detach(), terms

    def real_batch(self, batch):
        x, y = batch
        x, y = x.to(self.device), y.to(self.device)
        with torch.no_grad():
            t_logits = self.teacher(x)
        return x, y, t_logits, {}

    def distilled_batch(self, rng: torch.Generator):
        idx = torch.randint(len(self.distilled), (self.cfg.batch_size,), generator=rng)
        x = self.distilled[idx.to(self.distilled.device)]
        y = self.distilled_labels[idx.to(self.distilled.device)]
        with torch.no_grad():
            t_logits = self.teacher(x)
        return x, y, t_logits, {}

    def student_losses(self, x, labels, t_logits):
        cfg = self.cfg
        s_logits = self.student(x)
        kl = kl_to_teacher(s_logits, t_logits, cfg.temperature)
        ce = ce_to_labels(s_logits, labels, cfg.label_smoothing)
        return s_logits, kl, ce

    def student_step(self, epoch: int, step: int, x, labels, t_logits, want_terms: bool):
        """One optimiser step of the student; returns (student logits, loss terms, per-term grads, gi info)."""
        cfg = self.cfg
        s_logits, kl, ce = self.student_losses(x, labels, t_logits)
        kl_scaled = kl * cfg.temperature ** 2
        loss = cfg.kd_weight * kl_scaled + cfg.ce_weight * ce
        terms = {"kl": kl.detach(), "kl_scaled": kl_scaled.detach(), "ce": ce.detach(), "student": loss.detach()}
        self.opt.zero_grad(set_to_none=True)
        term_grads = None
        if want_terms:
            # per-term gradients from one forward: the probes' cosine needs both, the step needs their sum
            term_grads = term_gradients(kl, ce, self.params)
            w_kl, w_ce = cfg.kd_weight * cfg.temperature ** 2, cfg.ce_weight
            for p, gk, gc in zip(self.params, term_grads["kl"], term_grads["ce"]):
                p.grad = w_kl * gk + w_ce * gc
        else:
            loss.backward()
        if not self._all_finite(loss, self.params):  # one host sync for the loss and every gradient
            self.opt.zero_grad(set_to_none=True)
            weighted = {n: t for n, t, w in (("KL term", kl, cfg.kd_weight), ("CE term", ce, cfg.ce_weight)) if w}
            bad = self._nonfinite_term(loss, weighted, "student loss")
            self._on_nonfinite(bad or "gradient of the student loss", loss, {"kl": kl, "ce": ce})
            return s_logits.detach(), terms, None, None
        self.opt.step()
        gi = None
        if cfg.gi:
            gi = {"kappa": dict(self.opt.last_kappa), "changed": dict(self.opt.last_changed_codes),
                  "flags": dict(getattr(self.opt, "last_flags", {}))}
        return s_logits.detach(), terms, term_grads, gi

    # ------------------------------------------------------------------ non-finite losses and gradients
    @staticmethod
    def _all_finite(loss: torch.Tensor, params) -> bool:
        """Whether the loss and every gradient are finite, with one host sync."""
        flags = [torch.isfinite(loss).all()] + [torch.isfinite(p.grad).all() for p in params if p.grad is not None]
        return bool(torch.stack(flags).all())

    @staticmethod
    def _nonfinite_term(total: torch.Tensor, terms: dict, total_name: str) -> str | None:
        """None when `total` is finite; else the name of the first non-finite term (or of the total)."""
        if bool(torch.isfinite(total).all()):
            return None
        for name, value in terms.items():
            if not bool(torch.isfinite(value).all()):
                return name
        return total_name

    def _on_nonfinite(self, what: str, loss: torch.Tensor, terms: dict) -> None:
        """Skip this update (on_nonfinite=skip: counted in the metrics' skipped_steps) or stop the run."""
        epoch, step = self._at
        if self.cfg.on_nonfinite == "skip":
            self._skipped_now = True
            return
        values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
        cps = self.run.checkpoints()
        kept = (f"the last good checkpoint {cps[max(cps)]} is kept" if cps else "no checkpoint was written")
        raise NonFiniteError(f"non-finite {what} at epoch {epoch}, step {step} (global step {self.global_step + 1};"
                             f" loss={float(loss.detach()):.4g}, {values}); stopped, {kept}; to skip such steps resume "
                             f"with --set on_nonfinite=skip --force")

    # ------------------------------------------------------------------ one epoch
    def run_epoch(self, epoch: int) -> dict:
        from zsq_probe.quant import set_activation_ranges_frozen

        cfg = self.cfg
        t0 = time.perf_counter()
        lr, gen_lr, p = self.lr_at(epoch), self.gen_lr_at(epoch), self.p_at(epoch)
        for g in self.opt.param_groups:
            g["lr"] = lr
        if self.gen_opt is not None:
            for g in self.gen_opt.param_groups:
                g["lr"] = gen_lr
        stepping = self.student_steps_in(epoch)
        if cfg.gi:
            self.opt.p = p
            self.opt.warmup = epoch == cfg.warmup_epochs + 1  # κ capped during the first student epoch
        ranges_frozen = epoch > cfg.act_range_epochs
        if self.quant_layers:
            set_activation_ranges_frozen(self.student, ranges_frozen)
        self.student.train(self.student_train_mode)
        self.skipped_steps = 0  # iterations with an update skipped for a NaN/inf loss or gradient
        self._at = (epoch, 0)
        for o in self.observers:
            o.on_epoch_start(self, epoch)

        rng = _rng(epoch_seed(cfg.seed, epoch, 1))
        batches = None
        if cfg.source == "real":
            loader = self.make_loader(self.train_set, cfg.batch_size, shuffle=True,
                                      seed=epoch_seed(cfg.seed, epoch, 2), drop_last=True)
            batches = _cycle(loader)
        sums = {k: 0.0 for k in self.METRIC_TERMS}
        counts = {k: 0 for k in self.METRIC_TERMS}
        iters = self.iterations()
        bar = _progress(iters, f"epoch {epoch}/{cfg.epochs} {cfg.method}", self.progress)
        for step in range(iters):
            self._at, self._skipped_now = (epoch, step), False
            if cfg.source == "generator":
                x, labels, t_logits, terms = self.generator_step(rng, train_generator=True)
            elif cfg.source == "real":
                x, labels, t_logits, terms = self.real_batch(next(batches))
            else:
                x, labels, t_logits, terms = self.distilled_batch(rng)
            want_terms = stepping and any(o.wants_term_gradients(epoch, step) for o in self.observers)
            gi = term_grads = None
            if stepping:
                s_logits, sterms, term_grads, gi = self.student_step(epoch, step, x, labels, t_logits, want_terms)
            else:
                # warm-up: the student only runs forward (its activation ranges follow the EMA)
                with torch.no_grad():
                    s_logits, kl, ce = self.student_losses(x, labels, t_logits)
                sterms = {"kl": kl, "kl_scaled": kl * cfg.temperature ** 2, "ce": ce}
            terms.update(sterms)
            # one host sync per iteration for all metric terms
            values = dict(zip(terms, torch.stack([v.detach().float().reshape(()) for v in terms.values()]).tolist()))
            skipped = self._skipped_now
            self.skipped_steps += skipped
            for k, v in values.items():
                if math.isfinite(v):  # a skipped step's NaN/inf does not enter the epoch means
                    sums[k] += v
                    counts[k] += 1
            self.global_step += 1
            if self.observers:
                event = StepEvent(epoch, step, self.global_step, x, labels, t_logits, s_logits, values,
                                  stepping and not skipped, None if skipped else term_grads, gi)
                for o in self.observers:
                    o.on_step(self, event)
            fault_point(f"step:{epoch}:{step}")  # test-only fault injection (zsq_probe.store)
            if bar is not None:
                bar.update(1)
                if step % 10 == 0 or step == iters - 1:
                    bar.set_postfix({k: f"{values[k]:.3g}" for k in ("kl_scaled", "ce") if k in values})
        if bar is not None:
            bar.close()

        row = {"run": self.run.name, "method": cfg.method, "preset": cfg.preset, "epoch": epoch,
               "iterations": iters, "student_stepped": stepping, "act_ranges_frozen": ranges_frozen}
        for k in self.METRIC_TERMS:
            row[f"loss_{k}"] = sums[k] / counts[k] if counts[k] else float("nan")
        row.update(lr=lr, gen_lr=gen_lr if self.gen_opt is not None else float("nan"),
                   gi_p=p if cfg.gi else float("nan"), skipped_steps=self.skipped_steps)
        if self.val_loader is not None and (epoch % cfg.val_every == 0 or epoch == cfg.epochs):
            row["val_top1"], row["val_ce"] = self.validate()
        else:
            row["val_top1"], row["val_ce"] = float("nan"), float("nan")
        row["wall_time_s"] = time.perf_counter() - t0
        return row

    def validate(self) -> tuple[float, float]:
        from zsq_probe.evaluate import top1_and_ce
        from zsq_probe.quant import activation_ranges_frozen

        if self.quant_layers:
            with activation_ranges_frozen(self.student):  # test data must not move the ranges
                return top1_and_ce(self.student, self.val_loader, self.device, self.cfg.val_max_batches)
        return top1_and_ce(self.student, self.val_loader, self.device, self.cfg.val_max_batches)

    # ------------------------------------------------------------------ the run
    def fit(self) -> dict:
        cfg = self.cfg
        for o in self.observers:
            o.on_train_start(self)
        if self.epoch == 0 and not self.run.checkpoints():
            self.save_checkpoint(0)
        if cfg.source == "zeroq" and cfg.epochs == 0:
            return self._zeroq_only()
        for epoch in range(self.epoch + 1, cfg.epochs + 1):
            row = self.run_epoch(epoch)
            for o in self.observers:
                o.on_epoch_end(self, epoch, row)
            self.run.write_part("metrics", [row], epoch_key(epoch))
            self.epoch = epoch
            self.log(_epoch_line(row))
            if epoch % cfg.checkpoint_every == 0 or epoch == cfg.epochs:
                self.save_checkpoint(epoch)
        return self.write_summary()

    def _zeroq_only(self) -> dict:
        """ZeroQ's own baseline: activation ranges calibrated on the distilled data, no fine-tuning."""
        from zsq_probe.quant import calibrate_activation_ranges

        if self.quant_layers:
            bs = self.cfg.batch_size
            calibrate_activation_ranges(self.student, [self.distilled[i:i + bs] for i in range(0, len(self.distilled), bs)])
        val_top1, val_ce = self.validate() if self.val_loader is not None else (float("nan"), float("nan"))
        row = {"run": self.run.name, "method": self.cfg.method, "preset": self.cfg.preset, "epoch": 0,
               "iterations": 0, "student_stepped": False, "act_ranges_frozen": True,
               **{f"loss_{k}": float("nan") for k in self.METRIC_TERMS},
               "lr": float("nan"), "gen_lr": float("nan"), "gi_p": float("nan"), "skipped_steps": 0,
               "val_top1": val_top1, "val_ce": val_ce, "wall_time_s": 0.0}
        self.run.write_part("zeroq_distillation", self.zeroq_history, epoch_key(0))
        self.run.write_part("metrics", [row], epoch_key(0))
        self.save_checkpoint(0)
        self.log(_epoch_line(row))
        return self.write_summary()

    def write_summary(self) -> dict:
        import json

        from zsq_probe.store import atomic_write_bytes

        m = self.run.read_table("metrics")
        val = m["val_top1"].dropna()
        summary = {"run": self.run.name, "method": self.cfg.method, "preset": self.cfg.preset,
                   "teacher": self.cfg.teacher, "data": self.cfg.data, "w_bits": self.cfg.w_bits,
                   "a_bits": self.cfg.a_bits, "full_precision_student": self.cfg.full_precision_student,
                   "epochs_completed": self.epoch, "seed": self.cfg.seed,
                   "final_val_top1": float(val.iloc[-1]) if len(val) else None,
                   "best_val_top1": float(val.max()) if len(val) else None,
                   "teacher_top1": self.teacher_top1()}
        atomic_write_bytes(self.run.path / "summary.json", (json.dumps(summary, indent=2) + "\n").encode())
        return summary

    def teacher_top1(self) -> float | None:
        if self.val_loader is None:
            return None
        if not hasattr(self, "_teacher_top1"):
            from zsq_probe.evaluate import top1_and_ce

            self._teacher_top1 = top1_and_ce(self.teacher, self.val_loader, self.device, self.cfg.val_max_batches)[0]
        return self._teacher_top1

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "global_step": self.global_step,
                 "student": self.student.state_dict(), "optimizer": self.opt.state_dict(),
                 "config": self.cfg.to_dict(),
                 "rng": {"torch": torch.get_rng_state()},
                 "observers": {o.name: o.state_dict() for o in self.observers}}
        if torch.cuda.is_available() and self.device.type == "cuda":
            state["rng"]["cuda"] = torch.cuda.get_rng_state(self.device)
        if self.generator is not None:
            state["generator"] = self.generator.state_dict()
            state["generator_optimizer"] = self.gen_opt.state_dict()
        return state

    def save_checkpoint(self, epoch: int) -> None:
        self.run.save_checkpoint(epoch, self.state_dict(), keep_all=self.cfg.keep_checkpoints)

    def load_state_dict(self, state: dict) -> None:
        try:
            self.epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
            self.student.load_state_dict(state["student"])
            self.opt.load_state_dict(state["optimizer"])
            if self.generator is not None:
                self.generator.load_state_dict(state["generator"])
                self.gen_opt.load_state_dict(state["generator_optimizer"])
            torch.set_rng_state(state["rng"]["torch"])
        except (KeyError, RuntimeError, TypeError, ValueError, AttributeError) as e:
            text = " ".join(str(e).split())
            text = text[:157] + "..." if len(text) > 160 else text
            raise UserError(f"the checkpoint does not fit this run's models ({e.__class__.__name__}: {text})") from None
        if "cuda" in state["rng"] and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"], self.device)
        saved = state.get("observers", {})
        for o in self.observers:
            if o.name in saved:
                o.load_state_dict(saved[o.name])


def term_gradients(kl, ce, params) -> dict[str, list[torch.Tensor]]:
    """Gradients of the unweighted KL and CE terms w.r.t. `params` from one forward graph."""
    g_kl = torch.autograd.grad(kl, params, retain_graph=True, allow_unused=True)
    g_ce = torch.autograd.grad(ce, params, allow_unused=True)
    return {"kl": [torch.zeros_like(p) if g is None else g for g, p in zip(g_kl, params)],
            "ce": [torch.zeros_like(p) if g is None else g for g, p in zip(g_ce, params)]}


def _cycle(loader):
    while True:
        yield from loader


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)


def _epoch_line(row: dict) -> str:
    val = row.get("val_top1")
    val_s = f"val top-1 {100 * val:6.2f}%  val CE {row['val_ce']:.4f}" if val == val else "no validation"
    return (f"[{row['method']}] epoch {row['epoch']:>4}  KL*T^2 {row['loss_kl_scaled']:.4g}  CE {row['loss_ce']:.4g}  "
            f"{val_s}  ({row['wall_time_s']:.1f}s)")


def train(cfg: RunConfig, out, resume: bool = False, force: bool = False, observers=(), progress=True,
          log=print) -> dict:
    """Run (or resume) a training job into the folder `out`; returns the run summary."""
    from zsq_probe.store import RunDir

    if resume:
        run = RunDir.open(out)
        doc = run.read_config_doc()
        old = config_from_dict(doc["config"])
        changed = config_diff(old, cfg)
        if changed and not force:
            first = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(changed.items())[:3])
            more = f" and {len(changed) - 3} more" if len(changed) > 3 else ""
            raise UserError(f"--resume with a changed config ({first}{more}); pass --force to resume anyway "
                            f"(the change is recorded in config.json)")
        trainer = Trainer(cfg, run, observers, progress, log)
        if run.checkpoints():
            epoch, state = run.load_checkpoint()
            trainer.load_state_dict(state)
            log(f"resuming {run.path} after epoch {epoch}")
        # only now that set-up and checkpoint succeeded is anything in the run changed
        if changed:
            history = doc.get("config_changes", []) + [{k: [a, b] for k, (a, b) in changed.items()}]
            extra = {k: v for k, v in doc.items() if k not in ("format", "run_schema_version", "config", "versions")}
            extra.update(seed=cfg.seed, config_changes=history)
            run.write_config(cfg.to_dict(), extra=extra)
        run.remove_temp_files()  # what writers killed mid-write left
        # what a crash left past the checkpoint is dropped: resumed epochs rewrite their parts
        for table in run.tables():
            run.remove_parts(table, lambda key: (key_epoch(key) or 0) <= trainer.epoch)
    else:
        RunDir.ensure_new(out)  # refuse before any work; nothing is written until the set-up succeeded
        run = RunDir(out)
        trainer = Trainer(cfg, run, observers, progress, log)
        from zsq_probe.quant import quantization_spec

        spec = None if cfg.full_precision_student else quantization_spec(trainer.student)
        run.write_config(cfg.to_dict(), extra={"seed": cfg.seed, "quantization": spec,
                                               "teacher": trainer.teacher_info.to_dict()})
        run.remove_temp_files()  # a first attempt killed while writing config.json left its temporary copy
    return trainer.fit()

