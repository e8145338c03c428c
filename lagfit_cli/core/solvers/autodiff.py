r"""Euler–Lagrange q̈ solvers: the hot path.

Every solver computes the seed report's eq. 6 for a Lagrangian written once,

    q̈ = (∇_q̇ ∇_q̇ᵀ L)⁻¹ [ ∇_q L − (∇_q ∇_q̇ᵀ L) q̇ ],

with the signature

    solver(system, q: (N, D), qd: (N, D), theta: (B, P)) -> qdd: (B, N, D)

and is differentiable with respect to ``theta`` (the fit needs ∂loss/∂θ). The D×D
Hessian is handled by a batched linear solve, never an explicit inverse.

``get_solver(name)`` returns the eager function; ``make_solver(name, compile)`` wraps it
under a ``solver.compile`` policy (``auto|true|false``, see ``fastpath``), and
``make_loss_and_grad`` builds the fit's whole per-iteration step.

Solvers, selected by name (``solver.name``):

``batched`` (default)
    L is evaluated point by point, so its derivatives with respect to the *whole*
    (N, D) state are block-diagonal across points: one reverse pass of ΣL gives ∇_q L
    and ∇_q̇ L at every point at once; forward-mode jvps of ∇_q̇ L give the mixed term
    (∇_q ∇_q̇ᵀ L) q̇ (a single jvp along q̇) and the Hessian's D columns. The parameter
    batch is vmapped.
``broadcast``
    The same block-diagonal autograd with the B starts treated as more points (the
    Lagrangian broadcasts), so no vmap at all; the graph torch.compile fuses best.
``linear`` / ``fast`` (in ``fastpath``)
    For L = L₀(q, q̇) + Σⱼ θⱼ φⱼ(q, q̇), eq. 6's terms are linear in θ: computed once per
    dataset, each call is then a few (B, P) × (P, N) products. ``fast`` takes that path
    when the system is linear in θ (its flag, checked numerically at the data) and
    ``broadcast`` otherwise.
``vmap``
    The report's v2: ``torch.func.jacfwd`` per point, ``vmap`` over points and starts.
``loop``
    The report's old method: ``torch.autograd.functional`` per point and start, in Python
    loops. Kept as the baseline to beat; very slow.
``closed_form``
    The system's hand-derived q̈ (only where the system provides one): the reference.
"""


from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.func import grad, jacfwd, jvp, vmap

from lagfit_cli.errors import ArgumentError
from lagfit_cli.core.solvers.base import register_solver, solve_mass_matrix
from lagfit_cli.core.systems import System

# --------------------------------------------------------------------------- batched


def euler_lagrange_terms(
    lagrangian: Callable[[Tensor, Tensor, Tensor], Tensor],
    q: Tensor,
    qd: Tensor,
    theta: Tensor,
) -> tuple[Tensor, Tensor]:
    """The two sides of eq. 5 at every point.

    L is evaluated point by point, so its derivatives with respect to the whole state are
    block-diagonal across points: one reverse pass of ΣL gives ∇_q L and ∇_q̇ L everywhere,
    a jvp of ∇_q̇ L along q in the direction q̇ gives (∇_q ∇_q̇ᵀ L) q̇, and D jvps along q̇
    give the Hessian's columns.

    Args:
        q, qd: (..., N, D) states (leading batch dims allowed); theta: parameters that
            broadcast against them: (P,) for one vector, or (B, 1, P) with (B, N, D) states.

    Returns:
        hessian: (..., N, D, D), ∂²L/∂q̇∂q̇ᵀ at each point.
        rhs: (..., N, D), ∇_q L − (∇_q ∇_q̇ᵀ L) q̇ at each point.
    """
    dof = q.shape[-1]

    def total(q_: Tensor, qd_: Tensor) -> Tensor:
        return lagrangian(q_, qd_, theta).sum()

    grad_q = grad(total, argnums=0)(q, qd)
    grad_qd = grad(total, argnums=1)

    # (∇_q ∇_q̇ᵀ L) q̇ is the derivative of ∇_q̇ L along q in the direction q̇: one jvp.
    _, mixed = jvp(lambda q_: grad_qd(q_, qd), (q,), (qd,))

    def hessian_column(direction: Tensor) -> Tensor:
        return jvp(lambda qd_: grad_qd(q, qd_), (qd,), (direction.expand(qd.shape),))[1]

    if dof == 1:
        hessian = hessian_column(torch.ones_like(qd)).unsqueeze(-1)
    else:
        eye = torch.eye(dof, dtype=q.dtype, device=q.device)
        hessian = vmap(hessian_column, out_dims=-1)(eye)
    return hessian, grad_q - mixed


