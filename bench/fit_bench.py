"""Fit benchmark (issue 10): lagfit's default fit on data it never made, against what a user
would otherwise write (sympy-derived q̈ + scipy.optimize.least_squares from 16 log-uniform
starts), and against the report's gradient descent.

Every dataset is generated here, independently of lagfit's solvers: the equations of motion
are derived by sympy from the Lagrangian's text (Euler–Lagrange, solved for q̈) and
evaluated with numpy. Every parameter is unknown to the fit; settings are lagfit's defaults.

    .venv/bin/python bench/fit_bench.py [--out outputs/fit_bench.csv] [--repeats 3] [--quick]

Writes one CSV row per (problem, method): worst relative error of the identifiable ratios,
fit time (median over repeats, warm process), starts converged / at the global minimum.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sympy_eom import columns, sympy_qdd, uniform_states  # noqa: E402  (independent of lagfit)

ROWS = 2000


PROBLEMS = {
    # name: (lagrangian, params with true values, dof, state bounds, reported ratios)
    "linear_2coord": (
        "0.5*a*qd0**2 + 0.5*b*qd1**2 + c*qd0*qd1*cos(q0-q1) - d*(1-cos(q0)) - e*q1**4",
        {"a": 2.0, "b": 1.5, "c": 0.4, "d": 3.0, "e": 0.7},
        2, (1.2, 1.5), [("b", "a"), ("c", "a"), ("d", "a"), ("e", "a")],
    ),
    "double_pendulum": (
        "0.5*(m1+m2)*l1**2*qd0**2 + 0.5*m2*l2**2*qd1**2 + m2*l1*l2*qd0*qd1*cos(q0-q1)"
        " + (m1+m2)*g*l1*cos(q0) + m2*g*l2*cos(q1)",
        {"m1": 2.0, "m2": 1.0, "l1": 1.5, "l2": 1.0, "g": 9.81},
        2, (1.5, 2.0), [("m2", "m1"), ("l2", "l1"), ("g", "l1")],
    ),
}
PENDULUM = "0.5*m*l**2*qd**2 + m*g*l*cos(q)"


def worst_error(values: dict[str, float], params: dict[str, float], ratios) -> float:
    errors = []
    for num, den in ratios:
        true = params[num] / params[den]
        errors.append(abs(values.get(f"{num}/{den}", math.nan) - true) / abs(true))
    return max(errors)


def run_lagfit(system, data, params, ratios, optimizer, repeats):
    import lagfit_cli as lf

    times, report = [], None
    for _ in range(repeats):
        report = lf.fit(system, data, params={k: None for k in params}, optimizer=optimizer)
        times.append(report.metrics["fit_s"])
    m = report.metrics
    return {
        "max_rel_error": worst_error(report.values, params, ratios),
        "fit_s": statistics.median(times),
        "n_starts": m["n_starts"],
        "n_converged": m["n_converged"],
        "n_at_global": m["n_at_best"],
        "fit_ok": m["fit_ok"],
    }


def run_scipy(lagrangian, params, dof, data, ratios, repeats, starts=16, seed=0):
    """What a user would write: sympy q̈, scipy least_squares (LM) from log-uniform starts."""
    from scipy.optimize import least_squares

    names = list(params)
    qdd_fn = sympy_qdd(lagrangian, names, dof)
    q = np.stack([data[f"q{i}"] for i in range(dof)], 1)
    qd = np.stack([data[f"qd{i}"] for i in range(dof)], 1)
    qdd = np.stack([data[f"qdd{i}"] for i in range(dof)], 1)
    gauges = {den for _, den in ratios}

    def residual(free, fixed):
        theta = fixed.copy()
        theta[mask] = free
        return (qdd_fn(q, qd, theta) - qdd).ravel()

    mask = np.array([n not in gauges for n in names])
    times, best = [], None
    for _ in range(repeats):
        rng = np.random.default_rng(seed)
        started = time.perf_counter()
        results = []
        for _ in range(starts):
            theta0 = 10.0 ** rng.uniform(-1, 1, len(names))
            try:
                fit = least_squares(residual, theta0[mask], args=(theta0,), method="lm")
            except Exception:  # noqa: BLE001  a start that fails is a failed start
                continue
            theta = theta0.copy()
            theta[mask] = fit.x
            results.append((fit.cost, theta, fit.status > 0))
        times.append(time.perf_counter() - started)
        best = min(results, key=lambda r: r[0])
    theta = best[1]
    values = {f"{n}/{d}": theta[names.index(n)] / theta[names.index(d)] for n, d in ratios}
    at_global = sum(
        1 for c, th, _ in results
        if worst_error({f"{n}/{d}": th[names.index(n)] / th[names.index(d)] for n, d in ratios}, params, ratios) < 1e-6
    )
    return {
        "max_rel_error": worst_error(values, params, ratios),
        "fit_s": statistics.median(times),
        "n_starts": starts,
        "n_converged": sum(1 for r in results if r[2]),
        "n_at_global": at_global,
        "fit_ok": None,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/fit_bench.csv")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one repeat, fewer pendulum g/l")
    args = parser.parse_args(argv)
    repeats = 1 if args.quick else args.repeats

    import pandas as pd
    import torch

    import lagfit_cli as lf

    torch.set_num_threads(1)  # as `lagfit run` does (threads=1)
    rows = []
    # warm the process (torch's first-call costs), as a notebook session would be
    lf.fit(PENDULUM, {"q0": np.linspace(-1, 1, 50), "qd0": np.zeros(50), "qdd0": -np.sin(np.linspace(-1, 1, 50))},
           params={"m": None, "l": None, "g": None})

    for name, (lagrangian, params, dof, bounds, ratios) in PROBLEMS.items():
        q, qd = uniform_states(ROWS, dof, *bounds, seed=1)
        qdd = sympy_qdd(lagrangian, list(params), dof)(q, qd, np.array(list(params.values())))
        data = columns(q, qd, qdd)
        systems = [("custom", lagrangian)]
        if name == "double_pendulum":
            systems.append(("builtin double_pendulum (data=csv)", "double_pendulum"))
        for label, system in systems:
            for optimizer in ("lm", "gd"):
                row = run_lagfit(system, data, params, ratios, optimizer, repeats if optimizer == "lm" else 1)
                rows.append({"problem": name, "system": label, "method": f"lagfit {optimizer}", **row})
                print(rows[-1], file=sys.stderr)
        row = run_scipy(lagrangian, params, dof, data, ratios, repeats)
        rows.append({"problem": name, "system": "custom", "method": "sympy+scipy least_squares", **row})
        print(rows[-1], file=sys.stderr)

    for gl in ([0.5, 13.08, 50.0] if args.quick else [0.5, 2.0, 4.905, 13.08, 30.0, 50.0]):
        params = {"m": 1.0, "l": 1.0, "g": gl}
        q, qd = uniform_states(ROWS, 1, 1.5, 2.0, seed=2)
        qdd = sympy_qdd(PENDULUM, list(params), 1)(q, qd, np.array([1.0, 1.0, gl]))
        row = run_lagfit(PENDULUM, columns(q, qd, qdd), params, [("g", "l")], "lm", 1)
        rows.append({"problem": f"pendulum g/l={gl:g}", "system": "custom", "method": "lagfit lm", **row})
        print(rows[-1], file=sys.stderr)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"written {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
