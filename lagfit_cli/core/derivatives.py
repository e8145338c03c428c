r"""From measured time series to a fit's data: q̇ and q̈ estimated per run (``derivatives=``).

Each method turns :class:`Trajectories` into a :class:`Dataset` (q, q̇, q̈ at the kept samples,
with t, Q and the run index). Reading (``core.trajectory_file``) is separate; every method
works per run and per coordinate, on the run's actual sample times.

``spline`` (default)
    A smoothing spline per coordinate (scipy's FITPACK, ``UnivariateSpline``, degree
    ``degree`` = 5, so q̈ is a cubic and smooth). The smoothing is chosen from the data:
    the noise σ̂ is estimated from the 6th differences of the samples (a robust MAD, where
    a smooth signal contributes (ωΔt)⁶ ≈ 0), and the spline's residual is set to it
    (Reinsch's discrepancy rule, FITPACK's ``s = n σ̂²``). Data exact to σ̂ ≤ ``EXACT_RTOL``
    of their spread are interpolated (``make_interp_spline``, degree 7; q̈ errors O(Δt⁶)). ``smoothing: gcv`` uses scipy's ``make_smoothing_spline`` (cubic) with λ chosen
    by generalised cross-validation instead (slower: ~2 s per 1000 samples); a number sets σ.
``savgol``
    Savitzky–Golay (``scipy.signal.savgol_filter``, ``deriv=0, 1, 2``) with ``window``
    samples and polynomial ``order``; irregularly sampled runs are first resampled to their
    median interval (by the interpolating spline).
``finite_difference``
    Second-order central differences (``numpy.gradient`` with the actual spacing), applied
    twice: q̇ from q, q̈ from q̇. What differencing by hand gives.
``weak``
    No q̈ at all: the fit integrates the Euler–Lagrange equation against test functions
    (``core.weak``). The data carry q and q̇ from the ``spline`` estimate (q̈ from it only for
    diagnostics and figures); the weak options travel in ``FitOptions.weak``.

Measured velocities (columns qd0..) are used as they are where the file has them; q̈ is then
the derivative of the velocity's own fit (one derivative, not two).

Edges: near a run's ends every estimate is one-sided and least accurate, so ``edge``
samples are dropped at each end of each run (null: per method, ``default_edge``).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb
from typing import Any, Callable, Mapping, Optional

import numpy as np
import torch

from lagfit_cli.core.data import Dataset, register_dataset
from lagfit_cli.core.registry import Registry
from lagfit_cli.core.trajectory import Trajectories
from lagfit_cli.core.trajectory_file import is_regular
from lagfit_cli.errors import ArgumentError

#: noise below this fraction of a coordinate's spread: the samples are exact, interpolate
EXACT_RTOL = 1e-7
#: the order of the differences the noise is estimated from
NOISE_DIFFERENCE = 6
#: exact data are interpolated with a spline of this degree (q̈ errors O(Δt⁶))
INTERP_DEGREE = 7

#: run (t, q (n, D), qd or None, spec) -> (keep mask (n,), q, qd, qdd) at the run's samples
Estimator = Callable[[np.ndarray, np.ndarray, Optional[np.ndarray], Mapping[str, Any]], tuple]
DERIVATIVES: Registry["Method"] = Registry("derivative method", "derivatives")


@dataclass(frozen=True)
class Method:
    estimate: Estimator
    #: the fewest samples a run needs for this method and spec
    min_samples: Callable[[Mapping[str, Any]], int]
    #: samples dropped at each end when ``edge`` is null
    default_edge: Callable[[Mapping[str, Any]], int]


def register_derivatives(name: str, min_samples, default_edge):
    def decorator(fn: Estimator) -> Estimator:
        DERIVATIVES.register(name)(Method(fn, min_samples, default_edge))
        return fn

    return decorator


def required_samples(spec: Mapping[str, Any]) -> tuple[int, int, str]:
    """(samples a run needs, edge samples dropped at each end, why) for this method."""
    method = DERIVATIVES.lookup(spec.get("name", "spline"))
    edge = spec.get("edge")
    edge = method.default_edge(spec) if edge is None else int(edge)
    if edge < 0:
        raise ArgumentError("derivatives.edge", f"must be >= 0 samples, got {edge}")
    need = max(method.min_samples(spec), 2 * edge + 1)
    if spec.get("name") == "weak":
        need = max(need, 2 * edge + int(spec.get("window", 151)))
    return need, edge, f"derivatives={spec.get('name', 'spline')} needs ({_need_reason(spec, edge)}) "


def estimate_dataset(trajectories: Trajectories, spec: Mapping[str, Any]) -> Dataset:
    """The Dataset of every run's kept samples, with q̇ and q̈ by ``spec["name"]``."""
    method = DERIVATIVES.lookup(spec.get("name", "spline"))
    need, edge, _ = required_samples(spec)
    parts = []
    for index, run in enumerate(trajectories.runs):
        if run.n_samples < need:
            raise ArgumentError(
                "path", f"run {run.name!r} has {run.n_samples} samples; derivatives="
                f"{spec.get('name', 'spline')} needs at least {need} per run ({_need_reason(spec, edge)})"
            )
        q, qd, qdd = method.estimate(run.t, run.q, run.qd, spec)
        keep = slice(edge, run.n_samples - edge)
        parts.append((run.t[keep], q[keep], qd[keep], qdd[keep], None if run.Q is None else run.Q[keep], index))
    as_tensor = lambda arrays: torch.from_numpy(np.ascontiguousarray(np.concatenate(arrays)))  # noqa: E731
    forces = None
    if trajectories.has_forces:
        forces = as_tensor([p[4] for p in parts])
    return Dataset(
        q=as_tensor([p[1] for p in parts]),
        qd=as_tensor([p[2] for p in parts]),
        qdd=as_tensor([p[3] for p in parts]),
        t=as_tensor([p[0] for p in parts]),
        Q=forces,
        run=torch.from_numpy(np.concatenate([np.full(p[0].shape[0], p[5], dtype=np.int64) for p in parts])),
    )


