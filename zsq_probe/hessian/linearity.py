"""Is a network piecewise linear in each single parameter?  The check behind the exact GGN diagonal
(`zsq_probe.hessian.diagonal.ggn_diagonal`): where it holds, ``diag(H) = diag(G)`` exactly (away from the kinks).

`piecewise_linear_problems` walks the autograd graph of one forward pass and names every node that is not linear,
a kink (ReLU, max, rounding with a straight-through backward) or a product with at most one parameter-dependent
factor; modules with smooth activations or sample statistics (`_SMOOTH_MODULES`), BatchNorm in train mode, a
parameter used twice on one path and a forward that mixes samples (checked on a few single-sample forwards) are
problems too.  `NotPiecewiseLinearError` carries them to a caller that asked for an exact answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
import torch.nn as nn

from zsq_probe.hessian.batches import (
    batch_size,
    call_model,
    map_tensors,
    select_params,
    slice_batch,
)
from zsq_probe.module_state import preserved_state

_SMOOTH_MODULES: tuple[type[nn.Module], ...] = tuple(
    t
    for t in (
        getattr(nn, name, None)
        for name in (
            "GELU",
            "Sigmoid",
            "Tanh",
            "Softplus",
            "SiLU",
            "ELU",
            "CELU",
            "SELU",
            "Mish",
            "Hardswish",
            "Hardsigmoid",
            "LogSigmoid",
            "Softsign",
            "Tanhshrink",
            "Softmax",
            "Softmin",
            "LogSoftmax",
            "GLU",
            "LayerNorm",
            "GroupNorm",
            "LocalResponseNorm",
            "RMSNorm",
            "MultiheadAttention",
            "Transformer",
            "TransformerEncoderLayer",
            "TransformerDecoderLayer",
            "RNN",
            "LSTM",
            "GRU",
            "Bilinear",
        )
    )
    if t is not None
)

# autograd nodes that are linear in every differentiable input (sums, copies, reshapes, pooling,
# padding, indexing): no product of two parameter-dependent tensors
_LINEAR_NODES = (
    "AccumulateGrad",
    "Add",
    "Sub",
    "Neg",
    "Sum",
    "Mean",
    "View",
    "Reshape",
    "UnsafeView",
    "Unsqueeze",
    "Squeeze",
    "Expand",
    "Permute",
    "Transpose",
    "T",
    "Select",
    "Slice",
    "Index",
    "Cat",
    "Stack",
    "Split",
    "Unbind",
    "Clone",
    "Contiguous",
    "Alias",
    "AsStrided",
    "Flatten",
    "Unflatten",
    "ToCopy",
    "Copy",
    "AvgPool",
    "AdaptiveAvgPool",
    "ConstantPadNd",
    "ReflectionPad",
    "ReplicationPad",
    "UpsampleNearest",
    "UpsampleBilinear",
    "UpsampleBicubic",
    "UpsampleLinear",
    "Roll",
    "Flip",
    "Repeat",
    "Narrow",
    "Gather",
    "Diagonal",
    "PixelShuffle",
    "PixelUnshuffle",
    "Im2Col",
    "Col2Im",
    "Unfold",
    "Embedding",
    "Lerp",
    "Cumsum",
    "Trace",
    "Tril",
    "Triu",
    "Im2col",
    "Col2im",
    "Lift",
    "DetachBackward",
)
# piecewise linear in their one differentiable input
_KINK_NODES = (
    "Relu",
    "Threshold",
    "Hardtanh",
    "LeakyRelu",
    "Rrelu",
    "MaxPool",
    "AdaptiveMaxPool",
    "Max",
    "Min",
    "Maximum",
    "Minimum",
    "Clamp",
    "Abs",
    "Where",
    "MaskedFill",
    "MaskedScatter",
    "Hardshrink",
    "Softshrink",
    "Sort",
    "Topk",
    "Kthvalue",
    "Median",
    "Amax",
    "Amin",
    "Sgn",
    "Sign",
    "Round",
    "Floor",
    "Ceil",
    "Trunc",
    "Dropout",
    "NativeDropout",
    "Relu6",
)
# bilinear: linear in each input separately -- fine unless two inputs share a parameter
_BILINEAR_NODES = (
    "Mul",
    "Mm",
    "Bmm",
    "Addmm",
    "Addmv",
    "Addbmm",
    "Baddbmm",
    "Mv",
    "Dot",
    "Matmul",
    "Linear",
    "Convolution",
    "Conv",
    "CudnnConvolution",
    "MkldnnConvolution",
    "SlowConv",
    "ThnnConv",
    "Einsum",
    "Prelu",
    "PreluKernel",
    "Outer",
    "Addcmul",
    "Kron",
    "Tensordot",
)
_BATCHNORM_NODES = ("NativeBatchNorm", "CudnnBatchNorm", "MiopenBatchNorm", "BatchNorm")


def _additive_inputs(name: str) -> tuple[int, ...]:
    """Positions of a bilinear node's inputs that are added, not multiplied (biases)."""
    base = name.rsplit("::", 1)[-1]
    if base.startswith(("Addmm", "Addmv", "Addbmm", "Baddbmm", "Addcmul")):
        return (0,)
    if base.startswith(("Convolution", "Conv", "CudnnConv", "MkldnnConv", "SlowConv", "ThnnConv", "Linear")) or any(
        base.startswith(b) for b in _BATCHNORM_NODES
    ):
        return (2,)
    return ()


