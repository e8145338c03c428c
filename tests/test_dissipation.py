"""Friction (a Rayleigh function R), time t and applied forces Q in the fit: custom
expressions against sympy, absolute values with a force column and ratios without, the
verdict on a missing friction term, and one-line errors for bad ``system.dissipation``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lagfit_cli as lf
from lagfit_cli.core.solvers import SOLVERS, make_loss_and_grad
from lagfit_cli.core.systems import build_system
from lagfit_cli.errors import LagfitError

from test_cli_beyond_1d import one_error_line
from sympy_eom import sympy_qdd


# a custom L and R with time in the kinetic term (so d/dt ∂L/∂q̇ has a ∂²L/∂q̇∂t part),
# a velocity-dependent coupling, and a state-dependent friction
LAGRANGIAN = "0.5*m*(1 + 0.3*sin(t))*qd0**2 + 0.5*m*qd1**2 + a*t*q0*qd1 - 0.5*k*(q0**2 + q1**2)"
DISSIPATION = "0.5*c*(qd0**2 + qd1**2) + 0.5*d*q0**2*qd1**2"
PARAMS = ["m", "a", "k", "c", "d"]


def damped_data(n=300, seed=0, force=True, m=2.0, k=4.0, c=0.5):
    """A damped oscillator's q̈ = (Q − k q − c q̇)/m, in numpy, at random states and forces."""
    rng = np.random.default_rng(seed)
    q, qd = rng.uniform(-1, 1, n), rng.uniform(-1, 1, n)
    Q = rng.uniform(-1, 1, n) if force else np.zeros(n)
    data = {"q0": q, "qd0": qd, "qdd0": (Q - k * q - c * qd) / m}
    if force:
        data["Q0"] = Q
    return data


def test_custom_lagrangian_dissipation_and_time_match_sympy():
    system = build_system({"name": "custom", "lagrangian": LAGRANGIAN, "dissipation": DISSIPATION,
                           "params": dict.fromkeys(PARAMS, 1.0)})
    assert system.time_dependent and system.dissipation is not None and system.linear_in_params
    # L and R scale together: one group of all five (m is the gauge)
    assert system.scale_groups == (tuple(PARAMS),)
    reference = sympy_qdd(LAGRANGIAN, PARAMS, 2, DISSIPATION)
    rng = np.random.default_rng(1)
    n = 10
    q, qd, t, Q = rng.uniform(-1, 1, (n, 2)), rng.uniform(-1, 1, (n, 2)), rng.uniform(0, 5, n), rng.uniform(-1, 1, (n, 2))
    thetas = rng.uniform(0.5, 2, (2, 5))
    T = torch.tensor
    for solver in ("fast", "linear", "broadcast", "batched", "vmap"):
        got = SOLVERS[solver](system, T(q), T(qd), T(thetas), t=T(t), Q=T(Q)).numpy()
        for b in range(2):
            want = reference(q, qd, thetas[b], t=t, Q=Q)
            assert np.abs(got[b] - want).max() <= 1e-12 * np.abs(want).max(), solver


def test_nonlinear_custom_with_dissipation_uses_coefficients_and_matches_sympy():
    lagrangian, dissipation = "0.5*m*l**2*qd**2 + m*g*l*cos(q)", "0.5*b*l**2*qd**2"
    system = build_system({"name": "custom", "lagrangian": lagrangian, "dissipation": dissipation,
                           "params": {"m": 1.0, "l": 1.0, "g": 1.0, "b": 1.0}})
    assert not system.linear_in_params and system.coefficients is not None
    assert system.coefficients.dissipation is not None
    rng = np.random.default_rng(2)
    q, qd, Q = rng.uniform(-1, 1, (8, 1)), rng.uniform(-1, 1, (8, 1)), rng.uniform(-1, 1, (8, 1))
    theta = np.array([1.5, 0.7, 9.81, 0.3])
    want = sympy_qdd(lagrangian, ["m", "l", "g", "b"], 1, dissipation)(q, qd, theta, Q=Q)
    T = torch.tensor
    got = SOLVERS["fast"](system, T(q), T(qd), T(theta)[None], Q=T(Q))[0].numpy()
    assert np.abs(got - want).max() <= 1e-12 * np.abs(want).max()
    from lagfit_cli.core.solvers.jacobian import make_residual_model

    model = make_residual_model(system, T(q), T(qd), T(want), Q=T(Q))
    assert model.kind == "coefficients"
    assert model.residuals(T(theta)[None]).abs().max() <= 1e-12


