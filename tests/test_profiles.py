"""Profiles of the loss along each reported value (issue 11, item 5) and the error bars of
summary.png (item 6), on data lagfit never made (sympy's equations of motion)."""


import numpy as np
import pandas as pd
import pytest
from scipy import stats

import lagfit_cli as lf
from conftest import run_task
from sympy_eom import columns, sympy_qdd, uniform_states

#: q̈ = −(k/m) q − (a/m) q³: linear in (k/m, a/m) once the gauge m is held
QUARTIC = "0.5*m*qd**2 - 0.5*k*q**2 - 0.25*a*q**4"
PARAMS = ["m", "k", "a"]
TRUTH = {"m": 2.0, "k": 3.0, "a": 1.0}


def quartic_data(n=400, sigma=0.05, seed=11):
    qdd = sympy_qdd(QUARTIC, PARAMS, 1)
    q, qd = uniform_states(n, 1, 1.5, 1.0, seed)
    clean = qdd(q, qd, [TRUTH[p] for p in PARAMS])
    noisy = clean + sigma * np.random.default_rng(seed + 1).standard_normal(clean.shape)
    return columns(q, qd, noisy)


def test_a_linear_problem_profiles_to_its_student_t_interval():
    data = quartic_data()
    report = lf.fit(QUARTIC, data, params=dict.fromkeys(PARAMS), truth=TRUTH, profiles=True)
    prof = report.profiles
    assert [p.label for p in prof.profiles] == ["k/m", "a/m"]
    table = report.table().set_index("name")
    u = report.metrics["uncertainty"]
    t = stats.t.ppf(0.975, u["dof"])
    assert prof.dof == u["dof"] == 400 - 2
    assert prof.threshold == pytest.approx(u["residual_variance"] * t**2, rel=1e-9)
    for p in prof.profiles:
        se, estimate = table.loc[p.label, "std_error"], table.loc[p.label, "value"]
        assert p.estimate == pytest.approx(estimate, rel=1e-12) and p.std_error == se
        # the grid spans ± 4 standard errors; its middle is the estimate and the minimum
        assert p.grid[0].item() == pytest.approx(estimate - 4 * se) and p.grid[-1].item() == pytest.approx(estimate + 4 * se)
        delta = (p.rss - prof.rss_best).numpy()
        assert int(np.argmin(delta)) == len(delta) // 2
        assert delta.min() == pytest.approx(0.0, abs=1e-9 * prof.rss_best)
        # the crossings of the 95 % level: estimate ± t·se (exact for a linear model, up to
        # the grid's interpolation)
        low, high = prof.crossings(p.label)
        assert low == pytest.approx(estimate - t * se, abs=0.2 * t * se)
        assert high == pytest.approx(estimate + t * se, abs=0.2 * t * se)
        assert (high - low) / (2 * t * se) == pytest.approx(1.0, abs=0.02)
    csv = prof.table()
    assert list(csv.columns) == ["name", "value", "rss", "delta_rss", "threshold_95", "estimate", "std_error"]
    assert len(csv) == 2 * 21 and set(csv["name"]) == {"k/m", "a/m"}
    assert set(report.metrics["profiles"]["values"]) == {"k/m", "a/m"}
    assert not any("dips below" in w for w in report.warnings)


def test_profiles_follow_the_option_in_the_api():
    """On by default, as on the command line (conf/uncertainty/covariance.yaml); off on request."""
    on = lf.fit(QUARTIC, quartic_data(60), params=dict.fromkeys(PARAMS), n_starts=2)
    assert on.profiles is not None and "profiles" in on.metrics
    off = lf.fit(QUARTIC, quartic_data(60), params=dict.fromkeys(PARAMS), n_starts=2, profiles=False)
    assert off.profiles is None and "profiles" not in off.metrics


