r"""Integrate a system's equations of motion from initial states (``task=simulate``, the
rollout check, ``lagfit_cli.simulate``).

The right-hand side is lagfit's own q̈ (eq. 6) at one parameter vector, and the integrator
is scipy's ``solve_ivp`` (DOP853 by default: 8th order, adaptive, with a 7th-order dense
output for the sample times). ``solver="auto"`` evaluates q̈ with the system's closed form
where it has one, else by plain autograd (:func:`autograd_qdd`, the same equation as the
registered solvers: the ``torch.func`` solvers cost ~10× more per call, and an integration
is thousands of calls on few states); with forces or dissipation by plain autograd checked
once against the registered ``broadcast`` solver; with explicit time by ``broadcast``
(t= and Q= passed). See :func:`choose_solver`.

Why scipy and not torchdiffeq: scipy is already a dependency and its explicit Runge–Kutta
methods are mature (error control, dense output, clear failure statuses); nothing here
needs gradients through the integration (the fit never differentiates a rollout), which is
torchdiffeq's one advantage. The cost per step is lagfit's q̈, so the R runs are integrated
as **one** ODE of size R × 2D: each right-hand-side call evaluates q̈ for all runs in one
solver call (``bench/simulate_bench.py`` measures it against one ``solve_ivp`` per run).
scipy's error norm is the RMS over all components, so the tolerances are divided by √R:
the step then meets the tolerance for every run as if it were integrated alone (a run's
RMS error ≤ the whole system's RMS × √R).

A run whose q̈ stops being finite (a mass matrix that turns singular, a solution that blows
up) stops the integration: :class:`IntegrationFailure` names the run, the time and the
cause; callers turn it into one error line (``task=simulate``) or a warning (rollout).
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence, Union

import numpy as np
import torch

from lagfit_cli.core.solvers import Solver, get_solver
from lagfit_cli.core.systems import System
from lagfit_cli.core.trajectory import Run, Trajectories
from lagfit_cli.errors import ArgumentError, LagfitError

#: solve_ivp's explicit methods (the implicit ones need a Jacobian lagfit does not form)
METHODS = ("DOP853", "RK45", "RK23")
#: the registered solver used where q̈ needs t or Q (no per-dataset basis to rebuild each step)
DEFAULT_SOLVER = "broadcast"
#: the smallest relative tolerance scipy accepts (100 ε)
MIN_RTOL = 100 * np.finfo(float).eps

#: a force: t (float) -> Q (R, D) for every run at once
ForceFn = Callable[[float], np.ndarray]


#: a state beyond this many times the initial states' scale has blown up
BLOWUP_FACTOR = 1e6


#: the step size has collapsed when this many q̈ calls advance t by less than this
#: fraction of the time span
STALL_CALLS, STALL_FRACTION = 120, 1e-8
#: a mass matrix whose smallest singular value fell below this fraction of its value at
#: the initial state, where the integration stopped, has turned singular there
SINGULAR_FRACTION = 1e-3


class _Abort(Exception):
    """Raised inside the right-hand side to stop solve_ivp at once (a run blew up)."""

    def __init__(self, t: float):
        self.t = float(t)


class IntegrationFailure(LagfitError):
    """The integration stopped before the end: ``runs`` (indices), at time ``t``, ``cause``."""

    def __init__(self, runs: Sequence[int], t: float, cause: str):
        self.runs, self.t, self.cause = list(runs), float(t), cause
        names = ", ".join(str(r) for r in self.runs[:5]) + (" …" if len(self.runs) > 5 else "")
        plural = "s" if len(self.runs) > 1 else ""
        super().__init__(f"integration stopped at t = {t:.6g} s (run{plural} {names}): {cause}")


@dataclass(frozen=True)
class Simulation:
    """States at the sample times: ``t`` (T,), ``q`` and ``qd`` (R, T, D)."""

    t: np.ndarray
    q: np.ndarray
    qd: np.ndarray
    #: right-hand-side evaluations (each one q̈ solver call on all runs)
    n_calls: int
    #: accepted + rejected steps are not exposed by scipy; the number of q̈ calls is
    n_steps: Optional[int] = None


def sample_times(duration: float, dt: float) -> np.ndarray:
    """0, dt, 2dt, … up to ``duration`` (included when it is a multiple of dt)."""
    check_times(duration, dt)
    n = int(math.floor(duration / dt * (1 + 1e-12) + 1e-9)) + 1
    return np.arange(n, dtype=np.float64) * dt


def check_times(duration: float, dt: float) -> None:
    if not (math.isfinite(duration) and duration > 0):
        raise ArgumentError("duration", f"must be a finite number of seconds > 0, got {duration}")
    if not (math.isfinite(dt) and dt > 0):
        raise ArgumentError("dt", f"must be a finite number of seconds > 0, got {dt}")
    if dt > duration:
        raise ArgumentError("dt", f"the sampling interval {dt:g} s is longer than the duration {duration:g} s")


def check_method(method: str, rtol: float, atol: float) -> None:
    if method not in METHODS:
        raise ArgumentError("method", f"unknown integration method {method!r}; known: {', '.join(METHODS)}")
    for name, value in (("rtol", rtol), ("atol", atol)):
        if not (math.isfinite(value) and value > 0):
            raise ArgumentError(name, f"must be a finite number > 0, got {value}")


def _accepts(solver: Callable, keyword: str) -> bool:
    try:
        return keyword in inspect.signature(solver).parameters
    except (TypeError, ValueError):
        return False


def _plain(system: System, force: Optional[ForceFn]) -> bool:
    """Conservative, autonomous and unforced: q̈ depends on (q, q̇, θ) alone, so the
    faster evaluators below compute exactly what every registered solver does."""
    return (
        force is None
        and getattr(system, "dissipation", None) is None
        and not getattr(system, "time_dependent", False)
    )


def autograd_qdd(
    system: System, q: torch.Tensor, qd: torch.Tensor, theta: torch.Tensor,
    *, Q: Optional[torch.Tensor] = None, t: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """Eq. 6 by plain reverse-mode autograd, (1, N, D) for θ (1, P): ∇L by one backward
    pass, then one double-backward pass per coordinate for row j of the Hessian ∂²L/∂q̇ⱼ∂q̇
    and of ∂²L/∂q̇ⱼ∂q. The same equation as the registered solvers (``broadcast`` et al.,
    built on ``torch.func``), at a fraction of their per-call overhead: the integrator
    calls it thousands of times on a few hundred states, where overhead is everything.

    ``Q`` (N, D) adds applied forces to the right side, and a system's Rayleigh function
    ``system.dissipation(q, qd, θ)``, where there is one, subtracts ∂R/∂q̇ (``auto`` checks
    both against the registered solver before it relies on them). ``t`` is not used: a
    Lagrangian with explicit time goes to the registered solver."""
    from lagfit_cli.core.solvers import solve_mass_matrix

    dof = q.shape[-1]
    with torch.enable_grad():
        q_ = q.detach().requires_grad_(True)
        qd_ = qd.detach().requires_grad_(True)
        lag = system.lagrangian(q_, qd_, theta[0]).sum()
        grad_q, grad_qd = torch.autograd.grad(lag, (q_, qd_), create_graph=True, allow_unused=True)
        grad_q = torch.zeros_like(q_) if grad_q is None else grad_q
        if grad_qd is None or not grad_qd.requires_grad:  # no q̇ in L, or linear in it
            hessian = torch.zeros(q.shape + (dof,), dtype=q.dtype)
            mixed = torch.zeros_like(q)
        else:
            rows_q, rows_qd = [], []
            for j in range(dof):
                d_q, d_qd = torch.autograd.grad(
                    grad_qd[..., j].sum(), (q_, qd_), retain_graph=j < dof - 1, allow_unused=True
                )
                rows_q.append(torch.zeros_like(q_) if d_q is None else d_q)
                rows_qd.append(torch.zeros_like(qd_) if d_qd is None else d_qd)
            hessian = torch.stack(rows_qd, dim=-2)  # (N, D, D): row j = ∂(∂L/∂q̇ⱼ)/∂q̇
            mixed = torch.stack([(row * qd).sum(-1) for row in rows_q], dim=-1)
        rhs = (grad_q - mixed).detach()
        dissipation = getattr(system, "dissipation", None)
        if dissipation is not None:
            (d_r,) = torch.autograd.grad(dissipation(q_, qd_, theta[0]).sum(), (qd_,), allow_unused=True)
            if d_r is not None:
                rhs = rhs - d_r.detach()
    if Q is not None:
        rhs = rhs + Q
    return solve_mass_matrix(hessian.detach(), rhs)[None]


#: the per-step evaluators besides the registered solvers (``solver="auto"`` picks one)
EVALUATORS = {"autograd": autograd_qdd}


def choose_solver(system: System, solver: Union[str, Solver], force: Optional[ForceFn]) -> tuple[Callable, Optional[Callable]]:
    """(evaluator, the registered solver to check it against at the first call, or None).

    ``auto``: for a conservative unforced system, the system's closed form where it has
    one, else plain autograd (exact by construction); with forces or dissipation, plain
    autograd checked once against ``broadcast`` (which is used instead should they differ);
    with explicit time, ``broadcast`` (t= and Q= passed). A name picks that evaluator or
    registered solver."""
    if not isinstance(solver, str):
        return solver, None
    if solver == "auto":
        if _plain(system, force):
            return (get_solver("closed_form") if system.closed_form is not None else autograd_qdd), None
        if getattr(system, "time_dependent", False):
            return get_solver(DEFAULT_SOLVER), None
        return autograd_qdd, get_solver(DEFAULT_SOLVER)
    if solver in EVALUATORS:
        if getattr(system, "time_dependent", False):
            raise ArgumentError("solver", f"{solver!r} cannot evaluate a Lagrangian with explicit time; use auto")
        return EVALUATORS[solver], None
    return get_solver(solver), None


def make_rhs(
    system: System, theta: np.ndarray, n_runs: int, solver: Union[str, Solver] = "auto",
    force: Optional[ForceFn] = None,
) -> tuple[Callable[[float, np.ndarray], np.ndarray], dict]:
    """f(t, y) for y = (q of every run, q̇ of every run) flattened (R·2D,), and a dict whose
    ``calls`` counts its evaluations and ``bad`` holds the runs whose q̈ was last not finite."""
    fn, reference = choose_solver(system, solver, force)
    dof = system.dof
    theta_t = torch.as_tensor(np.asarray(theta, dtype=np.float64)).reshape(1, -1)
    if theta_t.shape[1] != system.n_params:
        raise ArgumentError("params", f"system {system.name!r} has {system.n_params} parameters, got {theta_t.shape[1]}")
    if force is not None and not _accepts(fn, "Q"):
        raise ArgumentError(
            "force", f"solver {solver!r} does not take applied forces (not yet in this build); use solver=auto"
        )
    if reference is not None and force is not None and not _accepts(reference, "Q"):
        reference = None  # no solver here takes Q yet: H q̈ = ∇_q L − (∇_q ∇_q̇ᵀ L) q̇ + Q stands alone
    takes_t = {id(e): _accepts(e, "t") for e in (fn, reference) if e is not None}
    state = {"calls": 0, "bad": [], "limit": math.inf, "recent": [], "span": math.inf, "evaluator": fn}

    def call(evaluator: Callable, t: float, q: torch.Tensor, qd: torch.Tensor) -> torch.Tensor:
        kwargs = {}
        if takes_t[id(evaluator)]:
            kwargs["t"] = torch.full((q.shape[0],), float(t), dtype=torch.float64)
        if force is not None:
            kwargs["Q"] = torch.from_numpy(np.array(force(t), dtype=np.float64)).reshape(-1, dof)[: q.shape[0]]
        with torch.no_grad():
            return evaluator(system, q, qd, theta_t, **kwargs)[0]

    def qdd(t: float, q: torch.Tensor, qd: torch.Tensor) -> torch.Tensor:
        nonlocal reference
        if reference is None:
            return call(state["evaluator"], t, q, qd)
        # once: the fast evaluator must agree with the solver (or it is not used at all)
        expected = call(reference, t, q, qd)
        try:
            acc = call(state["evaluator"], t, q, qd)
        except Exception:  # noqa: BLE001  e.g. a dissipation it cannot call: use the solver
            state["evaluator"], reference = reference, None
            return expected
        scale = float(expected.abs().max()) if expected.numel() else 0.0
        if not torch.allclose(acc, expected, rtol=1e-9, atol=1e-12 * max(scale, 1.0), equal_nan=True):
            state["evaluator"], acc = reference, expected
        reference = None
        return acc

    def rhs(t: float, y: np.ndarray) -> np.ndarray:
        state["calls"] += 1
        if np.isfinite(y).all():
            state["last_y"] = y
        states = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float64)).reshape(2, n_runs, dof)
        q, qd = states[0].contiguous(), states[1].contiguous()
        try:
            acc = qdd(t, q, qd)
        except (RuntimeError, torch.linalg.LinAlgError):  # a singular D×D solve (D ≥ 3)
            acc = torch.full_like(q, float("nan"))
            for r in range(n_runs):
                try:
                    acc[r] = qdd(t, q[r : r + 1], qd[r : r + 1])[0]
                except (RuntimeError, torch.linalg.LinAlgError):
                    pass
        acc_np = acc.numpy()
        states_np = y.reshape(2, n_runs, dof)
        finite = np.isfinite(acc_np).all(axis=1) & np.isfinite(states_np).all(axis=(0, 2))
        huge = np.abs(states_np).max(axis=(0, 2)) > state["limit"]
        if not finite.all() or huge.any():
            state["bad"] = [int(r) for r in np.flatnonzero(~finite | huge)]
            raise _Abort(t)
        # a step size that collapses (a singularity ahead): STALL_CALLS calls within a
        # negligible stretch of time; scipy would go on until the step underflows
        recent = state["recent"]
        recent.append(t)
        if len(recent) > STALL_CALLS:
            recent.pop(0)
            if max(recent) - min(recent) < STALL_FRACTION * state["span"]:
                state["stalled"] = True
                raise _Abort(t)
        return np.concatenate([y[n_runs * dof :], acc_np.reshape(-1)])

    return rhs, state


def integrate(
    system: System,
    theta: np.ndarray,
    q0: np.ndarray,
    qd0: np.ndarray,
    t_eval: np.ndarray,
    *,
    method: str = "DOP853",
    rtol: float = 1e-10,
    atol: float = 1e-10,
    solver: Union[str, Solver] = "auto",
    force: Optional[ForceFn] = None,
    vectorize: bool = True,
) -> Simulation:
    """Integrate R runs from (q0, qd0) (R, D) at θ (P,) and sample them at ``t_eval`` (T,),
    which starts at the initial time and increases.

    ``vectorize``: one ODE for all runs (the default, fastest), or one ``solve_ivp`` per run
    (``force`` then gets the run's own row: it is called with ``t`` and must return (R, D)).

    Raises:
        IntegrationFailure: a run's q̈ or state stopped being finite, or the step size
            collapsed (scipy could not continue).
    """
    from scipy.integrate import solve_ivp

    check_method(method, rtol, atol)
    q0 = np.atleast_2d(np.asarray(q0, dtype=np.float64))
    qd0 = np.atleast_2d(np.asarray(qd0, dtype=np.float64))
    t_eval = np.asarray(t_eval, dtype=np.float64)
    if q0.shape != qd0.shape or q0.shape[1] != system.dof:
        raise ArgumentError(
            "initial_states", f"need q and q̇ of {system.dof} coordinate(s) per run, got shapes "
            f"{q0.shape} and {qd0.shape}"
        )
    if not (np.isfinite(q0).all() and np.isfinite(qd0).all()):
        raise ArgumentError("initial_states", "must be finite numbers")
    if t_eval.ndim != 1 or t_eval.size < 1 or np.any(np.diff(t_eval) <= 0):
        raise ArgumentError("t_eval", "must be increasing sample times")
    n_runs, dof = q0.shape
    if not vectorize and n_runs > 1:
        parts = []
        calls = 0
        for r in range(n_runs):
            run_force = None if force is None else (lambda t, r=r: np.asarray(force(t)).reshape(-1, dof)[r : r + 1])
            try:
                part = integrate(system, theta, q0[r : r + 1], qd0[r : r + 1], t_eval, method=method,
                                 rtol=rtol, atol=atol, solver=solver, force=run_force, vectorize=True)
            except IntegrationFailure as err:
                raise IntegrationFailure([r], err.t, err.cause) from None
            parts.append(part)
            calls += part.n_calls
        return Simulation(t_eval, np.concatenate([p.q for p in parts]), np.concatenate([p.qd for p in parts]), calls)

    rhs, state = make_rhs(system, theta, n_runs, solver, force)
    y0 = np.concatenate([q0.reshape(-1), qd0.reshape(-1)])
    # the RMS error norm runs over all R·2D components: ÷√R makes each run meet the tolerance
    shrink = math.sqrt(n_runs)
    run_rtol, run_atol = max(rtol / shrink, MIN_RTOL), atol / shrink
    t_span = (float(t_eval[0]), float(t_eval[-1]))
    if t_eval.size == 1:
        return Simulation(t_eval, q0[:, None, :].copy(), qd0[:, None, :].copy(), 0)
    state["limit"] = BLOWUP_FACTOR * max(1.0, float(np.abs(y0).max()))
    state["span"] = t_span[1] - t_span[0]
    try:
        with np.errstate(all="ignore"):
            solution = solve_ivp(rhs, t_span, y0, method=method, t_eval=t_eval, rtol=run_rtol, atol=run_atol)
    except _Abort as stop:
        raise _failure(system, theta, y0, None, state, n_runs, dof, stop.t) from None
    y = solution.y  # (R·2D, T')
    finite = np.isfinite(y).all(axis=0)
    if solution.status != 0 or y.shape[1] != t_eval.size or not finite.all():
        t_fail = float(solution.t[-1]) if solution.t.size else t_span[0]
        if not finite.all():
            t_fail = float(solution.t[int(np.argmin(finite))])
        raise _failure(system, theta, y0, solution, state, n_runs, dof, t_fail)
    states = y.reshape(2, n_runs, dof, -1).transpose(0, 1, 3, 2)  # (2, R, T, D)
    return Simulation(t_eval, states[0].copy(), states[1].copy(), state["calls"], None)


def _failure(system, theta, y0, solution, state, n_runs, dof, t_fail) -> IntegrationFailure:
    """Why the integration stopped: the runs last seen going bad, and whether their mass
    matrix ∂²L/∂q̇∂q̇ᵀ turned singular (its smallest singular value fell below
    ``SINGULAR_FRACTION`` of the initial state's) or the solution blew up."""
    from lagfit_cli.core.solvers import mass_matrix

    runs = state["bad"] or list(range(n_runs))
    last = state.get("last_y")
    if last is None or not np.isfinite(last).all():
        last = y0
        if solution is not None and solution.y.size:
            good = np.isfinite(solution.y).all(axis=0)
            if good.any():
                last = solution.y[:, np.flatnonzero(good)[-1]]
    theta_t = torch.as_tensor(np.asarray(theta, dtype=np.float64))

    def smallest(y: np.ndarray) -> np.ndarray:
        states = y.reshape(2, n_runs, dof)
        q = torch.from_numpy(states[0][runs].copy())
        qd = torch.from_numpy(states[1][runs].copy())
        try:
            return torch.linalg.svdvals(mass_matrix(system, q, qd, theta_t).detach()).min(-1).values.numpy()
        except Exception:  # noqa: BLE001  a mass matrix that cannot even be formed
            return np.full(len(runs), np.nan)

    start, end = smallest(y0), smallest(last)
    states = last.reshape(2, n_runs, dof)
    magnitude = float(np.abs(states[:, runs]).max())
    collapsed = "" if solution is None else f"; {solution.message}"
    if state.get("stalled"):
        collapsed = "; the step size collapsed"
    if np.any(~np.isfinite(end) | (end <= SINGULAR_FRACTION * np.abs(start))):
        q = states[0][runs[0]]
        cause = (
            f"the mass matrix ∂²L/∂q̇∂q̇ᵀ turns singular (near q = ({', '.join(f'{v:.4g}' for v in q)})): "
            "q̈ is not defined there"
        )
    else:
        cause = (
            f"the solution blew up (|state| reached {magnitude:.3g}): the equations of motion "
            f"may be unstable at these parameters{collapsed}"
        )
    return IntegrationFailure(runs, t_fail, cause)


# --------------------------------------------------------------------------- initial states


def draw_initial_states(
    n_runs: int, dof: int, q_bounds: Sequence[float], qd_bounds: Sequence[float], generator: torch.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """``n_runs`` states uniform in the bounds (every q_i in q_bounds, every q̇_i in
    qd_bounds), drawn from ``generator`` (the seeded ``data`` stream): (R, D) each."""
    if n_runs < 1:
        raise ArgumentError("n_runs", f"must be at least 1, got {n_runs}")
    unit = torch.rand((n_runs, 2 * dof), generator=generator, dtype=torch.float64).numpy()
    low = np.array([q_bounds[0]] * dof + [qd_bounds[0]] * dof, dtype=np.float64)
    high = np.array([q_bounds[1]] * dof + [qd_bounds[1]] * dof, dtype=np.float64)
    states = low + (high - low) * unit
    return states[:, :dof].copy(), states[:, dof:].copy()


def parse_initial_states(states, dof: int) -> tuple[np.ndarray, np.ndarray]:
    """Initial states as given: (R, 2D) rows [q0 … q(D−1), q̇0 … q̇(D−1)] (a list of lists,
    an array, or one flat row)."""
    try:
        array = np.asarray(states, dtype=np.float64)
    except (TypeError, ValueError):
        raise ArgumentError("initial_states", f"must be rows of numbers [q0, …, qd0, …], got {states!r}") from None
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != 2 * dof or array.shape[0] < 1:
        raise ArgumentError(
            "initial_states", f"each state is {2 * dof} numbers ({', '.join(f'q{i}' for i in range(dof))}, "
            f"{', '.join(f'qd{i}' for i in range(dof))}) for this {dof}-coordinate system; got rows of "
            f"{array.shape[-1] if array.ndim == 2 else array.shape}"
        )
    if not np.isfinite(array).all():
        raise ArgumentError("initial_states", "must be finite numbers")
    return array[:, :dof].copy(), array[:, dof:].copy()


# --------------------------------------------------------------------------- forces


def constant_force(values: Sequence[float], n_runs: int, dof: int) -> ForceFn:
    """Q(t) = the same constant per coordinate for every run."""
    row = np.asarray(values, dtype=np.float64).reshape(1, dof)
    block = np.repeat(row, n_runs, axis=0)
    return lambda t: block


def sampled_force(runs: Sequence[Run], t_offsets: Optional[Sequence[float]] = None) -> Optional[ForceFn]:
    """Q(t) interpolated from each run's measured forces (zero where a run has none), by
    scipy's PCHIP: third order on smooth forces, and no overshoot at a step or a
    saturated command (a cubic spline would ring there). ``t`` counts from each run's
    ``t_offsets`` (its first sample when the ODE starts at 0); held constant past the ends."""
    if not any(run.Q is not None for run in runs):
        return None
    from scipy.interpolate import PchipInterpolator

    dof = runs[0].dof
    offsets = [0.0] * len(runs) if t_offsets is None else list(t_offsets)
    curves = [
        None if run.Q is None else (PchipInterpolator(run.t, run.Q, axis=0, extrapolate=False), run.t[0], run.t[-1])
        for run in runs
    ]

    def force(t: float) -> np.ndarray:
        out = np.zeros((len(runs), dof))
        for r, curve in enumerate(curves):
            if curve is not None:
                interpolate, low, high = curve
                out[r] = interpolate(min(max(t + offsets[r], low), high))
        return out

    return force


# --------------------------------------------------------------------------- noise and output


def to_trajectories(
    simulation: Simulation, names: Sequence[str], force: Optional[ForceFn] = None,
    noise_q: float = 0.0, noise_qd: float = 0.0, generator: Optional[torch.Generator] = None,
) -> Trajectories:
    """The simulated runs as :class:`Trajectories` (named ``0, 1, …``), with Gaussian
    measurement noise σ on q (and on q̇) drawn from ``generator`` (the ``noise`` stream)."""
    q, qd = simulation.q, simulation.qd
    if noise_q > 0 or noise_qd > 0:
        if generator is None:
            raise ArgumentError("seed", "noise needs a random generator")
        draw_q = torch.randn(q.shape, generator=generator, dtype=torch.float64).numpy()
        draw_qd = torch.randn(qd.shape, generator=generator, dtype=torch.float64).numpy()
        q, qd = q + noise_q * draw_q, qd + noise_qd * draw_qd
    forces = None
    if force is not None:
        forces = np.stack([np.asarray(force(t), dtype=np.float64) for t in simulation.t], axis=1)  # (R, T, D)
    runs = tuple(
        Run(simulation.t.copy(), q[r].copy(), qd[r].copy(), None if forces is None else forces[r].copy(), name=str(r))
        for r in range(q.shape[0])
    )
    return Trajectories(runs, tuple(names))


def energy_drift(system: System, theta: np.ndarray, q: np.ndarray, qd: np.ndarray) -> float:
    """max |E(t) − E(0)| / max(|E(0)|, typical |T|) over every run, E = Σ q̇ ∂L/∂q̇ − L (the
    Hamiltonian, conserved when L has no explicit t and no force or dissipation acts)."""
    dof = system.dof
    qt = torch.from_numpy(q.reshape(-1, dof).copy())
    qdt = torch.from_numpy(qd.reshape(-1, dof).copy()).requires_grad_(True)
    theta_t = torch.as_tensor(np.asarray(theta, dtype=np.float64))
    lag = system.lagrangian(qt, qdt, theta_t)
    (p,) = torch.autograd.grad(lag.sum(), qdt)
    energy = ((p * qdt).sum(-1) - lag).detach().numpy().reshape(q.shape[0], q.shape[1])
    scale = max(float(np.abs(energy).max()), 1e-300)
    return float(np.abs(energy - energy[:, :1]).max() / scale)


# --------------------------------------------------------------------------- Python API


def simulate(
    system: Union[str, System],
    params: Optional[dict] = None,
    initial_states=None,
    duration: float = 10.0,
    dt: float = 0.01,
    *,
    n_runs: Optional[int] = None,
    q_bounds: Sequence[float] = (-1.0, 1.0),
    qd_bounds: Sequence[float] = (-1.0, 1.0),
    method: str = "DOP853",
    rtol: float = 1e-10,
    atol: float = 1e-10,
    noise: float = 0.0,
    noise_qd: float = 0.0,
    force=None,
    seed: int = 0,
    solver: str = "auto",
    vectorize: bool = True,
    coordinate_names: Optional[Sequence[str]] = None,
) -> Trajectories:
    """Integrate ``system`` at ``params`` and return the runs as :class:`Trajectories`.

        import lagfit_cli as lf
        runs = lf.simulate("double_pendulum", {"m1": 2, "m2": 1, "l1": 1.5, "l2": 1, "g": 9.81},
                           [[0.5, -0.3, 0.0, 0.0]], duration=10, dt=0.01)

    Args:
        system: a built-in name, a Lagrangian expression, or a ``System``.
        params: a value for every parameter (name -> number).
        initial_states: rows [q0 … q(D−1), q̇0 … q̇(D−1)], one per run; or None to draw
            ``n_runs`` states uniformly in ``q_bounds`` × ``qd_bounds`` (seeded: ``seed``).
        duration, dt: seconds simulated, and the sampling interval of the output.
        method, rtol, atol: ``scipy.integrate.solve_ivp``'s method (DOP853, RK45, RK23) and
            tolerances (each run meets them as if integrated alone; see the module doc).
        noise, noise_qd: σ of Gaussian measurement noise added to q and to q̇ (seeded).
        force: applied generalised forces Q: None, D constants, or ``f(t) -> (D,) or (R, D)``.
        vectorize: one ODE for all runs (fast) or one ``solve_ivp`` per run.

    Raises:
        ArgumentError: a bad argument; IntegrationFailure: a run blew up or its mass matrix
        turned singular (the message names the run and the time).
    """
    from lagfit_cli.core.api import as_system
    from lagfit_cli.core.random import generator

    built = as_system(system, params)
    theta = parameter_vector(built, params)
    t_eval = sample_times(float(duration), float(dt))
    check_method(method, rtol, atol)
    for name, sigma in (("noise", noise), ("noise_qd", noise_qd)):
        if not (math.isfinite(sigma) and sigma >= 0):
            raise ArgumentError(name, f"must be a finite σ >= 0, got {sigma}")
    if initial_states is None:
        q0, qd0 = draw_initial_states(1 if n_runs is None else int(n_runs), built.dof, q_bounds, qd_bounds,
                                      generator(seed, "data"))
    else:
        q0, qd0 = parse_initial_states(initial_states, built.dof)
    fn = as_force(force, q0.shape[0], built.dof)
    sim = integrate(built, theta, q0, qd0, t_eval, method=method, rtol=rtol, atol=atol, solver=solver,
                    force=fn, vectorize=vectorize)
    names = tuple(coordinate_names) if coordinate_names else tuple(f"q{i}" for i in range(built.dof))
    return to_trajectories(sim, names, fn, noise, noise_qd, generator(seed, "noise"))


def parameter_vector(system: System, params) -> np.ndarray:
    """θ (P,) from a mapping name -> number (every parameter needs a value) or a sequence."""
    if params is None:
        raise ArgumentError("params", f"a simulation needs a value for every parameter of {system.name!r}: "
                            f"{', '.join(system.param_names)}")
    if isinstance(params, dict) or hasattr(params, "keys"):
        missing = [n for n in system.param_names if params.get(n) is None]
        if missing:
            raise ArgumentError(f"params.{missing[0]}", "a simulation needs a number for every parameter "
                                "(null = unknown is for fitting)")
        values = [params[n] for n in system.param_names]
    else:
        values = list(params)
    theta = np.asarray(values, dtype=np.float64).reshape(-1)
    if theta.size != system.n_params or not np.isfinite(theta).all():
        raise ArgumentError("params", f"need {system.n_params} finite values ({', '.join(system.param_names)})")
    return theta


def as_force(force, n_runs: int, dof: int) -> Optional[ForceFn]:
    """None, D constants, or a callable t -> (D,) | (R, D), as f(t) -> (R, D)."""
    if force is None:
        return None
    if callable(force):
        def fn(t: float) -> np.ndarray:
            value = np.asarray(force(t), dtype=np.float64)
            return np.broadcast_to(value.reshape(-1, dof), (n_runs, dof))

        return fn
    try:
        values = np.asarray(force, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise ArgumentError("force", f"must be {dof} number(s) or a function of t, got {force!r}") from None
    if values.size != dof or not np.isfinite(values).all():
        raise ArgumentError("force", f"needs one finite value per coordinate ({dof}), got {force!r}")
    return constant_force(values, n_runs, dof)
