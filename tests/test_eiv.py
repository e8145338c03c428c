"""Errors in the variables (issue 12): least squares' attenuation against its closed form and
eiv / tls removing it; σ = 0 is least squares; agreement with scipy.odr (ODRPACK); the
difference Jacobians against forward-mode autodiff; σ = auto on a time series; bad σ values
are one-line errors."""


import numpy as np
import pytest

from conftest import run_task
import torch

import lagfit_cli as lf
from lagfit_cli.core.data import Dataset
from lagfit_cli.core.eiv import StateModel
from lagfit_cli.core.systems import SYSTEMS

HARMONIC = {"m": 2.0, "k": 4.0}  # k/m = 2


def noisy_harmonic(n, sigma_q, seed):
    """q uniform on [−1, 1] (var 1/3), noise of σ on q only, clean q̇ and q̈."""
    rng = np.random.default_rng(seed)
    q = rng.uniform(-1.0, 1.0, n)
    qd = rng.uniform(-1.0, 1.0, n)
    return {"q0": q + sigma_q * rng.standard_normal(n), "qd0": qd, "qdd0": -2.0 * q}


def test_least_squares_shrinks_and_eiv_tls_remove_the_shrink():
    sigma, n = 0.3, 1000
    data = noisy_harmonic(n, sigma, seed=3)
    common = dict(params=HARMONIC, n_starts=1, profiles=False, n_boot=50)
    ls = lf.fit("harmonic", data, **common).values["k/m"]
    # closed form: least squares on q̈ = −ω² q with q measured as q + δ converges to
    # ω² var q / (var q + σ²); its scatter is ≈ ω² σ √(var q) / ((var q + σ²) √n) ≈ 0.026
    shrunk = 2.0 * (1 / 3) / (1 / 3 + sigma**2)
    assert abs(ls - shrunk) < 0.09  # > 3 × the scatter; the shrink itself is 0.43
    for estimator in ("eiv", "tls"):
        report = lf.fit("harmonic", data, estimator=estimator, sigma_q=sigma, sigma_qd=0.0, sigma_qdd=0.0, **common)
        value = report.values["k/m"]
        se = report.metrics["uncertainty"]["values"]["k/m"]["std_error"]
        assert 0.005 < se < 0.08, (estimator, se)
        assert abs(value - 2.0) < 4 * se, (estimator, value, se)
        assert report.metrics["estimator"]["ls_estimates"]["k/m"] == pytest.approx(ls)
        assert list(report.table()["method"])[1] in ("covariance", "bootstrap")


def test_eiv_with_exact_inputs_is_least_squares():
    # noise on q̈ only: the states have no freedom, so eiv must land on ls's answer
    rng = np.random.default_rng(0)
    q, qd = rng.uniform(-1.0, 1.0, 200), rng.uniform(-1, 1, 200)
    data = {"q0": q, "qd0": qd, "qdd0": -2.0 * q + 0.05 * rng.standard_normal(200)}
    ls = lf.fit("harmonic", data, params=HARMONIC, n_starts=1, profiles=False)
    for sigmas in ((0.0, 0.0, 0.05), (0.0, 0.0, 0.0)):
        eiv = lf.fit("harmonic", data, params=HARMONIC, n_starts=1, profiles=False, estimator="eiv",
                     sigma_q=sigmas[0], sigma_qd=sigmas[1], sigma_qdd=sigmas[2])
        for label, value in ls.values.items():
            assert eiv.values[label] == pytest.approx(value, rel=1e-8)
        # and the same error bars: the reduced system is JᵀJ when nothing else moves
        a = ls.metrics["uncertainty"]["values"]["k/m"]["std_error"]
        b = eiv.metrics["uncertainty"]["values"]["k/m"]["std_error"]
        assert b == pytest.approx(a, rel=1e-4)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_eiv_agrees_with_scipy_odr():
    from scipy import odr

    rng = np.random.default_rng(7)
    n, sx, sy = 150, 0.1, 0.05
    q = rng.uniform(-1.5, 1.5, n)
    x = q + sx * rng.standard_normal(n)
    y = -1.5 * q - 0.5 * q**3 + sy * rng.standard_normal(n)
    fit = odr.ODR(odr.RealData(x, y, sx=sx, sy=sy), odr.Model(lambda b, x: -b[0] * x - b[1] * x**3),
                  beta0=[1.0, 1.0], sstol=1e-14, partol=1e-14, maxit=2000)
    fit.set_job(fit_type=0)  # explicit ODR
    out = fit.run()  # ODRPACK: β = (k/m, a/m), its weighted misfit and standard errors
    data = {"q0": x, "qd0": np.zeros(n), "qdd0": y}
    expr = "0.5*m*qd**2 - 0.5*k*q**2 - 0.25*a*q**4"
    report = lf.fit(expr, data, params={"m": None, "k": None, "a": None}, n_starts=2, profiles=False,
                    estimator="eiv", sigma_q=sx, sigma_qd=0.0, sigma_qdd=sy, ftol=1e-14, xtol=1e-14)
    assert report.values["k/m"] == pytest.approx(out.beta[0], rel=1e-7)
    assert report.values["a/m"] == pytest.approx(out.beta[1], rel=1e-7)
    misfit = report.metrics["estimator"]["misfit_per_dof"] * (n - 2)
    assert misfit == pytest.approx(out.sum_square, rel=1e-9)
    errors = report.metrics["uncertainty"]["values"]
    assert errors["k/m"]["std_error"] == pytest.approx(out.sd_beta[0], rel=1e-4)
    assert errors["a/m"]["std_error"] == pytest.approx(out.sd_beta[1], rel=1e-4)


