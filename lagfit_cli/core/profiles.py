r"""Profiles of the loss along each reported value (``fig_profiles``, ``profiles.csv``).

For each identifiable reported value f that is a free parameter's ratio θᵢ/θ_g or absolute
value θᵢ: a grid of K values v around the estimate (± ``width`` standard errors, or ± 10 %
where the standard error is 0 or NaN), and at each v the residual sum of squares minimised
over the *other* free parameters,

    RSS_prof(v) = min over θ_free∖i of ‖r(θ)‖²,   θᵢ = v·θ_g  (the gauge θ_g stays fixed),

one Levenberg–Marquardt batch of K starts per value (each start: the best θ with θᵢ moved
to its grid value). ΔRSS = RSS_prof(v) − RSS(θ̂). The 95 % level

    ΔRSS = s² t²₀.₉₇₅(dof),   s² = RSS(θ̂) / dof,   dof = N·D − p,

is where a profile crosses the edge of the Student-t interval: for a model linear in θ the
profile is the parabola (v − f̂)² / [(JᵀJ)⁻¹]ᵢᵢ and the crossings sit exactly at
f̂ ± t·std_error. A nonlinear model bends the parabola (asymmetric crossings); a flat
profile is a direction the data do not determine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import torch
from torch import Tensor

from lagfit_cli.core.fit import IDENTIFIABLE, ratio_label, reported_values
from lagfit_cli.core.systems import ParameterRatio, System

N_GRID = 21
#: the grid spans ± WIDTH standard errors around the estimate
WIDTH = 4.0
#: ... or ± this fraction of the estimate when the standard error is 0 or NaN
FALLBACK_FRACTION = 0.1
LEVEL = 0.95


@dataclass
class Profile:
    label: str
    estimate: float
    std_error: float  # NaN where none
    grid: Tensor  # (K,) float64, values of the reported value
    rss: Tensor  # (K,) minimised residual sum of squares


@dataclass
class Profiles:
    profiles: list[Profile]
    rss_best: float
    dof: int
    residual_variance: float
    #: ΔRSS at the 95 % level, s² t²₀.₉₇₅(dof)
    threshold: float
    warnings: list[str] = field(default_factory=list)

    def table(self):
        """profiles.csv: name, value (the grid value), rss (minimised over the others),
        delta_rss, threshold_95 (the level), estimate, std_error."""
        import pandas as pd

        rows = []
        for p in self.profiles:
            for v, rss in zip(p.grid.tolist(), p.rss.tolist()):
                rows.append({
                    "name": p.label, "value": v, "rss": rss, "delta_rss": rss - self.rss_best,
                    "threshold_95": self.threshold, "estimate": p.estimate, "std_error": p.std_error,
                })
        columns = ["name", "value", "rss", "delta_rss", "threshold_95", "estimate", "std_error"]
        return pd.DataFrame(rows, columns=columns)

    def crossings(self, label: str) -> tuple[float, float]:
        """Where the profile of ``label`` crosses the 95 % level below and above the
        estimate (linear interpolation on the grid; NaN where it stays below)."""
        p = next(p for p in self.profiles if p.label == label)
        grid, delta = p.grid.tolist(), (p.rss - self.rss_best).tolist()
        centre = min(range(len(grid)), key=lambda k: delta[k])
        return (_cross(grid, delta, centre, -1, self.threshold), _cross(grid, delta, centre, 1, self.threshold))

    def metrics(self) -> dict[str, Any]:
        def number(x) -> Optional[float]:
            x = float(x)
            return x if math.isfinite(x) else None

        values = {}
        for p in self.profiles:
            low, high = self.crossings(p.label)
            values[p.label] = {"profile_low": number(low), "profile_high": number(high),
                               "grid_points": int(p.grid.numel())}
        return {"level": LEVEL, "threshold_delta_rss": number(self.threshold), "values": values}


def _cross(grid: list, delta: list, centre: int, direction: int, level: float) -> float:
    k = centre
    while 0 <= k + direction < len(grid):
        a, b = delta[k], delta[k + direction]
        if a < level <= b:
            return grid[k] + (level - a) / (b - a) * (grid[k + direction] - grid[k])
        k += direction
    return math.nan


def profile_values(
    system: System,
    ratios: Sequence[ParameterRatio],
    model,
    theta: Tensor,
    free: Tensor,
    std_error: Optional[Tensor] = None,
    dof: Optional[int] = None,
    n_grid: int = N_GRID,
    width: float = WIDTH,
    iters: int = 100,
    **lm_options: Any,
) -> Profiles:
    """Profiles of every identifiable reported value whose parameter is free (module docstring).

    Args:
        model: the residual model of the fit (``core.solvers.jacobian``).
        theta: (P,) the best fit; free: (P,) bool, the gauge-fixed free set the fit moved.
        std_error: (R,) per row of ``ratios`` (``Uncertainty.std_error``); None: ± 10 % grids.
        dof: N·D − p of the covariance (default N·D − number of free parameters).
    """
    from scipy.special import stdtrit

    from lagfit_cli.core.lm import levenberg_marquardt

    theta = theta.detach()
    free = free.to(theta.device)
    index = {name: j for j, name in enumerate(system.param_names)}
    m = model.n_residuals
    rss_best = float(model.residuals(theta[None]).to(torch.float64).square().sum())
    if dof is None:
        dof = m - int(free.sum())
    s2 = rss_best / dof if dof > 0 else math.nan
    quantile = float(stdtrit(dof, 0.5 + LEVEL / 2)) if dof > 0 else math.nan
    estimates = reported_values(system, ratios, theta.cpu().to(torch.float64))
    out = Profiles([], rss_best, dof, s2, s2 * quantile**2)
    # RSS differences below this are rounding in q̈ (exact data fit to ~1e-31), not a lower minimum
    target = getattr(model, "target", None)
    eps = torch.finfo(theta.dtype).eps
    rounding = float((64 * eps) ** 2 * target.to(torch.float64).square().sum()) if target is not None else 0.0
    for r, row in enumerate(ratios):
        i = index[row.name]
        if row.status not in IDENTIFIABLE or not bool(free[i]):
            continue
        estimate = float(estimates[r])
        se = float(std_error[r]) if std_error is not None else math.nan
        half = width * se if math.isfinite(se) and se > 0 else FALLBACK_FRACTION * (abs(estimate) or 1.0)
        grid = torch.linspace(estimate - half, estimate + half, n_grid, dtype=torch.float64)
        scale = float(theta[index[row.denominator]]) if row.status == "ratio" else 1.0
        starts = theta.expand(n_grid, -1).clone()
        starts[:, i] = (grid * scale).to(dtype=theta.dtype, device=theta.device)
        others = free.clone()
        others[i] = False
        if bool(others.any()):
            fitted = levenberg_marquardt(model, starts, others, iters=iters, **lm_options).theta
        else:
            fitted = starts
        with torch.no_grad():
            rss = model.residuals(fitted).to(torch.float64).square().sum(-1).cpu()
        out.profiles.append(Profile(ratio_label(row), estimate, se, grid, rss))
        if out.threshold > 0 and float(rss_best - rss.min()) > max(1e-3 * out.threshold, rounding):
            out.warnings.append(
                f"the profile of {ratio_label(row)} dips below the best fit's loss: "
                "the fit had not reached its minimum"
            )
    return out