def test_a_barely_seen_value_profiles_flat_over_its_range():
    # |q| < 0.02: q³ (a/m's term) sits far below the noise, q (k/m's) far above it
    data = quartic_data(200, 0.0, seed=3)
    data["q0"] = data["q0"] / 75
    data["qdd0"] = -1.5 * data["q0"] - 0.5 * data["q0"] ** 3 + 1e-3 * np.random.default_rng(4).standard_normal(200)
    report = lf.fit(QUARTIC, data, params=dict.fromkeys(PARAMS), profiles=True, n_starts=2)
    prof = report.profiles
    k_low, k_high = prof.crossings("k/m")
    a_low, a_high = prof.crossings("a/m")
    assert (k_high - k_low) / 2 < 0.05 * 1.5
    # the loss stays below the 95 % level over many times a/m's true value: flat
    assert (a_high - a_low) / 2 > 20 * 0.5


def test_fit_task_draws_fig_profiles_and_writes_profiles_csv():
    report = run_task("system=pendulum", "noise.sigma=0.05", "noise.apply_to=targets", "data.n=6",
                      "task.resolution=6", "optim.iters=30")
    table = report.tables["profiles"]
    names = list(dict.fromkeys(table["name"]))
    assert len(names) >= 1 and (table.groupby("name").size() == 21).all()
    fig = report.figures["fig_profiles"]
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert len(panels) == len(names)
    for ax, name in zip(panels, names):
        assert "ΔRSS" in ax.get_ylabel()
        assert all(part in ax.get_xlabel() for part in name.split("/"))
        # the 95 % level: a horizontal line at the table's threshold
        levels = [line for line in ax.get_lines() if line.get_label() == "95 % level"]
        assert levels and levels[0].get_ydata()[0] == pytest.approx(table["threshold_95"].iloc[0])
        assert any(line.get_label() == "estimate" for line in ax.get_lines())
    # the profile's minimum sits at each estimate
    for name, rows in table.groupby("name"):
        assert rows["delta_rss"].idxmin() == rows.index[len(rows) // 2]
    assert "profiles" in report.metrics and report.metrics["profiles_s"] >= 0


def test_profiles_follow_the_uncertainty_option():
    report = run_task("system=pendulum", "data.n=5", "report.figures=false", "uncertainty=none")
    assert "profiles" not in report.tables
    report = run_task("system=pendulum", "data.n=5", "report.figures=false", "uncertainty.profiles=false")
    assert "profiles" not in report.tables


def test_summary_png_draws_each_value_with_its_error_bar(tmp_path):
    from lagfit_cli.io.sweep import plot_plan
    from lagfit_cli.io.sweep_plot import summary_figure

    rows = []
    for sigma in (0.01, 0.1, 1.0):
        for seed in (0, 1):
            rows.append({"status": "ok", "overrides": f"noise.sigma={sigma} seed={seed}",
                         "noise.sigma": sigma, "seed": seed, "best_loss": sigma**2, "runtime_s": 1.0,
                         "max_ratio_rel_error": sigma / 10, "g/l": 9.81 + sigma * (seed - 0.5),
                         "g/l_std_error": sigma / 3, "g/l_rel_error": sigma / 10})
    plan = plot_plan(pd.DataFrame(rows))
    assert plan.error_names == ["g/l"]
    fig = summary_figure(plan, tmp_path)
    assert len(fig.axes) == len(plan.metrics) + 1
    ax = fig.axes[-1]
    assert "$g$/$l$" in ax.get_ylabel() and "noise.sigma" in ax.get_xlabel()
    # one error bar per job, half-length = its std_error
    bars = [c for c in ax.collections if c.__class__.__name__ == "LineCollection"]
    segments = np.concatenate([b.get_segments() for b in bars])
    half = np.sort((segments[:, 1, 1] - segments[:, 0, 1]) / 2)
    assert half == pytest.approx(np.sort([r["g/l_std_error"] for r in rows]))
    # every artist renders on the Agg canvas summary.png is written from (without the PNG
    # encoding and a second layout pass of savefig: a third of its cost)
    fig.canvas.draw()
