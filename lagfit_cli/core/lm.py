r"""Levenberg–Marquardt on the q̈ residuals, all starts as one batch (``optim=lm``).

Per start b and iteration, with r = q̈(θ) − q̈_data (M = N·D residuals) and J = ∂r/∂θ over
the *free* parameters only:

    (JᵀJ + λ D²) δ = −Jᵀr,     D² = diag(JᵀJ), kept at its running maximum (MINPACK)

θ + δ is accepted when it lowers the cost ½‖r‖²; then λ shrinks by Nielsen's rule
max(1/3, 1 − (2ρ − 1)³), where ρ = actual / predicted reduction; a rejected step doubles λ's
growth factor. Starts stop one by one, each with a status:

``converged``
    the cost fell by less than ``ftol`` of itself on an accepted step, or the step was below
    ``xtol`` of ‖θ‖, or every column of J is orthogonal to r within ``gtol`` (the cosine
    test, scale-free), or the residual reached the rounding floor of the data.
``stalled``
    no step lowers the cost (λ beyond ``MAX_DAMPING``) though the gradient test fails, or
    the cost crawls: ``PATIENCE`` accepted steps gained less than ``PLATEAU`` of it together
    (a start sliding along a valley towards infinity).
``max_iters``
    ``iters`` iterations passed first.
``diverged``
    the residual or the parameters are not finite.

**Free parameters.** L and cL give the same motion, so a scale group's members can all be
scaled together without changing r: that direction of JᵀJ is exactly singular. The fit
holds each group's gauge at its starting value (and one-member groups, which q̈ does not
fix at all, entirely), so it moves only in identifiable coordinates; the reported ratios do
not depend on where the gauge was held.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import Tensor

from lagfit_cli.core.fit import CONVERGED, DIVERGED, MAX_ITERS, STALLED, FitHistory, FitResult
from lagfit_cli.core.solvers.jacobian import ResidualModel

#: λ above this without an accepted step: the start has stalled (or converged at the floor)
MAX_DAMPING = 1e16
#: a start no λ can move, whose cost is below this multiple of the rounding floor (its
#: residual within 1000× the floor's, ≈ 1e-11 of q̈'s scale), has converged: the data are
#: exact to that level, and rounding in the residual makes the gradient test meaningless
STUCK_FLOOR = 1e6
INITIAL_DAMPING = 1e-3
#: a start whose last PATIENCE accepted steps together lowered the cost by less than the
#: fraction PLATEAU crawls (e.g. along a valley to infinity): it has stalled
PATIENCE, PLATEAU = 10, 1e-3


def levenberg_marquardt(
    model: ResidualModel,
    theta_init: Tensor,
    free: Tensor,
    iters: int = 100,
    ftol: float = 1e-10,
    xtol: float = 1e-10,
    gtol: float = 1e-8,
    floor: float = 0.0,
    on_iteration: Optional[Callable[[int, Tensor], None]] = None,
) -> FitResult:
    """Fit all B starts of theta_init (B, P) at once; see the module docstring.

    Args:
        model: residuals and Jacobian (``core.solvers.jacobian``).
        free: (P,) bool, the parameters the fit may move (the rest keep their start values).
        floor: a cost ½‖r‖² at or below which a start has fitted the data exactly (the
            rounding floor of the targets).
        on_iteration: called as ``on_iteration(t, loss (B,))`` after each iteration.

    Returns:
        A ``FitResult`` (``method="lm"``); ``loss`` is the mean squared residual, as for gd,
        ``history.lr`` holds λ.
    """
    theta = theta_init.detach().clone()
    n_starts, n_params = theta.shape
    device, dtype = theta.device, theta.dtype
    free = free.to(device)
    index = free.nonzero().flatten()
    n_free = int(index.numel())
    m = model.n_residuals

    active = torch.ones(n_starts, dtype=torch.bool, device=device)
    status = [MAX_ITERS] * n_starts
    stop_iter = torch.full((n_starts,), iters, dtype=torch.long, device=device)
    damping = torch.full((n_starts,), INITIAL_DAMPING, dtype=dtype, device=device)
    growth = torch.full((n_starts,), 2.0, dtype=dtype, device=device)
    scale = torch.zeros((n_starts, n_free), dtype=dtype, device=device)
    last_loss = torch.full((n_starts,), float("nan"), dtype=dtype, device=device)
    plateau_cost = torch.full((n_starts,), float("inf"), dtype=dtype, device=device)
    plateau_steps = torch.zeros(n_starts, dtype=torch.long, device=device)
    last_grad = last_loss.clone()
    rows_theta, rows_loss, rows_grad, rows_lr = [], [], [], []

    for t in range(iters + 1):
        live = active.nonzero().flatten()  # evaluate the starts still running only
        residual, jacobian_all = model.residuals_and_jacobian(theta[live])
        cost = 0.5 * residual.square().sum(-1)
        grad_all = torch.einsum("bmp,bm->bp", jacobian_all, residual)
        finite = torch.isfinite(cost) & torch.isfinite(grad_all).all(-1)
        last_loss[live] = 2 * cost / m
        last_grad[live] = grad_all.norm(dim=-1) * (2.0 / m)
        rows_theta.append(theta.clone())
        rows_loss.append(last_loss.clone())
        rows_grad.append(last_grad.clone())
        rows_lr.append(torch.where(active, damping, torch.full_like(damping, float("nan"))))
        if on_iteration is not None:
            on_iteration(t, last_loss)

        jacobian = jacobian_all[..., index]
        gradient = grad_all[..., index]
        # cosine between r and each column of J: 0 at a stationary point, whatever the units
        column_norms = jacobian.norm(dim=1)
        cosine = (gradient.abs() / (column_norms * residual.norm(dim=-1, keepdim=True))).nan_to_num(0.0)
        worst_cosine = cosine.amax(-1) if n_free else torch.zeros_like(cost)
        converged = finite & ((worst_cosine <= gtol) | (cost <= floor))
        _stop(status, stop_iter, live[~finite], DIVERGED, t)
        _stop(status, stop_iter, live[converged], CONVERGED, t)
        keep = finite & ~converged
        active[live[~keep]] = False
        if t == iters or not bool(keep.any()):
            break
        live, cost, jacobian, gradient = live[keep], cost[keep], jacobian[keep], gradient[keep]
        worst_cosine = worst_cosine[keep]

        normal = jacobian.transpose(1, 2) @ jacobian  # (b, p, p)
        scale[live] = torch.maximum(scale[live], normal.diagonal(dim1=1, dim2=2))
        weights = scale[live]
        weights = torch.maximum(
            weights, weights.amax(-1, keepdim=True).clamp_min(torch.finfo(dtype).tiny) * 1e-12
        )
        # raise λ for the starts whose step is rejected, until each moves or gives up
        trying = torch.ones_like(cost, dtype=torch.bool)  # over ``live``
        for _ in range(64):
            rows = trying.nonzero().flatten()
            who = live[rows]
            system = normal[rows] + torch.diag_embed(damping[who, None] * weights[rows])
            step = batched_solve(system, -gradient[rows])
            candidate = theta[who].clone()
            candidate[:, index] += step
            new_cost = 0.5 * model.residuals(candidate).square().sum(-1)
            predicted = -(gradient[rows] * step).sum(-1) - 0.5 * torch.einsum(
                "bp,bpq,bq->b", step, normal[rows], step
            )
            gain = cost[rows] - new_cost
            ratio = gain / predicted
            accept = torch.isfinite(new_cost) & (gain > 0) & (ratio > 1e-4)
            # accepted: move, shrink λ; done if the gain or the step was negligible
            moved = who[accept]
            theta[moved] = candidate[accept]
            shrink = torch.clamp(1 - (2 * ratio[accept] - 1) ** 3, min=1.0 / 3.0)
            damping[moved] = damping[moved] * shrink
            growth[moved] = 2.0
            small_step = step.norm(dim=-1) <= xtol * (xtol + candidate[:, index].norm(dim=-1))
            small_gain = gain.abs() <= ftol * cost[rows]
            # a plateau: PATIENCE accepted steps that together gained less than PLATEAU
            history = plateau_cost[who]
            plateau_steps[moved] += 1
            restart = accept & (new_cost < (1 - PLATEAU) * history)
            plateau_cost[who[restart]] = new_cost[restart]
            plateau_steps[who[restart]] = 0
            crawling = accept & ~restart & (plateau_steps[who] >= PATIENCE)
            _stop(status, stop_iter, who[crawling & ~(small_gain | small_step)], STALLED, t + 1)
            active[who[crawling]] = False
            done = accept & (small_gain | small_step)
            _stop(status, stop_iter, who[done], CONVERGED, t + 1)
            active[who[done]] = False
            # rejected: raise λ and try again; a start no λ can move has converged if the
            # gradient is negligible, else it has stalled
            rejected = ~accept
            lifted = who[rejected]
            damping[lifted] = damping[lifted] * growth[lifted]
            growth[lifted] = growth[lifted] * 2.0
            stuck = rejected & (damping[who] > MAX_DAMPING)
            # flat: the gradient is negligible, or the residual is so small (data exact to
            # ~1e-11, e.g. from an integrator) that rounding in r sets the cosine
            flat = (worst_cosine[rows] <= 1e-6) | (cost[rows] <= STUCK_FLOOR * floor)
            _stop(status, stop_iter, who[stuck & flat], CONVERGED, t + 1)
            _stop(status, stop_iter, who[stuck & ~flat], STALLED, t + 1)
            active[who[stuck]] = False
            trying[rows[~(rejected & ~stuck)]] = False
            if not bool(trying.any()):
                break

    final_loss = model.residuals(theta).square().mean(-1)
    if len(rows_theta) <= int(stop_iter.max()):  # the last starts stopped inside the step loop
        rows_theta.append(theta.clone())
        rows_loss.append(final_loss.clone())
        rows_grad.append(last_grad.clone())
        rows_lr.append(torch.full_like(damping, float("nan")))
    stop_iter = stop_iter.clamp(max=len(rows_theta) - 1)
    history = FitHistory(
        theta=torch.stack(rows_theta),
        loss=torch.stack(rows_loss),
        grad_norm=torch.stack(rows_grad),
        lr=torch.stack(rows_lr),
    )
    return FitResult(
        theta_init=theta_init,
        theta=theta,
        loss=final_loss,
        grad_norm=last_grad,
        status=status,
        stop_iter=stop_iter,
        history=history,
        method="lm",
    )


def _stop(status: list[str], stop_iter: Tensor, which: Tensor, name: str, t: int) -> None:
    """Mark the starts with indices ``which`` as stopped at iteration t with status ``name``."""
    for b in which.tolist():
        if status[b] == MAX_ITERS:
            status[b] = name
            stop_iter[b] = t


def batched_solve(system: Tensor, rhs: Tensor) -> Tensor:
    """Batched (B, p, p) x = (B, p); singular systems give a least-squares step."""
    if system.shape[-1] == 0:
        return rhs
    solution, info = torch.linalg.solve_ex(system, rhs.unsqueeze(-1))
    bad = info != 0
    if bool(bad.any()):
        solution[bad] = torch.linalg.lstsq(system[bad], rhs[bad].unsqueeze(-1)).solution
    return solution.squeeze(-1)