def test_a_force_column_makes_m_k_c_absolute():
    report = lf.fit("damped_oscillator", damped_data(), truth={"m": 2.0, "k": 4.0, "c": 0.5}, n_starts=4, profiles=False)
    assert report.fit_ok
    assert {r.name: r.status for r in report.ratios} == {"m": "absolute", "k": "absolute", "c": "absolute"}
    for name, true in {"m": 2.0, "k": 4.0, "c": 0.5}.items():
        assert abs(report.values[name] / true - 1) < 1e-9
    assert report.metrics["applied_force"] is True
    assert any("absolute values" in line for line in report.summary())


def test_without_a_force_only_ratios():
    report = lf.fit("damped_oscillator", damped_data(force=False), n_starts=4, profiles=False)
    assert report.fit_ok
    assert {r.name: r.status for r in report.ratios} == {"m": "gauge", "k": "ratio", "c": "ratio"}
    assert abs(report.values["k/m"] - 2.0) < 1e-9 and abs(report.values["c/m"] - 0.25) < 1e-9
    assert report.metrics["applied_force"] is False


def test_custom_expression_with_dissipation_and_force_by_gradient_descent():
    # the gd path (make_loss_and_grad with Q through the linear basis)
    report = lf.fit(
        "0.5*m*qd**2 - 0.5*k*q**2", damped_data(), params={"m": None, "k": None, "c": None},
        dissipation="0.5*c*qd**2", optimizer="gd", iters=1500, lr=0.5, init="box", init_width=0.3,
        init_center=1.0, n_starts=2, profiles=False, uncertainty="none",
    )
    assert {r.status for r in report.ratios} == {"absolute"}
    assert abs(report.values["m"] - 2.0) < 1e-3 and abs(report.values["c"] - 0.5) < 1e-3


def test_loss_and_grad_with_forces_matches_autograd_through_the_generic_step():
    system = build_system({"name": "custom", "lagrangian": "0.5*m*qd**2 - 0.5*k*q**2",
                           "dissipation": "0.5*c*qd**2", "params": {"m": 1, "k": 1, "c": 1}})
    data = damped_data(n=50)
    T = lambda key: torch.tensor(data[key])[:, None]  # noqa: E731
    theta = torch.tensor([[1.5, 3.0, 0.2], [2.5, 4.5, 0.7]])
    steps = [make_loss_and_grad(system, T("q0"), T("qd0"), T("qdd0"), name, "false", Q=T("Q0"))(theta)
             for name in ("fast", "broadcast")]
    assert torch.allclose(steps[0][0], steps[1][0], rtol=1e-12)
    assert torch.allclose(steps[0][1], steps[1][1], rtol=1e-10)


def test_conservative_fit_of_damped_motion_is_not_trusted():
    report = lf.fit("0.5*m*qd**2 - 0.5*k*q**2", damped_data(force=False), params={"m": None, "k": None}, n_starts=4, profiles=False)
    assert report.fit_ok is False
    assert report.metrics["residual_velocity_r2"] > 0.9
    assert any("friction" in w for w in report.warnings)
    # the same fit with friction is trusted, and noise on q̈ alone is not mistaken for friction
    rng = np.random.default_rng(7)
    noisy = damped_data(force=False)
    noisy["qdd0"] = noisy["qdd0"] + 0.05 * rng.standard_normal(noisy["qdd0"].shape)
    trusted = lf.fit("0.5*m*qd**2 - 0.5*k*q**2", noisy, params={"m": None, "k": None, "c": None},
                     dissipation="0.5*c*qd**2", n_starts=4, profiles=False)
    assert trusted.fit_ok and trusted.metrics["residual_velocity_r2"] < 0.1
    # an unconverged fit is reported as unconverged, not as missing friction
    stopped = lf.fit("damped_oscillator", damped_data(force=False), optimizer="gd", iters=5,
                     n_starts=1, profiles=False, uncertainty="none")
    assert not stopped.fit_ok and not any("friction" in w for w in stopped.warnings)


