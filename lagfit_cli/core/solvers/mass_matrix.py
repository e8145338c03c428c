"""The check that eq. 6 can be solved: ∂²L/∂q̇∂q̇ᵀ invertible at every data point."""

from __future__ import annotations

import torch
from torch import Tensor

from lagfit_cli.errors import LagfitError
from typing import Optional

from lagfit_cli.core.solvers.autodiff import autograd_terms, bound_lagrangian
from lagfit_cli.core.systems import System


def mass_matrix(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, t: Optional[Tensor] = None
) -> Tensor:
    """∂²L/∂q̇∂q̇ᵀ at every point for one parameter vector: (N, D, D) (``t``: the data's
    times, for a time-dependent L)."""
    return autograd_terms(bound_lagrangian(system, t), q, qd, theta)[0]


def check_mass_matrix(
    system: System, q: Tensor, qd: Tensor, theta_true: Tensor, max_condition: float = 1e12,
    *, t: Optional[Tensor] = None,
) -> None:
    """Raise LagfitError if eq. 6's matrix H = ∂²L/∂q̇∂q̇ᵀ cannot be inverted somewhere.

    A point is bad when H has a non-finite entry, or when its smallest singular value
    σ_min is at most max(σ_max at that point, median σ_max over all points) / max_condition:
    ill-conditioned within the point, or (for D = 1, where the condition number is always
    1) vanishing against the dataset's typical scale. H ≡ 0 (no q̇ in L) is bad everywhere.

    Args:
        q, qd: (N, D) states; theta_true: (P,) the parameters to check at.
        max_condition: the largest acceptable condition number; the limit applied is
            min(max_condition, 0.01/ε), about 8e4 for float32 data.
    """
    hessian = mass_matrix(system, q, qd, theta_true.to(q.dtype), t=t).detach()
    eps = torch.finfo(hessian.dtype).eps
    finite = torch.isfinite(hessian).flatten(1).all(dim=1)
    singular_values = torch.zeros(hessian.shape[:2], dtype=hessian.dtype, device=hessian.device)
    singular_values[finite] = torch.linalg.svdvals(hessian[finite])
    largest, smallest = singular_values[:, 0], singular_values[:, -1]
    typical = largest[finite].median() if finite.any() else largest.new_zeros(())
    scale = torch.maximum(largest, typical)
    limit = min(max_condition, 0.01 / eps)
    bad = ~finite | (smallest <= scale / limit)
    n_bad = int(bad.sum())
    if n_bad == 0:
        return
    example = int(bad.nonzero()[0, 0])
    singular = finite & (smallest <= scale * eps)
    kinds = {
        "not finite": int((~finite).sum()),
        "singular": int(singular.sum()),
        f"ill-conditioned (condition number > {limit:.0e})": n_bad
        - int((~finite | singular).sum()),
    }
    present = [kind for kind, count in kinds.items() if count]
    kind = present[0] if len(present) == 1 else "singular, ill-conditioned or not finite"
    if kinds["singular"] == len(bad):
        hint = "the Lagrangian needs a kinetic term (a q̇ dependence) in every coordinate"
    else:
        hint = "check the Lagrangian, or narrow the state bounds or drop these points"
    raise LagfitError(
        f"mass matrix ∂²L/∂q̇∂q̇ᵀ is {kind} at {n_bad} of {len(bad)} data points "
        f"(e.g. q={_point(q[example])}, q̇={_point(qd[example])}): {hint}"
    )


def _point(values: Tensor) -> str:
    parts = [f"{float(v):.4g}" for v in values]
    return parts[0] if len(parts) == 1 else "(" + ", ".join(parts) + ")"


