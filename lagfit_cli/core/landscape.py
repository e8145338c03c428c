"""Loss landscapes: the loss over a grid of trial values of two parameters (seed Figs. 2, 3, 8).

The parameters not drawn stay at a reference point (the truth, or the best fit when the
truth is unknown), except when both drawn parameters belong to one scale group
(``System.scale_groups``): then the group's other members follow x at their reference
ratio, so the scale-invariance valley θ ∝ θ_ref (e.g. k/m = 2) shows up as the straight
line y = (y_ref/x_ref)·x through the origin. For two parameters from different groups
(the double pendulum's m1 and l1) or an unidentifiable one (the pendulum's m) nothing
follows, and the landscape shows what the data fix about that pair with the rest held.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from lagfit_cli.core.solvers import Solver
from lagfit_cli.errors import ArgumentError
from lagfit_cli.core.fit import loss_on_batch
from lagfit_cli.core.systems import System


@dataclass
class Landscape:
    x_name: str
    y_name: str
    x: Tensor  # (nx,)
    y: Tensor  # (ny,)
    loss: Tensor  # (ny, nx)
    #: slope of the valley y = slope·x through the origin (θ ∝ θ_ref); NaN: no such line
    valley_slope: float


def landscape_pair(
    system: System, names: Optional[Sequence[str]], gauge: Optional[str]
) -> tuple[int, int]:
    """Indices (ix, iy) of the two parameters to draw.

    ``names`` (the task's ``x``, ``y``) picks them; None picks a pair with a valley:
    the gauge and the next member of the first scale group that has two or more members
    (m, k for the oscillators; l, g for the pendulum; m1, m2 for the double pendulum), or
    the first two parameters when there is no such group.
    """
    params = system.param_names
    if names is not None:
        names = list(names)
        if len(names) != 2 or names[0] == names[1] or not set(names) <= set(params):
            raise ArgumentError(
                "landscape_params", f"must name two different parameters of {system.name!r} "
                f"({', '.join(params)}), got {names}"
            )
        return params.index(names[0]), params.index(names[1])
    rows = {row.name: row for row in system.parameter_ratios(gauge)}
    for group in system.scale_groups:
        if len(group) >= 2:
            x = rows[group[0]].denominator
            y = next(name for name in group if name != x)
            return params.index(x), params.index(y)
    return 0, 1


def followers(system: System, ix: int, iy: int) -> list[int]:
    """Parameters that follow x at their reference ratio: the other members of the scale
    group holding both x and y (none when x and y are in different groups)."""
    names = system.param_names
    for group in system.scale_groups:
        if names[ix] in group and names[iy] in group:
            return [names.index(n) for n in group if n not in (names[ix], names[iy])]
    return []


def parameter_grid(
    reference: Tensor, ix: int, iy: int, follow: Sequence[int], x: Tensor, y: Tensor
) -> Tensor:
    """Parameter vectors for every (x, y) pair: (ny·nx, P), row-major in (y, x).

    Parameters in ``follow`` scale with x: θⱼ = θⱼ_ref · x / x_ref; the rest keep θ_ref.
    """
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    theta = reference.expand(yy.numel(), -1).clone()
    theta[:, ix] = xx.reshape(-1)
    theta[:, iy] = yy.reshape(-1)
    scale = theta[:, ix] / reference[ix]
    for j in follow:
        theta[:, j] = reference[j] * scale
    return theta


def loss_landscape(
    system: System,
    solver: Solver,
    q: Tensor,
    qd: Tensor,
    qdd_true: Tensor,
    reference: Tensor,
    ix: int,
    iy: int,
    x: Tensor,
    y: Tensor,
) -> Landscape:
    """Loss on the (x, y) grid of parameters ix, iy, evaluated as one (chunked) batch.

    ``reference`` (P,) holds the parameters not drawn (see the module docstring).
    """
    names = system.param_names
    same_group = any(names[ix] in g and names[iy] in g for g in system.scale_groups)
    theta = parameter_grid(reference, ix, iy, followers(system, ix, iy), x, y)
    loss = loss_on_batch(system, solver, q, qd, qdd_true, theta).reshape(len(y), len(x))
    ref_x = float(reference[ix])
    slope = float(reference[iy]) / ref_x if same_group and ref_x != 0 else float("nan")
    return Landscape(names[ix], names[iy], x, y, loss, slope)


def span(values: Tensor, truth: float, margin: float = 0.15) -> tuple[float, float]:
    """A plotting range covering ``values`` and ``truth`` with a relative margin."""
    finite = values[torch.isfinite(values)]
    low = min(float(finite.min()) if finite.numel() else truth, truth)
    high = max(float(finite.max()) if finite.numel() else truth, truth)
    pad = margin * max(high - low, abs(truth), 1e-12)
    return low - pad, high + pad
