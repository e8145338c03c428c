"""task=simulate and the rollout check (issue 13, items 4–5): the integrator against closed
forms and against scipy on sympy-derived equations (independent of lagfit's solvers), the
trajectory CSV, the rollout's numbers, and bad input as one line."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

import lagfit_cli as lf
from conftest import assert_inside, compose, metrics
from test_figures import assert_index
from trajectory_data import simulate as scipy_simulate

DOUBLE_PENDULUM_L = (
    "0.5*(m1+m2)*l1**2*qd0**2 + 0.5*m2*l2**2*qd1**2 + m2*l1*l2*qd0*qd1*cos(q0-q1)"
    " + (m1+m2)*g*l1*cos(q0) + m2*g*l2*cos(q1)"
)
DP = {"m1": 2.0, "m2": 1.0, "l1": 1.5, "l2": 1.0, "g": 9.81}


def harmonic_closed_form(q0, v0, omega, t):
    """q(t) = A cos(ωt + φ) and q̇(t) for q(0) = q0, q̇(0) = v0."""
    amplitude, phase = math.hypot(q0, v0 / omega), math.atan2(-v0 / omega, q0)
    return amplitude * np.cos(omega * t + phase), -amplitude * omega * np.sin(omega * t + phase)


def test_harmonic_oscillator_matches_the_closed_form():
    states = [[1.0, 0.5], [-0.3, 1.2], [0.0, -2.0]]
    runs = lf.simulate("harmonic", {"m": 2.0, "k": 4.0}, states, duration=6.0, dt=0.01)
    assert len(runs.runs) == 3 and runs.runs[0].n_samples == 601
    for (q0, v0), run in zip(states, runs.runs):
        q, qd = harmonic_closed_form(q0, v0, math.sqrt(2.0), run.t)
        assert np.abs(run.q[:, 0] - q).max() < 1e-8
        assert np.abs(run.qd[:, 0] - qd).max() < 1e-8
    # one solve_ivp per run gives the same answer as all runs in one ODE
    alone = lf.simulate("harmonic", {"m": 2.0, "k": 4.0}, states, duration=6.0, dt=0.01, vectorize=False)
    assert np.abs(alone.runs[2].q - runs.runs[2].q).max() < 1e-8


def test_applied_forces_match_the_closed_form(lagfit):
    """m q̈ + k q = Q: a constant Q shifts the centre to Q/k; Q = 2 cos t with m = 2, k = 4
    has the solution q = cos t from q = 1, q̇ = 0."""
    runs = lf.simulate("harmonic", {"m": 2.0, "k": 4.0}, [[1.0, 0.0]], duration=3.0, dt=0.01, force=[2.0])
    run = runs.runs[0]
    assert np.abs(run.q[:, 0] - (0.5 + 0.5 * np.cos(math.sqrt(2.0) * run.t))).max() < 1e-8
    assert np.all(run.Q == 2.0)
    driven = lf.simulate("harmonic", {"m": 2.0, "k": 4.0}, [[1.0, 0.0]], duration=3.0, dt=0.01,
                         force=lambda t: [2.0 * math.cos(t)]).runs[0]
    assert np.abs(driven.q[:, 0] - np.cos(driven.t)).max() < 1e-7
    assert np.abs(driven.Q[:, 0] - 2.0 * np.cos(driven.t)).max() < 1e-15
    table = trajectory_table_of(runs)
    assert list(table.columns) == ["t", "run", "q0", "qd0", "Q0"]


def test_double_pendulum_matches_scipy_on_sympy_equations():
    """lagfit's own autodiff q̈ (custom expression, solver=autograd) and the built-in closed
    form, both integrated by lagfit, against DOP853 at rtol 1e-12 on sympy's q̈."""
    start = np.array([0.8, -0.5, 0.3, 1.0])
    t = np.arange(0, 51) * 0.01
    # tests/trajectory_data.py: DOP853 at rtol = atol = 1e-12 on sympy's q̈ (its sympy
    # derivation is cached per process, shared with the dp_trajectories recordings)
    ref = np.concatenate(scipy_simulate(DOUBLE_PENDULUM_L, list(DP), list(DP.values()), 2, start, t), axis=1)
    built_in = lf.simulate("double_pendulum", DP, [start], duration=0.5, dt=0.01).runs[0]
    custom = lf.simulate(DOUBLE_PENDULUM_L, DP, [start], duration=0.5, dt=0.01, solver="autograd").runs[0]
    for run in (built_in, custom):
        assert np.abs(run.q - ref[:, :2]).max() < 1e-8
        assert np.abs(run.qd - ref[:, 2:]).max() < 1e-8


