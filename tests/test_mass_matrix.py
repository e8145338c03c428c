"""check_mass_matrix: singular, ill-conditioned or non-finite ∂²L/∂q̇∂q̇ᵀ is reported, not
turned into NaN losses."""

from __future__ import annotations

import pytest
import torch

from lagfit_cli import LagfitError, build_system
from lagfit_cli.core.solvers import check_mass_matrix
from conftest import uniform_states

DTYPE = torch.float64


def custom(lagrangian: str, params: dict):
    return build_system({"name": "custom", "params": params, "lagrangian": lagrangian})


def message_of(system, q, qd, theta) -> str:
    with pytest.raises(LagfitError) as error:
        check_mass_matrix(system, q, qd, torch.tensor(theta, dtype=DTYPE))
    text = str(error.value)
    assert "\n" not in text
    return text


def test_well_posed_systems_pass():
    q, qd = uniform_states(500, 1)
    harmonic = build_system({"name": "harmonic", "params": {"m": 2, "k": 4}})
    check_mass_matrix(harmonic, q, qd, torch.tensor([2.0, 4.0], dtype=DTYPE))
    q2, qd2 = uniform_states(500, 2)
    coupled = custom("0.5*m*(qd0**2 + 4*qd1**2) - 0.5*k*(q0 - q1)**2", {"m": 1.0, "k": 3.0})
    check_mass_matrix(coupled, q2, qd2, torch.tensor([1.0, 3.0], dtype=DTYPE))


def test_a_lagrangian_without_velocities_is_singular_everywhere():
    q, qd = uniform_states(2500, 1)
    system = custom("-0.5*k*q0**2 + m*q0", {"m": 1.0, "k": 2.0})
    text = message_of(system, q, qd, [1.0, 2.0])
    assert text.startswith("mass matrix ∂²L/∂q̇∂q̇ᵀ is singular at 2500 of 2500 data points")
    assert f"(e.g. q={q[0, 0].item():.4g}, q̇={qd[0, 0].item():.4g})" in text
    assert text.endswith("the Lagrangian needs a kinetic term (a q̇ dependence) in every coordinate")


def test_a_coordinate_without_its_velocity_is_singular_everywhere():
    q, qd = uniform_states(300, 2)
    system = custom("0.5*m*qd0**2 - 0.5*k*(q0**2 + q1**2)", {"m": 1.0, "k": 2.0})
    assert "singular at 300 of 300" in message_of(system, q, qd, [1.0, 2.0])


def test_isolated_zeros_are_counted():
    """Anharmonic H = m − 2αq² vanishes exactly at q = ±1 for m = 1, α = 1/2."""
    system = build_system({"name": "anharmonic", "params": {"m": 1, "k": 2, "alpha": 0.5}})
    q = torch.linspace(-1, 1, 201, dtype=DTYPE)[:, None]
    qd = torch.full_like(q, 0.3)
    text = message_of(system, q, qd, [1.0, 2.0, 0.5])
    assert "singular at 2 of 201 data points (e.g. q=-1, q̇=0.3)" in text
    assert "narrow the state bounds" in text


def test_ill_conditioned_points():
    q, qd = uniform_states(100, 2)
    lagrangian = "0.5*m*qd0**2 + 0.5*m*eps*qd1**2 - 0.5*(q0**2 + q1**2)"
    system = custom(lagrangian, {"m": 1.0, "eps": 1e-3})
    check_mass_matrix(system, q, qd, torch.tensor([1.0, 1e-3], dtype=DTYPE))
    text = message_of(system, q, qd, [1.0, 1e-14])
    assert "ill-conditioned (condition number > 1e+12) at 100 of 100" in text


def test_non_finite_points():
    q, qd = uniform_states(400, 1)
    system = custom("m*sqrt(q0)*qd0**2 - k*q0**2", {"m": 1.0, "k": 2.0})
    n_negative = int((q < 0).sum())
    assert f"not finite at {n_negative} of 400" in message_of(system, q, qd, [1.0, 2.0])


def test_float32_uses_a_looser_limit():
    q, qd = (t.float() for t in uniform_states(100, 2))
    lagrangian = "0.5*m*qd0**2 + 0.5*m*eps*qd1**2 - 0.5*(q0**2 + q1**2)"
    system = custom(lagrangian, {"m": 1.0, "eps": 1.0})
    check_mass_matrix(system, q, qd, torch.tensor([1.0, 1e-3]))
    with pytest.raises(LagfitError, match="ill-conditioned"):
        check_mass_matrix(system, q, qd, torch.tensor([1.0, 1e-6]))
