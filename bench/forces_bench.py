"""Forces benchmark (issue 13, part B): friction, applied forces and time in the fit.

Each problem's data come from an integrator independent of lagfit: sympy derives the
equations of motion d/dt ∂L/∂q̇ − ∂L/∂q + ∂R/∂q̇ = Q from the Lagrangian's and the Rayleigh
function's text (``tests/sympy_eom.py``), scipy's ``solve_ivp`` (DOP853, rtol = atol =
1e-12) integrates them under a known applied force Q(t) (a sum of two sinusoids with random
amplitudes, frequencies and phases per run), and the samples keep the integrator's exact q̇
and the q̈ of the derived equations at each sample: the strong form, with no derivative
estimation (that pipeline is benchmarked elsewhere). 10 runs × 1000 samples, dt = 0.01 s.

lagfit then fits every parameter (all unknown: ``params`` null, default options) with the
force column Q (and the time column t for the driven Duffing), and the errors of every
identifiable value are reported. Goals: ≤ 1e-5 for the oscillators, ≤ 1e-4 for the cart-pole.

    .venv/bin/python bench/forces_bench.py [--out outputs/forces_bench.csv] [--runs 10]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.integrate import solve_ivp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sympy_eom import sympy_qdd  # noqa: E402  (independent of lagfit)

OMEGA, G = 1.2, 9.81
PROBLEMS = {
    # name: (lagfit system, L, R, true params, dof, time-dependent, initial-state scale, force amplitude, goal)
    "damped_driven_oscillator": (
        "damped_oscillator", "0.5*m*qd**2 - 0.5*k*q**2", "0.5*c*qd**2",
        {"m": 2.0, "k": 4.0, "c": 0.5}, 1, False, 1.0, 2.0, 1e-5,
    ),
    "driven_duffing": (
        "driven_duffing",
        f"0.5*m*qd**2 - 0.5*k*q**2 - 0.25*beta*q**4 + F*q*cos({OMEGA}*t)", "0.5*c*qd**2",
        {"m": 1.0, "k": 1.0, "beta": 0.5, "c": 0.2, "F": 0.8}, 1, True, 1.0, 1.0, 1e-5,
    ),
    "cart_pole": (
        "cart_pole",
        "0.5*M*qd0**2 + 0.5*m*((qd0 + l*cos(q1)*qd1)**2 + (l*sin(q1)*qd1)**2)"
        f" - m*{G}*l*cos(q1)",
        "0.5*c_x*qd0**2 + 0.5*c_theta*qd1**2",
        {"M": 1.0, "m": 0.3, "l": 0.5, "c_x": 0.1, "c_theta": 0.02}, 2, False, 0.5, 5.0, 1e-4,
    ),
}


def make_runs(name: str, n_runs: int, n_samples: int, dt: float, seed: int):
    """(t, q, q̇, q̈, Q) per run, from DOP853 on the sympy-derived equations of motion."""
    _, lagrangian, dissipation, params, dof, _, scale, amplitude, _ = PROBLEMS[name]
    eom = sympy_qdd(lagrangian, list(params), dof, dissipation)
    theta = np.array(list(params.values()))
    rng = np.random.default_rng(seed)
    runs = []
    for _ in range(n_runs):
        amp = amplitude * rng.uniform(0.3, 1.0, (2,))
        freq = rng.uniform(0.3, 3.0, (2,))
        phase = rng.uniform(0, 2 * math.pi, (2,))
        pushed = [0] if name == "cart_pole" else list(range(dof))  # the cart only

        def force(t):
            t = np.atleast_1d(t)
            value = amp[0] * np.cos(freq[0] * t + phase[0]) + amp[1] * np.sin(freq[1] * t + phase[1])
            out = np.zeros((t.shape[0], dof))
            out[:, pushed] = value[:, None]
            return out

        def rhs(t, y):
            q, qd = y[:dof][None], y[dof:][None]
            return np.concatenate((y[dof:], eom(q, qd, theta, t=np.array([t]), Q=force(t))[0]))

        y0 = np.concatenate((rng.uniform(-scale, scale, dof), rng.uniform(-scale, scale, dof)))
        times = dt * np.arange(n_samples)
        sol = solve_ivp(rhs, (0.0, times[-1]), y0, method="DOP853", rtol=1e-12, atol=1e-12, t_eval=times)
        assert sol.success, sol.message
        q, qd = sol.y[:dof].T, sol.y[dof:].T
        forces = force(times)
        runs.append((times, q, qd, eom(q, qd, theta, t=times, Q=forces), forces))
    return runs


def bench(name: str, n_runs: int, n_samples: int, dt: float, seed: int) -> list[dict]:
    import torch

    import lagfit_cli as lf
    from lagfit_cli.core.data import Dataset

    system, _, _, params, dof, timed, _, _, goal = PROBLEMS[name]
    started = time.perf_counter()
    runs = make_runs(name, n_runs, n_samples, dt, seed)
    data_s = time.perf_counter() - started
    cat = lambda i: torch.tensor(np.concatenate([run[i] for run in runs]))  # noqa: E731
    data = Dataset(
        cat(1), cat(2), cat(3), t=cat(0) if timed else None, Q=cat(4),
        run=torch.cat([torch.full((n_samples,), r) for r in range(n_runs)]),
    )
    started = time.perf_counter()
    report = lf.fit(system, data, params=dict.fromkeys(params), truth=params)
    fit_s = time.perf_counter() - started
    rows = []
    for label, value in report.metrics["ratios"].items():
        rows.append({
            "problem": name, "value": label, "kind": value["status"], "true": value["true"],
            "estimate": value["estimate"], "rel_error": value["rel_error"], "goal": goal,
            "meets_goal": value["rel_error"] is not None and value["rel_error"] <= goal,
            "fit_ok": report.fit_ok, "n_samples": n_runs * n_samples, "fit_s": round(fit_s, 3),
            "data_s": round(data_s, 2),
        })
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/forces_bench.csv")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--dt", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    import torch

    torch.set_num_threads(1)
    rows = []
    for name in PROBLEMS:
        rows.extend(bench(name, args.runs, args.samples, args.dt, args.seed))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)  # as the other benchmarks write theirs
    width = max(len(r["value"]) for r in rows)
    for r in rows:
        print(f"{r['problem']:26s} {r['value']:{width}s} {r['kind']:9s} true {r['true']:<8.4g} "
              f"rel. error {r['rel_error']:.2e} (goal {r['goal']:.0e}: {'ok' if r['meets_goal'] else 'MISSED'}) "
              f"fit {r['fit_s']:.2f} s")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