def test_time_dependent_system_needs_times():
    with pytest.raises(LagfitError, match="depends on time t"):
        lf.fit("driven_duffing", damped_data(force=False), n_starts=2)


@pytest.mark.parametrize(
    "dissipation, message",
    [
        ("0.5*c*qd**2 + z", "unknown name 'z'"),
        ("0.5*c*q**2", "does not depend on any velocity"),
        ("0.5*c*qd1**2", "uses coordinate 1"),
        ("0.5*c*qd**2 +", "syntax error"),
        ("__import__('os')", "unknown function '__import__'"),
        ("   ", "non-empty expression"),
    ],
)
def test_bad_dissipation_is_one_line_error_naming_the_key(dissipation, message):
    with pytest.raises(LagfitError) as err:
        build_system({"name": "custom", "lagrangian": "0.5*m*qd**2 - 0.5*k*q**2", "dissipation": dissipation,
                      "params": {"m": 1.0, "k": 1.0, "c": 1.0}})
    assert err.value.argument == "dissipation" and message in str(err.value) and "\n" not in str(err.value)


def test_time_is_reserved_and_unused_parameters_are_named():
    with pytest.raises(LagfitError, match="time variable"):
        build_system({"name": "custom", "lagrangian": "0.5*t*qd**2", "params": {"t": 1.0}})
    with pytest.raises(LagfitError, match="'b' appears in neither"):
        build_system({"name": "custom", "lagrangian": "0.5*m*qd**2", "dissipation": "0.5*c*qd**2",
                      "params": {"m": 1.0, "c": 1.0, "b": 1.0}})


def test_cli_bad_dissipation_and_force(lagfit):
    """Through the command line once (exit 2, one error line); the bad force keys in process,
    on one composed config (the checks behind the same one-line errors)."""
    import copy

    from omegaconf import OmegaConf

    from conftest import compose
    from lagfit_cli.app.config import ConfigError, config_message, validate
    from lagfit_cli.app.tasks import TASKS

    line = one_error_line(lagfit("system=custom", 'system.lagrangian="0.5*m*qd**2 - 0.5*k*q**2"',
                                 "system.params={m: 1.0, k: 2.0, c: 0.1}", 'system.dissipation="0.5*c*w**2"'))
    assert line.startswith("lagfit: error: system.dissipation: unknown name 'w'")
    base = compose("system=cart_pole")
    for key, value, message in (
        ("data.force", [1, -1], "data.force: must be null (no applied force) or finite [low, high] with low <= high"),
        ("data.force_coords", [2], "data.force_coords: coordinate 2 does not exist"),
    ):
        cfg = copy.deepcopy(base)
        OmegaConf.update(cfg, key, value, merge=False)
        with pytest.raises((ConfigError, LagfitError)) as info:
            validate(cfg)
            TASKS[cfg.task.name](cfg)
        assert config_message(info.value).startswith(message), config_message(info.value)


def test_cli_custom_dissipation_with_time(lagfit):
    proc = lagfit("system=custom", 'system.lagrangian="0.5*m*qd**2 - 0.5*k*q**2 + F*q*cos(t)"',
                  'system.dissipation="0.5*c*qd**2"', "system.params={m: 1.0, k: 2.0, c: 0.3, F: 0.5}",
                  "data=uniform", "data.n_points=100", "data.force=[-1,1]", "init.n_starts=4",
                  "report.figures=false", "uncertainty=none")
    assert proc.returncode == 0, proc.stderr
    assert "F = 0.5" in proc.stderr and "c = 0.3" in proc.stderr


def test_dissipation_is_refused_for_builtin_systems():
    with pytest.raises(LagfitError, match="is for system=custom"):
        build_system({"name": "harmonic", "params": {"m": 1.0, "k": 1.0}, "dissipation": "0.5*c*qd**2"})
    with pytest.raises(LagfitError, match="brings its own"):
        lf.fit("harmonic", damped_data(), dissipation="0.5*c*qd**2")