def _need_reason(spec: Mapping[str, Any], edge: int) -> str:
    name = spec.get("name", "spline")
    if name == "savgol":
        return f"window {spec.get('window')}, {edge} dropped at each end"
    if name == "weak":
        return f"one window of {spec.get('window', 51)} after {edge} dropped at each end"
    return f"{edge} samples dropped at each end, derivatives.edge, and enough left to fit"


# --------------------------------------------------------------------------- spline


def noise_level(y: np.ndarray, t: Optional[np.ndarray] = None) -> float:
    """σ̂ of white noise on a smooth signal, from its 6th differences (robust MAD): a smooth
    signal sampled well contributes (ωΔt)⁶ to them, noise σ·√C(12, 6). Irregular samples
    are first interpolated (cubic) to even times, where differences mean something."""
    k = NOISE_DIFFERENCE
    if y.shape[0] <= k + 2:
        return 0.0
    if t is not None and not is_regular(t):
        from scipy.interpolate import make_interp_spline

        y = make_interp_spline(t, y, k=3)(np.linspace(t[0], t[-1], t.shape[0]))
    d = np.diff(y, k)
    return float(1.4826 * np.median(np.abs(d - np.median(d))) / np.sqrt(comb(2 * k, k)))


def smooth(t: np.ndarray, y: np.ndarray, spec: Mapping[str, Any]):
    """A spline through (t, y) with derivatives (a scipy BSpline/UnivariateSpline)."""
    from scipy.interpolate import UnivariateSpline, make_interp_spline, make_smoothing_spline

    degree = int(spec.get("degree", 5))
    smoothing = spec.get("smoothing", "auto")
    if smoothing == "gcv":
        return make_smoothing_spline(t, y)
    spread = float(np.std(y))
    sigma = noise_level(y, t) if smoothing in (None, "auto") else float(smoothing)
    if sigma <= EXACT_RTOL * max(spread, np.finfo(float).tiny):
        return make_interp_spline(t, y, k=INTERP_DEGREE)
    return UnivariateSpline(t, y, k=degree, s=y.shape[0] * sigma**2)


def _spline_min(spec) -> int:
    return max(INTERP_DEGREE + 2, NOISE_DIFFERENCE + 3)


def _spline_edge(spec) -> int:
    return 2 * INTERP_DEGREE


#: runs longer than this are splined in overlapping segments (FITPACK's knot search grows
#: faster than linearly with the samples); OVERLAP samples at each inner end are discarded
SEGMENT, OVERLAP = 2000, 100


def piecewise(t: np.ndarray, y: np.ndarray, fit) -> list[np.ndarray]:
    """``fit(t, y) -> [arrays at t]`` on overlapping segments of at most SEGMENT samples,
    each keeping its middle (the first and last keep their outer ends)."""
    n = t.shape[0]
    if n <= SEGMENT:
        return fit(t, y)
    out: Optional[list[np.ndarray]] = None
    start = 0
    while True:
        end = min(n, start + SEGMENT)
        values = fit(t[start:end], y[start:end])
        if out is None:
            out = [np.empty(n) for _ in values]
        lo = start if start == 0 else start + OVERLAP
        hi = end if end == n else end - OVERLAP
        for target, value in zip(out, values):
            target[lo:hi] = value[lo - start : hi - start]
        if end == n:
            return out
        start = end - 2 * OVERLAP


@register_derivatives("spline", _spline_min, _spline_edge)
def spline_derivatives(t, q, qd, spec):
    _check_degree(spec)
    dof = q.shape[1]
    q_out, qd_out, qdd_out = np.empty_like(q), np.empty_like(q), np.empty_like(q)

    def position(tt, y):
        s = smooth(tt, y, spec)
        return [s(tt), s(tt, 1), s(tt, 2)]

    def velocity(tt, y):
        s = smooth(tt, y, spec)
        return [s(tt), s(tt, 1)]

    for i in range(dof):
        if qd is None:
            q_out[:, i], qd_out[:, i], qdd_out[:, i] = piecewise(t, q[:, i], position)
        else:
            q_out[:, i] = piecewise(t, q[:, i], position)[0]
            qd_out[:, i], qdd_out[:, i] = piecewise(t, qd[:, i], velocity)
    return q_out, qd_out, qdd_out


