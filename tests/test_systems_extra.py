"""The multi-DOF and nonlinear built-in systems: solvers vs hand-derived q̈, identifiability,
and their conf/system YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch.func import jacrev

from lagfit_cli import SOLVERS, LagfitError, build_system
from lagfit_cli.core.solvers import check_mass_matrix
from lagfit_cli.core.systems import true_params

CONF = Path(__file__).resolve().parents[1] / "conf" / "system"
NEW_SYSTEMS = ["duffing", "pendulum", "double_pendulum", "coupled_oscillators"]


def load_spec(name: str) -> dict:
    """conf/system/NAME.yaml's system node, with the data bounds it sets."""
    node = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    return {**node["system"], "q_bounds": node["data"]["q_bounds"], "qd_bounds": node["data"]["qd_bounds"]}


def random_states(n: int, dof: int, q_bounds, qd_bounds, seed: int) -> tuple:
    generator = torch.Generator().manual_seed(seed)

    def draw(bounds):
        low, high = bounds
        return low + (high - low) * torch.rand(n, dof, generator=generator, dtype=torch.float64)

    return draw(q_bounds), draw(qd_bounds)


def parameter_batch(theta_true: torch.Tensor, n_starts: int, seed: int) -> torch.Tensor:
    """(B, P): the true parameters and B−1 random perturbations (×0.5 … ×1.5)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (n_starts - 1, len(theta_true))
    factors = 0.5 + torch.rand(shape, generator=generator, dtype=torch.float64)
    return torch.cat((theta_true[None], theta_true * factors))


def assert_relative_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float) -> None:
    scale = expected.abs().max()
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * float(scale))


@pytest.mark.parametrize("solver_name", sorted(SOLVERS))
@pytest.mark.parametrize("name", NEW_SYSTEMS)
def test_every_solver_matches_the_closed_form(name: str, solver_name: str) -> None:
    spec = load_spec(name)
    system = build_system(spec)
    n_points, n_starts = (4, 2) if solver_name == "loop" else (300, 3)
    # States well beyond the YAML bounds: the equations of motion hold everywhere.
    q, qd = random_states(n_points, system.dof, (-3.0, 3.0), (-3.0, 3.0), seed=1)
    theta = parameter_batch(true_params(system, spec), n_starts, seed=2)
    if solver_name == "linear" and not system.linear_in_params:
        # the parameter-linear solver refuses a Lagrangian that is not linear in θ
        with pytest.raises(LagfitError, match="nonlinear in its parameters"):
            SOLVERS[solver_name](system, q, qd, theta)
        return

    qdd = SOLVERS[solver_name](system, q, qd, theta)
    expected = system.closed_form(q, qd, theta[:, None, :])

    assert qdd.shape == (n_starts, n_points, system.dof)
    assert_relative_close(qdd, expected, rtol=1e-10)


def test_closed_forms_agree_with_an_independent_derivation() -> None:
    """Double pendulum: the textbook form vs Cramer's rule on the 2×2 Euler–Lagrange system
    (m1+m2) l1 θ̈1 + m2 l2 cos Δ θ̈2 = f1, l1 cos Δ θ̈1 + l2 θ̈2 = f2."""
    spec = load_spec("double_pendulum")
    system = build_system(spec)
    q, qd = random_states(500, 2, (-3.0, 3.0), (-3.0, 3.0), seed=3)
    m1, m2, l1, l2, g = true_params(system, spec)
    delta = q[:, 0] - q[:, 1]
    f1 = -m2 * l2 * torch.sin(delta) * qd[:, 1] ** 2 - (m1 + m2) * g * torch.sin(q[:, 0])
    f2 = l1 * torch.sin(delta) * qd[:, 0] ** 2 - g * torch.sin(q[:, 1])
    det = m1 + m2 * torch.sin(delta) ** 2
    acc1 = (f1 - m2 * torch.cos(delta) * f2) / (l1 * det)
    acc2 = ((m1 + m2) * f2 - torch.cos(delta) * f1) / (l2 * det)
    expected = torch.stack((acc1, acc2), dim=-1)
    theta = true_params(system, spec)
    assert_relative_close(system.closed_form(q, qd, theta), expected, rtol=1e-12)


@pytest.mark.parametrize("name", NEW_SYSTEMS)
def test_scale_groups_leave_qdd_unchanged(name: str) -> None:
    spec = load_spec(name)
    system = build_system(spec)
    q, qd = random_states(200, system.dof, spec["q_bounds"], spec["qd_bounds"], seed=4)
    theta = true_params(system, spec)
    reference = system.closed_form(q, qd, theta)
    for group in system.scale_groups:
        scaled = theta.clone()
        for parameter in group:
            scaled[system.param_names.index(parameter)] *= 1.7
        assert_relative_close(system.closed_form(q, qd, scaled), reference, rtol=1e-12)


@pytest.mark.parametrize("name", NEW_SYSTEMS)
def test_only_the_scale_groups_are_degenerate_within_the_bounds(name: str) -> None:
    """rank ∂q̈/∂log θ = P − (number of scale groups) on data drawn within the YAML
    bounds, with the identifiable directions well conditioned: so exactly the ratios
    that ``parameter_ratios`` calls identifiable are fixed by the data."""
    spec = load_spec(name)
    system = build_system(spec)
    q, qd = random_states(500, system.dof, spec["q_bounds"], spec["qd_bounds"], seed=5)
    log_theta = true_params(system, spec).log()

    def qdd_of_log_theta(log_params: torch.Tensor) -> torch.Tensor:
        return system.closed_form(q, qd, log_params.exp()).flatten()

    singular_values = torch.linalg.svdvals(jacrev(qdd_of_log_theta)(log_theta))
    relative = singular_values / singular_values[0]
    n_identifiable = system.n_params - len(system.scale_groups)
    assert bool((relative[:n_identifiable] > 1e-3).all()), relative
    assert bool((relative[n_identifiable:] < 1e-12).all()), relative


@pytest.mark.parametrize("name", NEW_SYSTEMS)
def test_mass_matrix_is_well_conditioned_within_the_bounds(name: str) -> None:
    spec = load_spec(name)
    system = build_system(spec)
    q, qd = random_states(1000, system.dof, spec["q_bounds"], spec["qd_bounds"], seed=6)
    check_mass_matrix(system, q, qd, true_params(system, spec))


def ratio_table(name: str, gauge=None) -> dict:
    system = build_system(load_spec(name))
    return {r.name: (r.denominator, r.status) for r in system.parameter_ratios(gauge)}


def test_identifiable_ratios_per_system() -> None:
    assert ratio_table("duffing") == {
        "m": ("m", "gauge"),
        "k": ("m", "ratio"),
        "beta": ("m", "ratio"),
    }
    assert ratio_table("pendulum", "l") == {
        "m": (None, "unidentifiable"),
        "l": ("l", "gauge"),
        "g": ("l", "ratio"),
    }
    assert ratio_table("double_pendulum") == {
        "m1": ("m1", "gauge"),
        "m2": ("m1", "ratio"),
        "l1": ("l1", "gauge"),
        "l2": ("l1", "ratio"),
        "g": ("l1", "ratio"),
    }
    assert ratio_table("coupled_oscillators") == {
        "m1": ("m1", "gauge"),
        **{p: ("m1", "ratio") for p in ("m2", "k1", "k2", "kc")},
    }


def test_a_configured_gauge_only_moves_its_own_group() -> None:
    table = ratio_table("double_pendulum", "l2")
    assert table["l1"] == ("l2", "ratio") and table["g"] == ("l2", "ratio")
    assert table["m2"] == ("m1", "ratio")


@pytest.mark.parametrize(
    "name, gauge, message",
    [
        ("pendulum", "m", "'m' cannot be a gauge"),
        ("duffing", "mass", "unknown parameter 'mass'"),
    ],
)
def test_a_bad_gauge_is_one_clear_line(name: str, gauge: str, message: str) -> None:
    system = build_system(load_spec(name))
    with pytest.raises(LagfitError, match=message) as error:
        system.parameter_ratios(gauge)
    assert str(error.value).startswith("gauge: ") and "\n" not in str(error.value)
