r"""Identifiability from the data: which parameters, or ratios of them, q̈ actually fixes.

The scale groups read off a Lagrangian's expression (``System.scale_groups``) are symmetries
every dataset shares. The data can fix less: a parameter that only shifts L by a constant or
a total time derivative (``- b*q*qd``), one that multiplies a force whose effect no data point
sees, states that never excite a term. So the fit's Jacobian J = ∂q̈/∂θ (M × P) at the best
start is the judge. In coordinates scaled by |θ|, its singular values below ``rtol``·σ_max
span the directions N the data cannot see, and a smooth function f(θ) of the parameters is
determined by the data (locally) exactly when its gradient is orthogonal to N:

- θᵢ itself: eᵢ ⊥ N              -> ``absolute``
- θᵢ / θⱼ:  θⱼ eᵢ − θᵢ eⱼ ⊥ N       -> ``ratio`` (θⱼ its ``gauge``)
- neither                        -> ``unidentifiable``

A known applied force Q in the data breaks the common scale L -> cL (R -> cR): the fit then
runs on ``System.with_forces()``, whose structural groups are those that survive a force (none
for L linear in θ), and this check reports the values the data fix as ``absolute``.

Ratios are formed within classes of parameters whose pairwise ratios are determined; each
class's gauge is the user's choice where it is in the class, else the structural gauge,
else its first member. This never claims more than the expression's scale groups (those
directions are in N), and claims less whenever the data cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from torch import Tensor

from lagfit_cli.core.systems import ParameterRatio, System

#: a direction is invisible to the data below this fraction of J's largest singular value
#: (float64; float32 data use ``RTOL_FLOAT32``)
RTOL, RTOL_FLOAT32 = 1e-9, 1e-4
#: a gradient with a component in N above this (relative) is not identifiable
LEAK = 1e-6


@dataclass(frozen=True)
class Identifiability:
    ratios: tuple[ParameterRatio, ...]
    #: σ_max / σ_min of J over the directions the data determine (1 when there is one)
    condition: float
    #: σ_max / σ_min of J over every direction (inf when some direction is invisible)
    full_condition: float
    #: how many parameter directions the data cannot see (rows of N)
    null_dimension: int
    singular_values: Tensor


def identifiability(
    system: System,
    jacobian: Tensor,
    theta: Tensor,
    gauge: Optional[str] = None,
    rtol: Optional[float] = None,
) -> Identifiability:
    """Classify each parameter as the data determine it (see the module docstring).

    Args:
        jacobian: (M, P), ∂(q̈ residuals)/∂θ at ``theta`` (P,).
        gauge: the preferred gauge (the user's), else each class's structural gauge.
    """
    names = system.param_names
    scale = torch.where(theta.abs() > 0, theta.abs(), torch.ones_like(theta))
    scaled = (jacobian * scale).nan_to_num(0.0)
    singular = torch.linalg.svdvals(scaled)
    # V complete (P × P); U's M × M (gigabytes at 10⁴ points) only where M < P needs it
    _, _, vh = torch.linalg.svd(scaled, full_matrices=scaled.shape[0] < scaled.shape[1])
    if rtol is None:
        rtol = RTOL if theta.dtype == torch.float64 else RTOL_FLOAT32
    largest = float(singular[0]) if singular.numel() else 0.0
    rank = int((singular > rtol * largest).sum()) if largest > 0 else 0
    null = vh[rank:]  # (k, P) in scaled coordinates

    def invisible(direction: Tensor) -> bool:
        norm = direction.norm()
        return bool(norm == 0) or bool((null @ direction).norm() <= LEAK * norm)

    unit = torch.eye(len(names), dtype=theta.dtype, device=theta.device) * scale
    absolute = [invisible(unit[i]) for i in range(len(names))]
    # classes: parameters whose pairwise ratios the data determine
    classes: list[list[int]] = []
    for i in range(len(names)):
        if absolute[i] or theta[i] == 0:
            continue
        for members in classes:
            j = members[0]
            if invisible(theta[j] * unit[i] - theta[i] * unit[j]):
                members.append(i)
                break
        else:
            classes.append([i])

    preferred = _preferred_gauges(system, gauge)
    rows: dict[str, ParameterRatio] = {}
    for i, name in enumerate(names):
        if absolute[i]:
            rows[name] = ParameterRatio(name, None, "absolute")
    for members in classes:
        member_names = [names[i] for i in members]
        if len(members) == 1:
            rows[member_names[0]] = ParameterRatio(member_names[0], None, "unidentifiable")
            continue
        chosen = next((g for g in preferred if g in member_names), member_names[0])
        for name in member_names:
            status = "gauge" if name == chosen else "ratio"
            rows[name] = ParameterRatio(name, chosen, status)
    for name in names:  # θᵢ = 0 and not absolute: no ratio can be formed with it
        rows.setdefault(name, ParameterRatio(name, None, "unidentifiable"))

    visible = singular[:rank]
    return Identifiability(
        ratios=tuple(rows[name] for name in names),
        condition=float(visible[0] / visible[-1]) if rank else float("inf"),
        full_condition=float(singular[0] / singular[-1]) if rank == len(names) else float("inf"),
        null_dimension=len(names) - rank,
        singular_values=singular,
    )


def _preferred_gauges(system: System, gauge: Optional[str]) -> Sequence[str]:
    structural = [row.name for row in system.parameter_ratios() if row.status == "gauge"]
    return ([gauge] if gauge else []) + structural
