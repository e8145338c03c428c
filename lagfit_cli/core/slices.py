r"""The slice through the truth perpendicular to the solution valley (seed Figs. 4, 5).

In the plane of two parameters (x, y), the valley of a scale-invariant loss is the line
θ ∝ θ_true through the origin. The slice runs through the truth t = (t_x, t_y) along the
unit normal n = (−t_y, t_x)/|t|:

    θ(s) = t + s·n,   s ∈ [−h|t|, h|t|]

(the other members of the pair's scale group follow x at their true ratio, as on a
landscape grid: ``landscape.followers``).
The valley's shape along the slice is summarised by :func:`valley_shape`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from torch import Tensor


def parameter_points(truth: Tensor, ix: int, iy: int, follow: Sequence[int], xs: Tensor, ys: Tensor) -> Tensor:
    """Parameter vectors (S, P) with θ_ix = xs, θ_iy = ys; those in ``follow`` scale with x."""
    theta = truth.expand(xs.shape[0], -1).clone()
    theta[:, ix] = xs
    theta[:, iy] = ys
    for j in follow:
        theta[:, j] = truth[j] * xs / truth[ix]
    return theta


@dataclass
class Slice:
    s: Tensor  # (S,) signed distance from the truth along the normal
    x: Tensor  # (S,) θ_ix along the slice
    y: Tensor  # (S,) θ_iy along the slice
    theta: Tensor  # (S, P)


def perpendicular_slice(truth: Tensor, ix: int, iy: int, follow: Sequence[int], halfwidth: float, n_points: int) -> Slice:
    """The slice of ``n_points`` through the truth, ± ``halfwidth``·|t| along the valley's normal."""
    tx, ty = float(truth[ix]), float(truth[iy])
    norm = math.hypot(tx, ty)
    if norm == 0:
        raise ValueError("the true parameters are 0 in both slice coordinates; the valley has no direction")
    nx, ny = -ty / norm, tx / norm
    s = torch.linspace(-halfwidth * norm, halfwidth * norm, n_points, dtype=truth.dtype, device=truth.device)
    x, y = tx + s * nx, ty + s * ny
    return Slice(s, x, y, parameter_points(truth, ix, iy, follow, x, y))


def rms_error(noisy: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """RMS over the slice of noisy − clean loss: (..., S), (S,) -> (...)."""
    return np.sqrt(np.nanmean((noisy - clean) ** 2, axis=-1))


@dataclass
class ValleyShape:
    """The valley along the slice, from one loss curve L(s).

    floor: min L; s_min: where it is; depth: max L − min L; relative_depth: 1 − min L/max L
    (1 for a valley that reaches 0, → 0 as it flattens); decades: log10(max L/min L) (the
    dynamic range a log-scaled density plot shows; None where min L ≤ 0); width: the full
    width in s of the region around the minimum that lies below the middle of the log
    scale, L ≤ √(min L · max L) (0 for a clean valley, whose floor is 0).
    """

    floor: float
    s_min: float
    depth: float
    relative_depth: float
    decades: float
    width: float


def valley_shape(s: np.ndarray, loss: np.ndarray) -> ValleyShape:
    ok = np.isfinite(loss)
    s, loss = s[ok], loss[ok]
    i_min = int(np.argmin(loss))
    low, high = float(loss[i_min]), float(loss.max())
    half = math.sqrt(low * high) if low > 0 else 0.0
    below = loss <= half
    left = i_min
    while left > 0 and below[left - 1]:
        left -= 1
    right = i_min
    while right < len(loss) - 1 and below[right + 1]:
        right += 1
    width = _crossing(s, loss, right, right + 1, half) - _crossing(s, loss, left, left - 1, half)
    return ValleyShape(
        floor=low,
        s_min=float(s[i_min]),
        depth=high - low,
        relative_depth=1.0 - low / high if high > 0 else float("nan"),
        decades=math.log10(high / low) if low > 0 else float("nan"),
        width=float(width),
    )


def _crossing(s: np.ndarray, loss: np.ndarray, inside: int, outside: int, level: float) -> float:
    """Where the loss crosses ``level`` between an inside and an outside point (linear)."""
    if outside < 0 or outside >= len(s):
        return float(s[inside])
    l_in, l_out = loss[inside], loss[outside]
    frac = (level - l_in) / (l_out - l_in) if l_out != l_in else 0.0
    return float(s[inside] + frac * (s[outside] - s[inside]))
