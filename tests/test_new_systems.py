"""The new built-in systems with friction, time and forces: lagfit's q̈ against equations of
motion that sympy derives from Lagrangians written here (from the geometry, for the
cart-pole), and the plain commands that fit them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lagfit_cli.core.solvers import SOLVERS
from lagfit_cli.core.systems import SYSTEMS

from conftest import metrics
from sympy_eom import sympy_qdd


OMEGA, G = 1.2, 9.81
# name -> (L, R, params, dof, time-dependent), written independently of lagfit's code
REFERENCE = {
    "damped_oscillator": ("0.5*m*qd**2 - 0.5*k*q**2", "0.5*c*qd**2", ["m", "k", "c"], 1, False),
    "driven_duffing": (
        f"0.5*m*qd**2 - 0.5*k*q**2 - 0.25*beta*q**4 + F*q*cos({OMEGA}*t)",
        "0.5*c*qd**2", ["m", "k", "beta", "c", "F"], 1, True,
    ),
    # point mass m at (x + l sin θ, l cos θ) on a cart of mass M at x; θ from the upward vertical
    "cart_pole": (
        "0.5*M*qd0**2 + 0.5*m*((qd0 + l*cos(q1)*qd1)**2 + (l*sin(q1)*qd1)**2)"
        f" - m*{G}*l*cos(q1)",
        "0.5*c_x*qd0**2 + 0.5*c_theta*qd1**2", ["M", "m", "l", "c_x", "c_theta"], 2, False,
    ),
}
SOLVER_NAMES = ("closed_form", "fast", "broadcast", "batched", "vmap", "loop")


@pytest.mark.parametrize("name", list(REFERENCE))
def test_qdd_matches_sympy_for_every_solver(name):
    lagrangian, dissipation, params, dof, timed = REFERENCE[name]
    system = SYSTEMS.lookup(name)({"name": name})
    assert system.param_names == tuple(params) and system.dof == dof
    assert system.time_dependent is timed and system.dissipation is not None
    reference = sympy_qdd(lagrangian, params, dof, dissipation)
    rng = np.random.default_rng(3)
    n = 12
    q, qd = rng.uniform(-1.5, 1.5, (n, dof)), rng.uniform(-2, 2, (n, dof))
    t, forces = rng.uniform(0, 10, n), rng.uniform(-3, 3, (n, dof))
    thetas = rng.uniform(0.2, 2.0, (2, len(params)))
    as_t = lambda x: torch.tensor(x, dtype=torch.float64)  # noqa: E731
    for solver in SOLVER_NAMES:
        if solver == "loop" and name == "cart_pole":
            continue  # slow and covered by the others; the loop solver is checked on D = 1
        got = SOLVERS[solver](
            system, as_t(q), as_t(qd), as_t(thetas), t=as_t(t) if timed else None, Q=as_t(forces)
        ).numpy()
        for b, theta in enumerate(thetas):
            want = reference(q, qd, theta, t=t, Q=forces)
            assert np.abs(got[b] - want).max() <= 1e-12 * max(1.0, np.abs(want).max()), (solver, b)


def test_cart_pole_without_a_force_matches_too():
    lagrangian, dissipation, params, dof, _ = REFERENCE["cart_pole"]
    system = SYSTEMS.lookup("cart_pole")({"name": "cart_pole", "constants": {"g": G}})
    rng = np.random.default_rng(5)
    q, qd = rng.uniform(-3, 3, (20, 2)), rng.uniform(-2, 2, (20, 2))
    theta = np.array([1.0, 0.3, 0.5, 0.1, 0.02])
    got = SOLVERS["fast"](system, torch.tensor(q), torch.tensor(qd), torch.tensor(theta)[None])[0].numpy()
    want = sympy_qdd(lagrangian, params, dof, dissipation)(q, qd, theta)
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()


def test_scale_groups_with_and_without_forces():
    cart = SYSTEMS.lookup("cart_pole")({"name": "cart_pole"})
    statuses = {r.name: r.status for r in cart.parameter_ratios()}
    assert statuses == {"M": "gauge", "m": "ratio", "l": "absolute", "c_x": "ratio", "c_theta": "ratio"}
    assert {r.status for r in cart.with_forces().parameter_ratios()} == {"absolute"}
    damped = SYSTEMS.lookup("damped_oscillator")({"name": "damped_oscillator"})
    assert [r.status for r in damped.parameter_ratios()] == ["gauge", "ratio", "ratio"]
    assert [r.status for r in damped.with_forces().parameter_ratios()] == ["absolute"] * 3


EXPECTED = {  # the plain command: values and how they are reported
    "damped_oscillator": {"m": "absolute", "k": "absolute", "c": "absolute"},
    "driven_duffing": {"k/m": "ratio", "beta/m": "ratio", "c/m": "ratio", "F/m": "ratio"},
    "cart_pole": {"M": "absolute", "m": "absolute", "l": "absolute", "c_x": "absolute", "c_theta": "absolute"},
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_plain_command_fits_each_new_system(lagfit, name):
    proc = lagfit(f"system={name}", "report.figures=false", "data.n_points=100", "init.n_starts=4",
                  "uncertainty=none")
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.run_dir)
    assert {label: r["status"] for label, r in m["ratios"].items()} == EXPECTED[name]
    assert m["fit_ok"] is True and m["max_ratio_rel_error"] < 1e-8, m["ratios"]
    forced = all(s == "absolute" for s in EXPECTED[name].values())
    assert m["applied_force"] is forced and m["dissipation"] is True
    assert ("absolute values: the applied force" in proc.stderr) is forced


def test_driven_duffing_with_a_force_column_is_absolute(lagfit):
    proc = lagfit(
        "system=driven_duffing", "data.force=[-1,1]", "report.figures=false", "data.n_points=100",
        "init.n_starts=4", "system.constants.omega=2.0", "uncertainty=none",
    )
    assert proc.returncode == 0, proc.stderr
    m = metrics(proc.run_dir)
    assert {label: r["status"] for label, r in m["ratios"].items()} == {
        n: "absolute" for n in ("m", "k", "beta", "c", "F")
    }
    assert m["max_ratio_rel_error"] < 1e-8


def test_bound_solver_fills_in_the_datas_times_and_forces():
    # figures, landscapes and noise studies call solver(system, q, qd, theta) on the data
    from lagfit_cli.core.solvers.policy import bind_data

    system = SYSTEMS.lookup("driven_duffing")({"name": "driven_duffing"})
    rng = np.random.default_rng(0)
    q, qd, t, Q = (torch.tensor(rng.uniform(-1, 1, shape)) for shape in ((6, 1), (6, 1), (6,), (6, 1)))
    theta = torch.tensor([[1.0, 1.0, 0.5, 0.2, 0.8]])
    bound = bind_data(SOLVERS["fast"], t, Q)
    want = SOLVERS["closed_form"](system, q, qd, theta, t=t, Q=Q)
    assert torch.allclose(bound(system, q, qd, theta), want, rtol=1e-12, atol=1e-12)
    assert not torch.allclose(SOLVERS["fast"](system, q, qd, theta, t=t), want)  # Q matters
    assert bind_data(SOLVERS["fast"]) is SOLVERS["fast"]
