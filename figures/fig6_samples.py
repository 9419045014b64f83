"""Fig. 6: real vs synthetic samples, one per class — the one figure that reads a checkpoint.

For each run trained with a generator: the generator is rebuilt from the run's config
(`zsq_probe.generators.build_generator`, no teacher needed), loaded from the checkpoint's
`generator` state (default: the last checkpoint; `--epoch E`) and asked for one sample per class;
the real row holds the first test image of each class (`zsq_probe.data.load_dataset(..., split="test")`).
Both are de-normalised with the data set's mean/std.  At most 10 classes are shown (10 spread-out
classes of a larger label set, fixed seed, as the paper does for ImageNet).  One file per run:
fig6_samples_<run>.<fmt>.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

from figures import _common as C  # noqa: E402
from zsq_probe.errors import UserError  # noqa: E402

FIGURE = "fig6"
TABLES_NEEDED: list[str] = []  # reads config.json and a checkpoint's generator state instead
DESCRIPTION = "real vs synthetic samples, one per class, from the run's generator checkpoint (paper Fig. 6)"
MAX_CLASSES = 10
SEED = 0


class _Skip(Exception):
    pass


def show_classes(num_classes: int) -> list[int]:
    if num_classes <= MAX_CLASSES:
        return list(range(num_classes))
    return sorted(np.random.RandomState(SEED).choice(num_classes, MAX_CLASSES, replace=False).tolist())


def build(kind: str, num_classes: int, image_shape, cfg: dict, state: dict):
    """The run's generator with the checkpoint's weights; _Skip(reason) when it cannot be rebuilt."""
    options = {}
    if kind == "qimera":
        emb = state.get("label_emb.weight")
        if emb is None:
            raise _Skip("Qimera generator state has no label_emb.weight; rebuilding it needs the teacher")
        # the embedding's values come from the checkpoint, so no teacher is needed for its shape
        options = {"embedding_init": "random", "embedding_dim": int(emb.shape[1]),
                   "mix_prob": cfg.get("qimera_mix_prob"), "mix_k": cfg.get("qimera_mix_k")}
    elif kind == "arc":
        options = {"model_name": cfg.get("teacher")}
    from zsq_probe.generators import build_generator

    try:
        gen = build_generator(kind, num_classes, tuple(image_shape), teacher=None, **options)
    except (UserError, TypeError, ValueError) as e:
        raise _Skip(f"cannot rebuild the {kind!r} generator without the teacher ({str(e).splitlines()[0]})") from None
    try:
        gen.load_state_dict(state)
    except RuntimeError as e:
        raise _Skip(f"the checkpoint's generator weights do not fit a {kind!r} generator "
                    f"({str(e).strip().splitlines()[0][:120]})") from None
    return gen.eval()


def synthetic(gen, classes) -> np.ndarray:
    import torch

    rng = torch.Generator().manual_seed(SEED)
    dim = int(getattr(gen, "latent_dim", 100))
    z = torch.randn((len(classes), dim), generator=rng)
    with torch.no_grad():
        x = gen(z, torch.tensor(classes, dtype=torch.long))
    return x.float().cpu().numpy()


def real(data: str, root, classes) -> np.ndarray:
    from zsq_probe.data import load_dataset

    ds = load_dataset(data, root, split="test")
    targets = getattr(ds, "targets", None)
    if targets is None:
        targets = [int(ds[i][1]) for i in range(len(ds))]
    first = {}
    for i, t in enumerate(targets):
        t = int(t)
        if t in classes and t not in first:
            first[t] = i
            if len(first) == len(classes):
                break
    return np.stack([ds[first[c]][0].numpy() if c in first else np.full_like(ds[0][0].numpy(), np.nan)
                     for c in classes])


def to_rgb(batch: np.ndarray, spec) -> np.ndarray:
    """(B, C, H, W) normalised -> (B, H, W[, 3]) in [0, 1]."""
    mean = np.asarray(spec.mean, dtype=float)[None, :, None, None]
    std = np.asarray(spec.std, dtype=float)[None, :, None, None]
    x = np.clip(batch * std + mean, 0.0, 1.0).transpose(0, 2, 3, 1)
    return x[..., 0] if x.shape[-1] == 1 else x


def class_names(data: str, root, num_classes: int, classes) -> list[str]:
    names = {"cifar10": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"],
             "digits": [str(i) for i in range(10)]}.get(data)
    return [names[c] if names and c < len(names) else str(c) for c in classes]


def plot_run(run, out_dir, fmt, epoch):
    import matplotlib.pyplot as plt

    from zsq_probe.data import dataset_for_teacher, get_spec
    from zsq_probe.store import load_checkpoint_file

    cfg = C.config(run)
    if C.is_kd(run) or cfg.get("source", "generator") != "generator":
        raise _Skip(f"no generator (method {C.method(run)}, source {cfg.get('source')})")
    kind = cfg.get("generator") or "gdfq"
    if kind == "none":
        raise _Skip("no generator (generator = none)")
    cps = run.checkpoints()
    if not cps:
        raise _Skip("no checkpoints")
    e = max(cps) if epoch is None else epoch
    if e not in cps:
        raise UserError(f"{FIGURE} {run.name}: no checkpoint for epoch {e} (has {C._elist(sorted(cps))})")
    state = load_checkpoint_file(cps[e])
    if "generator" not in state:
        raise _Skip(f"checkpoint {cps[e].name} has no generator state")
    data = cfg.get("data") or dataset_for_teacher(cfg.get("teacher", "digits"))
    spec = get_spec(data)
    classes = show_classes(spec.num_classes)
    gen = build(kind, spec.num_classes, spec.image_shape, cfg, state["generator"])
    fake = to_rgb(synthetic(gen, classes), spec)
    real_note = None
    try:
        true = to_rgb(real(data, cfg.get("data_root"), classes), spec)
    except UserError as err:
        true, real_note = None, f"real {data} test split not available:\n{str(err)[:90]}"
    n = len(classes)
    fig, axes = plt.subplots(2, n, figsize=(1.25 * n + 0.6, 3.1), squeeze=False)
    names = class_names(data, cfg.get("data_root"), spec.num_classes, classes)
    cmap = "gray" if spec.image_shape[0] == 1 else None
    for j in range(n):
        for i, imgs in enumerate((true, fake)):
            ax = axes[i][j]
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
            if imgs is not None:
                ax.imshow(imgs[j], cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.axis("off")
        axes[0][j].set_title(names[j], fontsize=8)
    axes[0][0].set_ylabel("real", fontsize=10)
    axes[1][0].set_ylabel("synthetic", fontsize=10)
    if real_note:
        axes[0][n // 2].text(0.5, 0.5, real_note, transform=axes[0][n // 2].transAxes, ha="center", va="center",
                             fontsize=8, color="0.35")
    fig.suptitle(f"{data}: real test samples vs {kind} generator of {C.method(run)} ({run.name}), epoch {e}",
                 fontsize=10)
    fig.tight_layout()
    return C.save(fig, out_dir, f"fig6_samples_{C.safe_name(run.name)}", fmt)


def plot(runs, out_dir, fmt="png", epoch=None):
    paths, reasons = [], []
    for r in runs:
        try:
            paths.append(plot_run(r, out_dir, fmt, epoch))
        except _Skip as e:
            reasons.append(f"{r.name}: {e}")
    if not paths:
        raise C.SkipFigure("no run has a generator checkpoint to sample from (" + "; ".join(reasons) + ")")
    for reason in reasons:
        print(f"note: {FIGURE} left out {reason}", file=sys.stderr)
    return paths


if __name__ == "__main__":
    sys.exit(C.script_main(sys.modules[__name__]))