def test_energy_is_conserved_for_the_double_pendulum():
    runs = lf.simulate("double_pendulum", DP, n_runs=3, q_bounds=(-1.5, 1.5), qd_bounds=(-2, 2),
                       duration=1.0, dt=0.01, seed=3)
    m1, m2, l1, l2, g = DP.values()
    for run in runs.runs:
        (a, b), (w1, w2) = run.q.T, run.qd.T
        kinetic = 0.5 * (m1 + m2) * l1**2 * w1**2 + 0.5 * m2 * l2**2 * w2**2 + m2 * l1 * l2 * w1 * w2 * np.cos(a - b)
        energy = kinetic - (m1 + m2) * g * l1 * np.cos(a) - m2 * g * l2 * np.cos(b)
        assert np.abs(energy - energy[0]).max() < 1e-8 * np.abs(energy).max()
    # drawn states: seeded, inside the bounds, and different for another seed
    again = lf.simulate("double_pendulum", DP, n_runs=3, q_bounds=(-1.5, 1.5), qd_bounds=(-2, 2),
                        duration=0.1, dt=0.01, seed=3)
    other = lf.simulate("double_pendulum", DP, n_runs=3, q_bounds=(-1.5, 1.5), qd_bounds=(-2, 2),
                        duration=0.1, dt=0.01, seed=4)
    assert np.array_equal(again.runs[1].q[0], runs.runs[1].q[0])
    assert not np.array_equal(other.runs[1].q[0], runs.runs[1].q[0])
    assert all(np.abs(r.q[0]).max() <= 1.5 and np.abs(r.qd[0]).max() <= 2 for r in runs.runs)


def test_task_simulate_writes_the_trajectory_csv(lagfit, checked):
    """The table, the metrics and q(t) (fig_trajectories: the one run in the tests that draws
    it, so its text is checked here as tests/test_figures.py checks the others')."""
    result = lagfit("task=simulate", "system=harmonic", "task.initial_states=[[1.0,0.5],[0.2,-1.0]]",
                    "task.duration=2", "task.dt=0.1", "report.figures=true", "report.dpi=30")
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(result.run_dir / "trajectory.csv")
    assert list(table.columns) == ["t", "run", "q0", "qd0"]
    assert len(table) == 2 * 21 and sorted(table.run.unique()) == [0, 1]
    first = table[table.run == 1]
    q, qd = harmonic_closed_form(0.2, -1.0, math.sqrt(2.0), first.t.to_numpy())
    assert np.abs(first.q0.to_numpy() - q).max() < 1e-8 and np.abs(first.qd0.to_numpy() - qd).max() < 1e-8
    m = metrics(result.run_dir)
    assert m["task"] == "simulate" and m["n_runs"] == 2 and m["energy_relative_drift"] < 1e-8
    assert (result.run_dir / "figures" / "fig_trajectories.png").is_file()
    assert_inside(checked, {"fig_trajectories.png"})  # no text outside the canvas
    assert_index(result.run_dir, {"fig_trajectories"})
    assert "simulate harmonic: 2 run(s)" in result.stderr

    # positions only: the file has no velocity columns
    table = trajectory_table_of(lf.simulate("harmonic", {"m": 2.0, "k": 4.0}, [[1.0, 0.0]], duration=1, dt=0.5),
                                velocities=False)
    assert list(table.columns) == ["t", "run", "q0"]


