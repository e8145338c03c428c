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


def simulate(lagrangian: str, params: list[str], theta, dof: int, state0, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(q (n, D), q̇ (n, D)) at the times t, from DOP853 at rtol 1e-12 on sympy's q̈."""
    key = (lagrangian, tuple(params), dof)
    if key not in _EOM:
        _EOM[key] = sympy_qdd(lagrangian, params, dof)
    qdd = _EOM[key]

    def rhs(_, y):
        q, qd = y[:dof][None], y[dof:][None]
        return np.concatenate([y[dof:], qdd(q, qd, theta)[0]])

    sol = solve_ivp(rhs, (t[0], t[-1]), np.asarray(state0, float), method="DOP853", t_eval=t,
                    rtol=1e-12, atol=1e-12)
    assert sol.success, sol.message
    return sol.y[:dof].T.copy(), sol.y[dof:].T.copy()


def double_pendulum_runs(n_runs: int, n_samples: int, dt: float = 0.01, seed: int = 0):
    """[(t, q, q̇)] of n_runs runs from random moderate starting states."""
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) * dt
    runs = []
    for _ in range(n_runs):
        state0 = np.concatenate([rng.uniform(-1.2, 1.2, 2), rng.uniform(-1.0, 1.0, 2)])
        q, qd = simulate(DOUBLE_PENDULUM, DP_PARAMS, DP_TRUTH, 2, state0, t)
        runs.append((t.copy(), q, qd))
    return runs