def _node_kind(name: str) -> str:
    base = name.rsplit("::", 1)[-1]
    for suffix in ("Backward0", "Backward1", "Backward2", "Backward"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    if base in _BATCHNORM_NODES:
        return "batchnorm"
    if base in _LINEAR_NODES or base.startswith(
        (
            "View",
            "Reshape",
            "AvgPool",
            "AdaptiveAvgPool",
            "Upsample",
            "ReflectionPad",
            "ReplicationPad",
            "Index",
            "Slice",
            "Select",
        )
    ):
        return "linear"
    if base in _KINK_NODES or base.startswith(("MaxPool", "AdaptiveMaxPool", "Clamp", "Relu", "Hardtanh")):
        return "kink"
    if base in _BILINEAR_NODES or base.startswith(("Conv", "Addmm", "Mkldnn", "CudnnConv")):
        return "bilinear"
    if base == "Div":
        return "div"
    return "unknown"


def piecewise_linear_problems(
    model: nn.Module, inputs: Any, params: str | Iterable[str] | None = None, mode: str = "eval"
) -> list[str]:
    """Why ``model`` (in ``mode``, on ``inputs``) may not be piecewise linear in each single selected
    parameter; an empty list when every module and every autograd node of the logits' graph is known
    to be. Checks modules (smooth activations, normalisation by batch/sample statistics, BatchNorm in
    train mode) and the graph of one forward on the first sample (smooth ops such as functional GELU,
    divisions by parameter-dependent tensors, products of two tensors that depend on one parameter --
    e.g. a layer applied twice)."""
    problems: list[str] = []
    selected = select_params(model, params)
    ids = {id(p): n for n, p in selected}
    if mode == "train":
        problems.append(
            "mode='train': BatchNorm normalises by batch statistics (not piecewise linear, and the "
            "samples are not independent)"
        )
    with preserved_state(model, mode=None if mode == "as_is" else mode):
        for name, m in model.named_modules():
            if isinstance(m, _SMOOTH_MODULES):
                problems.append(f"{name or 'model'}: {type(m).__name__} is smooth / not piecewise linear")
            if isinstance(m, nn.modules.batchnorm._NormBase):
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    if m.training or not m.track_running_stats or m.running_mean is None:
                        problems.append(
                            f"{name}: {type(m).__name__} normalises by batch statistics "
                            "(train mode or no running statistics)"
                        )
                else:  # InstanceNorm
                    if not (m.track_running_stats and not m.training):
                        problems.append(f"{name}: {type(m).__name__} normalises by per-sample statistics")
        with torch.enable_grad():
            out = call_model(model, map_tensors(inputs, lambda t: t[:1]))  # the first sample
        problems.extend(_sample_mixing_problems(model, inputs))
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        return problems
    problems.extend(_graph_problems(out.grad_fn, ids))
    return problems


MIXING_RTOL = 1e-4  # float32 batched vs single-sample forwards differ by ~1e-6 of the logits' scale
MIXING_SAMPLES = 8  # samples the mixing check computes one at a time


@torch.no_grad()
def _sample_mixing_problems(model: nn.Module, inputs: Any) -> list[str]:
    """The GGN diagonal sums one term per sample (``ggn_diagonal``'s vmap over samples): it assumes sample n's
    logits depend on sample n alone.  Compare the batched logits with one forward per sample; a model that
    mixes samples (``h - h.mean(0)`` without a norm module) differs everywhere.  A quantised activation that
    lands on the other side of a rounding boundary changes one sample: up to max(2, 5 %) samples may differ.
    The first MIXING_SAMPLES samples are compared (mixing changes every sample; the single forwards are the
    check's cost: 64 of them were a tenth of the exact trace's time on ResNet-20)."""
    n = batch_size(inputs)
    batched = call_model(model, inputs) if n > 1 else None
    if not isinstance(batched, torch.Tensor) or batched.dim() < 1 or batched.shape[0] != n:
        return []
    m = min(n, MIXING_SAMPLES)
    single = torch.cat([call_model(model, slice_batch(inputs, i, i + 1, n)) for i in range(m)])
    tol = MIXING_RTOL * max(float(batched.abs().max()), 1e-30)
    differ = int(((batched[:m] - single).abs().reshape(m, -1).amax(1) > tol).sum())
    if differ <= max(2, m // 20):
        return []
    return [
        f"the logits of {differ} of {m} samples change when computed one sample at a time (the model mixes "
        f"samples, e.g. by batch statistics); the per-sample Gauss-Newton sum assumes it does not"
    ]


def _post_order(root: Any) -> list[Any]:
    """The autograd nodes reachable from ``root``, every node after the nodes it takes inputs from."""
    order: list[Any] = []
    seen: set[Any] = set()
    stack = [(root, False)]
    while stack:  # iterative post-order DFS
        node, done = stack.pop()
        if done:
            order.append(node)
            continue
        if node in seen:
            continue
        seen.add(node)
        stack.append((node, True))
        for child, _ in node.next_functions:
            if child is not None and child not in seen:
                stack.append((child, False))
    return order


def _product_problems(node: Any, deps: Mapping[Any, frozenset[str]]) -> list[str]:
    """A bilinear node's problems: two multiplied factors that depend on one selected parameter."""
    factors = [
        deps.get(c, frozenset()) if c is not None else frozenset()
        for pos, (c, _) in enumerate(node.next_functions)
        if pos not in _additive_inputs(node.name())
    ]
    problems = []
    for i in range(len(factors)):
        for j in range(i + 1, len(factors)):
            shared = factors[i] & factors[j]
            if shared:
                problems.append(
                    f"{node.name()}: a product of two factors that both depend on "
                    f"{', '.join(sorted(shared))[:120]} (a parameter used twice on one path?)"
                )
    return problems


def _node_problems(node: Any, deps: Mapping[Any, frozenset[str]]) -> list[str]:
    """Why ``node`` (downstream of a selected parameter) may not be piecewise linear in each parameter."""
    kind = _node_kind(node.name())
    if kind in ("linear", "kink"):
        return []
    problems = []
    if kind == "batchnorm":
        if bool(getattr(node, "_saved_training", False)):
            problems.append(f"{node.name()}: batch normalisation with batch statistics (training=True)")
        kind = "bilinear"
    if kind == "div":
        den = node.next_functions[1][0] if len(node.next_functions) > 1 else None
        if den is not None and deps.get(den):
            problems.append(
                f"{node.name()}: division by a tensor that depends on parameters ({', '.join(sorted(deps[den]))[:120]})"
            )
        return problems
    if kind == "bilinear":
        return problems + _product_problems(node, deps)
    return [f"{node.name()}: operation not known to be piecewise linear"]


def _graph_problems(root: Any, param_ids: Mapping[int, str]) -> list[str]:
    """Walk the autograd graph from ``root``; each node's set of selected parameters it depends on."""
    deps: dict[Any, frozenset[str]] = {}
    problems: list[str] = []
    for node in _post_order(root):
        child_deps = [deps.get(c, frozenset()) for c, _ in node.next_functions if c is not None]
        mine: frozenset[str] = frozenset().union(*child_deps) if child_deps else frozenset()
        if type(node).__name__ == "AccumulateGrad" or node.name().endswith("AccumulateGrad"):
            var = getattr(node, "variable", None)
            if var is not None and id(var) in param_ids:
                mine = frozenset([param_ids[id(var)]])
        deps[node] = mine
        if not mine:
            continue  # no selected parameter upstream: constant for the Hessian
        for msg in _node_problems(node, deps):
            if msg not in problems:  # each problem once
                problems.append(msg)
    return problems


class NotPiecewiseLinearError(ValueError):
    """The network is not piecewise linear in each single parameter: the GGN diagonal is not the
    Hessian diagonal there."""
