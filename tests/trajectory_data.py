"""Trajectories lagfit never made: scipy's DOP853 (rtol 1e-12) on equations of motion that
sympy derives from the Lagrangian's text (``sympy_eom``). Shared by the trajectory tests and
bench/trajectory_bench.py."""

from __future__ import annotations

import numpy as np
from scipy.integrate import solve_ivp

from sympy_eom import sympy_qdd

DOUBLE_PENDULUM = (
    "0.5*(m1+m2)*l1**2*qd0**2 + 0.5*m2*l2**2*qd1**2 + m2*l1*l2*qd0*qd1*cos(q0-q1)"
    " + (m1+m2)*g*l1*cos(q0) + m2*g*l2*cos(q1)"
)
DP_PARAMS = ["m1", "m2", "l1", "l2", "g"]
DP_TRUTH = [1.0, 1.5, 1.0, 0.7, 9.81]
#: identifiable ratios of the double pendulum: m2/m1, l2/l1, g/l1
DP_RATIOS = {"m2/m1": 1.5, "l2/l1": 0.7, "g/l1": 9.81}

_EOM = {}


def simulate_runs(lagrangian: str, params: list[str], theta, dof: int, states0, t: np.ndarray):
    """[(q (n, D), q̇ (n, D))] at the times t, one per starting state: DOP853 on sympy's q̈,
    all runs as one ODE (one call of the equations per step, for every run), with rtol and
    atol 1e-12/√runs, so that each run's error meets 1e-12 as if it were integrated alone
    (the step's error is the RMS over all components)."""
    key = (lagrangian, tuple(params), dof)
    if key not in _EOM:
        _EOM[key] = sympy_qdd(lagrangian, params, dof)
    qdd = _EOM[key]
    states0 = np.atleast_2d(np.asarray(states0, float))
    runs = len(states0)

    def rhs(_, y):
        state = y.reshape(runs, 2 * dof)
        q, qd = state[:, :dof], state[:, dof:]
        return np.concatenate([qd, qdd(q, qd, theta)], axis=1).ravel()

    tol = 1e-12 / np.sqrt(runs)
    sol = solve_ivp(rhs, (t[0], t[-1]), states0.ravel(), method="DOP853", t_eval=t, rtol=tol, atol=tol)
    assert sol.success, sol.message
    states = sol.y.T.reshape(len(t), runs, 2 * dof)
    return [(states[:, r, :dof].copy(), states[:, r, dof:].copy()) for r in range(runs)]


def simulate(lagrangian: str, params: list[str], theta, dof: int, state0, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q (n, D), q̇ (n, D)) at the times t, from DOP853 at rtol 1e-12 on sympy's q̈."""
    return simulate_runs(lagrangian, params, theta, dof, [state0], t)[0]


def double_pendulum_runs(n_runs: int, n_samples: int, dt: float = 0.01, seed: int = 0):
    """[(t, q, q̇)] of n_runs runs from random moderate starting states."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) * dt
    states0 = [np.concatenate([rng.uniform(-1.2, 1.2, 2), rng.uniform(-1.0, 1.0, 2)]) for _ in range(n_runs)]
    return [(t.copy(), q, qd) for q, qd in simulate_runs(DOUBLE_PENDULUM, DP_PARAMS, DP_TRUTH, 2, states0, t)]
