"""task=simulate: integrate the system at system.params from initial states (given, or
drawn in the state bounds) and write trajectory.csv in the data=trajectory format, a q(t)
figure and metrics.json (``core.simulate``)."""

from __future__ import annotations

import time

import numpy as np
from omegaconf import DictConfig, OmegaConf

from lagfit_cli.app.tasks import register_task
from lagfit_cli.core.random import generator
from lagfit_cli.core.simulate import (
    as_force,
    draw_initial_states,
    energy_drift,
    integrate,
    parameter_vector,
    parse_initial_states,
    sample_times,
    to_trajectories,
)
from lagfit_cli.core.systems import build_system
from lagfit_cli.app.config import config_message
from lagfit_cli.errors import ArgumentError, LagfitError
from lagfit_cli.io.report import Report
from lagfit_cli.io.trajectory_tables import trajectory_table


def _force(spec, n_runs: int, dof: int):
    """task.force: null, or one constant per coordinate (expressions in t: not yet)."""
    if spec is None:
        return None
    values = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else spec
    values = values if isinstance(values, list) else [values]
    if any(isinstance(v, str) for v in values):
        raise ArgumentError("force", "expressions in t are not supported yet; give one number per coordinate")
    return as_force(values, n_runs, dof)


@register_task("simulate")
def simulate_task(cfg: DictConfig) -> Report:
    task = cfg.task
    spec = OmegaConf.to_container(cfg.system, resolve=True)
    system = build_system(spec)
    theta = parameter_vector(system, spec.get("params") or {})
    t_eval = sample_times(float(task.duration), float(task.dt))
    if task.initial_states is not None:
        states = OmegaConf.to_container(task.initial_states, resolve=True) if OmegaConf.is_config(task.initial_states) else task.initial_states
        q0, qd0 = parse_initial_states(states, system.dof)
        source = "given"
    else:
        q_bounds = list(task.q_bounds if task.q_bounds is not None else cfg.data.q_bounds)
        qd_bounds = list(task.qd_bounds if task.qd_bounds is not None else cfg.data.qd_bounds)
        q0, qd0 = draw_initial_states(int(task.n_runs), system.dof, q_bounds, qd_bounds, generator(cfg.seed, "data"))
        source = f"drawn uniformly in q ∈ {q_bounds}, q̇ ∈ {qd_bounds}"
    force = _force(task.force, q0.shape[0], system.dof)
    started = time.perf_counter()
    sim = integrate(system, theta, q0, qd0, t_eval, method=task.method, rtol=float(task.rtol), atol=float(task.atol),
                    solver=task.solver, force=force, vectorize=bool(task.vectorize))
    elapsed = time.perf_counter() - started
    names = tuple(system.coord_names) if system.dof > 1 else ("q0",)
    trajectories = to_trajectories(sim, names, force, float(task.noise_q), float(task.noise_qd), generator(cfg.seed, "noise"))
    conservative = force is None and getattr(system, "dissipation", None) is None and not getattr(system, "time_dependent", False)
    drift = energy_drift(system, theta, sim.q, sim.qd) if conservative else None

    report = Report()
    report.tables["trajectory"] = trajectory_table(trajectories, velocities=bool(task.velocities))
    n_runs = q0.shape[0]
    report.metrics = {
        "task": "simulate",
        "system": system.name,
        "params": list(system.param_names),
        "true_params": dict(zip(system.param_names, theta.tolist())),
        "n_runs": n_runs,
        "n_samples_per_run": int(t_eval.size),
        "n_points": int(n_runs * t_eval.size),
        "duration_s": float(t_eval[-1]),
        "dt_s": float(task.dt),
        "method": task.method,
        "rtol": float(task.rtol),
        "atol": float(task.atol),
        "initial_states": source,
        "initial_q": q0.tolist(),
        "initial_qd": qd0.tolist(),
        "noise_q": float(task.noise_q),
        "noise_qd": float(task.noise_qd),
        "rhs_calls": sim.n_calls,
        "simulate_s": elapsed,
        # the Hamiltonian's largest relative change (conservative systems; clean states)
        "energy_relative_drift": drift,
        "q_range": {n: [float(np.min(sim.q[..., i])), float(np.max(sim.q[..., i]))] for i, n in enumerate(names)},
    }
    if cfg.report.figures:
        from lagfit_cli.io.trajectory_plots import trajectories_figure

        noise = f", noise σ_q = {task.noise_q:g}" if task.noise_q else ""
        report.figures["fig_trajectories"] = trajectories_figure(trajectories, f"{system.name}: simulated q(t){noise}")
    energy = f"; energy drift {drift:.2e} (relative)" if drift is not None else ""
    report.summary.append(
        f"simulate {system.name}: {n_runs} run(s) × {t_eval.size} samples (dt = {task.dt:g} s, "
        f"{t_eval[-1]:g} s) with {task.method} in {elapsed:.2f} s ({sim.n_calls} q̈ calls){energy}"
    )
    report.summary.append("trajectory.csv: columns " + ", ".join(report.tables["trajectory"].columns))
    return report


def fit_rollout(cfg: DictConfig, problem, fitted, report: Report) -> None:
    """task=fit's rollout check (``rollout.*``): on time series (a Dataset with t and run,
    as data=trajectory makes; synthetic states with random times are no series), simulate
    the best fit from each run's first state and add rollout.csv, the metrics' ``rollout``
    block, the summary lines and fig_rollout to ``report``."""
    data = problem.data
    if not cfg.rollout.enabled or data.t is None or data.run is None:
        return
    from lagfit_cli.core.rollout import compute_rollout, trajectories_from_dataset

    columns = OmegaConf.to_container(cfg.data.columns, resolve=True) if cfg.data.get("columns") else {}
    names = [str((columns or {}).get(f"q{i}", f"q{i}")) for i in range(problem.system.dof)]
    theta = fitted.result.theta[fitted.best].detach().cpu().double().numpy()
    try:
        check = compute_rollout(
            problem.system, theta, trajectories_from_dataset(data, names), float(cfg.rollout.horizon),
            float(cfg.rollout.tolerance), method=cfg.rollout.method, rtol=float(cfg.rollout.rtol),
            atol=float(cfg.rollout.atol),
        )
    except LagfitError as err:  # e.g. no q̇ for the first states: the fit stands, the check is skipped
        reason = config_message(err)
        report.metrics["rollout"] = {"skipped": reason}
        report.summary.append(f"WARNING: rollout check skipped: {reason}")
        return
    report.tables["rollout"] = check.table()
    report.metrics["rollout"] = check.metrics()
    report.summary.extend(check.summary())
    if cfg.report.figures:
        from lagfit_cli.io.trajectory_plots import rollout_figure

        report.figures["fig_rollout"] = rollout_figure(check, f"{problem.system.name}: rollout of the fitted model")