def trajectory_table_of(runs, velocities=True):
    from lagfit_cli.io.trajectory_tables import trajectory_table

    return trajectory_table(runs, velocities=velocities)


def test_measurement_noise_has_the_size_asked_for():
    states = [[1.0, 0.5], [-0.3, 1.2], [0.0, -2.0]]
    clean = lf.simulate("harmonic", {"m": 2.0, "k": 4.0}, states, duration=3.0, dt=0.01)
    noisy = lf.simulate("harmonic", {"m": 2.0, "k": 4.0}, states, duration=3.0, dt=0.01, noise=0.01, seed=5)
    errors = np.concatenate([n.q - c.q for n, c in zip(noisy.runs, clean.runs)])
    assert 0.009 < errors.std() < 0.011 and abs(errors.mean()) < 0.002
    assert all(np.array_equal(n.qd, c.qd) for n, c in zip(noisy.runs, clean.runs))  # noise_qd = 0
    again = lf.simulate("harmonic", {"m": 2.0, "k": 4.0}, states, duration=3.0, dt=0.01, noise=0.01, seed=5)
    assert np.array_equal(again.runs[0].q, noisy.runs[0].q)  # seeded


def test_a_bad_simulate_key_is_one_line(lagfit):
    """Through the command line (in-process), once: exit 2, one error line naming the key, no
    traceback, no trajectory; the other bad keys are checked in process below."""
    result = lagfit("task=simulate", "system=harmonic", "task.duration=1", "task.dt=5")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "task.dt" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert not (result.run_dir / "trajectory.csv").exists()


@pytest.fixture(scope="module")
def simulate_cfg():
    """The config of ``lagfit run task=simulate system=harmonic task.duration=1``, composed
    once: each case below sets its bad values on a copy."""
    return compose("task=simulate", "system=harmonic", "task.duration=1")


@pytest.mark.parametrize(
    "values, message",
    [
        ({"task.duration": -1}, "task.duration: must be a finite number > 0"),
        ({"task.method": "Euler"}, "task.method: must be one of DOP853, RK23, RK45"),
        ({"task.initial_states": [[1.0, 2.0, 3.0]]}, "task.initial_states: each state is 2 numbers (q0, qd0)"),
        ({"task.initial_states": [[1.0, 0.0]], "system.params.k": None}, "system.params.k: a simulation needs a number"),
        ({"rollout.horizon": 0}, "rollout.horizon: must be a finite number > 0"),
        ({"task.noise_q": -1}, "task.noise_q: must be a finite number >= 0"),
        ({"task.q_bounds": [1, 0]}, "task.q_bounds: low must be below high"),
    ],
)
def test_more_bad_keys_name_their_key(simulate_cfg, values, message):
    """In-process (no run folder): the checks behind the same one-line errors."""
    import copy

    from omegaconf import OmegaConf

    from lagfit_cli.app.config import ConfigError, config_message, validate
    from lagfit_cli.app.tasks import TASKS
    from lagfit_cli.errors import LagfitError

    cfg = copy.deepcopy(simulate_cfg)
    for key, value in values.items():
        OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises((ConfigError, LagfitError)) as info:
        validate(cfg)
        TASKS["simulate"](cfg)
    assert config_message(info.value).startswith(message), config_message(info.value)


def test_a_blow_up_is_one_line(lagfit):
    """q̈ = q³ (Duffing with k = 0, β = −1) blows up in finite time (about 1.85 s from q = 1)."""
    result = lagfit("task=simulate", "system=duffing", "system.params={m: 1.0, k: 0.0, beta: -1.0}",
                    "task.initial_states=[[1.0,0.0]]", "task.duration=3", "task.rtol=1e-6", "task.atol=1e-6")
    assert result.returncode == 2
    assert "integration stopped at t = 1.8" in result.stderr and "blew up" in result.stderr
    assert "Traceback" not in result.stderr and not (result.run_dir / "trajectory.csv").exists()


