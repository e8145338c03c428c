"""lagfit: fit the parameters of a Lagrangian to data, and study how well that can work."""

from .errors import LagfitError
from .systems import SYSTEMS, System, build_system, register_system
from .dynamics import SOLVERS, check_mass_matrix, get_solver, register_solver
from .expressions import compile_lagrangian

__all__ = [
    "LagfitError",
    "SOLVERS",
    "SYSTEMS",
    "System",
    "build_system",
    "check_mass_matrix",
    "compile_lagrangian",
    "get_solver",
    "register_solver",
    "register_system",
]
