"""lagfit: fit the parameters of a Lagrangian to data, and study how well that can work."""

from .errors import LagfitError
from .systems import SYSTEMS, System, build_system, register_system
from .dynamics import SOLVERS, get_solver, register_solver

__all__ = [
    "LagfitError",
    "SOLVERS",
    "SYSTEMS",
    "System",
    "build_system",
    "get_solver",
    "register_solver",
    "register_system",
]