def test_a_singular_mass_matrix_is_named():
    with pytest.raises(lf.IntegrationFailure, match="mass matrix .* turns singular"):
        lf.simulate("0.5*m*(1 - q**2)*qd**2", {"m": 1.0}, [[0.0, 1.0]], duration=2, dt=0.1, rtol=1e-5, atol=1e-5)


def _dataset(runs: lf.Trajectories, qdd_fn) -> lf.Dataset:
    q = torch.from_numpy(np.concatenate([r.q for r in runs.runs]))
    qd = torch.from_numpy(np.concatenate([r.qd for r in runs.runs]))
    t = torch.from_numpy(np.concatenate([r.t for r in runs.runs]))
    run = torch.from_numpy(np.concatenate([np.full(r.n_samples, i) for i, r in enumerate(runs.runs)]))
    return lf.Dataset(q, qd, qdd_fn(q, qd), t=t, run=run)


def test_rollout_on_exact_data_and_on_a_wrong_theta():
    truth = {"m": 2.0, "k": 4.0}
    runs = lf.simulate("harmonic", truth, n_runs=3, duration=4.0, dt=0.01, seed=1)
    exact = lf.rollout(truth, runs, horizon=3.0, system="harmonic")
    assert exact.rms < 1e-8 and exact.min_time_within == pytest.approx(3.0)
    assert not any(r.left_tolerance for r in exact.runs)
    wrong = lf.rollout({"m": 2.0, "k": 4.4}, runs, horizon=3.0, system="harmonic")  # ω off by 5 %
    assert wrong.rms > 1e-3 and wrong.min_time_within < 1.0
    assert all(r.left_tolerance for r in wrong.runs)
    table = wrong.table()
    assert list(table.columns) == ["t", "run", "q0_measured", "q0_predicted"] and len(table) == 3 * 301

    # measured forces are interpolated from the runs: a driven run rolls out exactly too
    driven = lf.simulate("harmonic", truth, [[1.0, 0.0], [0.2, 0.3]], duration=1.5, dt=0.01,
                         force=lambda t: [2.0 * math.cos(t)])
    assert lf.rollout(truth, driven, horizon=1.5, system="harmonic").rms < 1e-6
    unforced = lf.Trajectories(tuple(lf.Run(r.t, r.q, r.qd, name=r.name) for r in driven.runs), ("q0",))
    assert lf.rollout(truth, unforced, horizon=1.5, system="harmonic").min_time_within < 1.0

    # a fit on a Dataset with t and run (what data=trajectory gives), then its rollout
    data = _dataset(runs, lambda q, qd: -2.0 * q)
    report = lf.fit_dataset(lf.build_system({"name": "harmonic", "params": truth}), data,
                            torch.tensor([2.0, 4.0]), lf.FitOptions(profiles=False, uncertainty="none"))
    fitted = lf.rollout(report, data, horizon=2.0)
    assert fitted.rms < 1e-8 and fitted.metrics()["all_within_horizon"]


