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
from typing import Any, Callable, Literal, Mapping, NamedTuple, Optional

from torch import Tensor
import torch

from lagfit_cli.errors import ArgumentError
from lagfit_cli.core.registry import Registry

Lagrangian = Callable[[Tensor, Tensor, Tensor], Tensor]
#: Closed-form q̈(q, q̇, θ) with the same broadcasting as a Lagrangian, returning (..., D).
ClosedForm = Callable[[Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class Coefficients:
    """L(q, q̇; θ) = Σₖ cₖ(θ) φₖ(q, q̇) + φ₀(q, q̇): linear in K coefficients c(θ).

    Many Lagrangians nonlinear in their physical parameters are linear in a few products of
    them (the double pendulum in (m1 + m2) l1², m2 l2², ...). Eq. 6 is then linear in c, so
    the parameter-linear machinery (basis once per dataset, equation-error start, cheap
    Jacobians ∂q̈/∂θ = ∂q̈/∂c · ∂c/∂θ) works in c-space.

    Attributes:
        of_params: θ (..., P) -> c (..., K), smooth.
        lagrangian: L(q, qd, c), linear in c (the φₖ weighted by c, plus φ₀).
        names: a readable name of each cₖ (e.g. ``m2*l1*l2``).
    """

    of_params: Callable[[Tensor], Tensor]
    lagrangian: Lagrangian
    names: tuple[str, ...]


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
        scale_groups: the parameter scalings that leave q̈ unchanged. Multiplying every
            parameter of one group by the same factor c > 0 gives the same motion, so within
            a group only ratios are identifiable, each reported relative to the group's gauge
            (its first member unless the config names another). A one-member group is not
            identifiable, alone or as a ratio (the pendulum's m); a parameter in no group
            is identifiable on its own. ``None`` means the usual common scale, L -> cL:
            one group of all parameters (right whenever every term of L is linear in θ).
        linear_in_params: whether L = L₀(q, q̇) + Σⱼ θⱼ φⱼ(q, q̇) (degree ≤ 1 in θ), which
            makes the Euler–Lagrange equations linear in θ; ``None`` when unknown.
        coefficients: for a system nonlinear in θ, its form Σₖ cₖ(θ) φₖ when it has one
            (see ``Coefficients``); ``None`` otherwise.
    """

    name: str
    lagrangian: Lagrangian
    param_names: tuple[str, ...]
    dof: int
    closed_form: Optional[ClosedForm] = None
    coord_names: tuple[str, ...] = ()
    scale_groups: Optional[tuple[tuple[str, ...], ...]] = None
    linear_in_params: Optional[bool] = None
    coefficients: Optional[Coefficients] = None

    def __post_init__(self) -> None:
        if not self.coord_names:
            names = ("q",) if self.dof == 1 else tuple(f"q{i}" for i in range(self.dof))
            object.__setattr__(self, "coord_names", names)
        if self.scale_groups is None:
            object.__setattr__(self, "scale_groups", (self.param_names,))
        grouped = [name for group in self.scale_groups for name in group]
        if len(grouped) != len(set(grouped)) or not set(grouped) <= set(self.param_names):
            raise ValueError(f"system {self.name!r}: scale_groups must be disjoint parameter sets")

    @property
    def n_params(self) -> int:
        return len(self.param_names)

    def parameter_ratios(self, gauge: Optional[str] = None) -> tuple["ParameterRatio", ...]:
        """How each parameter is reported: relative to which gauge, and whether q̈ fixes it.

        Args:
            gauge: the config's ``system.gauge``: the parameter that fixes the scale of its
                own scale group (the other groups keep their first member). ``None``: every
                group's first member.

        Returns:
            One ``ParameterRatio`` per parameter, in ``param_names`` order.
        """
        if gauge is not None:
            owner = [group for group in self.scale_groups if gauge in group]
            if gauge not in self.param_names:
                raise ArgumentError(
                    "gauge", f"unknown parameter {gauge!r}; "
                    f"parameters: {', '.join(self.param_names)}"
                )
            if not owner or len(owner[0]) == 1:
                raise ArgumentError(
                    "gauge", f"{gauge!r} cannot be a gauge for system {self.name!r}: "
                    f"q̈ does not fix its scale against other parameters "
                    f"(scale groups: {_describe_groups(self.scale_groups)})"
                )
        ratios = {}
        for group in self.scale_groups:
            group_gauge = gauge if gauge in group else group[0]
            for name in group:
                if len(group) == 1:
                    ratios[name] = ParameterRatio(name, None, "unidentifiable")
                else:
                    status = "gauge" if name == group_gauge else "ratio"
                    ratios[name] = ParameterRatio(name, group_gauge, status)
        return tuple(
            ratios.get(name, ParameterRatio(name, None, "absolute")) for name in self.param_names
        )


class ParameterRatio(NamedTuple):
    """How one parameter is reported (see ``System.parameter_ratios``).

    ``denominator`` is the gauge of the parameter's scale group (``None`` for
    ``"absolute"`` and ``"unidentifiable"``). ``status``: ``"ratio"`` (name/denominator
    is identifiable), ``"gauge"`` (the
    denominator itself: its ratio is 1 by definition), ``"absolute"`` (the raw value is
    identifiable: no scaling of it leaves q̈ unchanged), ``"unidentifiable"`` (q̈ fixes
    neither its value nor its ratio to another parameter, e.g. an overall factor of L).
    """

    name: str
    denominator: Optional[str]
    status: Literal["ratio", "gauge", "absolute", "unidentifiable"]


def _describe_groups(groups: tuple[tuple[str, ...], ...]) -> str:
    return ", ".join("(" + ", ".join(group) + ")" for group in groups) or "none"


#: name -> factory(spec) -> System, where spec is the plain-dict ``system`` config.
SystemFactory = Callable[[Mapping[str, Any]], System]
SYSTEMS: Registry[SystemFactory] = Registry("system", "system")
#: ``@register_system(name)``: register ``factory(spec) -> System`` (the YAML's ``system.name``)
register_system = SYSTEMS.register


def register_fixed_system(system: System) -> System:
    """Register a system whose math does not depend on its config."""
    register_system(system.name)(lambda spec: system)
    return system


def build_system(spec: Mapping[str, Any]) -> System:
    """Build the System that a ``system`` config names, checking its parameters match."""
    name = spec.get("name")
    system = SYSTEMS.lookup(name)(spec)
    given = tuple(spec.get("params") or {})
    if set(given) != set(system.param_names):
        raise ArgumentError(
            "params", f"system {name!r} has parameters {', '.join(system.param_names)}; "
            f"got {', '.join(given) or 'none'}"
        )
    return system


def true_params(system: System, spec: Mapping[str, Any]) -> Tensor:
    """The (P,) vector of the config's parameter values, in the system's order (float64).

    A value of None (``null`` in the config: unknown, e.g. for measured data) is NaN.
    """
    params = spec["params"]
    values = [float("nan") if params[n] is None else float(params[n]) for n in system.param_names]
    return torch.tensor(values, dtype=torch.float64)


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
    System(
        "harmonic",
        _harmonic_lagrangian,
        ("m", "k"),
        dof=1,
        closed_form=_harmonic_qdd,
        linear_in_params=True,
    )
)
ANHARMONIC = register_fixed_system(
    System(
        "anharmonic",
        _anharmonic_lagrangian,
        ("m", "k", "alpha"),
        dof=1,
        closed_form=_anharmonic_qdd,
        linear_in_params=True,
    )
)


def _duffing_lagrangian(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """Duffing oscillator, θ = (m, k, β):  L = ½ m q̇² − ½ k q² − ¼ β q⁴.

    Every term is linear in θ, so only the common scale is free: k/m and β/m are
    identifiable (gauge m), given states with |q| large enough for q³ to differ from q.
    """
    m, k, beta = theta[..., 0], theta[..., 1], theta[..., 2]
    x, v = q[..., 0], qd[..., 0]
    return 0.5 * m * v**2 - 0.5 * k * x**2 - 0.25 * beta * x**4


def _duffing_qdd(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """m q̈ = −k q − β q³."""
    m, k, beta = theta[..., 0], theta[..., 1], theta[..., 2]
    x = q[..., 0]
    return (-(k * x + beta * x**3) / m).unsqueeze(-1)


def _pendulum_lagrangian(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """Simple pendulum, θ = (m, l, g), q = angle from the downward vertical:

        L = ½ m l² q̇² + m g l cos q  =  m l² ( ½ q̇² + (g/l) cos q ).

    q̈ = −(g/l) sin q depends on g/l only. Two scalings leave it unchanged: m alone (m
    is the overall scale of L, so it is not identifiable at all) and (l, g) together.
    Scale groups (m), (l, g): reported ratio g/l, gauge l; m is reported unidentifiable.
    """
    m, length, g = theta[..., 0], theta[..., 1], theta[..., 2]
    x, v = q[..., 0], qd[..., 0]
    return 0.5 * m * length**2 * v**2 + m * g * length * torch.cos(x)


def _pendulum_qdd(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """q̈ = −(g/l) sin q."""
    length, g = theta[..., 1], theta[..., 2]
    return (-(g / length) * torch.sin(q[..., 0])).unsqueeze(-1)


def _pendulum_coefficients(theta: Tensor) -> Tensor:
    """c = (m l², m g l): L = c₀ ½ q̇² + c₁ cos q."""
    m, length, g = theta[..., 0], theta[..., 1], theta[..., 2]
    return torch.stack((m * length**2, m * g * length), dim=-1)


def _pendulum_in_coefficients(q: Tensor, qd: Tensor, c: Tensor) -> Tensor:
    return 0.5 * c[..., 0] * qd[..., 0] ** 2 + c[..., 1] * torch.cos(q[..., 0])


def _double_pendulum_lagrangian(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """Planar double pendulum, θ = (m1, m2, l1, l2, g), q = (θ1, θ2) from the vertical.

    Point masses m1 at (l1 sin θ1, −l1 cos θ1) and m2 a further l2 along angle θ2:

        L = ½ (m1 + m2) l1² θ̇1² + ½ m2 l2² θ̇2² + m2 l1 l2 θ̇1 θ̇2 cos(θ1 − θ2)
            + (m1 + m2) g l1 cos θ1 + m2 g l2 cos θ2.

    The masses scale together (L -> cL) and so do (l1, l2, g) (every term ∝ length²
    or g·length, L -> c²L). Scale groups (m1, m2), (l1, l2, g): the identifiable
    ratios are m2/m1, l2/l1 and g/l1 (gauges m1 and l1). The mass matrix has
    det = m2 l1² l2² (m1 + m2 sin²(θ1 − θ2)) > 0, so it is never singular.
    """
    m1, m2, l1, l2, g = (theta[..., i] for i in range(5))
    th1, th2 = q[..., 0], q[..., 1]
    w1, w2 = qd[..., 0], qd[..., 1]
    kinetic = (
        0.5 * (m1 + m2) * l1**2 * w1**2
        + 0.5 * m2 * l2**2 * w2**2
        + m2 * l1 * l2 * w1 * w2 * torch.cos(th1 - th2)
    )
    potential = -(m1 + m2) * g * l1 * torch.cos(th1) - m2 * g * l2 * torch.cos(th2)
    return kinetic - potential


def _double_pendulum_coefficients(theta: Tensor) -> Tensor:
    """c = ((m1+m2) l1², m2 l2², m2 l1 l2, (m1+m2) g l1, m2 g l2), in the order of the terms
    ½ c₀ θ̇1² + ½ c₁ θ̇2² + c₂ θ̇1 θ̇2 cos(θ1 − θ2) + c₃ cos θ1 + c₄ cos θ2."""
    m1, m2, l1, l2, g = (theta[..., i] for i in range(5))
    total = m1 + m2
    return torch.stack(
        (total * l1**2, m2 * l2**2, m2 * l1 * l2, total * g * l1, m2 * g * l2), dim=-1
    )


def _double_pendulum_in_coefficients(q: Tensor, qd: Tensor, c: Tensor) -> Tensor:
    th1, th2 = q[..., 0], q[..., 1]
    w1, w2 = qd[..., 0], qd[..., 1]
    return (
        0.5 * c[..., 0] * w1**2
        + 0.5 * c[..., 1] * w2**2
        + c[..., 2] * w1 * w2 * torch.cos(th1 - th2)
        + c[..., 3] * torch.cos(th1)
        + c[..., 4] * torch.cos(th2)
    )


def _double_pendulum_qdd(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """The textbook equations of motion, with Δ = θ1 − θ2 and
    den = 2 m1 + m2 − m2 cos 2Δ  (= 2 (m1 + m2 sin²Δ)):

        θ̈1 = [−g (2m1 + m2) sin θ1 − m2 g sin(θ1 − 2θ2)
               − 2 sin Δ m2 (θ̇2² l2 + θ̇1² l1 cos Δ)] / (l1 den)
        θ̈2 = [2 sin Δ (θ̇1² l1 (m1 + m2) + g (m1 + m2) cos θ1 + θ̇2² l2 m2 cos Δ)] / (l2 den)
    """
    m1, m2, l1, l2, g = (theta[..., i] for i in range(5))
    th1, th2 = q[..., 0], q[..., 1]
    w1, w2 = qd[..., 0], qd[..., 1]
    delta = th1 - th2
    den = 2 * m1 + m2 - m2 * torch.cos(2 * delta)
    acc1 = (
        -g * (2 * m1 + m2) * torch.sin(th1)
        - m2 * g * torch.sin(th1 - 2 * th2)
        - 2 * torch.sin(delta) * m2 * (w2**2 * l2 + w1**2 * l1 * torch.cos(delta))
    ) / (l1 * den)
    acc2 = (
        2
        * torch.sin(delta)
        * (
            w1**2 * l1 * (m1 + m2)
            + g * (m1 + m2) * torch.cos(th1)
            + w2**2 * l2 * m2 * torch.cos(delta)
        )
    ) / (l2 * den)
    return torch.stack((acc1, acc2), dim=-1)


def _coupled_oscillators_lagrangian(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """Two masses, three springs (wall –k1– m1 –kc– m2 –k2– wall), θ = (m1, m2, k1, k2, kc),
    q = displacements from equilibrium:

        L = ½ m1 q̇0² + ½ m2 q̇1² − ½ k1 q0² − ½ k2 q1² − ½ kc (q1 − q0)².

    Linear in θ, so only the common scale is free: m2/m1, k1/m1, k2/m1, kc/m1 are all
    identifiable (gauge m1) as long as kc ≠ 0 (the coupling ties the two masses' scales).
    """
    m1, m2, k1, k2, kc = (theta[..., i] for i in range(5))
    x1, x2 = q[..., 0], q[..., 1]
    v1, v2 = qd[..., 0], qd[..., 1]
    return (
        0.5 * m1 * v1**2
        + 0.5 * m2 * v2**2
        - 0.5 * k1 * x1**2
        - 0.5 * k2 * x2**2
        - 0.5 * kc * (x2 - x1) ** 2
    )


def _coupled_oscillators_qdd(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """m1 q̈0 = −k1 q0 + kc (q1 − q0),   m2 q̈1 = −k2 q1 − kc (q1 − q0)."""
    m1, m2, k1, k2, kc = (theta[..., i] for i in range(5))
    x1, x2 = q[..., 0], q[..., 1]
    stretch = x2 - x1
    return torch.stack(((-k1 * x1 + kc * stretch) / m1, (-k2 * x2 - kc * stretch) / m2), dim=-1)


DUFFING = register_fixed_system(
    System(
        "duffing",
        _duffing_lagrangian,
        ("m", "k", "beta"),
        dof=1,
        closed_form=_duffing_qdd,
        linear_in_params=True,
    )
)
PENDULUM = register_fixed_system(
    System(
        "pendulum",
        _pendulum_lagrangian,
        ("m", "l", "g"),
        dof=1,
        closed_form=_pendulum_qdd,
        scale_groups=(("m",), ("l", "g")),
        linear_in_params=False,
        coefficients=Coefficients(
            _pendulum_coefficients, _pendulum_in_coefficients, ("m*l**2", "m*g*l")
        ),
    )
)
DOUBLE_PENDULUM = register_fixed_system(
    System(
        "double_pendulum",
        _double_pendulum_lagrangian,
        ("m1", "m2", "l1", "l2", "g"),
        dof=2,
        closed_form=_double_pendulum_qdd,
        scale_groups=(("m1", "m2"), ("l1", "l2", "g")),
        linear_in_params=False,
        coefficients=Coefficients(
            _double_pendulum_coefficients,
            _double_pendulum_in_coefficients,
            ("(m1+m2)*l1**2", "m2*l2**2", "m2*l1*l2", "(m1+m2)*g*l1", "m2*g*l2"),
        ),
    )
)
COUPLED_OSCILLATORS = register_fixed_system(
    System(
        "coupled_oscillators",
        _coupled_oscillators_lagrangian,
        ("m1", "m2", "k1", "k2", "kc"),
        dof=2,
        closed_form=_coupled_oscillators_qdd,
        linear_in_params=True,
    )
)