def _batched_one(system: System, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    hessian, rhs = euler_lagrange_terms(system.lagrangian, q, qd, theta)
    return solve_mass_matrix(hessian, rhs)


@register_solver("batched")
def batched_solver(system: System, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """Block-diagonal autograd over all points, vmapped over the parameter batch."""
    return vmap(_batched_one, in_dims=(None, None, None, 0))(system, q, qd, theta)


@register_solver("broadcast")
def broadcast_solver(system: System, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """Block-diagonal autograd over all starts and points at once, without vmap.

    The Lagrangian broadcasts, so the B starts are just more points: the states are
    repeated to (B, N, D) against theta (B, 1, P) and ``euler_lagrange_terms`` runs once.
    Eager, this saves vmap's per-op overhead; compiled (``make_solver(..., compile=)``),
    the whole eq. 6 becomes one fused loop over the B×N points.
    """
    return broadcast_qdd(system, q, qd, theta)


def broadcast_qdd(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, theta_per_point: bool = False
) -> Tensor:
    """The ``broadcast`` solver; ``theta_per_point`` repeats θ to (B, N, P) as well.

    Repeating θ costs B×N×P memory eagerly but, under torch.compile, turns the reverse
    pass for ∂loss/∂θ into per-point products and one sum over N, which inductor fuses
    (with θ broadcast from (B, 1, P) it emits slow strided reductions: ~30× slower).
    """
    states = (theta.shape[0],) + tuple(q.shape)
    # Materialised (contiguous) copies: forward-mode AD cannot seed an expanded view.
    q_b, qd_b = q.expand(states).contiguous(), qd.expand(states).contiguous()
    if theta_per_point:
        theta_b = theta[:, None, :].expand(states[:-1] + theta.shape[-1:]).contiguous()
    else:
        theta_b = theta[:, None, :]
    hessian, rhs = euler_lagrange_terms(system.lagrangian, q_b, qd_b, theta_b)
    return solve_mass_matrix(hessian, rhs)


def autograd_terms(
    lagrangian: Callable[[Tensor, Tensor, Tensor], Tensor], q: Tensor, qd: Tensor, theta: Tensor
) -> tuple[Tensor, Tensor]:
    """``euler_lagrange_terms`` by plain ``torch.autograd``, values only (no graph kept).

    Same block-diagonal idea (one reverse pass of ΣL, then D passes for the rows of the
    Hessian and of the mixed term), but without torch.func, whose first use imports
    torch._dynamo (~1.5 s): the eager fit path never pays that.

    Args:
        q, qd: (..., N, D); theta broadcasting against them. Returns (..., N, D, D), (..., N, D).
    """
    dof = q.shape[-1]
    q = q.detach().clone().requires_grad_(True)
    qd = qd.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        grad_q, grad_qd = torch.autograd.grad(
            lagrangian(q, qd, theta.detach()).sum(), (q, qd), create_graph=True, materialize_grads=True
        )
        hessian_rows, mixed_rows = [], []
        for i in range(dof):
            row = grad_qd[..., i].sum()
            if row.requires_grad:
                d_q, d_qd = torch.autograd.grad(
                    row, (q, qd), retain_graph=i < dof - 1, materialize_grads=True
                )
            else:  # L is linear in q̇_i: no second derivatives
                d_q, d_qd = torch.zeros_like(q), torch.zeros_like(qd)
            mixed_rows.append(d_q)  # ∂²L/∂q̇_i∂q_j
            hessian_rows.append(d_qd)  # ∂²L/∂q̇_i∂q̇_j
    hessian = torch.stack(hessian_rows, dim=-2)
    mixed = torch.stack(mixed_rows, dim=-2)
    rhs = grad_q - (mixed @ qd.unsqueeze(-1)).squeeze(-1)
    return hessian.detach(), rhs.detach()


# --------------------------------------------------------------------------- report's v2


@register_solver("vmap", compilable=False)  # compile+vmap(jacfwd): pytorch#151196
def vmap_solver(system: System, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """The seed report's v2: jacfwd per point, vmap over points and over starts."""
    lagrangian = system.lagrangian

    def point(q_p: Tensor, qd_p: Tensor, theta_b: Tensor) -> Tensor:
        grad_q = jacfwd(lagrangian, argnums=0)(q_p, qd_p, theta_b)
        d_qd = jacfwd(lagrangian, argnums=1)
        hessian = jacfwd(d_qd, argnums=1)(q_p, qd_p, theta_b)
        mixed = jacfwd(d_qd, argnums=0)(q_p, qd_p, theta_b)
        return solve_mass_matrix(hessian, grad_q - mixed @ qd_p)

    over_points = vmap(point, in_dims=(0, 0, None))
    return vmap(over_points, in_dims=(None, None, 0))(q, qd, theta)


# --------------------------------------------------------------------------- report's v1


@register_solver("loop", compilable=False)
def loop_solver(system: System, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """The seed report's old method: full Hessian/Jacobian per point, Python loops."""
    dof = system.dof
    create_graph = theta.requires_grad

    rows = []
    for theta_b in theta:

        def lagrangian_of_state(state: Tensor, theta_b: Tensor = theta_b) -> Tensor:
            return system.lagrangian(state[:dof], state[dof:], theta_b)

        points = []
        for q_p, qd_p in zip(q, qd):
            state = torch.cat((q_p, qd_p))
            full_grad = torch.autograd.functional.jacobian(
                lagrangian_of_state, state, create_graph=create_graph
            )
            full_hessian = torch.autograd.functional.hessian(
                lagrangian_of_state, state, create_graph=create_graph
            )
            hessian = full_hessian[dof:, dof:]
            mixed = full_hessian[dof:, :dof]  # ∂²L / ∂q̇_i ∂q_j
            points.append(solve_mass_matrix(hessian, full_grad[:dof] - mixed @ qd_p))
        rows.append(torch.stack(points))
    return torch.stack(rows)


# --------------------------------------------------------------------------- reference


@register_solver("closed_form")
def closed_form_solver(system: System, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """The system's hand-derived q̈: the reference every solver is tested against."""
    if system.closed_form is None:
        raise ArgumentError("solver", f"system {system.name!r} has no closed-form q̈")
    return system.closed_form(q, qd, theta[:, None, :])


# The fast paths register ``linear`` and ``fast`` and provide the compile policy; imported
# last because they build on the solvers above.
