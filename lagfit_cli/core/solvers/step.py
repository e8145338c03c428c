"""The fit's per-iteration step, θ (B, P) -> (loss (B,), ∂loss/∂θ (B, P)), for all starts.

loss_b = mean over (N, D) of (q̈_b − q̈_target)². Through the linear basis it has a closed
adjoint (``LinearBasis.loss_and_grad``); otherwise autograd through the solver, eagerly in
chunks of starts that stay in cache, or one fused compiled graph (``compile``).
"""

from __future__ import annotations

import functools
from typing import Optional, Union

import torch
from torch import Tensor

from lagfit_cli.core.solvers.autodiff import broadcast_qdd
from lagfit_cli.core.solvers.base import FALLBACK, LossAndGrad, Solver, get_solver
from lagfit_cli.core.solvers.compile import EAGER_CHUNK_POINTS, Compiled, check_compile, should_compile
from lagfit_cli.core.solvers.linear import basis_choice, basis_for, fused_args, fused_loss_and_grad
from lagfit_cli.core.solvers.policy import refuse_compile
from lagfit_cli.core.systems import System


def _generic_loss_and_grad(solver: Solver, system: System, q, qd, target, theta, extras=None):
    """Eager loss and θ-gradient through any solver, by torch.autograd, in chunks of starts
    (``extras``: the data's ``t``/``Q`` keywords, when present)."""
    chunk = max(1, EAGER_CHUNK_POINTS // max(1, q.numel()))
    extras = extras or {}
    losses, grads = [], []
    for theta_c in theta.detach().split(chunk):
        theta_c = theta_c.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = (solver(system, q, qd, theta_c, **extras) - target).square().mean(dim=(1, 2))
            (grad,) = torch.autograd.grad(loss.sum(), theta_c)
        losses.append(loss.detach())
        grads.append(grad)
    return torch.cat(losses), torch.cat(grads)


def _functional_loss_and_grad(solver: Solver, system: System, q, qd, target, theta):
    """The same through ``torch.func.grad``: one graph that torch.compile can fuse."""

    def total(theta_: Tensor) -> tuple[Tensor, Tensor]:
        losses = (solver(system, q, qd, theta_) - target).square().mean(dim=(1, 2))
        return losses.sum(), losses

    grads, losses = torch.func.grad(total, has_aux=True)(theta)
    return losses, grads


def make_loss_and_grad(
    system: System,
    q: Tensor,
    qd: Tensor,
    target: Tensor,
    solver_name: str = "fast",
    compile: Union[str, bool] = "auto",
    *,
    expected_calls: int = 1,
    t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> LossAndGrad:
    """The fit's per-iteration step for all starts at once.

    Args:
        q, qd, target: (N, D) data and the q̈ to match.
        solver_name: a registered solver; ``fast`` (linear basis when L is linear in θ,
            else ``broadcast``) is the fastest.
        compile: ``auto|true|false`` (see ``make_solver``).
        expected_calls: how many iterations the fit will run (steers ``auto``).
        t, Q: the data's times (N,) and applied forces (N, D), when the equations of motion
            need them (a time-dependent L; forces). With either, the generic (non-basis)
            step runs eagerly.

    Returns:
        ``loss_and_grad(theta (B, P)) -> (loss (B,), grad (B, P))`` with
        loss_b = mean over (N, D) of (q̈_b − target)² and grad_b = ∂loss_b/∂θ_b. No graph
        is kept: the results are plain tensors.
    """
    choice = check_compile(compile)
    if target.shape != q.shape:
        raise ValueError(f"target {tuple(target.shape)} must match q {tuple(q.shape)}")
    q, qd, target = q.detach(), qd.detach(), target.detach()

    extras = {k: v.detach() for k, v in (("t", t), ("Q", Q)) if v is not None}
    basis, solver_name = basis_for(system, q, qd, solver_name, basis_choice(choice), **extras)
    if basis is not None:
        fused = Compiled(fused_loss_and_grad)
        args = fused_args(basis)

        def linear_step(theta: Tensor) -> tuple[Tensor, Tensor]:
            work = theta.shape[0] * q.shape[0] * expected_calls
            if should_compile(choice, "linear_step", work):
                return fused(theta.shape[0] * q.shape[0], theta.detach(), *args, target)
            return basis.loss_and_grad(theta.detach(), target)

        return linear_step

    eager_solver = get_solver(solver_name)
    traced_solver = eager_solver
    if solver_name == FALLBACK:  # per-point θ: the compiled reverse pass fuses (broadcast_qdd)
        traced_solver = functools.partial(broadcast_qdd, theta_per_point=True)
    choice = refuse_compile(solver_name, choice)

    def functional(theta: Tensor, q_: Tensor, qd_: Tensor, target_: Tensor):
        return _functional_loss_and_grad(traced_solver, system, q_, qd_, target_, theta)

    compiled = Compiled(functional)

    def generic_step(theta: Tensor) -> tuple[Tensor, Tensor]:
        work = theta.shape[0] * q.shape[0] * expected_calls
        if not extras and should_compile(choice, "generic_step", work):
            return compiled(theta.shape[0] * q.shape[0], theta.detach(), q, qd, target)
        return _generic_loss_and_grad(eager_solver, system, q, qd, target, theta, extras)

    return generic_step
