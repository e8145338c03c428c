"""Equations of motion derived independently of lagfit: sympy differentiates the Lagrangian's
text (Euler–Lagrange), solves for q̈, and numpy evaluates it. Used by the tests and by
bench/fit_bench.py as the source of data lagfit never made."""

from __future__ import annotations

import numpy as np
import sympy as sp


def sympy_qdd(lagrangian: str, params: list[str], dof: int, dissipation: str = "0"):
    """q̈(q (N, D), q̇ (N, D), θ (P,), t=None, Q=None) -> (N, D), from
    d/dt ∂L/∂q̇ − ∂L/∂q + ∂R/∂q̇ = Q.

    The expressions may use the time ``t`` (then pass ``t`` (N,)); ``Q`` (N, D) are applied
    generalised forces (zero when not given). d/dt ∂L/∂q̇ = M q̈ + (∂²L/∂q̇∂q) q̇ + ∂²L/∂q̇∂t.
    """
    q = sp.symbols([f"q{i}" for i in range(dof)])
    qd = sp.symbols([f"qd{i}" for i in range(dof)])
    forces = sp.symbols([f"Q{i}" for i in range(dof)])
    time = sp.Symbol("t")
    theta = sp.symbols(params)
    names = {f"q{i}": q[i] for i in range(dof)} | {f"qd{i}": qd[i] for i in range(dof)}
    names |= {"q": q[0], "qd": qd[0]} if dof == 1 else {}
    names |= dict(zip(params, theta)) | {"t": time}
    L = sp.sympify(lagrangian, locals=names)
    R = sp.sympify(dissipation, locals=names)
    mass = sp.Matrix(dof, dof, lambda i, j: sp.diff(L, qd[i], qd[j]))
    force = sp.Matrix(
        [
            sp.diff(L, q[i])
            - sum(sp.diff(L, qd[i], q[j]) * qd[j] for j in range(dof))
            - sp.diff(L, qd[i], time)
            - sp.diff(R, qd[i])
            + forces[i]
            for i in range(dof)
        ]
    )
    acc = mass.LUsolve(force)
    fn = sp.lambdify((q, qd, theta, time, forces), list(acc), "numpy")

    def qdd(qv: np.ndarray, qdv: np.ndarray, th, t=None, Q=None) -> np.ndarray:
        n = qv.shape[0]
        tv = np.zeros(n) if t is None else np.asarray(t, dtype=float)
        Qv = np.zeros((n, dof)) if Q is None else np.asarray(Q, dtype=float)
        values = fn(list(qv.T), list(qdv.T), list(th), tv, list(Qv.T))
        return np.stack(np.broadcast_arrays(*values, np.zeros(n))[:-1], axis=-1).astype(float)

    return qdd


def columns(q: np.ndarray, qd: np.ndarray, qdd: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays as lagfit's column names q0.., qd0.., qdd0.."""
    out = {f"q{i}": q[:, i] for i in range(q.shape[1])}
    out |= {f"qd{i}": qd[:, i] for i in range(q.shape[1])}
    out |= {f"qdd{i}": qdd[:, i] for i in range(q.shape[1])}
    return out


def uniform_states(n: int, dof: int, q_max: float, qd_max: float, seed: int):
    rng = np.random.default_rng(seed)
    return rng.uniform(-q_max, q_max, (n, dof)), rng.uniform(-qd_max, qd_max, (n, dof))
