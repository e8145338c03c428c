"""Uncertainty benchmark (issue 11): do lagfit's 95 % intervals cover the truth, does the
error scale as σ/√N, and what do the error bars cost?

Data are generated here, independently of lagfit (sympy-derived q̈, ``tests/sympy_eom.py``),
with Gaussian noise of standard deviation σ on q̈ (the model's own noise model); every
replicate draws new states and new noise from its own seed. Every parameter is unknown.

    .venv/bin/python bench/uncertainty_bench.py [--out outputs/uncertainty_bench.csv]
        [--replicates 200] [--boot-replicates 100] [--quick]

One CSV row per check:
``coverage``  fraction of replicates whose interval contains the truth, per reported value
              (goal 0.93–0.97 for the covariance on q̈ noise; bootstrap reported as measured,
              also with the noise on the q, q̇ inputs, where the estimate itself is biased);
``scaling``   std_error·√N/σ relative to (σ = 0.1, N = 10³) (goal within 10 % of 1);
``cost``      median seconds of a fit without error bars, and the extra seconds of the
              covariance / bootstrap (200 resamples) (goals < 10 % and < 5× the fit).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sympy_eom import columns, sympy_qdd, uniform_states  # noqa: E402  (independent of lagfit)

PROBLEMS = {
    # name: (lagrangian, truth, dof, (q_max, qd_max), points per replicate)
    "harmonic": ("0.5*m*qd0**2 - 0.5*k*q0**2", {"m": 2.0, "k": 3.0}, 1, (1.0, 1.0), 200),
    "double_pendulum": (
        "0.5*(m1+m2)*l1**2*qd0**2 + 0.5*m2*l2**2*qd1**2 + m2*l1*l2*qd0*qd1*cos(q0-q1)"
        " + (m1+m2)*g*l1*cos(q0) + m2*g*l2*cos(q1)",
        {"m1": 2.0, "m2": 1.0, "l1": 1.5, "l2": 1.0, "g": 9.81}, 2, (1.5, 2.0), 300,
    ),
}
SIGMA = 0.1


class Problem:
    def __init__(self, name: str):
        self.name = name
        self.lagrangian, self.truth, self.dof, (self.q_max, self.qd_max), self.n = PROBLEMS[name]
        self.qdd = sympy_qdd(self.lagrangian, list(self.truth), self.dof)

    def data(self, n: int, sigma: float, seed: int, on: str = "targets"):
        q, qd = uniform_states(n, self.dof, self.q_max, self.qd_max, seed)
        qdd = self.qdd(q, qd, list(self.truth.values()))
        rng = np.random.default_rng(10_000 + seed)
        if on == "targets":
            qdd = qdd + sigma * rng.standard_normal(qdd.shape)
        else:  # the q, q̇ inputs: the fit sees noisy states, q̈ of the clean ones
            q = q + sigma * rng.standard_normal(q.shape)
            qd = qd + sigma * rng.standard_normal(qd.shape)
        return columns(q, qd, qdd)

    def fit(self, data, **options):
        import lagfit_cli as lf

        return lf.fit(self.lagrangian, data, params={k: None for k in self.truth}, truth=self.truth, **options)


def coverage(problem: Problem, replicates: int, method: str, on: str, n_starts: int) -> list[dict]:
    hits: dict[str, int] = {}
    widths: dict[str, list[float]] = {}
    for seed in range(replicates):
        report = problem.fit(problem.data(problem.n, SIGMA, seed, on), uncertainty=method, n_starts=n_starts)
        table = report.table()
        for row in table[table.kind.isin(["ratio", "absolute"])].itertuples():
            hits[row.name] = hits.get(row.name, 0) + int(row.ci_low <= row.true <= row.ci_high)
            widths.setdefault(row.name, []).append(row.ci_high - row.ci_low)
    return [
        {
            "check": "coverage", "problem": problem.name, "method": method, "noise_on": on,
            "sigma": SIGMA, "n_points": problem.n, "replicates": replicates, "value": label,
            "result": hits[label] / replicates, "detail": f"median width {statistics.median(widths[label]):.4g}",
            "goal": "0.93-0.97" if on == "targets" else "reported",
            "ok": (0.93 <= hits[label] / replicates <= 0.97) if on == "targets" else "",
        }
        for label in hits
    ]


def scaling(problem: Problem) -> list[dict]:
    errors = {}
    for sigma in (0.01, 0.1):
        for n in (1000, 10000):
            table = problem.fit(problem.data(n, sigma, seed=7), n_starts=4).table()
            for row in table[table.kind.isin(["ratio", "absolute"])].itertuples():
                errors[(sigma, n, row.name)] = row.std_error * np.sqrt(n) / sigma
    rows = []
    for (sigma, n, label), value in errors.items():
        relative = value / errors[(0.1, 1000, label)]
        rows.append({
            "check": "scaling", "problem": problem.name, "method": "covariance", "noise_on": "targets",
            "sigma": sigma, "n_points": n, "replicates": 1, "value": label, "result": relative,
            "detail": f"std_error·√N/σ = {value:.4g}", "goal": "1 ± 0.10", "ok": abs(relative - 1) <= 0.10,
        })
    return rows


def cost(problem: Problem, repeats: int) -> list[dict]:
    data = problem.data(1000, SIGMA, seed=11)
    problem.fit(data, uncertainty="covariance")  # warm: imports, compiled kernels
    problem.fit(data, uncertainty="bootstrap", n_boot=10)
    timings: dict[str, list[float]] = {"none": [], "covariance": [], "bootstrap": []}
    for _ in range(repeats):
        for method in timings:
            started = time.perf_counter()
            report = problem.fit(data, uncertainty=method)
            total = time.perf_counter() - started
            timings[method].append((total, report.metrics["uncertainty_s"]))
    fit_s = statistics.median(t for t, _ in timings["none"])
    rows = [{
        "check": "cost", "problem": problem.name, "method": "none", "noise_on": "targets", "sigma": SIGMA,
        "n_points": 1000, "replicates": repeats, "value": "fit_s", "result": fit_s,
        "detail": "a fit without error bars (16 starts + exact start)", "goal": "", "ok": "",
    }]
    for method, goal, limit in (("covariance", "< 0.10 of a fit", 0.10), ("bootstrap", "< 5 fits", 5.0)):
        extra = statistics.median(u for _, u in timings[method])
        rows.append({
            "check": "cost", "problem": problem.name, "method": method, "noise_on": "targets", "sigma": SIGMA,
            "n_points": 1000, "replicates": repeats, "value": "extra_s / fit_s", "result": extra / fit_s,
            "detail": f"extra {extra:.4g} s" + (" (200 resamples)" if method == "bootstrap" else ""),
            "goal": goal, "ok": extra / fit_s < limit,
        })
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="outputs/uncertainty_bench.csv")
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--boot-replicates", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="20 replicates, 10 bootstrap replicates, 1 repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.replicates, args.boot_replicates, args.repeats = 20, 10, 1
    import torch

    torch.set_num_threads(1)
    rows: list[dict] = []
    for name in PROBLEMS:
        problem = Problem(name)
        rows += cost(problem, args.repeats)
        rows += scaling(problem)
        rows += coverage(problem, args.replicates, "covariance", "targets", n_starts=4)
        rows += coverage(problem, args.boot_replicates, "bootstrap", "targets", n_starts=4)
        rows += coverage(problem, args.boot_replicates, "bootstrap", "inputs", n_starts=4)
        for row in rows:
            if row["problem"] == name:
                print(",".join(str(row[k]) for k in row), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
