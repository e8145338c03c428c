"""Parametric Lagrangians L(q, q̇; θ) and the registry that names them.

A Lagrangian is written once, with ``q[..., i]`` / ``theta[..., j]`` indexing and plain
broadcasting, so the same function serves one point, a whole dataset and a batch of
parameter vectors:

    L(q: (..., D), qd: (..., D), theta: (..., P)) -> (...)

A system's *parameters* (names, true values) and *state bounds* live in its YAML file
(``conf/system/NAME.yaml``); this module holds only the math. A new system is one
registered factory here plus one YAML file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional

from torch import Tensor
import torch

from .errors import LagfitError

Lagrangian = Callable[[Tensor, Tensor, Tensor], Tensor]
#: Closed-form q̈(q, q̇, θ) with the same broadcasting as a Lagrangian, returning (..., D).
ClosedForm = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class System:
    """The math of one mechanical system.

    Attributes:
        name: registry name.
        lagrangian: L(q, qd, theta) with broadcasting (see module docstring).
        param_names: names of θ's entries, in order; the first is the default gauge.
        dof: D, the number of generalised coordinates.
        closed_form: the hand-derived q̈, when known (tests and the benchmark's "limit").
        coord_names: display names of q's entries (``q`` for D = 1, else ``q0, q1, ...``).
    """

    name: str
    lagrangian: Lagrangian
    param_names: tuple[str, ...]
    dof: int
    closed_form: Optional[ClosedForm] = None
    coord_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.coord_names:
            names = ("q",) if self.dof == 1 else tuple(f"q{i}" for i in range(self.dof))
            object.__setattr__(self, "coord_names", names)

    @property
    def n_params(self) -> int:
        return len(self.param_names)


#: name -> factory(spec) -> System, where spec is the plain-dict ``system`` config.
SystemFactory = Callable[[Mapping[str, Any]], System]
SYSTEMS: dict[str, SystemFactory] = {}


def register_system(name: str) -> Callable[[SystemFactory], SystemFactory]:
    """Register ``factory(spec) -> System`` under ``name`` (the YAML's ``system.name``)."""

    def decorator(factory: SystemFactory) -> SystemFactory:
        if name in SYSTEMS:
            raise ValueError(f"system {name!r} is registered twice")
        SYSTEMS[name] = factory
        return factory

    return decorator


def register_fixed_system(system: System) -> System:
    """Register a system whose math does not depend on its config."""
    register_system(system.name)(lambda spec: system)
    return system


def build_system(spec: Mapping[str, Any]) -> System:
    """Build the System that a ``system`` config names, checking its parameters match."""
    name = spec.get("name")
    if name not in SYSTEMS:
        known = ", ".join(sorted(SYSTEMS))
        raise LagfitError(f"system.name: unknown system {name!r}; known systems: {known}")
    system = SYSTEMS[name](spec)
    given = tuple(spec.get("params") or {})
    if set(given) != set(system.param_names):
        raise LagfitError(
            f"system.params: system {name!r} has parameters {', '.join(system.param_names)}; "
            f"got {', '.join(given) or 'none'}"
        )
    return system


def true_params(system: System, spec: Mapping[str, Any]) -> Tensor:
    """The (P,) vector of the config's parameter values, in the system's order (float64)."""
    params = spec["params"]
    return torch.tensor([float(params[n]) for n in system.param_names], dtype=torch.float64)


# --------------------------------------------------------------------------- built-ins


def _harmonic_lagrangian(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """L = ½ m q̇² − ½ k q²   (seed report, eq. 7)."""
    m, k = theta[..., 0], theta[..., 1]
    return 0.5 * m * qd[..., 0] ** 2 - 0.5 * k * q[..., 0] ** 2


def _harmonic_qdd(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """q̈ = −(k/m) q   (seed report, eq. 10)."""
    m, k = theta[..., 0], theta[..., 1]
    return (-(k / m) * q[..., 0]).unsqueeze(-1)


def _anharmonic_lagrangian(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """L = ½ m q̇² − ½ k q² − α q² q̇²   (the seed report's refactored Lagrangian)."""
    m, k, alpha = theta[..., 0], theta[..., 1], theta[..., 2]
    q0, v = q[..., 0], qd[..., 0]
    return 0.5 * m * v**2 - 0.5 * k * q0**2 - alpha * q0**2 * v**2


def _anharmonic_qdd(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """q̈ = (−k q + 2α q q̇²) / (m − 2α q²)."""
    m, k, alpha = theta[..., 0], theta[..., 1], theta[..., 2]
    q0, v = q[..., 0], qd[..., 0]
    return ((-k * q0 + 2 * alpha * q0 * v**2) / (m - 2 * alpha * q0**2)).unsqueeze(-1)


HARMONIC = register_fixed_system(
    System("harmonic", _harmonic_lagrangian, ("m", "k"), dof=1, closed_form=_harmonic_qdd)
)
ANHARMONIC = register_fixed_system(
    System(
        "anharmonic",
        _anharmonic_lagrangian,
        ("m", "k", "alpha"),
        dof=1,
        closed_form=_anharmonic_qdd,
    )
)
