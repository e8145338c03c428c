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

from typing import Callable, Optional

import torch
from torch import Tensor
from torch.func import grad, jacfwd, jvp, vmap

from lagfit_cli.errors import ArgumentError
from lagfit_cli.core.solvers.base import register_solver, solve_mass_matrix
from lagfit_cli.core.systems import System

# --------------------------------------------------------------------------- batched


def euler_lagrange_terms(
    lagrangian: Callable[..., Tensor],
    q: Tensor,
    qd: Tensor,
    theta: Tensor,
    *,
    t: Optional[Tensor] = None,
    dissipation: Optional[Callable[..., Tensor]] = None,
    Q: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """The two sides of eq. 5 at every point, with friction, time and applied forces.

    L is evaluated point by point, so its derivatives with respect to the whole state are
    block-diagonal across points: one reverse pass of ΣL gives ∇_q L and ∇_q̇ L everywhere,
    a jvp of ∇_q̇ L along q in the direction q̇ gives (∇_q ∇_q̇ᵀ L) q̇, and D jvps along q̇
    give the Hessian's columns. With ``t`` the same jvp runs along (q, t) in the direction
    (q̇, 1), adding ∂²L/∂q̇∂t; with ``dissipation`` one more reverse pass gives ∇_q̇ R.

    Args:
        q, qd: (..., N, D) states (leading batch dims allowed); theta: parameters that
            broadcast against them: (P,) for one vector, or (B, 1, P) with (B, N, D) states.
        t: times broadcastable like ``q[..., 0]`` (e.g. (N,)), for a time-dependent L
            (then passed to L and R as ``t=``); None: L does not depend on t.
        dissipation: R(q, qd, theta[, t=]); Q: applied forces broadcastable like q.

    Returns:
        hessian: (..., N, D, D), ∂²L/∂q̇∂q̇ᵀ at each point.
        rhs: (..., N, D), ∇_q L − (∇_q ∇_q̇ᵀ L) q̇ − ∂²L/∂q̇∂t − ∇_q̇ R + Q at each point.
    """
    dof = q.shape[-1]
    timed = t is not None

    def total(q_: Tensor, qd_: Tensor, t_: Optional[Tensor]) -> Tensor:
        if timed:
            return lagrangian(q_, qd_, theta, t=t_).sum()
        return lagrangian(q_, qd_, theta).sum()

    grad_q = grad(total, argnums=0)(q, qd, t)
    grad_qd = grad(total, argnums=1)

    # (∇_q ∇_q̇ᵀ L) q̇ (+ ∂²L/∂q̇∂t) is the derivative of ∇_q̇ L along q in the direction
    # q̇ (and along t at unit speed): one jvp.
    if timed:
        _, mixed = jvp(lambda q_, t_: grad_qd(q_, qd, t_), (q, t), (qd, torch.ones_like(t)))
    else:
        _, mixed = jvp(lambda q_: grad_qd(q_, qd, None), (q,), (qd,))

    def hessian_column(direction: Tensor) -> Tensor:
        return jvp(lambda qd_: grad_qd(q, qd_, t), (qd,), (direction.expand(qd.shape),))[1]

    if dof == 1:
        hessian = hessian_column(torch.ones_like(qd)).unsqueeze(-1)
    else:
        eye = torch.eye(dof, dtype=q.dtype, device=q.device)
        hessian = vmap(hessian_column, out_dims=-1)(eye)
    rhs = grad_q - mixed
    if dissipation is not None:

        def total_r(qd_: Tensor) -> Tensor:
            if timed:
                return dissipation(q, qd_, theta, t=t).sum()
            return dissipation(q, qd_, theta).sum()

        rhs = rhs - grad(total_r)(qd)
    if Q is not None:
        rhs = rhs + Q
    return hessian, rhs


def check_time(system: System, t: Optional[Tensor]) -> Optional[Tensor]:
    """``t`` for a time-dependent system (an error when the data have none); ``None`` for
    a system that does not depend on time (its Lagrangian takes no ``t=``)."""
    if not system.time_dependent:
        return None
    if t is None:
        raise ArgumentError(
            "t", f"system {system.name!r} depends on time t, but the data have no times "
            "(give a time column, or data.t_bounds for synthetic data)"
        )
    return t


def system_terms(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """``euler_lagrange_terms`` of a system: its L, R, and the data's t and Q."""
    return euler_lagrange_terms(
        system.lagrangian, q, qd, theta, t=check_time(system, t),
        dissipation=system.dissipation, Q=Q,
    )


def bound_lagrangian(system: System, t: Optional[Tensor]) -> Callable[..., Tensor]:
    """L(q, qd, theta) with the data's times bound (the system's own L when not timed)."""
    t = check_time(system, t)
    if t is None:
        return system.lagrangian
    return lambda q, qd, theta: system.lagrangian(q, qd, theta, t=t)


def _batched_one(system: System, q: Tensor, qd: Tensor, theta: Tensor, t, Q) -> Tensor:
    hessian, rhs = system_terms(system, q, qd, theta, t=t, Q=Q)
    return solve_mass_matrix(hessian, rhs)


@register_solver("batched")
def batched_solver(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> Tensor:
    """Block-diagonal autograd over all points, vmapped over the parameter batch."""
    return vmap(_batched_one, in_dims=(None, None, None, 0, None, None))(system, q, qd, theta, t, Q)


@register_solver("broadcast")
def broadcast_solver(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> Tensor:
    """Block-diagonal autograd over all starts and points at once, without vmap.

    The Lagrangian broadcasts, so the B starts are just more points: the states are
    repeated to (B, N, D) against theta (B, 1, P) and ``euler_lagrange_terms`` runs once.
    Eager, this saves vmap's per-op overhead; compiled (``make_solver(..., compile=)``),
    the whole eq. 6 becomes one fused loop over the B×N points.
    """
    return broadcast_qdd(system, q, qd, theta, t=t, Q=Q)


def broadcast_qdd(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, theta_per_point: bool = False,
    t: Optional[Tensor] = None, Q: Optional[Tensor] = None,
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
    hessian, rhs = system_terms(system, q_b, qd_b, theta_b, t=t, Q=Q)
    return solve_mass_matrix(hessian, rhs)


def autograd_terms(
    lagrangian: Callable[..., Tensor], q: Tensor, qd: Tensor, theta: Tensor, *,
    t: Optional[Tensor] = None, dissipation: Optional[Callable[..., Tensor]] = None,
    Q: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """``euler_lagrange_terms`` by plain ``torch.autograd``, values only (no graph kept).

    Same block-diagonal idea (one reverse pass of ΣL, then D passes for the rows of the
    Hessian and of the mixed term), but without torch.func, whose first use imports
    torch._dynamo (~1.5 s): the eager fit path never pays that.

    Args:
        q, qd: (..., N, D); theta broadcasting against them; t, dissipation, Q as in
            ``euler_lagrange_terms``. Returns (..., N, D, D), (..., N, D).
    """
    dof = q.shape[-1]
    timed = t is not None
    q = q.detach().clone().requires_grad_(True)
    qd = qd.detach().clone().requires_grad_(True)
    inputs: tuple[Tensor, ...] = (q, qd)
    if timed:  # one time per point of the batch, so that ∂/∂t stays per point
        t = t.detach().expand(q.shape[:-1]).clone().requires_grad_(True)
        inputs = (q, qd, t)
    kwargs = {"t": t} if timed else {}
    with torch.enable_grad():
        grad_q, grad_qd = torch.autograd.grad(
            lagrangian(q, qd, theta.detach(), **kwargs).sum(), (q, qd), create_graph=True,
            materialize_grads=True,
        )
        hessian_rows, mixed_rows, time_rows = [], [], []
        for i in range(dof):
            row = grad_qd[..., i].sum()
            if row.requires_grad:
                parts = torch.autograd.grad(
                    row, inputs, retain_graph=i < dof - 1, materialize_grads=True
                )
            else:  # L is linear in q̇_i: no second derivatives
                parts = tuple(torch.zeros_like(x) for x in inputs)
            mixed_rows.append(parts[0])  # ∂²L/∂q̇_i∂q_j
            hessian_rows.append(parts[1])  # ∂²L/∂q̇_i∂q̇_j
            if timed:
                time_rows.append(parts[2])  # ∂²L/∂q̇_i∂t
        friction = None
        if dissipation is not None:
            (friction,) = torch.autograd.grad(
                dissipation(q, qd, theta.detach(), **kwargs).sum(), (qd,), materialize_grads=True
            )
    hessian = torch.stack(hessian_rows, dim=-2)
    mixed = torch.stack(mixed_rows, dim=-2)
    rhs = grad_q - (mixed @ qd.unsqueeze(-1)).squeeze(-1)
    if timed:
        rhs = rhs - torch.stack(time_rows, dim=-1)
    if friction is not None:
        rhs = rhs - friction
    if Q is not None:
        rhs = rhs + Q
    return hessian.detach(), rhs.detach()


def autograd_system_terms(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> tuple[Tensor, Tensor]:
    """``autograd_terms`` of a system: its L, R, and the data's t and Q."""
    return autograd_terms(
        system.lagrangian, q, qd, theta, t=check_time(system, t),
        dissipation=system.dissipation, Q=Q,
    )


# --------------------------------------------------------------------------- report's v2


@register_solver("vmap", compilable=False)  # compile+vmap(jacfwd): pytorch#151196
def vmap_solver(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> Tensor:
    """The seed report's v2: jacfwd per point, vmap over points and over starts."""
    t = check_time(system, t)
    timed = t is not None
    lagrangian, dissipation = system.lagrangian, system.dissipation
    t_in = t if timed else torch.zeros(q.shape[0], dtype=q.dtype, device=q.device)
    q_in = Q if Q is not None else torch.zeros_like(q)

    def lag(q_p, qd_p, theta_b, t_p):
        return lagrangian(q_p, qd_p, theta_b, t=t_p) if timed else lagrangian(q_p, qd_p, theta_b)

    def point(q_p: Tensor, qd_p: Tensor, t_p: Tensor, force: Tensor, theta_b: Tensor) -> Tensor:
        grad_q = jacfwd(lag, argnums=0)(q_p, qd_p, theta_b, t_p)
        d_qd = jacfwd(lag, argnums=1)
        hessian = jacfwd(d_qd, argnums=1)(q_p, qd_p, theta_b, t_p)
        mixed = jacfwd(d_qd, argnums=0)(q_p, qd_p, theta_b, t_p)
        rhs = grad_q - mixed @ qd_p + force
        if timed:
            rhs = rhs - jacfwd(d_qd, argnums=3)(q_p, qd_p, theta_b, t_p)
        if dissipation is not None:
            def r(q_, qd_, th_, t_):
                return dissipation(q_, qd_, th_, t=t_) if timed else dissipation(q_, qd_, th_)
            rhs = rhs - jacfwd(r, argnums=1)(q_p, qd_p, theta_b, t_p)
        return solve_mass_matrix(hessian, rhs)

    over_points = vmap(point, in_dims=(0, 0, 0, 0, None))
    return vmap(over_points, in_dims=(None, None, None, None, 0))(q, qd, t_in, q_in, theta)


# --------------------------------------------------------------------------- report's v1


@register_solver("loop", compilable=False)
def loop_solver(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> Tensor:
    """The seed report's old method: full Hessian/Jacobian per point, Python loops.

    The state is (q, q̇, t) when L depends on time, so the Hessian also holds ∂²L/∂q̇∂t.
    """
    dof = system.dof
    create_graph = theta.requires_grad
    t = check_time(system, t)
    timed = t is not None

    rows = []
    for theta_b in theta:

        def lagrangian_of_state(state: Tensor, theta_b: Tensor = theta_b) -> Tensor:
            if timed:
                return system.lagrangian(state[:dof], state[dof : 2 * dof], theta_b, t=state[2 * dof])
            return system.lagrangian(state[:dof], state[dof:], theta_b)

        def dissipation_of_state(state: Tensor, theta_b: Tensor = theta_b) -> Tensor:
            if timed:
                return system.dissipation(state[:dof], state[dof : 2 * dof], theta_b, t=state[2 * dof])
            return system.dissipation(state[:dof], state[dof:], theta_b)

        points = []
        for n, (q_p, qd_p) in enumerate(zip(q, qd)):
            state = torch.cat((q_p, qd_p) + ((t[n : n + 1],) if timed else ()))
            full_grad = torch.autograd.functional.jacobian(
                lagrangian_of_state, state, create_graph=create_graph
            )
            full_hessian = torch.autograd.functional.hessian(
                lagrangian_of_state, state, create_graph=create_graph
            )
            hessian = full_hessian[dof : 2 * dof, dof : 2 * dof]
            mixed = full_hessian[dof : 2 * dof, :dof]  # ∂²L / ∂q̇_i ∂q_j
            rhs = full_grad[:dof] - mixed @ qd_p
            if timed:
                rhs = rhs - full_hessian[dof : 2 * dof, 2 * dof]
            if system.dissipation is not None:
                rhs = rhs - torch.autograd.functional.jacobian(
                    dissipation_of_state, state, create_graph=create_graph
                )[dof : 2 * dof]
            if Q is not None:
                rhs = rhs + Q[n]
            points.append(solve_mass_matrix(hessian, rhs))
        rows.append(torch.stack(points))
    return torch.stack(rows)


# --------------------------------------------------------------------------- reference


@register_solver("closed_form")
def closed_form_solver(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> Tensor:
    """The system's hand-derived q̈: the reference every solver is tested against.

    A closed form of a system with friction, time or forces takes ``t=`` and ``Q=``
    keywords (they are passed only when given)."""
    if system.closed_form is None:
        raise ArgumentError("solver", f"system {system.name!r} has no closed-form q̈")
    extras = {}
    if check_time(system, t) is not None:
        extras["t"] = t
    if Q is not None:
        extras["Q"] = Q
    return system.closed_form(q, qd, theta[:, None, :], **extras)


# The fast paths register ``linear`` and ``fast`` and provide the compile policy; imported
# last because they build on the solvers above.
