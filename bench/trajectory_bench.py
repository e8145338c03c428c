"""From time series to a fit: the double pendulum from positions alone (issue 13's goals).

Data lagfit never made: scipy's DOP853 at rtol 1e-12 on the equations of motion sympy derives
from the Lagrangian's text (tests/sympy_eom.py), all runs integrated as one vector ODE.

1. 10 runs × 1000 samples, dt = 0.01 s, clean and with σ = 0.01 rad Gaussian noise on the
   positions: the worst relative error of the identifiable ratios (m2/m1, l2/l1, g/l1) with
   derivatives = spline, savgol (default and a long window), finite_difference (differencing
   by hand) and weak.
2. 10⁶ samples (100 runs × 10⁴) fitted with weak, in a child process: wall time (reading
   excluded; derivative estimate + fit) and the process's peak resident memory.

    .venv/bin/python bench/trajectory_bench.py --out outputs/trajectory_bench.csv
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sympy_eom import sympy_qdd  # noqa: E402  (independent of lagfit)
from trajectory_data import DOUBLE_PENDULUM, DP_PARAMS, DP_RATIOS, DP_TRUTH  # noqa: E402

METHODS = {
    "spline": {"name": "spline"},
    "savgol": {"name": "savgol", "window": 15, "order": 5},
    "finite_difference": {"name": "finite_difference"},
    "weak": {"name": "weak", "window": 151, "overlap": 0.5, "power": 8},
}


def simulate(n_runs: int, n_samples: int, dt: float = 0.01, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """t (n,), q (runs, n, 2): every run in one DOP853 solve (rtol = atol = 1e-12)."""
    from scipy.integrate import solve_ivp

    qdd = sympy_qdd(DOUBLE_PENDULUM, DP_PARAMS, 2)
    rng = np.random.default_rng(seed)
    state0 = np.concatenate([rng.uniform(-1.2, 1.2, (n_runs, 2)), rng.uniform(-1.0, 1.0, (n_runs, 2))], axis=1)

    def rhs(_, y):
        s = y.reshape(n_runs, 4)
        return np.concatenate([s[:, 2:], qdd(s[:, :2], s[:, 2:], DP_TRUTH)], axis=1).reshape(-1)

    t = np.arange(n_samples) * dt
    sol = solve_ivp(rhs, (t[0], t[-1]), state0.reshape(-1), method="DOP853", t_eval=t, rtol=1e-12, atol=1e-12)
    assert sol.success, sol.message
    return t, sol.y.reshape(n_runs, 4, -1)[:, :2].transpose(0, 2, 1).copy()


def trajectories(t, q):
    from lagfit_cli.core.trajectory import Run, Trajectories

    return Trajectories(tuple(Run(t, q[r], name=str(r)) for r in range(q.shape[0])))


def fit(traj, spec, **options):
    import lagfit_cli as lf

    started, cpu = time.perf_counter(), time.process_time()
    report = lf.fit("double_pendulum", traj, derivatives=spec, truth=dict(zip(DP_PARAMS, DP_TRUTH)), **options)
    seconds = time.perf_counter() - started
    report.cpu_seconds = time.process_time() - cpu
    errors = {k: v["rel_error"] for k, v in report.metrics["ratios"].items()}
    return report, errors, seconds


def accuracy_rows(n_runs: int, n_samples: int, sigma_list) -> list[dict]:
    t, q = simulate(n_runs, n_samples)
    rng = np.random.default_rng(1)
    rows = []
    for sigma in sigma_list:
        noisy = q + sigma * rng.standard_normal(q.shape)
        traj = trajectories(t, noisy)
        for name, spec in METHODS.items():
            report, errors, seconds = fit(traj, spec)
            missing = sorted(set(DP_RATIOS) - set(errors))
            worst = max(errors.values()) if errors and not missing else float("nan")
            rows.append({
                "case": f"double_pendulum {n_runs}x{n_samples}", "sigma": sigma, "method": name,
                "worst_ratio_rel_error": worst, **{f"err_{k}": errors.get(k) for k in DP_RATIOS},
                "fit_ok": report.fit_ok, "not_reported": ";".join(missing), "seconds": round(seconds, 2),
                "cpu_seconds": round(report.cpu_seconds, 2), "peak_rss_mb": None,
            })
            print(f"σ = {sigma:g} {name:>18}: worst ratio error {worst:.2e}  fit_ok={report.fit_ok}  {seconds:.1f} s", flush=True)
    return rows


def child(path: str) -> None:
    """The 10⁶-sample weak fit in its own process: time and peak memory of just that."""
    data = np.load(path)
    traj = trajectories(data["t"], data["q"])
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    cpu = time.process_time()
    report, errors, seconds = fit(traj, METHODS["weak"], profiles=False)
    cpu = time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": peak, "rss_before_mb": base, "errors": errors,
                      "fit_ok": report.fit_ok, "windows": report.metrics["weak"]["windows"]}))


def large_row(n_runs: int, n_samples: int, sigma: float, cache: str | None = None) -> dict:
    if cache and Path(cache).exists():  # the same runs, simulated before (--large-data)
        data = np.load(cache)
        t, q = data["t"], data["q"]
        assert q.shape == (n_runs, n_samples, 2), q.shape
    else:
        t, q = simulate(n_runs, n_samples, seed=2)
        q = q + sigma * np.random.default_rng(3).standard_normal(q.shape)
        if cache:
            np.savez(cache, t=t, q=q)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "runs.npz"
        np.savez(path, t=t, q=q)
        out = subprocess.run([sys.executable, __file__, "--child", str(path)], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    errors = result["errors"]
    worst = max(errors.values()) if set(errors) >= set(DP_RATIOS) else float("nan")
    print(f"weak, {n_runs} × {n_samples} samples (σ = {sigma:g}): {result['seconds']:.1f} s "
          f"({result['cpu_seconds']:.1f} s CPU), peak RSS "
          f"{result['peak_rss_mb']:.0f} MB, worst ratio error {worst:.2e}", flush=True)
    return {
        "case": f"double_pendulum {n_runs}x{n_samples}", "sigma": sigma, "method": "weak",
        "worst_ratio_rel_error": worst, **{f"err_{k}": errors.get(k) for k in DP_RATIOS},
        "fit_ok": result["fit_ok"], "not_reported": "", "seconds": round(result["seconds"], 2),
        "cpu_seconds": round(result["cpu_seconds"], 2), "peak_rss_mb": round(result["peak_rss_mb"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="outputs/trajectory_bench.csv")
    parser.add_argument("--child")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--samples", type=int, default=1000)
    parser.add_argument("--large-runs", type=int, default=100)
    parser.add_argument("--large-samples", type=int, default=10_000)
    parser.add_argument("--large-data", help="an .npz of the large case's runs: read if it exists, else written (the simulation takes minutes)")
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    import pandas as pd

    rows = accuracy_rows(args.runs, args.samples, (0.0, 0.01))
    if args.large_runs:
        rows.append(large_row(args.large_runs, args.large_samples, 0.01, args.large_data))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(args.out, index=False)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
