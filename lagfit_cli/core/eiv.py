r"""Errors in the variables: estimators that noise on q and q̇ does not drag (``estimator=``).

Plain least squares (``ls``) fits q̈ at the *measured* states. When the states themselves are
noisy, that estimate is biased, not just scattered: for the harmonic oscillator with noise of
σ on q the fitted k/m shrinks by var q / (var q + σ²). Two consistent alternatives:

``eiv`` — orthogonal distance regression (any L)
    The true states of every point are unknowns next to θ. With z̃ᵢ = (q̃ᵢ, q̃̇ᵢ) and the
    measured xᵢ = (qᵢ, q̇ᵢ), minimise

        Σᵢ ‖q̈ᵢ − f(z̃ᵢ; θ)‖²/σ_qdd² + ‖qᵢ − q̃ᵢ‖²/σ_q² + ‖q̇ᵢ − q̃̇ᵢ‖²/σ_qd².

    In the scaled unknowns uᵢ = (z̃ᵢ − xᵢ)/σ_x the residual of point i is
    rᵢ = [(f(xᵢ + σ_x⊙uᵢ; θ) − q̈ᵢ)/s ; uᵢ] (3D entries): a coordinate with σ = 0 has a zero
    Jacobian column and never moves, so exact inputs are handled without a special case.
    The per-point unknowns couple only through θ, so the Gauss–Newton normal equations are
    block-arrow shaped; each point's 2D × 2D block is eliminated (the Schur complement, as in
    bundle adjustment) and one p × p system is solved per iteration:

        S = U − Σᵢ Wᵢ Vᵢ⁻¹ Wᵢᵀ,   S δθ = −g_θ + Σᵢ Wᵢ Vᵢ⁻¹ gᵢ,   δuᵢ = −Vᵢ⁻¹(gᵢ + Wᵢᵀ δθ)

    with U = Σ JθᵢᵀJθᵢ, Wᵢ = JθᵢᵀGᵢ, Vᵢ = GᵢᵀGᵢ + I (+ λ I), Gᵢ = ∂f/∂z · diag(σ_x)/s. Damping
    and acceptance are Levenberg–Marquardt's (``core.lm``: λ·max diag(U) on θ, λ·I on u,
    Nielsen's update). Everything is batched over points and starts: O(N) per iteration.
    f, ∂f/∂z and ∂f/∂θ come from central differences of eq. 6's eager solver, all shifted
    copies in one batched call (``StateModel``; ``exact=True``: forward-mode autodiff along
    2D + P directions, block-diagonal across points, 5× slower), so any Lagrangian works.
    After each θ step the states are re-solved for that θ (variable projection: each
    point's small problem by Gauss–Newton); without it the coupled problem creeps.

    **Clean q̈ (σ_qdd = 0).** Then the q̈ equation is a hard constraint. It is handled by a
    floor: s = max(σ_qdd, ``QDD_FLOOR`` · s_in), where s_in is the RMS q̈-scale noise the
    inputs induce (‖∂f/∂z σ_x‖ at the start). The implied extra variance is 10⁻⁶ of the
    true one, so the weighting is right to that order; the per-point blocks stay well
    conditioned (κ ≈ 10⁶). With σ_q = σ_qd = 0 the problem *is* least squares (uᵢ never
    move) and the answer is ls's, whatever s.

    **Uncertainty.** At the optimum the reduced matrix S (undamped) is the inverse
    covariance of θ_free in units of the weighted misfit: Cov = s² S⁻¹ with
    s² = 2·cost / (N·D − p) (as ODRPACK scales it: robust to σ's all off by one factor).
    It is handed to ``core.uncertainty`` as an equivalent Jacobian R (RᵀR = S) so the table,
    the delta method and the intervals are shared with ``ls``. The bootstrap refits every
    resample with this solver (row weights), as one batch.

``tls`` — bias-corrected equation error (L linear in θ or in coefficients c(θ))
    The equation-error system A c = b (``solvers.jacobian``) is built at the measured data;
    its rows carry noise whose covariance, to first order, is Cᵢ = Jᵢ Σ Jᵢᵀ (Jᵢ = ∂[Aᵢ bᵢ]/∂(q,
    q̇, q̈) by central differences). With Z = [A, −b] and C = Σᵢ Cᵢ, the consistent estimate
    is the generalised eigenvector of (ZᵀZ, C) with the smallest eigenvalue (the known-noise
    total least squares; for the harmonic oscillator exactly the classical correction
    AᵀA − Nσ²). The second-order mean shift of nonlinear features (E cos(q+δ) ≠ cos q) is
    subtracted too (½ Σₖ σₖ² ∂²Zᵢ/∂xₖ²). One SVD-sized solve: no iterations. It removes the
    bias to O(σ⁴), and is noisier than ``eiv`` (it weights every row alike).

σ values: numbers ≥ 0, or ``auto`` (:func:`auto_sigma`): a difference-based estimate on
time-ordered data only (each run sorted by t; the variance of the 4th differences, MAD-
based, over C(8, 4)). Scattered states (grids, uniform draws) carry no information that
separates noise from the spread of the states, and ``auto`` refuses them in one line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import torch
from torch import Tensor

from lagfit_cli.core.data import Dataset
from lagfit_cli.core.fit import CONVERGED, DIVERGED, MAX_ITERS, STALLED, FitHistory, FitResult
from lagfit_cli.core.lm import batched_solve
from lagfit_cli.core.registry import Registry
from lagfit_cli.core.solvers.autodiff import autograd_terms, euler_lagrange_terms
from lagfit_cli.core.solvers.base import solve_mass_matrix
from lagfit_cli.core.systems import System
from lagfit_cli.errors import ArgumentError, LagfitError

#: the estimators ``estimator.name`` / ``fit(estimator=)`` may name
ESTIMATORS = ("ls", "eiv", "tls")
SIGMA_KEYS = ("sigma_q", "sigma_qd", "sigma_qdd")
#: σ_qdd = 0: the q̈ equation's weight is floored at this fraction of the input-induced noise
QDD_FLOOR = 1e-3
INITIAL_DAMPING = 1e-3
MAX_DAMPING = 1e16
#: differences of this order estimate σ for ``auto`` (var Δᵏx = C(2k, k) σ² for white noise)
AUTO_ORDER = 4
#: ``auto`` needs at least this many time-ordered samples per run
AUTO_MIN_SAMPLES = 20
#: Gauss–Newton steps of the per-point state problems per θ (variable projection), and their tolerance
INNER_ITERS, INNER_TOL, INNER_FTOL = 10, 1e-7, 1e-10
#: relative step of the central differences for ∂f/∂z, ∂f/∂θ (``StateModel(exact=False)``)
FD_STEP = 1e-5
#: the step of tls's first and second differences of the equation rows (relative)
TLS_STEP = 1e-4


@dataclass(frozen=True)
class Sigmas:
    """The noise standard deviations the estimator assumes: q, q̇, q̈ (floats ≥ 0)."""

    q: float
    qd: float
    qdd: float

    def as_dict(self) -> dict[str, float]:
        return {"sigma_q": self.q, "sigma_qd": self.qd, "sigma_qdd": self.qdd}


def check_sigma(key: str, value: Any) -> Union[float, str, None]:
    """A σ option: None (not given), ``"auto"``, or a finite number ≥ 0; else one clear error."""
    if value is None or value == "auto":
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ArgumentError(key, f"must be a number >= 0 or 'auto', got {value!r}")
    if not (math.isfinite(value) and value >= 0):
        raise ArgumentError(key, f"must be a finite number >= 0 or 'auto', got {value}")
    return float(value)


def resolve_sigmas(data: Dataset, given: dict[str, Union[float, str, None]]) -> tuple[Sigmas, dict[str, str]]:
    """The σ's to use: the numbers given, ``auto`` estimated (:func:`auto_sigma`).

    Returns the σ's and, per key, how it was obtained ("given" | "auto (...)").
    """
    values, how = {}, {}
    field_of = {"sigma_q": "q", "sigma_qd": "qd", "sigma_qdd": "qdd"}
    for key in SIGMA_KEYS:
        value = check_sigma(key, given.get(key))
        if value is None:
            raise ArgumentError(
                key, "estimator eiv/tls needs the noise level of the data: give a number >= 0 "
                "(0 = exact) or 'auto' (time-ordered data only)"
            )
        if value == "auto":
            values[key] = auto_sigma(data, field_of[key], key)
            how[key] = f"auto (order-{AUTO_ORDER} differences along t)"
        else:
            values[key] = value
            how[key] = "given"
    return Sigmas(values["sigma_q"], values["sigma_qd"], values["sigma_qdd"]), how


def auto_sigma(data: Dataset, name: str, key: str) -> float:
    """σ of the white noise on ``data.<name>`` from its AUTO_ORDER-th differences along t.

    For a smooth signal sampled densely the differences are noise only: var Δᵏx = C(2k, k) σ².
    The robust scale (1.4826 · MAD) is used per coordinate and the median over coordinates
    returned. Needs time-ordered samples (``Dataset.t``); scattered states cannot tell noise
    from the spread of the states.
    """
    if data.t is None:
        raise ArgumentError(
            key, "auto needs time-ordered data (trajectories with t); these states are scattered "
            "(a grid or random draws), where noise cannot be told from the spread of the states: give a number"
        )
    values = getattr(data, name).detach().cpu().double()
    t = data.t.detach().cpu().double()
    runs = data.run.detach().cpu() if data.run is not None else torch.zeros(t.shape[0], dtype=torch.long)
    diffs = []
    for r in torch.unique(runs).tolist():
        rows = (runs == r).nonzero().flatten()
        if rows.numel() < AUTO_MIN_SAMPLES:
            continue
        order = rows[torch.argsort(t[rows])]
        d = values[order]
        for _ in range(AUTO_ORDER):
            d = d[1:] - d[:-1]
        diffs.append(d)
    if not diffs:
        raise ArgumentError(key, f"auto needs runs of at least {AUTO_MIN_SAMPLES} time-ordered samples")
    d = torch.cat(diffs)
    mad = (d - d.median(0).values).abs().median(0).values * 1.4826
    return float((mad / math.sqrt(math.comb(2 * AUTO_ORDER, AUTO_ORDER))).median())


def sigmas_from_noise(sigma: float, fields: tuple[str, ...]) -> dict[str, float]:
    """The σ's synthetic noise of ``sigma`` on ``fields`` (``core.noise``) gives each key."""
    return {"sigma_q": sigma if "q" in fields else 0.0,
            "sigma_qd": sigma if "qd" in fields else 0.0,
            "sigma_qdd": sigma if "qdd" in fields else 0.0}


