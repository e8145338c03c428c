"""Loss landscapes: the loss over a grid of trial values of two parameters (seed Figs. 2, 3, 8).

The other parameters follow the gauge parameter at their true ratios, so the
scale-invariance valley θ ∝ θ_true (e.g. k/m = 2) shows up as a straight line through
the origin whichever two parameters are drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .dynamics import Solver
from .fit import loss_on_batch
from .systems import System


@dataclass
class Landscape:
    x_name: str
    y_name: str
    x: Tensor  # (nx,)
    y: Tensor  # (ny,)
    loss: Tensor  # (ny, nx)
    #: slope of the valley y = slope·x through the origin (θ ∝ θ_true)
    valley_slope: float


def parameter_grid(truth: Tensor, ix: int, iy: int, gauge: int, x: Tensor, y: Tensor) -> Tensor:
    """Parameter vectors for every (x, y) pair: (ny·nx, P), row-major in (y, x)."""
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    theta = truth.expand(yy.numel(), -1).clone()
    theta[:, ix] = xx.reshape(-1)
    theta[:, iy] = yy.reshape(-1)
    if gauge not in (ix, iy):
        return theta
    # the other parameters keep their true ratio to the gauge parameter
    scale = theta[:, gauge] / truth[gauge]
    for j in range(truth.shape[0]):
        if j not in (ix, iy):
            theta[:, j] = truth[j] * scale
    return theta


def loss_landscape(
    system: System,
    solver: Solver,
    q: Tensor,
    qd: Tensor,
    qdd_true: Tensor,
    truth: Tensor,
    ix: int,
    iy: int,
    gauge: int,
    x: Tensor,
    y: Tensor,
) -> Landscape:
    """Loss on the (x, y) grid of parameters ix, iy, evaluated as one (chunked) batch."""
    theta = parameter_grid(truth, ix, iy, gauge, x, y)
    loss = loss_on_batch(system, solver, q, qd, qdd_true, theta).reshape(len(y), len(x))
    slope = float(truth[iy] / truth[ix]) if float(truth[ix]) != 0 else float("nan")
    names = system.param_names
    return Landscape(names[ix], names[iy], x, y, loss, slope)


def span(values: Tensor, truth: float, margin: float = 0.15) -> tuple[float, float]:
    """A plotting range covering ``values`` and ``truth`` with a relative margin."""
    finite = values[torch.isfinite(values)]
    low = min(float(finite.min()) if finite.numel() else truth, truth)
    high = max(float(finite.max()) if finite.numel() else truth, truth)
    pad = margin * max(high - low, abs(truth), 1e-12)
    return low - pad, high + pad
