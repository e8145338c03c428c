r"""The parameter-linear solver: eq. 6 from a basis computed once per dataset.

When L = L₀(q, q̇) + Σⱼ θⱼ φⱼ(q, q̇), every term of eq. 6 is linear in θ: H(θ) = H₀ + Σⱼ θⱼ Hⱼ
and r(θ) = r₀ + Σⱼ θⱼ rⱼ at each point, where Hⱼ = ∂²φⱼ/∂q̇∂q̇ᵀ and rⱼ = ∇_q φⱼ − (∇_q∇_q̇ᵀφⱼ) q̇.
The basis (Hⱼ, rⱼ) is computed once per dataset by autodiff (eq. 6's terms at θ = 0 and
θ = eⱼ); each call is then a (B, P) × (P, N·D) product and a D×D solve, and the fit's gradient
has a closed adjoint (``LinearBasis.loss_and_grad``). Linearity is never taken on trust: the
system's ``linear_in_params`` flag (``None``: not declared) is checked at the data, comparing
the autodiff terms at random θ of mixed signs and scales with the basis' prediction; a flag of
``True`` that fails is an error, ``None`` that passes is accepted, ``False`` is respected.
The eager basis uses plain ``torch.autograd`` (``autograd_terms``): torch.func's first call
imports torch._dynamo, 1.5 s that a short eager fit would otherwise pay.

``fast`` = ``linear`` when the check passes, else ``broadcast`` (``base.FALLBACK``); the one
place that decides is :func:`basis_for`.
"""

from __future__ import annotations

import functools
import weakref
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from lagfit_cli.errors import ArgumentError, LagfitError
from lagfit_cli.core.solvers.autodiff import autograd_system_terms, system_terms
from lagfit_cli.core.solvers.base import FALLBACK, SOLVERS, register_solver, solve_mass_matrix
from lagfit_cli.core.solvers.compile import EAGER_CHUNK_POINTS, Compiled, should_compile
from lagfit_cli.core.systems import System