def _check_degree(spec) -> None:
    degree = spec.get("degree", 5)
    if degree not in (3, 5):
        raise ArgumentError("derivatives.degree", f"must be 3 or 5 (q̈ is its second derivative), got {degree!r}")
    smoothing = spec.get("smoothing", "auto")
    if smoothing not in (None, "auto", "gcv"):
        try:
            ok = float(smoothing) >= 0 and np.isfinite(float(smoothing))
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ArgumentError(
                "derivatives.smoothing", f"must be auto, gcv or the noise σ of the positions (a number >= 0), got {smoothing!r}"
            )


# weak: q and q̇ as the spline gives them; the fit uses core.weak's residuals
DERIVATIVES.register("weak")(Method(spline_derivatives, _spline_min, lambda spec: INTERP_DEGREE))


# --------------------------------------------------------------------------- savgol


def _savgol_min(spec) -> int:
    return int(spec.get("window", 15))


def _savgol_edge(spec) -> int:
    return int(spec.get("window", 15)) // 2


@register_derivatives("savgol", _savgol_min, _savgol_edge)
def savgol_derivatives(t, q, qd, spec):
    from scipy.interpolate import make_interp_spline
    from scipy.signal import savgol_filter

    window, order = int(spec.get("window", 15)), int(spec.get("order", 5))
    if window < 3 or window % 2 == 0:
        raise ArgumentError("derivatives.window", f"must be an odd number of samples >= 3, got {window}")
    if not 2 <= order < window:
        raise ArgumentError("derivatives.order", f"must be at least 2 (for q̈) and below the window ({window}), got {order}")
    grid, resampled = t, None
    if not is_regular(t):
        grid = np.linspace(t[0], t[-1], t.shape[0])
        resampled = lambda y: make_interp_spline(t, y, k=3, axis=0)(grid)  # noqa: E731
    dt = float(grid[1] - grid[0])
    source = q if resampled is None else resampled(q)
    filt = lambda y, d: savgol_filter(y, window, order, deriv=d, delta=dt, axis=0)  # noqa: E731
    q_out = filt(source, 0)
    if qd is None:
        qd_out, qdd_out = filt(source, 1), filt(source, 2)
    else:
        vel = qd if resampled is None else resampled(qd)
        qd_out, qdd_out = filt(vel, 0), filt(vel, 1)
    if resampled is not None:  # back to the samples' own times
        back = lambda y: make_interp_spline(grid, y, k=3, axis=0)(t)  # noqa: E731
        q_out, qd_out, qdd_out = back(q_out), back(qd_out), back(qdd_out)
    return q_out, qd_out, qdd_out


# --------------------------------------------------------------------------- finite differences


@register_derivatives("finite_difference", lambda spec: 3, lambda spec: 2)
def finite_difference_derivatives(t, q, qd, spec):
    velocity = np.gradient(q, t, axis=0, edge_order=2) if qd is None else qd
    return q.copy(), velocity, np.gradient(velocity, t, axis=0, edge_order=2)


# --------------------------------------------------------------------------- data=trajectory


def read_spec(trajectory_spec: Mapping[str, Any], dof: int, derivatives: Optional[Mapping[str, Any]] = None) -> Trajectories:
    """Read ``data=trajectory``'s files as its config section says (``core.trajectory_file``)."""
    from lagfit_cli.core.trajectory_file import read_trajectories

    raw = trajectory_spec.get("path")
    if not raw:
        raise ArgumentError("path", "data=trajectory needs the file(s) to read: data.path=FILE.csv or a glob 'runs/*.csv'")
    return read_trajectories(
        str(raw), dof=dof, columns=trajectory_spec.get("columns") or {},
        time_column=trajectory_spec.get("time_column") or "t",
        run_column=trajectory_spec.get("run_column"),
        unwrap=trajectory_spec.get("unwrap") or (),
        scale=trajectory_spec.get("scale"),
        trim=trajectory_spec.get("trim"),
        outliers=trajectory_spec.get("outliers"),
        **({} if derivatives is None else dict(zip(("min_samples", "need_text"), _need(derivatives)))),
    )


def _need(derivatives: Mapping[str, Any]) -> tuple[int, str]:
    need, _, why = required_samples(derivatives)
    return need, why


@register_dataset("trajectory")
def trajectory_dataset(request) -> Dataset:
    """Measured time series: read (``trajectory_file``), then q̇ and q̈ by ``derivatives``
    (``request.spec["derivatives"]``, the config's derivatives section; default spline)."""
    spec = request.spec
    derivatives = dict(spec.get("derivatives") or {"name": "spline"})
    trajectories = read_spec(spec, request.system.dof, derivatives)
    return estimate_dataset(trajectories, derivatives)