def test_difference_jacobians_match_forward_mode():
    system = SYSTEMS.lookup("double_pendulum")({"name": "double_pendulum", "params": None})
    gen = torch.Generator().manual_seed(0)
    q = torch.rand((1, 10, 2), generator=gen, dtype=torch.float64) * 2 - 1
    qd = torch.rand((1, 10, 2), generator=gen, dtype=torch.float64) * 2 - 1
    theta = 1 + torch.rand((1, system.n_params), generator=gen, dtype=torch.float64)
    fast = StateModel(system).jacobians(q, qd, theta)
    exact = StateModel(system, exact=True).jacobians(q, qd, theta)
    for a, b in zip(fast, exact):
        assert torch.allclose(a, b, rtol=1e-7, atol=1e-8)


def test_auto_sigma_on_a_time_series_and_its_refusal_on_scattered_states():
    from lagfit_cli.core.eiv import auto_sigma

    t = torch.linspace(0, 20, 4000, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)
    q = torch.cos(t)[:, None] + 0.05 * torch.randn((4000, 1), generator=gen, dtype=torch.float64)
    data = Dataset(q, -torch.sin(t)[:, None], -torch.cos(t)[:, None], t=t)
    assert auto_sigma(data, "q", "sigma_q") == pytest.approx(0.05, rel=0.1)
    assert auto_sigma(data, "qd", "sigma_qd") < 1e-3  # exact: only the sampling's curvature
    with pytest.raises(lf.ArgumentError if hasattr(lf, "ArgumentError") else Exception, match="time-ordered"):
        lf.fit("harmonic", noisy_harmonic(50, 0.1, 0), params=HARMONIC, estimator="eiv",
               sigma_q="auto", sigma_qd=0.0, sigma_qdd=0.0, n_starts=1, profiles=False)


def test_eiv_bootstrap_runs_as_one_batch():
    data = noisy_harmonic(300, 0.2, seed=5)
    report = lf.fit("harmonic", data, params=HARMONIC, n_starts=1, profiles=False, estimator="eiv",
                    sigma_q=0.2, sigma_qd=0.0, sigma_qdd=0.0, uncertainty="bootstrap", n_boot=20)
    row = report.table().set_index("name").loc["k/m"]
    assert row["method"] == "bootstrap" and row["ci_low"] < row["value"] < row["ci_high"]
    assert 0 < row["std_error"] < 0.2


@pytest.mark.parametrize(
    "override, message",
    [
        ("estimator.sigma_q=-1", "estimator.sigma_q: must be a finite number >= 0"),
        ("estimator.sigma_qd=abc", "estimator.sigma_qd: must be a finite number >= 0"),
        ("estimator.sigma_q=auto", "estimator.sigma_q: auto needs time-ordered data"),
    ],
)
def test_bad_sigma_is_one_line_error(lagfit, override, message):
    result = lagfit("estimator=eiv", "data.n=6", "init.n_starts=1", "report.figures=false", override)
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_noise_study_sweeps_the_estimators():
    """The study's tables, metrics and figures as the task returns them (nothing written:
    report.write is the same for every task); the estimators' figure laid out at the run's
    dpi, as io.style.save does, and checked to fit its canvas."""
    from lagfit_cli.io import style

    report = run_task("task=noise_study", "data.n=12", "task.sigmas=[0.3]", "task.realizations=2",
                      "task.resolution=4", "task.slice_points=5", "init.n_starts=1", "report.dpi=20",
                      "task.estimators=[ls,eiv]")
    table = report.tables["noise_estimators"]
    assert len(table) == 1 * 2 * 2 and set(table["estimator"]) == {"ls", "eiv"}
    ls = table[table.estimator == "ls"].groupby("sigma")["signed_rel_error"].median()
    eiv = table[table.estimator == "eiv"].groupby("sigma")["signed_rel_error"].median()
    assert ls[0.3] < -0.1 and abs(eiv[0.3]) < abs(ls[0.3]) / 2  # the shrink, and its removal
    # the study draws the estimators' figure beside its own; the estimators' one fits its
    # canvas (fig4_noise_slice and fig5_noise_rms are checked in tests/test_figures.py)
    assert {"noise_estimators", "fig4_noise_slice", "fig5_noise_rms"} <= set(report.figures)
    fig = report.figures["noise_estimators"]
    fig.set_dpi(20)
    assert style.text_outside(fig) == []
    assert "eiv" in report.metrics["estimators"]