@dataclass(frozen=True, eq=False)
class LinearBasis:
    r"""Eq. 6's terms of L = L₀ + Σⱼ θⱼ φⱼ at a dataset's N points.

    Attributes:
        hessian: (P, N, D, D), Hⱼ = ∂²φⱼ/∂q̇∂q̇ᵀ.
        rhs: (P, N, D), rⱼ = ∇_q φⱼ − (∇_q∇_q̇ᵀ φⱼ) q̇.
        offset_hessian, offset_rhs: (N, D, D), (N, D): the same for L₀, or ``None`` when
            L₀'s terms vanish (no θ-free part).
    """

    hessian: Tensor
    rhs: Tensor
    offset_hessian: Optional[Tensor] = None
    offset_rhs: Optional[Tensor] = None

    @property
    def n_params(self) -> int:
        return self.rhs.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(N, D)."""
        return self.rhs.shape[1], self.rhs.shape[2]

    def _terms(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """H(θ): (B, N, D, D) and r(θ): (B, N, D) by two (B, P) × (P, ·) products."""
        n_points, dof = self.shape
        rhs = _combine(theta, self.rhs, self.offset_rhs).view(-1, n_points, dof)
        hessian = _combine(theta, self.hessian, self.offset_hessian)
        return hessian.view(-1, n_points, dof, dof), rhs

    @functools.cached_property
    def fused_args(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(hessian, rhs, offset_hessian, offset_rhs) for the compiled loops, zeros for
        absent offsets (made once: fresh (N, D, D) zeros per call cost page faults)."""
        return (
            self.hessian,
            self.rhs,
            self.offset_hessian
            if self.offset_hessian is not None
            else self.hessian.new_zeros(self.hessian.shape[1:]),
            self.offset_rhs if self.offset_rhs is not None else self.rhs.new_zeros(self.rhs.shape[1:]),
        )

    def qdd(self, theta: Tensor) -> Tensor:
        """q̈ for theta (B, P): (B, N, D), eager."""
        hessian, rhs = self._terms(theta)
        return solve_mass_matrix(hessian, rhs)

    def loss_and_grad(self, theta: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        """loss_b = mean (q̈_b − target)² and ∂loss_b/∂θ_b, eager, in cache-sized chunks.

        The adjoint: with λ = H⁻ᵀ ∂loss/∂q̈ at each point, ∂loss/∂θⱼ = Σₙ λᵀ(rⱼ − Hⱼ q̈).

        Args:
            theta: (B, P); target: (N, D).

        Returns:
            loss (B,), grad (B, P).
        """
        n_points, dof = self.shape
        scale = 2.0 / (n_points * dof)
        rhs_t = self.rhs.reshape(self.n_params, -1).T
        hessian_t = self.hessian.reshape(self.n_params, -1).T
        chunk = max(1, EAGER_CHUNK_POINTS // (n_points * dof))
        losses, grads = [], []
        for theta_c in theta.split(chunk):
            if dof == 1:  # the common case, in as few passes over (chunk, N) as possible
                qdd = _combine(theta_c, self.rhs, self.offset_rhs)
                mass = _combine(theta_c, self.hessian, self.offset_hessian)
                qdd = qdd.div_(mass)
                residual = qdd - target.reshape(1, -1)
                losses.append(torch.linalg.vecdot(residual, residual) / n_points)
                adjoint = residual.div_(mass).mul_(scale)
                grad = adjoint @ rhs_t
                grads.append(torch.addmm(grad, adjoint.mul_(qdd), hessian_t, alpha=-1))
                continue
            hessian, rhs = self._terms(theta_c)
            qdd = solve_mass_matrix(hessian, rhs)
            residual = (qdd - target).reshape(len(theta_c), -1)
            losses.append(torch.linalg.vecdot(residual, residual) / residual.shape[1])
            adjoint = solve_mass_matrix(hessian.mT, residual.mul_(scale).view(qdd.shape))
            outer = adjoint[..., :, None] * qdd[..., None, :]
            grad = adjoint.reshape(len(theta_c), -1) @ rhs_t
            grads.append(grad.sub_(outer.reshape(len(theta_c), -1) @ hessian_t))
        return torch.cat(losses), torch.cat(grads)


def _combine(theta: Tensor, basis: Tensor, offset: Optional[Tensor]) -> Tensor:
    """offset + Σⱼ θ_bj basisⱼ, flattened: (B, M) for basis (P, ...) of M entries each."""
    flat = basis.reshape(basis.shape[0], -1)
    if offset is None:
        return theta @ flat
    return torch.addmm(offset.reshape(1, -1), theta, flat)


def _fused_terms(
    theta: Tensor, hessian: Tensor, rhs: Tensor, offset_hessian: Tensor, offset_rhs: Tensor
) -> tuple[Tensor, Tensor]:
    """``LinearBasis._terms`` as broadcast sums over P, which inductor fuses into its loops.

    The offsets are tensors here (zeros when absent) so one graph serves both cases.
    """
    weights = theta[:, :, None, None]
    rhs_b = (weights * rhs[None]).sum(1) + offset_rhs
    hessian_b = (weights[..., None] * hessian[None]).sum(1) + offset_hessian
    return hessian_b, rhs_b


def fused_qdd(theta, hessian, rhs, offset_hessian, offset_rhs):
    hessian_b, rhs_b = _fused_terms(theta, hessian, rhs, offset_hessian, offset_rhs)
    return solve_mass_matrix(hessian_b, rhs_b)


def fused_loss_and_grad(theta, hessian, rhs, offset_hessian, offset_rhs, target):
    hessian_b, rhs_b = _fused_terms(theta, hessian, rhs, offset_hessian, offset_rhs)
    qdd = solve_mass_matrix(hessian_b, rhs_b)
    residual = qdd - target
    losses = residual.square().mean(dim=(1, 2))
    adjoint = solve_mass_matrix(hessian_b.mT, residual * (2.0 / residual[0].numel()))
    from_rhs = (adjoint[:, None] * rhs[None]).sum(dim=(2, 3))
    outer = adjoint[..., :, None] * qdd[..., None, :]
    from_hessian = (outer[:, None] * hessian[None]).sum(dim=(2, 3, 4))
    return losses, from_rhs - from_hessian


def fused_args(basis: LinearBasis) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return basis.fused_args


def _terms_at(
    system: System, q: Tensor, qd: Tensor, thetas: Tensor, compile: str,
    t: Optional[Tensor] = None, Q: Optional[Tensor] = None,
):
    """Eq. 6's (hessian, rhs) at every point for each row of thetas: (K, N, D, D), (K, N, D).

    With the data's times ``t`` (N,) and forces ``Q`` (N, D), the rhs holds their terms too
    (Q is θ-free: it lands in the basis' offset)."""
    states = (thetas.shape[0],) + tuple(q.shape)

    def terms(q_: Tensor, qd_: Tensor, thetas_: Tensor) -> tuple[Tensor, Tensor]:
        return system_terms(
            system,
            q_.expand(states).contiguous(),
            qd_.expand(states).contiguous(),
            thetas_[:, None, :],
        )

    plain = t is None and Q is None  # the compiled graph is traced without t and Q
    if plain and should_compile(compile, "generic_qdd", thetas.shape[0] * q.shape[0]):
        return Compiled(terms)(thetas.shape[0] * q.shape[0], q, qd, thetas)
    # Eagerly, in chunks of points: the autograd graph holds ~30 (K, chunk, D) tensors.
    chunk = max(1, EAGER_CHUNK_POINTS // thetas.shape[0])

    def pieces(x: Optional[Tensor]):
        return x.split(chunk) if x is not None else [None] * len(q.split(chunk))

    parts = [
        autograd_system_terms(
            system,
            q_c.expand((thetas.shape[0],) + tuple(q_c.shape)),
            qd_c.expand((thetas.shape[0],) + tuple(qd_c.shape)),
            thetas[:, None, :],
            t=t_c,
            Q=Q_c,
        )
        for q_c, qd_c, t_c, Q_c in zip(q.split(chunk), qd.split(chunk), pieces(t), pieces(Q))
    ]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([h for h, _ in parts], dim=1), torch.cat([r for _, r in parts], dim=1)


def linear_basis(
    system: System, q: Tensor, qd: Tensor, *, compile: str = "auto", require: bool = False,
    t: Optional[Tensor] = None, Q: Optional[Tensor] = None,
) -> Optional[LinearBasis]:
    """The system's ``LinearBasis`` at (q, qd), or ``None`` where L is not linear in θ.

    With a dissipation function R (linear in θ too), each basis function's rhs holds
    −∂ψₖ/∂q̇ of R's part; the data's forces Q are θ-free and join the offset (which makes
    the equation-error system inhomogeneous); the data's times ``t`` enter every term.

    Linearity is checked at these points: the autodiff terms at three random θ (mixed
    signs, scales 1/30 … 30) must match the basis' prediction to ~1000 ε relative.

    Args:
        q, qd: (N, D). compile: the policy for the one autodiff evaluation it needs.
        require: raise ``LagfitError`` instead of returning ``None``.

    Raises:
        LagfitError: the system declares ``linear_in_params=True`` but the check fails
            (a wrong declaration), or ``require`` and L is not linear in θ.
    """
    declared = getattr(system, "linear_in_params", None)
    if declared is False:
        if require:
            raise ArgumentError(
                "solver", f"linear: system {system.name!r} is declared nonlinear in its "
                "parameters; use the fast or broadcast solver"
            )
        return None
    n_params = system.n_params
    generator = torch.Generator().manual_seed(20250506)
    probe = torch.randn(n_params, generator=generator, dtype=torch.float64)
    probes = torch.stack(
        (probe, 30 * torch.randn(n_params, generator=generator, dtype=torch.float64), -probe / 30)
    )
    thetas = torch.cat(
        (torch.zeros(1, n_params, dtype=torch.float64), torch.eye(n_params, dtype=torch.float64), probes)
    ).to(dtype=q.dtype, device=q.device)
    with torch.no_grad():
        hessians, rhss = _terms_at(
            system, q.detach(), qd.detach(), thetas, compile,
            None if t is None else t.detach(), None if Q is None else Q.detach(),
        )
    offset_h, offset_r = hessians[0], rhss[0]
    basis_h = hessians[1 : n_params + 1] - offset_h
    basis_r = rhss[1 : n_params + 1] - offset_r
    probes = thetas[n_params + 1 :]

    finite = torch.isfinite(hessians).flatten(2).all(-1) & torch.isfinite(rhss).flatten(2).all(-1)  # (K, N)
    if not bool(finite.all()):
        if declared or require:
            raise LagfitError(nonfinite_terms_message(system, q, qd, finite))
        return None  # not declared: the generic solvers take over (and meet the same values)
    linear = True
    tolerance = 1000 * torch.finfo(q.dtype).eps
    for values, basis, offset in ((hessians, basis_h, offset_h), (rhss, basis_r, offset_r)):
        if not linear:
            break
        flat = basis.reshape(n_params, -1)
        predicted = offset.reshape(1, -1) + probes @ flat
        scale = offset.reshape(1, -1).abs() + probes.abs() @ flat.abs()
        error = (values[n_params + 1 :].reshape(len(probes), -1) - predicted).abs()
        linear = bool((error <= tolerance * scale + torch.finfo(q.dtype).tiny).all())
    if not linear:
        if declared:
            raise LagfitError(
                f"system {system.name!r} declares linear_in_params=True, but its Lagrangian "
                "is not linear in the parameters at the data points; fix the declaration"
            )
        if require:
            raise ArgumentError(
                "solver", f"linear: the Lagrangian of system {system.name!r} is not linear "
                "in its parameters; use the fast or broadcast solver"
            )
        return None
    has_offset = bool(offset_h.any() or offset_r.any())
    return LinearBasis(
        hessian=basis_h,
        rhs=basis_r,
        offset_hessian=offset_h if has_offset else None,
        offset_rhs=offset_r if has_offset else None,
    )


def nonfinite_terms_message(system: System, q: Tensor, qd: Tensor, finite: Tensor) -> str:
    """One line naming where eq. 6's terms overflow: not a nonlinearity, but values (data,
    noise or parameters) too large for the dtype, or a Lagrangian undefined there."""
    bad_points = ~finite.all(0)
    n_bad = int(bad_points.sum())
    first = int(bad_points.nonzero()[0, 0])

    def values(row: Tensor) -> str:
        return "[" + ", ".join(f"{float(v):.3g}" for v in row.tolist()[:4]) + (", ..." if row.numel() > 4 else "") + "]"

    at_zero = not bool(finite[0, first])
    return (
        f"system {system.name!r}: the Euler–Lagrange terms are not finite at {n_bad} of "
        f"{q.shape[0]} data points (first: point {first + 1}, q = {values(q[first])}, "
        f"q̇ = {values(qd[first])}){' already at θ = 0' if at_zero else ''}: the data (or the "
        f"noise) overflow {str(q.dtype).removeprefix('torch.')}, or the Lagrangian is not "
        "defined there; check the data, noise.sigma and the state bounds"
    )


class _BasisCache:
    """The last few bases, keyed by (system, q, qd) identity and in-place version."""

    def __init__(self, size: int = 4) -> None:
        self._entries: list[tuple[Any, ...]] = []
        self._size = size

    def get(self, system: System, q: Tensor, qd: Tensor, compile: str, require: bool,
            t: Optional[Tensor] = None, Q: Optional[Tensor] = None):
        extras = [x for x in (t, Q) if x is not None]
        if q.requires_grad or qd.requires_grad or any(x.requires_grad for x in extras):
            # The basis is differentiable in θ only: ``fast`` then takes ``broadcast``,
            # which keeps the graph to (q, q̇); ``linear`` computes an uncached basis.
            if require:
                return linear_basis(system, q, qd, compile=compile, require=True, t=t, Q=Q)
            return None
        key = tuple((None, -1) if x is None else (x, x._version) for x in (q, qd, t, Q))
        for entry in self._entries:
            e_system, e_key, result = entry
            if e_system is system and all(
                (ref is None and x is None) or (ref is not None and ref() is x and version == v)
                for (ref, v), (x, version) in zip(e_key, key)
            ):
                if result is None and require:
                    break  # recompute, to raise the error
                return result
        result = linear_basis(system, q, qd, compile=compile, require=require, t=t, Q=Q)
        refs = tuple((None if x is None else weakref.ref(x), version) for x, version in key)
        entry = (system, refs, result)
        self._entries = [entry] + self._entries[: self._size - 1]
        return result


_BASES = _BasisCache()


def cached_basis(
    system: System, q: Tensor, qd: Tensor, compile: str, require: bool,
    t: Optional[Tensor] = None, Q: Optional[Tensor] = None,
):
    """``linear_basis`` through a small cache keyed on the data tensors (for solvers that
    are called again and again on one dataset)."""
    return _BASES.get(system, q, qd, compile, require, t, Q)


def basis_choice(choice: str) -> str:
    """The basis is computed once, not in the hot loop: ``true`` compiles it only if that
    pays on its own (``auto``)."""
    return "false" if choice == "false" else "auto"


def basis_for(
    system: System, q: Tensor, qd: Tensor, solver_name: str, compile: str = "auto",
    *, t: Optional[Tensor] = None, Q: Optional[Tensor] = None,
) -> tuple[Optional[LinearBasis], str]:
    """Whether ``solver_name`` runs on the parameter-linear basis at this data.

    Returns ``(basis, solver_name)`` for a solver that uses the basis and a system linear in
    θ; ``(None, FALLBACK)`` for ``fast`` on a nonlinear system; ``(None, solver_name)`` for
    solvers that do not use the basis. ``linear`` on a nonlinear system raises.
    """
    use = SOLVERS.lookup(solver_name).basis
    if use is None:
        return None, solver_name
    basis = linear_basis(system, q, qd, compile=compile, require=use == "require", t=t, Q=Q)
    return (basis, solver_name) if basis is not None else (None, FALLBACK)


@register_solver("linear", basis="require")
def linear_solver(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> Tensor:
    """Eq. 6 through the parameter-linear basis (computed once per dataset, cached).

    Raises ``LagfitError`` when L is not linear in θ. Differentiable in theta.
    """
    return cached_basis(system, q, qd, "auto", require=True, t=t, Q=Q).qdd(theta)


@register_solver("fast", basis="optional")
def fast_solver(
    system: System, q: Tensor, qd: Tensor, theta: Tensor, *, t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> Tensor:
    """``linear`` when L is linear in θ (checked at the data), else ``broadcast``."""
    basis = cached_basis(system, q, qd, "auto", require=False, t=t, Q=Q)
    if basis is None:
        return SOLVERS[FALLBACK](system, q, qd, theta, t=t, Q=Q)
    return basis.qdd(theta)
