"""Every solver computes eq. 6; checked against closed forms, values and θ-gradients."""

import pytest
import torch

from lagfit_cli.core.solvers import SOLVERS, solve_mass_matrix
from lagfit_cli.core.systems import ANHARMONIC, HARMONIC, System
from conftest import uniform_states as states

EAGER = ["batched", "vmap", "closed_form"]


def rel_err(a, b):
    return float(((a - b).abs() / b.abs().clamp_min(1e-12)).max())


@pytest.mark.parametrize("solver", EAGER)
def test_harmonic_is_minus_k_over_m_q(solver):
    q, qd = states(200)
    theta = torch.tensor([[2.0, 4.0], [1.5, 0.3], [3.0, 9.0]])
    qdd = SOLVERS[solver](HARMONIC, q, qd, theta)
    assert qdd.shape == (3, 200, 1)
    expected = -(theta[:, 1] / theta[:, 0])[:, None, None] * q[None]
    assert rel_err(qdd, expected) < 1e-10


@pytest.mark.parametrize("solver", EAGER)
def test_anharmonic_closed_form(solver):
    q, qd = states(300, seed=1)
    theta = torch.tensor([[2.0, 4.0, 0.5], [1.0, 2.5, -0.3]])
    qdd = SOLVERS[solver](ANHARMONIC, q, qd, theta)
    m, k, a = (theta[:, i, None] for i in range(3))
    expected = ((-k * q[None, :, 0] + 2 * a * q[None, :, 0] * qd[None, :, 0] ** 2) / (m - 2 * a * q[None, :, 0] ** 2))[..., None]
    assert rel_err(qdd, expected) < 1e-10


def test_loop_solver_matches_on_a_few_points():
    q, qd = states(6, seed=2)
    theta = torch.tensor([[2.0, 4.0, 0.5], [1.0, 3.0, 0.1]])
    assert rel_err(SOLVERS["loop"](ANHARMONIC, q, qd, theta), ANHARMONIC.closed_form(q, qd, theta[:, None, :])) < 1e-10


@pytest.mark.parametrize("solver", ["batched", "vmap", "loop"])
def test_gradient_wrt_theta_matches_closed_form(solver):
    q, qd = states(5 if solver == "loop" else 100, seed=3)
    target = ANHARMONIC.closed_form(q, qd, torch.tensor([2.0, 4.0, 0.5]))

    def loss_grad(fn):
        theta = torch.tensor([[1.7, 3.1, 0.2], [2.4, 4.4, 0.7]], requires_grad=True)
        loss = (fn(theta) - target).pow(2).mean(dim=(1, 2)).sum()
        return torch.autograd.grad(loss, theta)[0]

    got = loss_grad(lambda th: SOLVERS[solver](ANHARMONIC, q, qd, th))
    want = loss_grad(lambda th: ANHARMONIC.closed_form(q, qd, th[:, None, :]))
    assert rel_err(got, want) < 1e-10


def _coupled_lagrangian(q, qd, theta):
    """Two coordinates with a non-diagonal mass matrix: L = ½ q̇ᵀMq̇ − ½ qᵀKq."""
    m1, m2, mc, k1, k2 = (theta[..., i] for i in range(5))
    kinetic = 0.5 * (m1 * qd[..., 0] ** 2 + m2 * qd[..., 1] ** 2) + mc * qd[..., 0] * qd[..., 1]
    potential = 0.5 * (k1 * q[..., 0] ** 2 + k2 * q[..., 1] ** 2)
    return kinetic - potential


@pytest.mark.parametrize("solver", ["batched", "vmap", "loop"])
def test_two_dof_linear_solve(solver):
    system = System("coupled_test", _coupled_lagrangian, ("m1", "m2", "mc", "k1", "k2"), dof=2)
    q, qd = states(4 if solver == "loop" else 50, dof=2, seed=4)
    theta = torch.tensor([[2.0, 1.0, 0.4, 3.0, 5.0]])
    mass = torch.tensor([[2.0, 0.4], [0.4, 1.0]])
    stiffness = torch.diag(torch.tensor([3.0, 5.0]))
    expected = -(torch.linalg.solve(mass, stiffness) @ q.T).T
    assert rel_err(SOLVERS[solver](system, q, qd, theta)[0], expected) < 1e-10


def test_one_by_one_solve_is_division():
    h = torch.tensor([[[2.0]], [[4.0]]])
    rhs = torch.tensor([[1.0], [2.0]])
    assert torch.equal(solve_mass_matrix(h, rhs), torch.tensor([[0.5], [0.5]]))
