r"""The rollout check: simulate the fitted model from each run's first measured state and
compare with the measurement over a horizon.

For every run, the fitted L (best θ) is integrated (``core.simulate``) from the run's first
sample (q, q̇) over ``horizon`` seconds (capped at the run's length), sampled at the run's
own times, with the run's measured forces Q(t) interpolated (PCHIP: no overshoot at steps). Reported:

- ``rms``: the RMS of predicted − measured q over every sample within the horizon, every
  run and coordinate (in the coordinates' units), and per coordinate;
- ``time_within``: per run, how long the prediction stays within the tolerance — every
  coordinate within ``tolerance`` × (the range of that coordinate over all runs' measured
  q) — counted from the run's start; the horizon itself when it never leaves
  (``left_tolerance`` False). ``min_time_within`` is the worst run.

No figure, no file: ``io.trajectory_plots`` draws it, ``task=fit`` writes ``rollout.csv``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np

from lagfit_cli.core.simulate import IntegrationFailure, integrate, sampled_force
from lagfit_cli.core.systems import System
from lagfit_cli.core.trajectory import Run, Trajectories
from lagfit_cli.errors import ArgumentError

DEFAULT_HORIZON = 2.0
DEFAULT_TOLERANCE = 0.01


@dataclass(frozen=True)
class RunRollout:
    """One run's rollout: times (T,) from the run's start, measured and predicted q (T, D)."""

    name: str
    t: np.ndarray
    measured: np.ndarray
    predicted: np.ndarray  # NaN after an integration failure
    time_within: float
    left_tolerance: bool
    rms: float
    #: the time the integration stopped, when it did (the prediction is NaN after it)
    failed_at: Optional[float] = None


@dataclass(frozen=True)
class Rollout:
    horizon: float
    tolerance: float  # the fraction of the range
    #: the tolerance in each coordinate's units: tolerance × range of the measured q (D,)
    tolerance_abs: np.ndarray
    runs: tuple[RunRollout, ...]
    coordinate_names: tuple[str, ...]
    warnings: list[str] = field(default_factory=list)

    @property
    def rms(self) -> float:
        errors = np.concatenate([(r.predicted - r.measured).reshape(-1) for r in self.runs])
        errors = errors[np.isfinite(errors)]  # after an integration failure: see warnings
        return float(np.sqrt(np.mean(errors**2))) if errors.size else math.nan

    def rms_per_coordinate(self) -> dict[str, float]:
        errors = np.concatenate([r.predicted - r.measured for r in self.runs])
        return {name: float(np.sqrt(np.nanmean(errors[:, i] ** 2))) if np.isfinite(errors[:, i]).any() else math.nan
                for i, name in enumerate(self.coordinate_names)}

    @property
    def min_time_within(self) -> float:
        return min(r.time_within for r in self.runs)

    def metrics(self) -> dict[str, Any]:
        """The ``rollout`` block of metrics.json."""
        times = [r.time_within for r in self.runs]
        return {
            "horizon_s": self.horizon,
            "tolerance_fraction": self.tolerance,
            "tolerance": dict(zip(self.coordinate_names, self.tolerance_abs.tolist())),
            "n_runs": len(self.runs),
            "rms": self.rms,
            "rms_per_coordinate": self.rms_per_coordinate(),
            "min_time_within_s": min(times),
            "median_time_within_s": float(np.median(times)),
            "all_within_horizon": not any(r.left_tolerance for r in self.runs),
            "runs": {
                r.name: {
                    "time_within_s": r.time_within,
                    "left_tolerance": r.left_tolerance,
                    "rms": r.rms,
                    "span_s": float(r.t[-1]),
                    "integration_failed_at_s": r.failed_at,
                }
                for r in self.runs
            },
            "warnings": list(self.warnings),
        }

    def summary(self) -> list[str]:
        worst = min(self.runs, key=lambda r: r.time_within)
        within = (
            f"stays within {self.tolerance:.3g} of the range of q for the whole horizon in every run"
            if not any(r.left_tolerance for r in self.runs)
            else f"leaves {self.tolerance:.3g} of the range of q after {worst.time_within:.3g} s "
            f"(run {worst.name}; median over runs {np.median([r.time_within for r in self.runs]):.3g} s)"
        )
        lines = [f"rollout over {self.horizon:g} s from each run's first state ({len(self.runs)} runs): "
                 f"RMS error {self.rms:.3g}; {within}"]
        lines.extend(f"WARNING: rollout: {w}" for w in self.warnings)
        return lines

    def table(self):
        """One row per sample: t (from the run's start), run, and per coordinate
        ``<name>_measured``, ``<name>_predicted``."""
        import pandas as pd

        frames = []
        for r in self.runs:
            columns: dict[str, Any] = {"t": r.t, "run": [r.name] * len(r.t)}
            for i, name in enumerate(self.coordinate_names):
                columns[f"{name}_measured"] = r.measured[:, i]
                columns[f"{name}_predicted"] = r.predicted[:, i]
            frames.append(pd.DataFrame(columns))
        return pd.concat(frames, ignore_index=True)


def trajectories_from_dataset(data, names: Optional[Sequence[str]] = None) -> Trajectories:
    """Split a Dataset with ``t`` and ``run`` (trajectory data) into runs, each sorted by t."""
    if getattr(data, "t", None) is None:
        raise ArgumentError("data", "the rollout needs time series: a Dataset with t (data=trajectory)")
    t = data.t.detach().cpu().double().numpy()
    q = data.q.detach().cpu().double().numpy()
    qd = None if getattr(data, "qd", None) is None else data.qd.detach().cpu().double().numpy()
    forces = None if data.Q is None else data.Q.detach().cpu().double().numpy()
    ids = np.zeros(len(t), dtype=np.int64) if data.run is None else data.run.detach().cpu().numpy()
    runs = []
    for run_id in np.unique(ids):
        rows = np.flatnonzero(ids == run_id)
        rows = rows[np.argsort(t[rows], kind="stable")]
        runs.append(Run(t[rows], q[rows], None if qd is None else qd[rows], None if forces is None else forces[rows],
                        name=str(int(run_id))))
    dof = q.shape[1]
    return Trajectories(tuple(runs), tuple(names) if names else tuple(f"q{i}" for i in range(dof)))


def compute_rollout(
    system: System,
    theta: np.ndarray,
    trajectories: Trajectories,
    horizon: float = DEFAULT_HORIZON,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    method: str = "DOP853",
    rtol: float = 1e-9,
    atol: float = 1e-9,
    solver: str = "auto",
) -> Rollout:
    """Simulate θ from each run's first state over ``horizon`` s and compare (module doc).

    Runs need measured or estimated q̇ (``Run.qd``) for their first state. All runs are
    integrated as one ODE, sampled at each run's own times (shifted to start at 0); a run
    whose integration fails is integrated alone up to the failure, and its prediction is
    NaN after it (a warning says so; its time within tolerance ends there).
    """
    if not (math.isfinite(horizon) and horizon > 0):
        raise ArgumentError("horizon", f"must be a finite number of seconds > 0, got {horizon}")
    if not (math.isfinite(tolerance) and tolerance > 0):
        raise ArgumentError("tolerance", f"must be a fraction > 0 of the range of q, got {tolerance}")
    runs = list(trajectories.runs)
    if not runs:
        raise ArgumentError("trajectories", "no runs to roll out")
    if any(run.qd is None for run in runs):
        raise ArgumentError("trajectories", "every run needs q̇ (measured or estimated) for its first state")
    dof = system.dof
    if runs[0].dof != dof:
        raise ArgumentError("trajectories", f"runs have {runs[0].dof} coordinates, the system {dof}")
    names = tuple(trajectories.coordinate_names) or tuple(f"q{i}" for i in range(dof))
    all_q = np.concatenate([run.q for run in runs])
    value_range = all_q.max(axis=0) - all_q.min(axis=0)
    warnings: list[str] = []
    if np.any(value_range <= 0):
        flat = [names[i] for i in np.flatnonzero(value_range <= 0)]
        warnings.append(f"{', '.join(flat)} never changes: its tolerance is 0")
    tolerance_abs = tolerance * value_range

    # each run's samples within the horizon, on a shared time axis from 0
    windows = []
    for run in runs:
        rel = run.t - run.t[0]
        keep = rel <= horizon * (1 + 1e-12)
        windows.append((rel[keep], run.q[keep]))
    spans = [w[0][-1] for w in windows]
    if min(spans) < horizon * (1 - 1e-9):
        short = [run.name for run, s in zip(runs, spans) if s < horizon * (1 - 1e-9)]
        warnings.append(
            f"{len(short)} run(s) are shorter than the horizon of {horizon:g} s (e.g. run {short[0]}: "
            f"{min(spans):.3g} s): their rollout stops at their end"
        )
    t_all = np.unique(np.concatenate([w[0] for w in windows]))
    q0 = np.stack([run.q[0] for run in runs])
    qd0 = np.stack([run.qd[0] for run in runs])
    force = sampled_force(runs, t_offsets=[run.t[0] for run in runs])
    kwargs = dict(method=method, rtol=rtol, atol=atol, solver=solver)

    predictions: list[np.ndarray] = []
    failed: list[Optional[float]] = [None] * len(runs)
    try:
        sim = integrate(system, theta, q0, qd0, t_all, force=force, **kwargs)
        index = {float(t): k for k, t in enumerate(t_all)}
        for r, (t_r, _) in enumerate(windows):
            predictions.append(sim.q[r, [index[float(t)] for t in t_r]])
    except IntegrationFailure:
        # some run fails: integrate each alone, keeping what comes before its failure
        for r, (run, (t_r, _)) in enumerate(zip(runs, windows)):
            single = None if force is None else (lambda t, r=r: force(t)[r : r + 1])
            try:
                sim = integrate(system, theta, q0[r : r + 1], qd0[r : r + 1], t_r, force=single, **kwargs)
                predictions.append(sim.q[0])
            except IntegrationFailure as err:
                failed[r] = err.t
                predictions.append(_until_failure(system, theta, q0[r], qd0[r], t_r, single, err.t, kwargs))
                warnings.append(f"run {run.name}: {err}")

    results = []
    for r, (run, (t_r, measured)) in enumerate(zip(runs, windows)):
        predicted = predictions[r]
        error = np.abs(predicted - measured)
        outside = ~(error <= tolerance_abs).all(axis=1)  # NaN (after a failure) counts as outside
        left = bool(outside.any())
        time_within = float(t_r[int(np.argmax(outside))]) if left else float(t_r[-1])
        finite = np.isfinite(predicted).all(axis=1)
        rms = float(np.sqrt(np.mean((predicted[finite] - measured[finite]) ** 2))) if finite.any() else math.nan
        results.append(RunRollout(run.name, t_r, measured, predicted, time_within, left, rms, failed[r]))
    return Rollout(float(horizon), float(tolerance), tolerance_abs, tuple(results), names, warnings)


def _until_failure(system, theta, q0, qd0, t_r, force, t_fail, kwargs) -> np.ndarray:
    """The prediction at the samples before ``t_fail``, NaN after."""
    out = np.full((len(t_r), system.dof), np.nan)
    before = t_r < t_fail
    if before.sum() >= 2:
        try:
            sim = integrate(system, theta, q0[None], qd0[None], t_r[before], force=force, **kwargs)
            out[before] = sim.q[0]
        except IntegrationFailure:
            pass
    elif before.sum() == 1:
        out[0] = q0
    return out


# --------------------------------------------------------------------------- Python API


def rollout(
    fitted,
    trajectories,
    horizon: float = DEFAULT_HORIZON,
    tolerance: float = DEFAULT_TOLERANCE,
    *,
    system=None,
    method: str = "DOP853",
    rtol: float = 1e-9,
    atol: float = 1e-9,
    solver: str = "auto",
) -> Rollout:
    """Simulate a fitted model from each run's first state and compare with the runs.

        report = lf.fit_dataset(system, data, ...)      # data with t and run
        check = lf.rollout(report, data, horizon=2.0)
        check.rms, check.min_time_within, check.table()

    Args:
        fitted: a ``FitReport`` (its best θ and system), or θ itself (a mapping name ->
            value, or a sequence in the system's order) with ``system=``.
        trajectories: ``Trajectories`` (runs with q̇) or a ``Dataset`` with ``t`` (and ``run``).
        horizon: seconds simulated from each run's start (capped at the run's length).
        tolerance: the fraction of each coordinate's range of measured q the prediction
            may stray before it counts as having left the measurement.
        system: the ``System`` (or a built-in name) when ``fitted`` is θ.
    """
    from lagfit_cli.core.api import FitReport, as_system
    from lagfit_cli.core.simulate import parameter_vector

    if isinstance(fitted, FitReport):
        built = fitted.system
        theta = fitted.result.theta[fitted.best].detach().cpu().double().numpy()
    else:
        if system is None:
            raise ArgumentError("system", "give the system (a name or a System) when passing θ")
        params = dict(fitted) if hasattr(fitted, "keys") else None
        built = as_system(system, params) if isinstance(system, str) else system
        theta = parameter_vector(built, fitted)
    if not isinstance(trajectories, Trajectories):
        trajectories = trajectories_from_dataset(trajectories)
    return compute_rollout(built, theta, trajectories, horizon, tolerance, method=method, rtol=rtol,
                           atol=atol, solver=solver)
