"""Hessian of a training loss with respect to model parameters, as a matrix-free operator.

One abstraction, :class:`HessianOperator`, turns ``(model, loss_fn, batches)`` into a
symmetric linear map ``v -> H v`` on flat parameter vectors; every estimator is a small
function over a :class:`HessianVectorProduct` (anything with ``.dim``, ``.dtype``, ``.device`` and
``.matvec``):

* :func:`estimate_trace` -- the trace API: Hutch++ (deflated by given vectors) or plain Hutchinson,
  adaptive, with a 95 % interval, as a :class:`TraceInterval` (paper Fig. 2b, 9);
* :func:`lanczos` -- tridiagonalisation with full reorthogonalisation;
* :func:`slq_density` / :func:`slq_trace` / :func:`gaussian_density` -- stochastic Lanczos
  quadrature eigenvalue density (Fig. 2d) and the SLQ trace (a :class:`TraceInterval` too);
* :func:`top_eigenpairs` -- signed largest-algebraic eigenpairs through ARPACK (Fig. 2c needs
  the top eigenvector; power iteration on ``H`` finds the largest *magnitude*, which is a large
  negative eigenvalue when the loss is non-convex there).

The loss is ``sum_b n_b * loss_fn(model(x_b), t_b) / sum_b n_b`` over the batches (``n_b`` the
batch size), so several batches give the Hessian of the size-weighted mean loss. Products reuse
the gradient graph: the gradient is taken once with ``create_graph=True`` and every product is
one ``torch.autograd.grad`` over it (``retain_graph=True``). The model is left exactly as found:
train/eval flag of every module, every buffer (the forward runs on clones of the buffers, so BN
running statistics and activation-quantiser ranges are neither updated nor captured by the
graph) and the parameters (``.grad`` is never written).
"""

from zsq_probe.hessian.diagonal import (
    coordinate_products,
    exact_diagonal,
    exact_trace,
    ggn_diagonal,
    loss_function,
    output_hessian,
    output_hessian_factor,
)
from zsq_probe.hessian.estimators import lanczos, slq_density, slq_trace, top_eigenpair, top_eigenpairs
from zsq_probe.hessian.linearity import NotPiecewiseLinearError, piecewise_linear_problems
from zsq_probe.hessian.operator import (
    HessianOperator,
    HessianVectorProduct,
    as_linear_operator,
    flatten_params,
    rademacher,
    unflatten,
)
from zsq_probe.hessian.results import (
    Eigenpairs,
    ExactTrace,
    HessianDiagonal,
    LanczosResult,
    SpectralDensity,
    TraceInterval,
    gaussian_density,
    parameter_group,
)
from zsq_probe.hessian.trace import estimate_trace

__all__ = [
    "HessianOperator",
    "HessianVectorProduct",
    "TraceInterval",
    "estimate_trace",
    "LanczosResult",
    "SpectralDensity",
    "Eigenpairs",
    "lanczos",
    "slq_density",
    "slq_trace",
    "gaussian_density",
    "top_eigenpairs",
    "top_eigenpair",
    "rademacher",
    "flatten_params",
    "unflatten",
    "as_linear_operator",
    "parameter_group",
    "HessianDiagonal",
    "ExactTrace",
    "NotPiecewiseLinearError",
    "exact_diagonal",
    "exact_trace",
    "ggn_diagonal",
    "coordinate_products",
    "loss_function",
    "output_hessian",
    "output_hessian_factor",
    "piecewise_linear_problems",
]
