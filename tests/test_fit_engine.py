"""The fit engine on data lagfit never made (issue 10): sympy-derived equations of motion,
every parameter unknown, default settings. Truth comes from the test, never from lagfit."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch

import lagfit_cli as lf
from sympy_eom import columns, sympy_qdd, uniform_states

LINEAR_2COORD = "0.5*a*qd0**2 + 0.5*b*qd1**2 + c*qd0*qd1*cos(q0-q1) - d*(1-cos(q0)) - e*q1**4"
LINEAR_TRUTH = {"a": 2.0, "b": 1.5, "c": 0.4, "d": 3.0, "e": 0.7}
DOUBLE_PENDULUM = (
    "0.5*(m1+m2)*l1**2*qd0**2 + 0.5*m2*l2**2*qd1**2 + m2*l1*l2*qd0*qd1*cos(q0-q1)"
    " + (m1+m2)*g*l1*cos(q0) + m2*g*l2*cos(q1)"
)
DP_TRUTH = {"m1": 2.0, "m2": 1.0, "l1": 1.5, "l2": 1.0, "g": 9.81}
PENDULUM = "0.5*m*l**2*qd**2 + m*g*l*cos(q)"


def independent_data(lagrangian, truth, dof, n=600, q_max=1.2, qd_max=1.5, seed=3, dissipation="0"):
    q, qd = uniform_states(n, dof, q_max, qd_max, seed)
    qdd = sympy_qdd(lagrangian, list(truth), dof, dissipation)(q, qd, list(truth.values()))
    return columns(q, qd, qdd)


def worst_ratio_error(report, truth, ratios):
    return max(abs(report.values[f"{n}/{d}"] - truth[n] / truth[d]) / abs(truth[n] / truth[d]) for n, d in ratios)


def unknown(truth):
    return {name: None for name in truth}


def test_two_coordinate_linear_lagrangian_is_exact_at_defaults():
    data = independent_data(LINEAR_2COORD, LINEAR_TRUTH, 2, n=200)
    report = lf.fit(LINEAR_2COORD, data, params=unknown(LINEAR_TRUTH))
    m = report.metrics
    assert m["fit_ok"] and m["n_max_iters"] == 0 and m["n_diverged"] == 0
    assert worst_ratio_error(report, LINEAR_TRUTH, [("b", "a"), ("c", "a"), ("d", "a"), ("e", "a")]) <= 1e-8
    # the exact start is solved from the equation-error system: its null space is the scale
    assert m["exact_start"]["available"] and m["exact_start"]["nullity"] == 1
    assert report.result.status[report.exact_start] == "converged"
    # nothing was reported against a truth the caller did not give
    assert all(v["true"] is None for v in m["ratios"].values())


@pytest.mark.parametrize("system", [DOUBLE_PENDULUM, "double_pendulum"])
def test_double_pendulum_from_independent_data(system):
    data = independent_data(DOUBLE_PENDULUM, DP_TRUTH, 2, n=200, q_max=1.5, qd_max=2.0)
    report = lf.fit(system, data, params=unknown(DP_TRUTH) if system == DOUBLE_PENDULUM else None)
    m = report.metrics
    assert m["fit_ok"]
    assert worst_ratio_error(report, DP_TRUTH, [("m2", "m1"), ("l2", "l1"), ("g", "l1")]) <= 1e-8
    assert m["n_at_best"] >= 0.9 * m["n_starts"]
    assert sorted(m["gauges"]) == ["l1", "m1"]


@pytest.mark.parametrize("g_over_l", [0.5, 50.0])
def test_pendulum_recipe_needs_no_tuning(g_over_l):
    data = independent_data(PENDULUM, {"m": 1.0, "l": 1.0, "g": g_over_l}, 1, q_max=1.5, qd_max=2.0)
    report = lf.fit(PENDULUM, data, params={"m": None, "l": None, "g": None})
    assert report.fit_ok
    assert abs(report.values["g/l"] - g_over_l) <= 1e-8 * g_over_l
    assert report.table().set_index("name").loc["m", "kind"] == "not_identifiable"


@pytest.mark.parametrize(
    "lagrangian, params, hidden, identified",
    [
        # a constant force times a constant: b moves nothing
        ("0.5*m*qd**2 - 0.5*k*q**2 - k*(q+b)", {"m": 2.0, "k": 3.0, "b": 0.5}, "b", "k/m"),
        # a total time derivative d/dt(½ b q²): no effect on q̈
        ("0.5*m*qd**2 - 0.5*k*q**2 - b*q*qd", {"m": 2.0, "k": 3.0, "b": 0.3}, "b", "k/m"),
        # k only in a constant term
        ("0.5*m*qd**2 - 0.5*c*q**2 - k*(k-10)", {"m": 2.0, "c": 3.0, "k": 0.3}, "k", "c/m"),
        # the overall scale of L
        (PENDULUM, {"m": 1.5, "l": 2.0, "g": 9.81}, "m", "g/l"),
    ],
)
def test_identifiability_comes_from_the_data(lagrangian, params, hidden, identified):
    data = independent_data(lagrangian, params, 1, n=300, q_max=1.0, qd_max=1.0)
    report = lf.fit(lagrangian, data, params=unknown(params))
    kinds = report.table().set_index("name")["kind"]
    assert kinds[hidden] == "not_identifiable"
    assert hidden not in " ".join(report.values)  # never a value for it
    numerator, denominator = identified.split("/")
    assert abs(report.values[identified] - params[numerator] / params[denominator]) <= 1e-8 * abs(
        params[numerator] / params[denominator]
    )


def test_a_model_that_misses_the_damping_says_so():
    truth = {"m": 1.0, "k": 4.0}
    data = independent_data("0.5*m*qd**2 - 0.5*k*q**2", truth, 1, n=300, dissipation="0.5*0.8*qd**2")
    report = lf.fit("0.5*m*qd**2 - 0.5*k*q**2", data, params=unknown(truth))
    assert report.metrics["relative_residual_rms"] > 0.05
    assert any("unexplained" in w for w in report.warnings)


def test_statuses_are_honest_for_a_hopeless_descent():
    data = independent_data(PENDULUM, {"m": 1.0, "l": 1.0, "g": 13.08}, 1, n=200)
    report = lf.fit(PENDULUM, data, params={"m": None, "l": None, "g": None}, optimizer="gd", iters=3)
    assert not report.fit_ok
    assert set(report.result.status) <= {"max_iters", "diverged", "stalled"}
    assert any("did not converge" in w for w in report.warnings)


def test_a_hopeless_fit_exits_3_with_a_warning(lagfit):
    run = lagfit("optim=gd", "optim.iters=3", "init=box", "data.n=10")
    assert run.returncode == 3
    assert "WARNING: the best start did not converge" in run.stderr
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["fit_ok"] is False and metrics["status"] == "check_failed"
    opted_out = lagfit("optim=gd", "optim.iters=3", "init=box", "data.n=10", "check.require_converged=false")
    assert opted_out.returncode == 0 and "WARNING" in opted_out.stderr


def test_measured_data_have_no_made_up_truth(lagfit, tmp_path):
    data = independent_data(DOUBLE_PENDULUM, DP_TRUTH, 2, n=100, q_max=1.5, qd_max=2.0)
    path = tmp_path / "dp.csv"
    pd.DataFrame(data).to_csv(path, index=False)
    run = lagfit("system=double_pendulum", "data=csv", f"data.path={path}", "report.figures=false")
    assert run.returncode == 0, run.stderr
    metrics = json.loads((run.run_dir / "metrics.json").read_text())
    assert metrics["truth_known"] is False
    assert all(v["true"] is None and v["rel_error"] is None for v in metrics["ratios"].values())
    assert abs(metrics["ratios"]["g/l1"]["estimate"] - 9.81 / 1.5) <= 1e-8 * 9.81 / 1.5
    # a value the user gives on the command line is a truth (what metrics.json records as
    # true values does not depend on the fit: one start, one iteration)
    given = lagfit("system=double_pendulum", "data=csv", f"data.path={path}", "report.figures=false",
                   "system.params.m2=1.0", "init.n_starts=1", "optim.iters=1")
    metrics = json.loads((given.run_dir / "metrics.json").read_text())
    assert metrics["true_params"]["m2"] == 1.0 and metrics["true_params"]["m1"] is None


def test_every_builtin_system_converges_at_defaults(lagfit):
    for system in ("anharmonic", "duffing", "pendulum", "coupled_oscillators"):
        run = lagfit(f"system={system}", "report.figures=false", "data.n=20")
        assert run.returncode == 0, run.stderr
        metrics = json.loads((run.run_dir / "metrics.json").read_text())
        assert metrics["n_converged"] == metrics["n_starts"], system
        assert metrics["max_ratio_rel_error"] <= 1e-8, system


def test_the_readme_example_runs_on_the_shipped_csv():
    data = lf.read_csv("examples/pendulum.csv", columns={"q0": "theta", "qd0": "omega", "qdd0": "alpha"})
    result = lf.fit("0.5*m*l**2*qd**2 + m*g*l*cos(q)", data, params={"m": None, "l": None, "g": None})
    table = result.table()
    assert list(table.columns[:3]) == ["name", "kind", "value"]
    assert abs(result.values["g/l"] - 13.08) <= 1e-8 * 13.08
    assert result.metrics["fit_ok"]


def test_api_defaults_are_the_command_lines():
    from hydra import compose, initialize_config_module

    from lagfit_cli.app.config import register_configs
    from lagfit_cli.app.tasks.fit import fit_options

    register_configs()
    with initialize_config_module(config_module="lagfit_cli.conf", version_base="1.3"):
        cfg = compose(config_name="config")
    options = fit_options(cfg)
    assert options.n_iters == lf.FitOptions().n_iters  # lm: 100 (conf/optim/lm.yaml)
    assert dataclasses.replace(options, iters=None) == lf.FitOptions()


def test_importing_and_fitting_never_touches_hydra_or_matplotlib():
    code = (
        "import sys, numpy as np\n"
        "import lagfit_cli as lf\n"
        "q = np.linspace(-1, 1, 40)\n"
        "r = lf.fit('0.5*m*qd**2 - 0.5*k*q**2', {'q0': q, 'qd0': q[::-1], 'qdd0': -2*q}, params={'m': None, 'k': None})\n"
        "assert abs(r.values['k/m'] - 2) < 1e-10\n"
        "print('hydra' in sys.modules, 'omegaconf' in sys.modules, 'matplotlib' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False", "False"]


def test_fit_argument_errors_name_the_argument():
    data = {"q0": np.zeros(5), "qd0": np.ones(5), "qdd0": np.zeros(5)}
    with pytest.raises(lf.ArgumentError, match="^n_startz: not an option"):
        lf.fit("harmonic", data, n_startz=3)
    with pytest.raises(lf.ArgumentError, match="^optimizer: must be one of"):
        lf.fit("harmonic", data, optimizer="adam")
    with pytest.raises(lf.ArgumentError, match="^params: an expression needs"):
        lf.fit("0.5*m*qd**2", data)
    assert torch.get_default_dtype() == torch.float64
