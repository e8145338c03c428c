"""Errors-in-variables benchmark (issue 12): least squares' bias under noisy states against
``estimator=eiv`` (orthogonal distance regression) and ``estimator=tls`` (bias-corrected
equation error), on data lagfit never made (sympy-derived q̈, tests/sympy_eom.py).

    .venv/bin/python bench/eiv_bench.py [--out outputs/eiv_bench.csv] [--quick] [--skip-large]
                                        [--cases double_pendulum_50000,...] [--merge RUNS.csv]

The 50 000-state case alone, then everything summarised together (as measured here):

    bench/eiv_bench.py --cases double_pendulum_50000 --out outputs/eiv_bench_dp50k.csv
    bench/eiv_bench.py --skip-large
    bench/eiv_bench.py --cases none --merge outputs/eiv_bench_dp50k_runs.csv   # summary only

Cases (the issue's goals; signed relative errors, medians over seeds):

* harmonic, 100 × 100 grid on [−1, 1]², noise on q and q̇ (clean q̈), σ = 0.1, 0.3, 1:
  eiv's k/m error ≤ 0.5 %, ≤ 3 %, ≤ 20 %, no systematic sign; 5 seeds.
* double pendulum, σ = 0.1 on q, q̇ and q̈: 50 000 uniform states (one seed: the large run)
  — every identifiable ratio within 0.5 %; 2000 states, 5 seeds — error and scatter.
* anharmonic (velocity-dependent mass) and pendulum, σ = 0.1 on q and q̇, 2500 states,
  10 seeds: |median error| below the seed-to-seed scatter.
* cost: the whole fit (ls's 16 starts + the estimator + its error bars) at 10⁴ points,
  eiv / ls ≤ 10 (the harmonic σ = 0.3 rows, warm process); scipy.odr on the same data.

Writes ``--out`` (one row per case × estimator × ratio: median signed error, scatter, goal,
pass), ``<out stem>_runs.csv`` (one row per fit) and ``<out stem>.png`` (the harmonic
oscillator's error vs σ per estimator, bands over seeds: ``io/estimator_plots.py``).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from sympy_eom import columns, sympy_qdd  # noqa: E402  (independent of lagfit)

SYSTEMS = {
    # name: (lagrangian text for sympy, truth, dof, q_max, qd_max, gauge, ratios)
    "harmonic": ("0.5*m*qd**2 - 0.5*k*q**2", {"m": 2.0, "k": 4.0}, 1, 1.0, 1.0, None, ["k/m"]),
    "anharmonic": ("0.5*m*qd**2 - 0.5*k*q**2 - alpha*q**2*qd**2", {"m": 2.0, "k": 4.0, "alpha": 0.5},
                   1, 1.0, 1.0, None, ["k/m", "alpha/m"]),
    "pendulum": ("0.5*m*l**2*qd**2 + m*g*l*cos(q)", {"m": 1.5, "l": 2.0, "g": 9.81}, 1, 1.5, 2.0, "l", ["g/l"]),
    "double_pendulum": (
        "0.5*(m1+m2)*l1**2*qd0**2 + 0.5*m2*l2**2*qd1**2 + m2*l1*l2*qd0*qd1*cos(q0-q1)"
        " + (m1+m2)*g*l1*cos(q0) + m2*g*l2*cos(q1)",
        {"m1": 2.0, "m2": 1.0, "l1": 1.5, "l2": 1.0, "g": 9.81}, 2, 1.5, 2.0, None, ["m2/m1", "l2/l1", "g/l1"],
    ),
}
ESTIMATORS = ("ls", "eiv", "tls")


def true_ratio(truth: dict, label: str) -> float:
    num, _, den = label.partition("/")
    return truth[num] / truth[den] if den else truth[num]


def clean_data(name: str, n: int, grid: bool, seed: int):
    text, truth, dof, q_max, qd_max, _, _ = SYSTEMS[name]
    if grid:
        side = int(round(n ** (1 / (2 * dof))))
        axes = np.meshgrid(*[np.linspace(-q_max, q_max, side)] * dof, *[np.linspace(-qd_max, qd_max, side)] * dof, indexing="ij")
        flat = np.stack([a.ravel() for a in axes], axis=1)
        q, qd = flat[:, :dof], flat[:, dof:]
    else:
        rng = np.random.default_rng(10_000 + seed)
        q, qd = rng.uniform(-q_max, q_max, (n, dof)), rng.uniform(-qd_max, qd_max, (n, dof))
    qdd = sympy_qdd(text, list(truth), dof)(q, qd, list(truth.values()))
    return q, qd, qdd


def noisy(q, qd, qdd, sigma: float, fields: str, seed: int):
    rng = np.random.default_rng(seed)
    out = []
    for name, x in (("q", q), ("qd", qd), ("qdd", qdd)):
        draw = rng.standard_normal(x.shape)
        out.append(x + sigma * draw if name in fields else x)
    return out


def fit_once(name, data, sigma, fields, estimator):
    import lagfit_cli as lf

    _, truth, _, _, _, gauge, ratios = SYSTEMS[name]
    sig = {key: (sigma if f in fields else 0.0) for key, f in (("sigma_q", "q"), ("sigma_qd", "qd"), ("sigma_qdd", "qdd"))}
    report = lf.fit(name, data, params=truth, gauge=gauge, estimator=estimator, profiles=False, **sig)
    return report, {r: report.values[r] for r in ratios}


def run_case(case, name, n, grid, sigma, fields, seeds, estimators, rows):
    _, truth, _, _, _, _, ratios = SYSTEMS[name]
    q, qd, qdd = clean_data(name, n, grid, 0)
    for seed in seeds:
        nq, nqd, nqdd = noisy(q, qd, qdd, sigma, fields, seed)
        data = columns(nq, nqd, nqdd)
        for est in estimators:
            started = time.perf_counter()
            report, values = fit_once(name, data, sigma, fields, est)
            wall = time.perf_counter() - started
            for label in ratios:
                true = true_ratio(truth, label)
                rows.append({
                    "case": case, "system": name, "n_points": len(nq), "sigma": sigma,
                    "noise_on": ",".join(fields), "estimator": est, "seed": seed, "ratio": label,
                    "value": values[label], "true": true, "signed_rel_error": (values[label] - true) / true,
                    "fit_s": report.metrics["fit_s"], "wall_s": wall, "fit_ok": report.fit_ok,
                })
            print(f"{case} σ={sigma:g} seed {seed} {est}: " + ", ".join(
                f"{k} {(v - true_ratio(truth, k)) / true_ratio(truth, k):+.4%}" for k, v in values.items()
            ) + f" ({report.metrics['fit_s']:.2f} s)", flush=True)


GOALS = {  # (case, estimator) -> the bound on |median signed error| per ratio
    ("harmonic_grid_s0.1", "eiv"): 0.005,
    ("harmonic_grid_s0.3", "eiv"): 0.03,
    ("harmonic_grid_s1", "eiv"): 0.20,
    ("double_pendulum_50000", "eiv"): 0.005,
    ("double_pendulum_50000", "tls"): 0.005,  # the goal is eiv's; tls checked against it too
}


def summarise(runs: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (case, est, label), g in runs.groupby(["case", "estimator", "ratio"], sort=False):
        errors = g["signed_rel_error"].to_numpy()
        median = float(np.median(errors))
        scatter = float(np.std(errors, ddof=1)) if len(errors) > 1 else float("nan")
        goal = GOALS.get((case, est))
        row = {
            "case": case, "system": g["system"].iloc[0], "n_points": int(g["n_points"].iloc[0]),
            "sigma": float(g["sigma"].iloc[0]), "noise_on": g["noise_on"].iloc[0], "estimator": est,
            "ratio": label, "seeds": len(errors), "median_signed_error": median,
            "median_abs_error": float(np.median(np.abs(errors))), "seed_scatter": scatter,
            "n_positive": int((errors > 0).sum()), "median_fit_s": float(g["fit_s"].median()),
            "goal": "", "pass": "",
        }
        if goal is not None:
            row["goal"] = f"|error| <= {goal:g} (every seed)"
            row["pass"] = bool(np.all(np.abs(errors) <= goal))
        elif case.startswith(("anharmonic", "pendulum")) and est != "ls":
            row["goal"] = "|median| < seed scatter"
            row["pass"] = bool(abs(median) < scatter)
        out.append(row)
    return pd.DataFrame(out)


def cost_rows(runs: pd.DataFrame, odr_s: float) -> list[dict]:
    sel = runs[(runs["case"] == "harmonic_grid_s0.3")]
    ls = float(sel[sel["estimator"] == "ls"]["fit_s"].median())
    rows = []
    for est in ("eiv", "tls"):
        t = float(sel[sel["estimator"] == est]["fit_s"].median())
        rows.append({"case": "cost_10k_points", "system": "harmonic", "n_points": 10000, "sigma": 0.3,
                     "estimator": est, "ratio": f"fit_s {est}/ls", "median_fit_s": t,
                     "median_signed_error": t / ls, "goal": "<= 10" if est == "eiv" else "",
                     "pass": (t / ls <= 10) if est == "eiv" else ""})
    rows.append({"case": "cost_10k_points", "system": "harmonic", "n_points": 10000, "sigma": 0.3,
                 "estimator": "scipy.odr", "ratio": "fit_s scipy.odr (1 start)/ls", "median_fit_s": odr_s,
                 "median_signed_error": odr_s / ls, "goal": "", "pass": ""})
    return rows


def scipy_odr_time(sigma=0.3) -> float:
    from scipy import odr

    q, qd, qdd = clean_data("harmonic", 10000, True, 0)
    nq, nqd, nqdd = noisy(q, qd, qdd, sigma, ("q", "qd"), 0)
    times = []
    for _ in range(3):
        started = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            job = odr.ODR(odr.RealData(nq[:, 0], nqdd[:, 0], sx=sigma, sy=1e-3 * sigma),
                          odr.Model(lambda b, x: -b[0] * x), beta0=[1.0])
            job.run()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def figure(runs: pd.DataFrame, path: Path) -> None:
    """The harmonic oscillator's signed k/m error vs σ, one line per estimator, min–max bands."""
    from lagfit_cli.io.estimator_plots import estimator_error_figure, save

    table = runs[runs["case"].str.startswith("harmonic_grid")]
    if len(table):
        save(estimator_error_figure(table, "Harmonic oscillator, 100 × 100 grid, noise σ on q and q̇ "
                                    f"(clean q̈): k/m error, {table['seed'].nunique()} seeds"), path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="outputs/eiv_bench.csv")
    parser.add_argument("--quick", action="store_true", help="3 seeds, no 50 000-state run")
    parser.add_argument("--skip-large", action="store_true", help="no 50 000-state double pendulum")
    parser.add_argument("--cases", default="", help="comma-separated case names to (re)run; the other "
                        "cases' rows are kept from an earlier <out stem>_runs.csv")
    parser.add_argument("--merge", action="append", default=[], help="a runs CSV of another invocation to include")
    args = parser.parse_args(argv)
    out = Path(args.out)
    runs_path = out.with_name(out.stem + "_runs.csv")
    only = [c for c in args.cases.split(",") if c]
    wanted = lambda case: not only or case in only  # noqa: E731
    import torch

    torch.set_num_threads(1)
    seeds = range(3) if args.quick else range(5)
    rows: list[dict] = []
    # warm-up (imports, first-call costs) so the timings below are a warm process's
    q, qd, qdd = clean_data("harmonic", 400, False, 0)
    for est in ESTIMATORS:
        fit_once("harmonic", columns(*noisy(q, qd, qdd, 0.1, ("q", "qd"), 99)), 0.1, ("q", "qd"), est)
    cases = [(f"harmonic_grid_s{sigma:g}", "harmonic", 10000, True, sigma, ("q", "qd"), seeds) for sigma in (0.1, 0.3, 1.0)]
    cases += [(f"{name}_2500", name, 2500, False, 0.1, ("q", "qd"), range(3) if args.quick else range(10))
              for name in ("anharmonic", "pendulum")]
    cases.append(("double_pendulum_2000", "double_pendulum", 2000, False, 0.1, ("q", "qd", "qdd"), seeds))
    if not (args.quick or args.skip_large):
        cases.append(("double_pendulum_50000", "double_pendulum", 50000, False, 0.1, ("q", "qd", "qdd"), [0]))
    kept = pd.read_csv(runs_path) if only and runs_path.exists() else pd.DataFrame()
    for extra in args.merge:  # rows of a separate run (e.g. the 50 000-state case on its own)
        kept = pd.concat([kept, pd.read_csv(extra)], ignore_index=True)
    if len(kept):
        kept = kept[~kept["case"].isin(only)]
    out.parent.mkdir(parents=True, exist_ok=True)
    for case in cases:
        if wanted(case[0]):
            run_case(*case, ESTIMATORS, rows)
            pd.concat([kept, pd.DataFrame(rows)], ignore_index=True).to_csv(runs_path, index=False)
    runs = pd.concat([kept, pd.DataFrame(rows)], ignore_index=True)
    summary = summarise(runs)
    summary = pd.concat([summary, pd.DataFrame(cost_rows(runs, scipy_odr_time()))], ignore_index=True)
    summary.to_csv(out, index=False)
    runs.to_csv(runs_path, index=False)
    figure(runs, out.with_suffix(".png"))
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(summary[["case", "estimator", "ratio", "seeds", "median_signed_error", "seed_scatter", "n_positive",
                       "median_fit_s", "goal", "pass"]].to_string(index=False))
    print(f"wrote {out}, {runs_path} and {out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
