"""The solver registry and what every solver shares.

A solver computes eq. 6 of the seed report for B parameter vectors at once:

    solver(system, q: (N, D), qd: (N, D), theta: (B, P)) -> qdd: (B, N, D)

and is differentiable with respect to ``theta``. Every solver also takes the keywords
``t`` (N,) (the times, for a time-dependent system) and ``Q`` (N, D) (applied generalised
forces), both ``None`` by default, and honours the system's dissipation function R: it
solves d/dt ∂L/∂q̇ − ∂L/∂q + ∂R/∂q̇ = Q for q̈. Each registered solver carries how it may
be run: whether ``torch.compile`` may trace it (``compilable``), which row of the compile
cost model its work is (``cost_kind``), and whether it is built on the parameter-linear
basis (``basis``: ``"require"`` for ``linear``, ``"optional"`` for ``fast``, which falls back
to ``FALLBACK`` when L is not linear in θ).
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from lagfit_cli.core.registry import Registry
from lagfit_cli.core.systems import System

Solver = Callable[[System, Tensor, Tensor, Tensor], Tensor]
#: theta (B, P) -> (loss (B,), grad (B, P))
LossAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]
SOLVERS: Registry[Solver] = Registry("solver", "solver")
#: the solver ``fast`` uses where L is not linear in θ
FALLBACK = "broadcast"


def register_solver(
    name: str, *, compilable: bool = True, cost_kind: str = "generic", basis: Optional[str] = None
) -> Callable[[Solver], Solver]:
    """Register ``solver(system, q, qd, theta) -> qdd`` under ``name``.

    Args:
        compilable: ``torch.compile`` may trace it (False: Python loops, or graphs that
            torch.compile is known to mishandle).
        cost_kind: its row of the compile cost model (``generic``, ``closed_form``).
        basis: ``None``, or how it uses the parameter-linear basis: ``require`` (refuses
            systems nonlinear in θ) or ``optional`` (falls back to ``FALLBACK``).
    """

    def decorator(fn: Solver) -> Solver:
        fn.compilable, fn.cost_kind, fn.basis = compilable, cost_kind, basis
        return SOLVERS.register(name)(fn)

    return decorator


def get_solver(name: str) -> Solver:
    return SOLVERS.lookup(name)


def solver_info(name: str, field: str):
    """``compilable``, ``cost_kind`` or ``basis`` of a registered solver."""
    return getattr(get_solver(name), field)


def solve_mass_matrix(hessian: Tensor, rhs: Tensor) -> Tensor:
    """Solve H x = rhs for a batch of D×D matrices: H (..., D, D), rhs (..., D)."""
    if hessian.shape[-1] == 1:  # the 1×1 solve is a division, and much cheaper
        return rhs / hessian[..., 0]
    if hessian.shape[-1] == 2:  # Cramer's rule: ~10× faster than batched LAPACK for 2×2
        a, b = hessian[..., 0, 0], hessian[..., 0, 1]
        c, d = hessian[..., 1, 0], hessian[..., 1, 1]
        r0, r1 = rhs[..., 0], rhs[..., 1]
        det = a * d - b * c
        return torch.stack(((d * r0 - b * r1) / det, (a * r1 - c * r0) / det), dim=-1)
    return torch.linalg.solve(hessian, rhs.unsqueeze(-1)).squeeze(-1)