# --------------------------------------------------------------------------- model


class StateModel:
    """q̈ = f(q, q̇; θ) at per-(start, point) states, and its Jacobians by forward mode.

    States are (B, N, D), θ (B, P). The Lagrangian is evaluated point by point, so a
    tangent along one state coordinate at every point gives that column of ∂f/∂z at every
    point (the Jacobian is block-diagonal across points).
    """

    def __init__(self, system: System, exact: bool = False) -> None:
        self.system, self.exact = system, exact

    def qdd(self, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
        with torch.no_grad():
            hessian, rhs = autograd_terms(self.system.lagrangian, q, qd, theta[:, None, :])
            return solve_mass_matrix(hessian, rhs)

    def _f(self, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
        hessian, rhs = euler_lagrange_terms(self.system.lagrangian, q, qd, theta[:, None, :])
        return solve_mass_matrix(hessian, rhs)

    def jacobians(self, q: Tensor, qd: Tensor, theta: Tensor, with_theta: bool = True) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """f (B, N, D), ∂f/∂z (B, N, D, 2D), ∂f/∂θ (B, N, D, P) (None unless ``with_theta``).

        ``exact``: forward-mode autodiff (torch.func.jvp, 2D + P directions). Otherwise central
        differences of the eager solver (a step of ``FD_STEP``·(1 + |x|) per variable: error
        ~10⁻¹⁰ relative), ~5× faster; the two agree in tests/test_eiv.py.
        """
        if not self.exact:
            return self._differences(q, qd, theta, with_theta)
        from torch.func import jvp, vmap

        b, n, d = q.shape
        p = theta.shape[1] if with_theta else 0
        eye_state = torch.eye(d, dtype=q.dtype, device=q.device)
        zeros_state = q.new_zeros((d, b, n, d))
        along = eye_state[:, None, None, :].expand(d, b, n, d)
        t_q = torch.cat([along, zeros_state, q.new_zeros((p, b, n, d))])
        t_qd = torch.cat([zeros_state, along, q.new_zeros((p, b, n, d))])
        eye_p = torch.eye(theta.shape[1], dtype=theta.dtype, device=theta.device)[:p]
        t_theta = torch.cat([theta.new_zeros((2 * d, b, theta.shape[1])), eye_p[:, None, :].expand(p, b, theta.shape[1])])

        def one(tq: Tensor, tqd: Tensor, tth: Tensor) -> Tensor:
            return jvp(self._f, (q, qd, theta), (tq, tqd, tth))[1]

        with torch.no_grad():
            f = self._f(q, qd, theta)
            columns = vmap(one)(t_q.contiguous(), t_qd.contiguous(), t_theta.contiguous())  # (2D + P, B, N, D)
        columns = columns.permute(1, 2, 3, 0)  # (B, N, D, 2D + P)
        return f.detach(), columns[..., : 2 * d].detach(), columns[..., 2 * d :].detach() if with_theta else None


    def _differences(self, q: Tensor, qd: Tensor, theta: Tensor, with_theta: bool) -> tuple[Tensor, Tensor, Optional[Tensor]]:
        """Central differences, every shifted copy evaluated in one batched call."""
        b, n, d = q.shape
        state = torch.cat([q, qd], dim=-1)  # (B, N, 2D)
        h = FD_STEP * (1.0 + state.abs())
        eye = torch.eye(2 * d, dtype=q.dtype, device=q.device)
        shift = eye[:, None, None, :] * h[None]  # (2D, B, N, 2D)
        moved = torch.cat([state[None] + shift, state[None] - shift])  # (4D, B, N, 2D)
        thetas = [theta.expand(4 * d, b, -1).reshape(-1, theta.shape[1])]
        states = [moved.reshape(-1, n, 2 * d)]
        p = theta.shape[1] if with_theta else 0
        if p:
            ht = FD_STEP * (1.0 + theta.abs())  # (B, P)
            eye_p = torch.eye(p, dtype=theta.dtype, device=theta.device)
            tshift = eye_p[:, None, :] * ht[None]  # (P, B, P)
            thetas.append(torch.cat([theta[None] + tshift, theta[None] - tshift]).reshape(-1, p))
            states.append(state.expand(2 * p, b, n, 2 * d).reshape(-1, n, 2 * d))
        thetas.append(theta)
        states.append(state)
        all_states = torch.cat(states)
        values = self.qdd(all_states[..., :d].contiguous(), all_states[..., d:].contiguous(), torch.cat(thetas))
        k = 4 * d * b
        fz = values[:k].view(2, 2 * d, b, n, d)
        jz = ((fz[0] - fz[1]) / (2 * h.permute(2, 0, 1)[..., None])).permute(1, 2, 3, 0)  # (B, N, D, 2D)
        f = values[-b:]
        if not p:
            return f, jz, None
        ft = values[k : k + 2 * p * b].view(2, p, b, n, d)
        jt = ((ft[0] - ft[1]) / (2 * ht.T[:, :, None, None])).permute(1, 2, 3, 0)  # (B, N, D, P)
        return f, jz, jt


# --------------------------------------------------------------------------- ODR


@dataclass
class EIVFit:
    """What :func:`orthogonal_distance` returns: a ``FitResult`` over the starts (``loss``:
    the misfit in q̈² units per residual), the fitted states and the reduced system."""

    result: FitResult
    u: Tensor  # (B, N, 2D) scaled state corrections
    scale_qdd: float  # s, the q̈ weight used (σ_qdd or its floor)
    cost: Tensor  # (B,) ½ Σ weighted misfit (dimensionless)
    info: dict[str, Any] = field(default_factory=dict)


def orthogonal_distance(
    system: System,
    data: Dataset,
    sigmas: Sigmas,
    theta_init: Tensor,
    free: Tensor,
    iters: int = 100,
    ftol: float = 1e-10,
    xtol: float = 1e-10,
    gtol: float = 1e-8,
    weights: Optional[Tensor] = None,
    scale_qdd: Optional[float] = None,
) -> EIVFit:
    """ODR by Levenberg–Marquardt with the per-point blocks eliminated (module docstring).

    Args:
        theta_init: (B, P) starts; free: (P,) bool, the parameters that move.
        weights: (B, N) row weights (the bootstrap's counts), default 1.
        scale_qdd: the q̈ weight s to use (default: σ_qdd, floored as documented).
    """
    model = StateModel(system)
    theta = theta_init.detach().clone()
    n_starts, n_params = theta.shape
    dtype, device = theta.dtype, theta.device
    x_q, x_qd, target = data.q, data.qd, data.qdd
    n, d = x_q.shape
    sigma_x = torch.tensor([sigmas.q] * d + [sigmas.qd] * d, dtype=dtype, device=device)
    index = free.to(device).nonzero().flatten()
    p = int(index.numel())
    w = torch.ones((n_starts, n), dtype=dtype, device=device) if weights is None else weights.to(dtype=dtype, device=device)
    u = torch.zeros((n_starts, n, 2 * d), dtype=dtype, device=device)

    def states(u_: Tensor) -> tuple[Tensor, Tensor]:
        z = u_ * sigma_x
        return x_q + z[..., :d], x_qd + z[..., d:]

    q0, qd0 = states(u)
    f, jz, jt = model.jacobians(q0, qd0, theta)
    if scale_qdd is None:
        induced = float((jz * sigma_x).square().sum(-1).mean().sqrt()) if bool(sigma_x.any()) else 0.0
        scale_qdd = sigmas.qdd if sigmas.qdd > 0 else QDD_FLOOR * induced
        if not scale_qdd > 0:  # nothing is noisy: plain least squares, any scale
            scale_qdd = 1.0
    s = float(scale_qdd)

    def cost_of(theta_: Tensor, u_: Tensor, w_: Tensor) -> Tensor:
        q_, qd_ = states(u_)
        e = (model.qdd(q_, qd_, theta_) - target) / s
        per_point = e.square().sum(-1) + u_.square().sum(-1)
        return 0.5 * (w_ * per_point).sum(-1)

    eye_u = torch.eye(2 * d, dtype=dtype, device=device)

    def inner(theta_: Tensor, u_: Tensor, w_: Tensor) -> Tensor:
        """The best states for fixed θ: each point's small problem by Gauss–Newton (a step
        that raises a point's misfit is halved, then dropped)."""
        u_ = u_.clone()
        for _ in range(INNER_ITERS):
            q_, qd_ = states(u_)
            f_, jz_, _ = model.jacobians(q_, qd_, theta_, with_theta=False)
            e_ = (f_ - target) / s
            g_ = jz_ * sigma_x / s
            before = e_.square().sum(-1) + u_.square().sum(-1)
            v_ = torch.einsum("bndk,bndl->bnkl", g_, g_) + eye_u
            grad_ = torch.einsum("bndk,bnd->bnk", g_, e_) + u_
            step = -torch.linalg.solve_ex(v_, grad_[..., None])[0][..., 0]
            start = u_
            for _half in range(3):
                trial = u_ + step
                q_, qd_ = states(trial)
                after = ((model.qdd(q_, qd_, theta_) - target) / s).square().sum(-1) + trial.square().sum(-1)
                better = torch.isfinite(after) & (after <= before)
                u_ = torch.where(better[..., None], trial, u_)
                step = torch.where(better[..., None], torch.zeros_like(step), 0.5 * step)
                if bool(better.all()):
                    break
            if float((u_ - start).abs().max()) <= INNER_TOL * (1.0 + float(u_.abs().max())):
                break
            # or the misfit no longer changes: what the outer step's acceptance sees
            q_, qd_ = states(u_)
            now = ((model.qdd(q_, qd_, theta_) - target) / s).square().sum(-1) + u_.square().sum(-1)
            total_before, total_now = float((w_ * before).sum()), float((w_ * now).sum())
            if total_before - total_now <= INNER_FTOL * total_now:
                break
        return u_

    if bool(sigma_x.any()):
        u = inner(theta, u, w)
        q0, qd0 = states(u)
        f, jz, jt = model.jacobians(q0, qd0, theta)

    active = torch.ones(n_starts, dtype=torch.bool, device=device)
    status = [MAX_ITERS] * n_starts
    stop_iter = torch.full((n_starts,), iters, dtype=torch.long)
    damping = torch.full((n_starts,), INITIAL_DAMPING, dtype=dtype, device=device)
    growth = torch.full((n_starts,), 2.0, dtype=dtype, device=device)
    diag_max = torch.zeros((n_starts, p), dtype=dtype, device=device)
    cost = torch.full((n_starts,), float("nan"), dtype=dtype, device=device)
    grad_norm = cost.clone()
    rows_theta, rows_loss, rows_grad, rows_lr = [], [], [], []
    m = n * d

    def stop(which: Tensor, name: str, t: int) -> None:
        for b in which.tolist():
            if status[b] == MAX_ITERS:
                status[b], stop_iter[b] = name, t

    for t in range(iters + 1):
        live = active.nonzero().flatten()
        if t > 0:
            q_l, qd_l = states(u[live])
            f, jz, jt = model.jacobians(q_l, qd_l, theta[live])
        wl = w[live]
        e = (f - target) / s  # (b, N, D)
        g = jz * sigma_x / s  # (b, N, D, 2D)
        jf = jt[..., index] / s  # (b, N, D, p)
        ul = u[live]
        cost[live] = 0.5 * (wl * (e.square().sum(-1) + ul.square().sum(-1))).sum(-1)
        grad_u = torch.einsum("bndk,bnd->bnk", g, e) + ul  # (b, N, 2D)
        grad_t = torch.einsum("bn,bndp,bnd->bp", wl, jf, e)
        grad_norm[live] = torch.sqrt(grad_t.square().sum(-1) + (wl[..., None] * grad_u).square().sum((-2, -1)))
        rows_theta.append(theta.clone())
        rows_loss.append(2 * cost * s * s / m)
        rows_grad.append(grad_norm.clone())
        rows_lr.append(torch.where(active, damping, torch.full_like(damping, float("nan"))))
        finite = torch.isfinite(cost[live]) & torch.isfinite(grad_t).all(-1)
        stop(live[~finite], DIVERGED, t)
        # stationary: the gradient is negligible against the cost's own scale
        scale_g = torch.sqrt(2 * cost[live].clamp_min(1e-300)) * torch.sqrt(
            torch.einsum("bn,bndp->bp", wl, jf.square()).sum(-1) + wl.sum(-1)
        )
        flat = finite & (grad_norm[live] <= gtol * scale_g)
        stop(live[flat], CONVERGED, t)
        keep = finite & ~flat
        active[live[~keep]] = False
        if t == iters or not bool(keep.any()):
            break
        sel = keep.nonzero().flatten()
        live, wl, e, g, jf, ul, grad_u, grad_t = (
            live[sel], wl[sel], e[sel], g[sel], jf[sel], ul[sel], grad_u[sel], grad_t[sel]
        )
        big_u = torch.einsum("bn,bndp,bndq->bpq", wl, jf, jf)
        small_w = torch.einsum("bndp,bndk->bnpk", jf, g)  # (b, N, p, 2D)
        small_v = torch.einsum("bndk,bndl->bnkl", g, g) + eye_u
        # θ's damping is scaled by the diagonal of the *reduced* (undamped) matrix: U itself
        # is dominated by what the state corrections absorb (by 1/s² when q̈ is clean)
        chol0, _ = torch.linalg.cholesky_ex(small_v)
        reduced0 = big_u - torch.einsum(
            "bn,bnpk,bnkq->bpq", wl, small_w, torch.cholesky_solve(small_w.transpose(-1, -2), chol0)
        )
        diag_max[live] = torch.maximum(diag_max[live], reduced0.diagonal(dim1=1, dim2=2).clamp_min(0))
        dscale = torch.maximum(diag_max[live], diag_max[live].amax(-1, keepdim=True).clamp_min(1e-300) * 1e-12)
        trying = torch.ones(live.numel(), dtype=torch.bool, device=device)
        for _ in range(64):
            rows = trying.nonzero().flatten()
            who = live[rows]
            lam = damping[who]
            v_star = small_v[rows] + lam[:, None, None, None] * eye_u
            chol, _ = torch.linalg.cholesky_ex(v_star)
            w_rows = small_w[rows]
            y_mat = torch.cholesky_solve(w_rows.transpose(-1, -2), chol)  # (r, N, 2D, p)
            y_vec = torch.cholesky_solve(grad_u[rows][..., None], chol)[..., 0]  # (r, N, 2D)
            wr = wl[rows]
            schur = big_u[rows] + torch.diag_embed(lam[:, None] * dscale[rows]) - torch.einsum(
                "bn,bnpk,bnkq->bpq", wr, w_rows, y_mat
            )
            rhs = -grad_t[rows] + torch.einsum("bn,bnpk,bnk->bp", wr, w_rows, y_vec)
            d_theta = batched_solve(schur, rhs)
            d_u = -y_vec - torch.einsum("bnkp,bp->bnk", y_mat, d_theta)
            cand_theta = theta[who].clone()
            cand_theta[:, index] += d_theta
            cand_u = ul[rows] + d_u
            lin_u = cand_u
            if bool(sigma_x.any()):  # variable projection: the states follow θ exactly
                cand_u = inner(cand_theta, cand_u, wr)
            new_cost = cost_of(cand_theta, cand_u, wr)
            # the linear model's cost at the step: ½‖r + J δ‖²
            lin_e = e[rows] + torch.einsum("bndp,bp->bnd", jf[rows], d_theta) + torch.einsum(
                "bndk,bnk->bnd", g[rows], d_u
            )
            lin_cost = 0.5 * (wr * (lin_e.square().sum(-1) + lin_u.square().sum(-1))).sum(-1)
            old = cost[who]
            predicted = old - lin_cost
            gain = old - new_cost
            ratio = gain / predicted
            accept = torch.isfinite(new_cost) & (gain > 0) & (ratio > 1e-4)
            moved = who[accept]
            theta[moved] = cand_theta[accept]
            u[moved] = cand_u[accept]
            damping[moved] = damping[moved] * torch.clamp(1 - (2 * ratio[accept] - 1) ** 3, min=1.0 / 3.0)
            growth[moved] = 2.0
            step_norm = d_theta.norm(dim=-1)
            small_step = step_norm <= xtol * (xtol + cand_theta[:, index].norm(dim=-1))
            small_gain = gain.abs() <= ftol * old
            done = accept & (small_gain | small_step)
            stop(who[done], CONVERGED, t + 1)
            active[who[done]] = False
            rejected = ~accept
            lifted = who[rejected]
            damping[lifted] = damping[lifted] * growth[lifted]
            growth[lifted] = growth[lifted] * 2.0
            stuck = rejected & (damping[who] > MAX_DAMPING)
            stop(who[stuck], STALLED, t + 1)
            active[who[stuck]] = False
            trying[rows[accept | stuck]] = False
            if not bool(trying.any()):
                break

    final = cost_of(theta, u, w)
    loss = 2 * final * s * s / m
    if len(rows_theta) <= int(stop_iter.max()):
        rows_theta.append(theta.clone())
        rows_loss.append(loss.clone())
        rows_grad.append(grad_norm.clone())
        rows_lr.append(torch.full_like(damping, float("nan")))
    stop_iter = stop_iter.clamp(max=len(rows_theta) - 1)
    history = FitHistory(
        theta=torch.stack(rows_theta), loss=torch.stack(rows_loss),
        grad_norm=torch.stack(rows_grad), lr=torch.stack(rows_lr),
    )
    result = FitResult(
        theta_init=theta_init, theta=theta, loss=loss, grad_norm=grad_norm, status=status,
        stop_iter=stop_iter, history=history, method="lm",
    )
    return EIVFit(result, u, s, final, {"scale_qdd": s, "qdd_floor_used": sigmas.qdd == 0 and s != 1.0})


def reduced_system(system: System, data: Dataset, sigmas: Sigmas, theta: Tensor, u: Tensor, free: Tensor, s: float) -> tuple[Tensor, float]:
    """S (p, p), the Schur complement of the undamped normal equations at (θ, u) for one start,
    and 2·cost (the weighted misfit)."""
    model = StateModel(system)
    n, d = data.q.shape
    sigma_x = torch.tensor([sigmas.q] * d + [sigmas.qd] * d, dtype=theta.dtype, device=theta.device)
    z = u * sigma_x
    f, jz, jt = model.jacobians(data.q[None] + z[None, :, :d], data.qd[None] + z[None, :, d:], theta[None])
    e = (f[0] - data.qdd) / s
    g = jz[0] * sigma_x / s
    jf = jt[0][..., free.to(theta.device)] / s
    big_u = torch.einsum("ndp,ndq->pq", jf, jf)
    small_w = torch.einsum("ndp,ndk->npk", jf, g)
    small_v = torch.einsum("ndk,ndl->nkl", g, g) + torch.eye(2 * d, dtype=theta.dtype, device=theta.device)
    y = torch.linalg.solve(small_v, small_w.transpose(-1, -2))
    schur = big_u - torch.einsum("npk,nkq->pq", small_w, y)
    return 0.5 * (schur + schur.T), float(e.square().sum() + u.square().sum())


# --------------------------------------------------------------------------- TLS


def _feature_system(system: System, model) -> tuple[System, Any]:
    """The Lagrangian linear in its parameters that the equation-error system is built on,
    and c(θ) (None when that is θ itself)."""
    of_params = getattr(model, "of_params", None)
    if getattr(model, "kind", None) not in ("basis", "coefficients"):
        raise ArgumentError(
            "estimator", f"tls needs L linear in θ or in coefficients c(θ); {system.name} is neither (use eiv)"
        )
    if of_params is None:
        return system, None
    c = system.coefficients
    return System(name=f"{system.name} (coefficients)", lagrangian=c.lagrangian, param_names=c.names,
                  dof=system.dof, linear_in_params=True), of_params


def equation_rows(features: System, q: Tensor, qd: Tensor, qdd: Tensor) -> Tensor:
    """Z (N, D, K + 1): column k = Hₖ q̈ − rₖ (k < K), the last = H₀ q̈ − r₀ (L's θ-free part),
    so that Z [c; 1] = H(c) q̈ − r(c) = 0 on exact data (values only)."""
    k = features.n_params
    n, d = q.shape
    theta = torch.cat([torch.zeros(1, k, dtype=q.dtype, device=q.device), torch.eye(k, dtype=q.dtype, device=q.device)])
    qs, qds = q.expand(k + 1, n, d).contiguous(), qd.expand(k + 1, n, d).contiguous()
    hessian, rhs = autograd_terms(features.lagrangian, qs, qds, theta[:, None, :])
    side = (hessian @ qdd[None, ..., None])[..., 0] - rhs  # (K + 1, N, D)
    columns = torch.cat([side[1:] - side[:1], side[:1]])
    return columns.permute(1, 2, 0)


def corrected_normal_matrices(features: System, data: Dataset, sigmas: Sigmas, weights: Optional[Tensor] = None) -> tuple[Tensor, Tensor, bool]:
    """ZᵀZ with Z's second-order mean shift removed, and C = Σ E[ΔzΔzᵀ] (first order):
    (K + 1, K + 1) each (K, K when L has no θ-free part), and whether it is homogeneous.
    ``weights`` (B, N) give B weighted copies: (B, K + 1, K + 1)."""
    q, qd, qdd = data.q, data.qd, data.qdd
    n, d = q.shape
    sig = torch.tensor([sigmas.q] * d + [sigmas.qd] * d + [sigmas.qdd] * d, dtype=q.dtype, device=q.device)

    def rows(x: Tensor) -> Tensor:
        return equation_rows(features, x[:, :d], x[:, d : 2 * d], x[:, 2 * d :])

    x = torch.cat([q, qd, qdd], dim=1)
    z = rows(x)
    first, second = [], []
    # ∂Z/∂xⱼ and ∂²Z/∂xⱼ² by central differences (each point's row depends on its own state)
    for j in (sig > 0).nonzero().flatten().tolist():
        h = TLS_STEP * (1.0 + x[:, j].abs())[:, None, None]
        up, down = x.clone(), x.clone()
        up[:, j] += h[:, 0, 0]
        down[:, j] -= h[:, 0, 0]
        z_up, z_down = rows(up), rows(down)
        first.append((z_up - z_down) / (2 * h) * sig[j])
        second.append((z_up - 2 * z + z_down) / h**2 * sig[j] ** 2)
    if second:
        z = z - 0.5 * torch.stack(second).sum(0)
    homogeneous = bool((z[..., -1].abs().max() == 0)) and all(bool(f[..., -1].abs().max() == 0) for f in first)
    if homogeneous:
        z = z[..., :-1]
        first = [f[..., :-1] for f in first]
    w = torch.ones((1, n), dtype=q.dtype, device=q.device) if weights is None else weights.to(q)
    zz = torch.einsum("bn,nai,naj->bij", w, z, z)
    cov = torch.zeros_like(zz)
    for f in first:
        cov = cov + torch.einsum("bn,nai,naj->bij", w, f, f)
    if weights is None:
        zz, cov = zz[0], cov[0]
    return zz, cov, homogeneous


def tls_coefficients(zz: Tensor, cov: Tensor, homogeneous: bool) -> Tensor:
    """c from the generalised eigenproblem ZᵀZ v = μ C v at the smallest μ (batched over a
    leading dim if present): the eigenvector of (C, ZᵀZ) with the largest eigenvalue."""
    import numpy as np
    from scipy.linalg import eigh

    single = zz.dim() == 2
    zz_b, cov_b = (zz[None], cov[None]) if single else (zz, cov)
    out = []
    for a, c in zip(zz_b.cpu().double().numpy(), cov_b.cpu().double().numpy()):
        norms = np.sqrt(np.clip(np.diag(a), 1e-300, None))
        a_s, c_s = a / np.outer(norms, norms), c / np.outer(norms, norms)
        try:
            values, vectors = eigh(c_s, a_s)
        except np.linalg.LinAlgError:
            out.append(np.full(a.shape[0] - (0 if homogeneous else 1), np.nan))
            continue
        v = vectors[:, -1] / norms
        out.append(v if homogeneous else v[:-1] / v[-1])
    result = torch.tensor(np.stack(out), dtype=zz.dtype, device=zz.device)
    return result[0] if single else result


def tls_theta(system: System, model, data: Dataset, sigmas: Sigmas, theta0: Tensor, free: Tensor, weights: Optional[Tensor] = None) -> Tensor:
    """θ from the bias-corrected equation error: (P,), or (B, P) with ``weights`` (B, N)."""
    from lagfit_cli.core.api import _match_coefficients

    features, of_params = _feature_system(system, model)
    zz, cov, homogeneous = corrected_normal_matrices(features, data, sigmas, weights)
    cs = tls_coefficients(zz, cov, homogeneous)
    cs = cs[None] if cs.dim() == 1 else cs
    thetas = []
    for c in cs:
        if not bool(torch.isfinite(c).all()):
            thetas.append(torch.full_like(theta0[0], float("nan")))
            continue
        if of_params is not None:
            matched = _match_coefficients(of_params, c, homogeneous, theta0, free)
            thetas.append(matched if matched is not None else torch.full_like(theta0[0], float("nan")))
            continue
        theta = c.clone()
        if homogeneous:  # the scale is free: the gauge's sign and a start-like size
            gauge = int((~free).nonzero()[0]) if bool((~free).any()) else int(theta.abs().argmax())
            theta = theta * (theta0[0, gauge] / theta[gauge]) if theta[gauge] != 0 else theta
        thetas.append(theta)
    out = torch.stack(thetas)
    return out[0] if weights is None else out


# --------------------------------------------------------------------------- dispatch

#: estimator name -> how it refines the least-squares fit (``ls`` needs no entry)
ESTIMATOR_REGISTRY: Registry[Any] = Registry("estimator", "estimator")


ESTIMATOR_REGISTRY.register("ls")(None)  # least squares: the fit itself, nothing to add


def check_estimator(opts, data: Optional[Dataset] = None, system: Optional[System] = None) -> None:
    """One clear error for a bad estimator or σ option (the Python API's names); with the
    data, also a σ the estimator needs but cannot have (not given, ``auto`` on scattered
    states), before any work."""
    ESTIMATOR_REGISTRY.lookup(opts.estimator)
    for key in SIGMA_KEYS:
        check_sigma(key, getattr(opts, key))
    if data is not None and opts.estimator != "ls":
        _prepare(data, opts, system)


@dataclass
class Estimated:
    """An estimator's answer: the FitResult the report is built on, and how to give it error bars."""

    name: str
    result: FitResult
    sigmas: Sigmas
    sigma_source: dict[str, str]
    data: Dataset
    model: Any
    free: Tensor
    fit: Optional[EIVFit] = None
    warnings: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)

    def uncertainty(self, system: System, ratios, theta: Tensor, opts):
        from lagfit_cli.core.uncertainty import covariance_uncertainty, none_uncertainty

        if opts.uncertainty == "none":
            return none_uncertainty(ratios)
        if opts.uncertainty == "covariance" and self.name == "eiv":
            best = self.result.best
            schur, misfit = reduced_system(system, self.data, self.sigmas, theta, self.fit.u[best], self.free, self.fit.scale_qdd)
            return covariance_uncertainty(system, ratios, theta, *_equivalent(schur, misfit, self.data, self.free, theta))
        return self._bootstrap(system, ratios, theta, opts)

    def _bootstrap(self, system, ratios, theta, opts):
        """Rows resampled; each resample refitted by this estimator, all as one batch."""
        from lagfit_cli.core.random import generator
        from lagfit_cli.core.uncertainty import bootstrap_summary

        n = self.data.n_points
        gen = generator(opts.seed, "bootstrap")
        picks = torch.randint(0, n, (opts.n_boot, n), generator=gen)
        counts = torch.zeros((opts.n_boot, n), dtype=torch.float64)
        counts.scatter_add_(1, picks, torch.ones_like(counts))
        counts = counts.to(dtype=theta.dtype, device=theta.device)
        if self.name == "eiv":
            refit = orthogonal_distance(
                system, self.data, self.sigmas, theta.expand(opts.n_boot, -1), self.free,
                iters=opts.n_iters, ftol=opts.ftol, xtol=opts.xtol, gtol=opts.gtol,
                weights=counts, scale_qdd=self.fit.scale_qdd,
            ).result
            ok = torch.tensor([s != DIVERGED for s in refit.status])
            fitted = refit.theta.double().cpu()[ok]
        else:
            fitted = tls_theta(system, self.model, self.data, self.sigmas, theta[None], self.free, counts).double().cpu()
            fitted = fitted[torch.isfinite(fitted).all(-1)]
        return bootstrap_summary(system, ratios, fitted, opts.n_boot)

    def metrics(self, system: System, ratios, ls_result: FitResult, truth: Tensor) -> dict[str, Any]:
        from lagfit_cli.core.fit import IDENTIFIABLE, ratio_label, reported_values

        ls_values = reported_values(system, ratios, ls_result.theta[ls_result.best].double().cpu())
        out = {
            "name": self.name,
            **self.sigmas.as_dict(),
            "sigma_source": dict(self.sigma_source),
            "ls_estimates": {
                ratio_label(r): float(ls_values[i]) for i, r in enumerate(ratios) if r.status in IDENTIFIABLE
            },
            **self.info,
        }
        return out


def _equivalent(schur: Tensor, misfit: float, data: Dataset, free: Tensor, theta: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """A residual and Jacobian (M = N·D rows) with JᵀJ = S and ‖r‖² = the weighted misfit,
    so ``covariance_uncertainty`` gives s²S⁻¹ with s² = misfit / (N·D − p)."""
    m = data.n_points * data.dof
    p = schur.shape[0]
    eigen, vectors = torch.linalg.eigh(schur.double().cpu())
    root = (vectors * eigen.clamp_min(0).sqrt()) @ vectors.T  # symmetric square root
    jacobian = torch.zeros((m, theta.numel()), dtype=torch.float64)
    jacobian[:p, free.cpu()] = root
    residual = torch.full((m,), math.sqrt(max(misfit, 0.0) / m), dtype=torch.float64)
    return residual, jacobian, free.cpu()


def _prepare(data: Dataset, opts, system: Optional[System] = None) -> tuple[Sigmas, dict[str, str]]:
    # eiv/tls model q̈ from L alone: friction, forces and explicit time are not in them yet
    if getattr(data, "Q", None) is not None:
        raise ArgumentError("estimator", f"{opts.estimator} does not handle applied forces Q yet; use ls")
    if system is not None and (getattr(system, "dissipation", None) is not None or getattr(system, "time_dependent", False)):
        raise ArgumentError(
            "estimator", f"{opts.estimator} does not handle dissipation or time-dependent Lagrangians yet; use ls"
        )
    return resolve_sigmas(data, {key: getattr(opts, key) for key in SIGMA_KEYS})


@ESTIMATOR_REGISTRY.register("eiv")
def _eiv(system: System, data: Dataset, model, ls_result: FitResult, free: Tensor, opts) -> Estimated:
    sigmas, how = _prepare(data, opts)
    starts = [ls_result.theta[ls_result.best]]
    fit = orthogonal_distance(
        system, data, sigmas, torch.stack(starts), free,
        iters=opts.n_iters, ftol=opts.ftol, xtol=opts.xtol, gtol=opts.gtol,
    )
    best = fit.result.best
    z_rms = float((fit.u[best].square().mean(0)).sqrt().mean()) if fit.u.numel() else 0.0
    out = Estimated("eiv", fit.result, sigmas, how, data, model, free, fit=fit)
    out.info = {
        "scale_qdd": fit.scale_qdd,
        "qdd_floor_used": bool(fit.info["qdd_floor_used"]),
        "start": "the least-squares fit's best",
        "state_correction_rms_over_sigma": z_rms,
        "misfit_per_dof": float(2 * fit.cost[best]) / max(data.n_points * data.dof - int(free.sum()), 1),
    }
    # with the σ's right, the weighted misfit per degree of freedom is about 1
    ratio = out.info["misfit_per_dof"]
    if (sigmas.q > 0 or sigmas.qd > 0 or sigmas.qdd > 0) and not fit.info["qdd_floor_used"] and not 0.25 < ratio < 4:
        out.warnings.append(
            f"estimator eiv: the weighted misfit per degree of freedom is {ratio:.3g} (about 1 when the "
            f"σ's match the noise): the σ's given ({sigmas.q:g}, {sigmas.qd:g}, {sigmas.qdd:g}) may be off"
        )
    return out


@ESTIMATOR_REGISTRY.register("tls")
def _tls(system: System, data: Dataset, model, ls_result: FitResult, free: Tensor, opts) -> Estimated:
    sigmas, how = _prepare(data, opts)
    theta0 = ls_result.theta[ls_result.best][None]
    theta = tls_theta(system, model, data, sigmas, theta0, free)
    if not bool(torch.isfinite(theta).all()):
        raise LagfitError("estimator tls: the corrected equation-error system has no solution here (try eiv)")
    theta = theta.to(theta0)[None]
    loss = model.residuals(theta).square().mean(-1)
    history = FitHistory(theta=theta[None], loss=loss[None], grad_norm=torch.zeros_like(loss)[None], lr=torch.zeros_like(loss)[None])
    result = FitResult(theta_init=theta0, theta=theta, loss=loss, grad_norm=torch.zeros_like(loss), status=[CONVERGED],
                       stop_iter=torch.zeros(1, dtype=torch.long), history=history, method="lm")
    out = Estimated("tls", result, sigmas, how, data, model, free)
    out.info = {"method": "generalised eigenvector of (ZᵀZ, C), second-order mean shift removed"}
    return out


def estimate(system: System, data: Dataset, model, ls_result: FitResult, free: Tensor, opts) -> Estimated:
    """The estimator ``opts.estimator`` names, started from the least-squares fit."""
    return ESTIMATOR_REGISTRY.lookup(opts.estimator)(system, data, model, ls_result, free, opts)
