"""Simulation and rollout benchmark (issue 13, items 4–5).

1. Speed: ``lagfit_cli.simulate`` of the double pendulum, 100 runs × 10 s (dt = 0.01 s,
   DOP853, rtol = atol = 1e-10) as one ODE (the default); 10 runs as one ODE against one
   solve_ivp per run; q̈ from the closed form (``solver=auto``) and from plain autograd (``autograd``,
   what a custom expression uses; ``--full`` only, it is slow).
2. The rollout goal: "on clean data, the fitted model's prediction stays within 1 % of the
   range of q for at least 2 s of the double pendulum". Data lagfit never made: scipy
   DOP853 at rtol 1e-12 on sympy-derived equations (tests/sympy_eom.py), 10 runs × 1000
   samples, dt = 0.01 s, with exact q, q̇ and q̈ (sympy's) at every sample; every parameter
   unknown to the fit (lagfit's defaults, every ``--stride``-th sample); then
   ``lagfit_cli.rollout`` from each run's first state over 2 s and over the whole run.

    .venv/bin/python bench/simulate_bench.py [--out outputs/simulate_bench.csv] [--full] [--stride 5]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sympy_eom import sympy_qdd  # noqa: E402  (independent of lagfit)

DOUBLE_PENDULUM_L = (
    "0.5*(m1+m2)*l1**2*qd0**2 + 0.5*m2*l2**2*qd1**2 + m2*l1*l2*qd0*qd1*cos(q0-q1)"
    " + (m1+m2)*g*l1*cos(q0) + m2*g*l2*cos(q1)"
)
PARAMS = {"m1": 2.0, "m2": 1.0, "l1": 1.5, "l2": 1.0, "g": 9.81}
BOUNDS = dict(q_bounds=(-1.5, 1.5), qd_bounds=(-2.0, 2.0))


def speed_rows(full: bool) -> list[dict]:
    import lagfit_cli as lf

    # one solve_ivp per run is timed on 10 runs (100 take minutes), beside one ODE of 10
    cases = [("double_pendulum", "auto", True, 100), ("double_pendulum", "auto", True, 10),
             ("double_pendulum", "auto", False, 10)]
    if full:
        cases.append((DOUBLE_PENDULUM_L, "autograd", True, 100))
    rows = []
    for system, solver, vectorize, n_runs in cases:
        started = time.perf_counter()
        runs = lf.simulate(system, PARAMS, n_runs=n_runs, duration=10.0, dt=0.01, solver=solver,
                           vectorize=vectorize, seed=0, **BOUNDS)
        wall = time.perf_counter() - started
        rows.append({
            "benchmark": "simulate", "case": f"double pendulum {n_runs} runs x 10 s",
            "system": "built-in" if system == "double_pendulum" else "custom expression",
            "solver": solver + (" (closed form)" if solver == "auto" else ""),
            "vectorize": vectorize, "n_runs": n_runs, "samples": runs.n_samples, "wall_s": wall,
            "value": wall, "unit": "s", "goal": None,
        })
        print(f"simulate {rows[-1]['system']} {solver} vectorize={vectorize}: {wall:.2f} s", flush=True)
    return rows


def reference_data(n_runs: int = 10, n_samples: int = 1000, dt: float = 0.01, seed: int = 0):
    """scipy DOP853 (rtol 1e-12) on sympy's q̈: Trajectories and the exact q̈ per sample."""
    from scipy.integrate import solve_ivp

    import lagfit_cli as lf

    qdd = sympy_qdd(DOUBLE_PENDULUM_L, list(PARAMS), 2)
    theta = list(PARAMS.values())
    rng = np.random.default_rng(seed)
    t = np.arange(n_samples) * dt
    runs, accelerations = [], []
    for r in range(n_runs):
        start = np.concatenate([rng.uniform(-1.5, 1.5, 2), rng.uniform(-2.0, 2.0, 2)])
        sol = solve_ivp(lambda _t, y: np.concatenate([y[2:], qdd(y[None, :2], y[None, 2:], theta)[0]]),
                        (0, t[-1]), start, method="DOP853", t_eval=t, rtol=1e-12, atol=1e-12)
        q, qd = sol.y[:2].T, sol.y[2:].T
        runs.append(lf.Run(t.copy(), q, qd, name=str(r)))
        accelerations.append(qdd(q, qd, theta))
    return lf.Trajectories(tuple(runs), ("q0", "q1")), accelerations


def rollout_rows(stride: int) -> list[dict]:
    import lagfit_cli as lf

    trajectories, accelerations = reference_data()
    pick = lambda arrays: np.concatenate([a[::stride] for a in arrays])  # noqa: E731
    data = {}
    q = pick([r.q for r in trajectories.runs])
    qd = pick([r.qd for r in trajectories.runs])
    qdd = pick(accelerations)
    for i in range(2):
        data[f"q{i}"], data[f"qd{i}"], data[f"qdd{i}"] = q[:, i], qd[:, i], qdd[:, i]
    started = time.perf_counter()
    report = lf.fit("double_pendulum", data, params={k: None for k in PARAMS}, profiles=False)
    fit_s = time.perf_counter() - started
    print(f"fit on {len(q)} exact samples: {report.values} in {fit_s:.1f} s", flush=True)
    rows = []
    for horizon in (2.0, 9.99):
        started = time.perf_counter()
        check = lf.rollout(report, trajectories, horizon=horizon, tolerance=0.01)
        wall = time.perf_counter() - started
        print("\n".join(check.summary()), flush=True)
        rows.append({
            "benchmark": "rollout", "case": f"double pendulum, clean, 10 runs x 1000 samples, horizon {horizon:g} s",
            "system": "built-in", "solver": "auto (closed form)", "vectorize": True, "n_runs": 10,
            "samples": trajectories.n_samples, "wall_s": wall, "value": check.min_time_within, "unit": "s within 1 % (worst run)",
            "goal": 2.0, "rms": check.rms, "median_time_within_s": float(np.median([r.time_within for r in check.runs])),
            "fit_max_rel_error": max(abs(v - t) / abs(t) for v, t in zip(
                (report.values["m2/m1"], report.values["l2/l1"], report.values["g/l1"]), (0.5, 1.0 / 1.5, 9.81 / 1.5))),
        })
    return rows


def main() -> None:
    import pandas as pd
    import torch

    torch.set_num_threads(1)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/simulate_bench.csv")
    parser.add_argument("--full", action="store_true", help="also time the autograd q̈ (slow)")
    parser.add_argument("--stride", type=int, default=5, help="fit on every k-th sample")
    args = parser.parse_args()
    rows = speed_rows(args.full) + rollout_rows(args.stride)
    table = pd.DataFrame(rows)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(out, index=False)
    print(table.to_string(index=False))
    print(f"written {out}")


if __name__ == "__main__":
    main()
