"""Error bars (issue 11): the covariance against ordinary least squares written out here,
coverage of the 95 % intervals, no error bar where the data fix nothing, reruns identical."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import lagfit_cli as lf

#: q̈ = −(k/m) q − (a/m) q³: linear in β = (k/m, a/m) once the scale m is held
QUARTIC = "0.5*m*qd**2 - 0.5*k*q**2 - 0.25*a*q**4"
TRUTH = {"m": 2.0, "k": 3.0, "a": 1.0}
COLUMNS = ["name", "kind", "value", "std_error", "ci_low", "ci_high", "true", "rel_error", "method"]


def quartic_data(n, sigma, seed):
    rng = np.random.default_rng(seed)
    q = rng.uniform(-1.5, 1.5, n)
    qd = rng.uniform(-1.0, 1.0, n)
    qdd = -(TRUTH["k"] / TRUTH["m"]) * q - (TRUTH["a"] / TRUTH["m"]) * q**3 + sigma * rng.standard_normal(n)
    return {"q0": q, "qd0": qd, "qdd0": qdd}


def quartic_fit(data, **options):
    return lf.fit(QUARTIC, data, params={"m": None, "k": None, "a": None}, truth=TRUTH, **options)


def test_covariance_is_the_ordinary_least_squares_formula():
    data = quartic_data(400, 0.05, seed=1)
    report = quartic_fit(data)
    # OLS on y = X β + ε, X = [−q, −q³]: β̂ = (XᵀX)⁻¹Xᵀy, s² = ‖y − Xβ̂‖²/(n − 2),
    # Cov β̂ = s²(XᵀX)⁻¹, interval β̂ ± t₀.₉₇₅(n − 2)·se
    x = np.stack([-data["q0"], -data["q0"] ** 3], axis=1)
    y = data["qdd0"]
    xtx_inv = np.linalg.inv(x.T @ x)
    beta = xtx_inv @ x.T @ y
    n, p = x.shape
    s2 = np.sum((y - x @ beta) ** 2) / (n - p)
    cov = s2 * xtx_inv
    se = np.sqrt(np.diag(cov))
    t = stats.t.ppf(0.975, n - p)

    table = report.table().set_index("name")
    assert list(report.table().columns) == COLUMNS
    for j, label in enumerate(["k/m", "a/m"]):
        row = table.loc[label]
        assert row["value"] == pytest.approx(beta[j], rel=1e-9)
        assert row["std_error"] == pytest.approx(se[j], rel=1e-6)
        assert row["ci_low"] == pytest.approx(beta[j] - t * se[j], rel=1e-6)
        assert row["ci_high"] == pytest.approx(beta[j] + t * se[j], rel=1e-6)
        assert row["method"] == "covariance"
    assert table.loc["m", "kind"] == "gauge" and math.isnan(table.loc["m", "std_error"])
    u = report.metrics["uncertainty"]
    assert u["dof"] == n - p and u["residual_variance"] == pytest.approx(s2, rel=1e-9)
    rho = cov[0, 1] / (se[0] * se[1])
    assert u["correlations"]["labels"] == ["k/m", "a/m"]
    assert u["correlations"]["matrix"][0][1] == pytest.approx(rho, rel=1e-6)
    assert u["values"]["k/m"]["std_error"] == pytest.approx(se[0], rel=1e-6)
    # the console line carries the error, with the digits it justifies
    line = next(s for s in report.summary() if s.strip().startswith("k/m ="))
    assert "±" in line and "95 %" in line


def test_coverage_of_the_95_percent_intervals():
    """50 seeded replicates (100 intervals), Gaussian noise on q̈ (the model's own noise model);
    bench/uncertainty_bench.py measures the coverage on more. The intervals are the
    covariance's; the loss profiles (which leave them as they are) are not computed."""
    hits, total = 0, 0
    for seed in range(50):
        report = quartic_fit(quartic_data(60, 0.2, seed=100 + seed), n_starts=1, profiles=False)
        table = report.table().set_index("name")
        for label, truth in (("k/m", 1.5), ("a/m", 0.5)):
            hits += table.loc[label, "ci_low"] <= truth <= table.loc[label, "ci_high"]
            total += 1
    assert 0.87 <= hits / total <= 0.99, hits / total


def test_exact_data_print_plus_minus_zero():
    report = quartic_fit(quartic_data(100, 0.0, seed=2))
    line = next(s for s in report.summary() if s.strip().startswith("k/m ="))
    assert "± 0 " in line and "1.5" in line


def test_not_identifiable_values_get_no_error_bar():
    # b multiplies a total time derivative (d/dt of q²/2): q̈ never sees it
    expr = "0.5*m*qd**2 - 0.5*k*q**2 + b*q*qd"
    data = quartic_data(200, 0.05, seed=3)
    data["qdd0"] = -1.5 * data["q0"] + 0.05 * np.random.default_rng(3).standard_normal(200)
    for method in ("covariance", "bootstrap"):
        report = lf.fit(expr, data, params={"m": None, "k": None, "b": None}, uncertainty=method, n_boot=20)
        table = report.table().set_index("name")
        assert table.loc["b", "kind"] == "not_identifiable"
        assert not np.isfinite(table.loc["b", ["std_error", "ci_low", "ci_high"]].to_numpy(float)).any()
        assert np.isfinite(table.loc["k/m", "std_error"]) and table.loc["k/m", "std_error"] > 0
        assert report.metrics["uncertainty"]["values"]["b"]["std_error"] is None


def test_bootstrap_agrees_with_the_covariance_on_gaussian_noise():
    data = quartic_data(500, 0.1, seed=4)
    cov = quartic_fit(data).table().set_index("name")
    boot_report = quartic_fit(data, uncertainty="bootstrap", n_boot=200)
    boot = boot_report.table().set_index("name")
    assert boot_report.metrics["uncertainty"]["n_boot_used"] == 200
    for label in ("k/m", "a/m"):
        assert boot.loc[label, "method"] == "bootstrap"
        assert boot.loc[label, "value"] == cov.loc[label, "value"]
        assert boot.loc[label, "std_error"] == pytest.approx(cov.loc[label, "std_error"], rel=0.25)
        assert boot.loc[label, "ci_low"] < boot.loc[label, "value"] < boot.loc[label, "ci_high"]


def test_none_and_bad_options():
    report = quartic_fit(quartic_data(50, 0.1, seed=5), uncertainty="none")
    assert report.table()["std_error"].isna().all()
    with pytest.raises(lf.ArgumentError if hasattr(lf, "ArgumentError") else Exception):
        quartic_fit(quartic_data(50, 0.1, seed=5), uncertainty="jackknife")


@pytest.mark.parametrize("method", ["covariance", "bootstrap"])
def test_fitted_params_csv_is_byte_identical_on_rerun(lagfit, method):
    # no loss profiles (half of each run's CPU): fitted_params.csv is made without them
    args = ("system=double_pendulum", "noise.sigma=0.05", "noise.apply_to=targets", "data.n=4",
            "report.figures=false", f"uncertainty={method}", "uncertainty.n_boot=30", "uncertainty.profiles=false")
    first, second = lagfit(*args), lagfit(*args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr
    a = (first.run_dir / "fitted_params.csv").read_bytes()
    assert a == (second.run_dir / "fitted_params.csv").read_bytes()
    table = pd.read_csv(first.run_dir / "fitted_params.csv")
    assert list(table.columns) == COLUMNS
    assert (table.loc[table.kind == "ratio", "method"] == method).all()
    assert "±" in first.stdout + first.stderr


def test_strongly_correlated_values_are_warned_about():
    # q only in [0.9, 1.1]: q and q³ barely differ, so k/m and a/m are nearly confounded
    data = quartic_data(300, 0.01, seed=6)
    data["q0"] = 1.0 + 0.1 * (data["q0"] / 1.5)
    data["qdd0"] = -1.5 * data["q0"] - 0.5 * data["q0"] ** 3 + 0.01 * np.random.default_rng(6).standard_normal(300)
    report = quartic_fit(data)
    rho = report.metrics["uncertainty"]["correlations"]["matrix"][0][1]
    assert abs(rho) > 0.99
    assert any("k/m and a/m are correlated" in w for w in report.warnings)
    # exact data: the same correlation, though s² = 0
    data["qdd0"] = -1.5 * data["q0"] - 0.5 * data["q0"] ** 3
    exact = quartic_fit(data).metrics["uncertainty"]["correlations"]["matrix"][0][1]
    assert exact == pytest.approx(rho, abs=1e-6)


def test_sweep_summary_rows_carry_the_standard_errors():
    from lagfit_cli.io.sweep import metric_columns

    report = quartic_fit(quartic_data(100, 0.1, seed=7))
    row = metric_columns(report.metrics)
    assert row["k/m_std_error"] == report.metrics["uncertainty"]["values"]["k/m"]["std_error"] > 0
    assert "m_std_error" not in row  # the gauge is not a reported ratio