def test_the_fit_task_adds_the_rollout(tmp_path, checked):
    """The hook task=fit runs on trajectory data: table, metrics block, summary, figure
    (fig_rollout: the one place the tests draw it, so its text is checked here as
    tests/test_figures.py checks the others')."""
    from lagfit_cli.app.tasks.simulate import fit_rollout
    from lagfit_cli.io.report import Report

    truth = {"m": 2.0, "k": 4.0}
    runs = lf.simulate("harmonic", truth, n_runs=2, duration=3.0, dt=0.01, seed=2)
    data = _dataset(runs, lambda q, qd: -2.0 * q)
    system = lf.build_system({"name": "harmonic", "params": truth})
    report = lf.fit_dataset(system, data, torch.tensor([2.0, 4.0]), lf.FitOptions(profiles=False, uncertainty="none"))
    cfg = compose("system=harmonic", "rollout.horizon=2.5", "rollout.tolerance=0.02")
    out = Report()
    fit_rollout(cfg, SimpleNamespace(system=system, data=data), report, out)
    block = out.metrics["rollout"]
    assert block["horizon_s"] == 2.5 and block["tolerance_fraction"] == 0.02 and block["rms"] < 1e-8
    assert block["min_time_within_s"] == pytest.approx(2.5) and block["n_runs"] == 2
    assert len(out.tables["rollout"]) == 2 * 251 and "fig_rollout" in out.figures
    assert out.summary[0].startswith("rollout over 2.5 s")
    written = out.write(tmp_path)
    assert (tmp_path / "rollout.csv").is_file() and any(p.name == "fig_rollout.png" for p in written)
    assert_inside(checked, {"fig_rollout.png"})  # no text outside the canvas
    assert_index(tmp_path, {"fig_rollout"})
    # no q̇ for the first states: the check is skipped, loudly
    from dataclasses import replace

    skipped = Report()
    fit_rollout(cfg, SimpleNamespace(system=system, data=replace(data, qd=None)), report, skipped)
    assert "needs q̇" in skipped.metrics["rollout"]["skipped"] and skipped.summary[0].startswith("WARNING")
    # no time series (a grid or a CSV of states): no rollout
    plain = Report()
    fit_rollout(cfg, SimpleNamespace(system=system, data=lf.Dataset(data.q, data.qd, data.qdd)), report, plain)
    assert "rollout" not in plain.metrics and not plain.tables


def test_a_rollout_that_blows_up_is_a_warning():
    """Duffing with β = −4: q̈ = −q + 4q³ escapes from |q| > 0.5 (blows up in finite time)
    but oscillates below."""
    t = np.arange(0, 31) * 0.05  # measured: the harmonic motion q0 cos t (b = 0)
    runs = lf.Trajectories(tuple(lf.Run(t, a * np.cos(t)[:, None], -a * np.sin(t)[:, None], name=str(r))
                                 for r, a in enumerate((0.1, 1.0))), ("q0",))
    check = lf.rollout({"m": 1.0, "k": 1.0, "beta": -4.0}, runs, horizon=1.5, system="duffing", rtol=1e-6, atol=1e-6)
    small, large = check.runs
    assert small.failed_at is None and np.isfinite(small.predicted).all()
    assert large.failed_at is not None and large.failed_at < 1.5 and large.time_within <= large.failed_at
    assert np.isnan(large.predicted[-1]).all() and not np.isnan(large.predicted[0]).any()
    assert any("run 1: integration stopped" in w for w in check.warnings)
    assert check.metrics()["runs"]["1"]["integration_failed_at_s"] == large.failed_at
    assert any(line.startswith("WARNING: rollout: run 1") for line in check.summary())


def test_auto_checks_its_fast_evaluator_against_the_solver(monkeypatch):
    """With dissipation (R = ½ c q̇²) and a force, ``auto`` uses plain autograd only where it
    agrees with the registered solver (here a stand-in that takes Q, as the solvers will)."""
    import dataclasses

    from lagfit_cli.core import simulate as sim
    from lagfit_cli.core.systems import HARMONIC

    c, m, k = 0.4, 2.0, 4.0

    def solver(system, q, qd, theta, *, t=None, Q=None):  # m q̈ = −k q − c q̇ + Q
        return ((-theta[:, 1:2] * q[..., 0] - c * qd[..., 0] + Q[..., 0]) / theta[:, 0:1])[..., None]

    real = sim.get_solver
    monkeypatch.setattr(sim, "get_solver", lambda name: solver if name == "broadcast" else real(name))
    expected = (-k * 0.3 - c * -0.2 + 1.0) / m
    for dissipation, used in ((lambda q, qd, th: 0.5 * c * qd[..., 0] ** 2, "autograd_qdd"), ("R", "solver")):
        system = dataclasses.replace(HARMONIC)
        object.__setattr__(system, "dissipation", dissipation)
        rhs, state = sim.make_rhs(system, np.array([m, k]), 1, "auto", sim.constant_force([1.0], 1, 1))
        for _ in range(2):
            assert rhs(0.0, np.array([0.3, -0.2]))[1] == pytest.approx(expected, rel=1e-12)
        assert state["evaluator"].__name__ == used
