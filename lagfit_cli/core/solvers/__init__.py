"""Euler–Lagrange q̈ solvers, one concept a module; importing this package registers them all.

- ``base``: the registry (``SOLVERS``, ``register_solver``), the D×D solve.
- ``autodiff``: eq. 6 by automatic differentiation (``batched``, ``broadcast``, ``vmap``,
  ``loop``) and the hand-derived reference (``closed_form``).
- ``mass_matrix``: the check that eq. 6 can be solved at every data point.
- ``compile``: when ``torch.compile`` repays its cost, and how compiled calls run.
- ``linear``: the parameter-linear basis (``linear``, ``fast``).
- ``policy``: ``make_solver``, a solver under a compile policy.
- ``step``: ``make_loss_and_grad``, the fit's fused loss-and-gradient step.
"""

from lagfit_cli.core.solvers.base import (
    FALLBACK as FALLBACK,
    SOLVERS as SOLVERS,
    LossAndGrad as LossAndGrad,
    Solver as Solver,
    get_solver as get_solver,
    register_solver as register_solver,
    solve_mass_matrix as solve_mass_matrix,
)
from lagfit_cli.core.solvers.autodiff import (
    autograd_terms as autograd_terms,
    broadcast_qdd as broadcast_qdd,
    euler_lagrange_terms as euler_lagrange_terms,
)
from lagfit_cli.core.solvers.mass_matrix import (
    check_mass_matrix as check_mass_matrix,
    mass_matrix as mass_matrix,
)
from lagfit_cli.core.solvers.compile import (
    COMPILE_CHOICES as COMPILE_CHOICES,
    COMPILE_COST_S as COMPILE_COST_S,
    break_even_points as break_even_points,
    check_compile as check_compile,
    should_compile as should_compile,
)
from lagfit_cli.core.solvers.linear import (
    LinearBasis as LinearBasis,
    basis_for as basis_for,
    linear_basis as linear_basis,
)
from lagfit_cli.core.solvers.policy import make_solver as make_solver
from lagfit_cli.core.solvers.step import make_loss_and_grad as make_loss_and_grad
