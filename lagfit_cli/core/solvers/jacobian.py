r"""Residuals r(θ) = q̈(θ) − q̈_data and their Jacobian ∂r/∂θ, for B parameter vectors at once.

What a second-order fit needs (Levenberg–Marquardt, covariances, identifiability):

    model.residuals(theta (B, P)) -> (B, M)                    M = N·D
    model.residuals_and_jacobian(theta) -> (B, M), (B, M, P)

Three ways to build it, chosen by :func:`make_residual_model`:

``basis``
    L linear in θ (``LinearBasis``): q̈ = H⁻¹ r with H, r linear in θ, so
    ∂q̈/∂θⱼ = H⁻¹ (rⱼ − Hⱼ q̈) from the basis, in a few products.
``coefficients``
    L = Σₖ cₖ(θ) φₖ (``System.coefficients``, e.g. the double pendulum): the basis in c-space
    and the chain rule ∂q̈/∂θ = ∂q̈/∂c · ∂c/∂θ, with the K × P matrix ∂c/∂θ by autograd.
``autodiff``
    Any other L: forward-mode autodiff of the broadcast solver (``torch.func.jacfwd``,
    vmapped over the starts). Correct everywhere, much slower.

The two basis-backed models also give the **equation-error system** (:meth:`equation_error`):
at measured q̈ the Euler–Lagrange residual H(c) q̈ − r(c) is linear in c, so stacking it over
the data gives A c = b, solved in one SVD — exact on clean data (the exact start of the fit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch import Tensor

from lagfit_cli.core.solvers.autodiff import broadcast_qdd
from lagfit_cli.core.solvers.linear import LinearBasis, linear_basis
from lagfit_cli.core.solvers.mass_matrix import mass_matrix
from lagfit_cli.core.systems import System

#: starts per torch.func.jacfwd call of the autodiff model (bounds its memory)
AUTODIFF_CHUNK = 4


@dataclass(frozen=True)
class EquationError:
    """A c = b over the data: c (K,) are L's coefficients (θ itself when L is linear in θ).

    ``homogeneous``: b ≡ 0 (no θ-free part of L), so c is fixed only up to scale.
    """

    matrix: Tensor  # (M, K)
    rhs: Tensor  # (M,)
    homogeneous: bool


class BasisModel:
    """Residuals through a ``LinearBasis`` in θ, or in coefficients c(θ) (``of_params``)."""

    kind = "basis"

    def __init__(
        self,
        basis: LinearBasis,
        target: Tensor,
        of_params: Optional[Callable[[Tensor], Tensor]] = None,
    ) -> None:
        self.basis, self.target, self.of_params = basis, target, of_params
        if of_params is not None:
            self.kind = "coefficients"
        self.n_residuals = target.numel()

    def _coefficients(self, theta: Tensor) -> Tensor:
        return theta if self.of_params is None else self.of_params(theta)

    def residuals(self, theta: Tensor) -> Tensor:
        with torch.no_grad():
            qdd = self.basis.qdd(self._coefficients(theta))
        return (qdd - self.target).flatten(1)

    def residuals_and_jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        with torch.no_grad():
            c = self._coefficients(theta)
            hessian, rhs = self.basis._terms(c)  # (B, N, D, D), (B, N, D)
            inverse = small_inverse(hessian)
            qdd = small_matvec(inverse, rhs)
            # ∂q̈/∂cₖ = H⁻¹ (rₖ − Hₖ q̈): (B, K, N, D)
            moved = self.basis.rhs[None] - small_matvec(self.basis.hessian[None], qdd[:, None])
            d_qdd = small_matvec(inverse[:, None], moved)
            jacobian = d_qdd.flatten(2).transpose(1, 2)  # (B, M, K)
        if self.of_params is not None:
            jacobian = jacobian @ coefficient_jacobian(self.of_params, theta)
        return (qdd - self.target).flatten(1), jacobian

    def mass_ok(self, theta: Tensor) -> Tensor:
        """(B,) whether H(θ) is definite (one sign) at every data point, q̈ finite."""
        with torch.no_grad():
            hessian, _ = self.basis._terms(self._coefficients(theta))
        return definite_everywhere(hessian)

    def equation_error(self) -> EquationError:
        """The stacked Euler–Lagrange residual at the measured q̈, linear in c."""
        basis, qdd = self.basis, self.target
        # column k: Hₖ q̈ − rₖ at every point, flattened
        columns = torch.einsum("knij,nj->kni", basis.hessian, qdd) - basis.rhs
        matrix = columns.flatten(1).T
        if basis.offset_hessian is None:
            return EquationError(matrix, torch.zeros_like(matrix[:, 0]), homogeneous=True)
        offset = torch.einsum("nij,nj->ni", basis.offset_hessian, qdd) - basis.offset_rhs
        return EquationError(matrix, -offset.flatten(), homogeneous=False)


def definite_everywhere(hessian: Tensor) -> Tensor:
    """For (B, N, D, D) symmetric matrices: (B,) whether each batch is definite with one sign
    (all positive or all negative definite) at every point. L and −L give the same motion,
    so the sign is free; a sign change inside the data means H is singular in between."""
    finite = torch.isfinite(hessian).flatten(1).all(-1)
    hessian = hessian.nan_to_num(0.0)
    if hessian.shape[-1] <= 2:  # Sylvester: H₀₀ of one sign, and det H > 0 for D = 2
        lead = hessian[..., 0, 0]
        definite = hessian.new_ones(lead.shape, dtype=torch.bool)
        if hessian.shape[-1] == 2:
            definite = hessian[..., 0, 0] * hessian[..., 1, 1] - hessian[..., 0, 1] * hessian[..., 1, 0] > 0
        positive = ((lead > 0) & definite).flatten(1).all(-1)
        negative = ((lead < 0) & definite).flatten(1).all(-1)
        return finite & (positive | negative)
    eigenvalues = torch.linalg.eigvalsh(hessian)  # (B, N, D)
    positive = (eigenvalues > 0).flatten(1).all(-1)
    negative = (eigenvalues < 0).flatten(1).all(-1)
    return finite & (positive | negative)


def small_inverse(matrix: Tensor) -> Tensor:
    """H⁻¹ of a batch of D×D matrices (..., D, D): closed forms for D ≤ 2."""
    if matrix.shape[-1] == 1:
        return 1.0 / matrix
    if matrix.shape[-1] == 2:
        a, b = matrix[..., 0, 0], matrix[..., 0, 1]
        c, d = matrix[..., 1, 0], matrix[..., 1, 1]
        det = a * d - b * c
        return torch.stack((torch.stack((d, -b), -1), torch.stack((-c, a), -1)), -2) / det[
            ..., None, None
        ]
    return torch.linalg.inv(matrix)


def small_matvec(matrix: Tensor, vector: Tensor) -> Tensor:
    """A x for (..., D, D) and (..., D), broadcasting: D elementwise passes for small D
    (much faster than batched tiny matmuls or reductions over a last axis of size D)."""
    dof = matrix.shape[-1]
    if dof > 4:
        return (matrix @ vector[..., None])[..., 0]
    rows = []
    for i in range(dof):
        row = matrix[..., i, 0] * vector[..., 0]
        for j in range(1, dof):
            row = row + matrix[..., i, j] * vector[..., j]
        rows.append(row)
    return torch.stack(rows, dim=-1)


def coefficient_jacobian(of_params: Callable[[Tensor], Tensor], theta: Tensor) -> Tensor:
    """∂c/∂θ for each row of theta (B, P): (B, K, P), by one batched reverse pass of a tiny
    graph (``is_grads_batched``: the K unit cotangents at once)."""
    with torch.enable_grad():
        leaf = theta.detach().requires_grad_(True)
        c = of_params(leaf)
        n_out = c.shape[1]
        cotangents = torch.eye(n_out, dtype=c.dtype, device=c.device)[:, None, :].expand(n_out, *c.shape)
        (rows,) = torch.autograd.grad(c, leaf, grad_outputs=cotangents, is_grads_batched=True)
    return rows.permute(1, 0, 2)


class AutodiffModel:
    """Residuals through the broadcast solver; the Jacobian by forward-mode autodiff."""

    kind = "autodiff"

    def __init__(
        self, system: System, q: Tensor, qd: Tensor, target: Tensor,
        t: Optional[Tensor] = None, Q: Optional[Tensor] = None,
    ) -> None:
        self.system, self.q, self.qd, self.target = system, q, qd, target
        self.t, self.Q = t, Q
        self.n_residuals = target.numel()

    def residuals(self, theta: Tensor) -> Tensor:
        with torch.no_grad():
            qdd = broadcast_qdd(self.system, self.q, self.qd, theta, t=self.t, Q=self.Q)
        return (qdd - self.target).flatten(1)

    def residuals_and_jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        def one(theta_b: Tensor) -> Tensor:
            return broadcast_qdd(
                self.system, self.q, self.qd, theta_b[None], t=self.t, Q=self.Q
            )[0].flatten()

        jac = torch.func.vmap(torch.func.jacfwd(one))
        jacobian = torch.cat([jac(part) for part in theta.detach().split(AUTODIFF_CHUNK)])
        return self.residuals(theta), jacobian

    def mass_ok(self, theta: Tensor) -> Tensor:
        """(B,) whether H(θ) is definite (one sign) at every data point."""
        return torch.stack(
            [
                definite_everywhere(mass_matrix(self.system, self.q, self.qd, theta_b, t=self.t)[None])[0]
                for theta_b in theta
            ]
        )

    def equation_error(self) -> None:
        return None


ResidualModel = BasisModel | AutodiffModel


def make_residual_model(
    system: System, q: Tensor, qd: Tensor, target: Tensor, compile: str = "auto", *,
    t: Optional[Tensor] = None, Q: Optional[Tensor] = None,
) -> ResidualModel:
    """The cheapest exact residual model for this system at these data (see module doc).

    Args:
        t: the data's times (N,), for a time-dependent system; Q: applied generalised forces
            (N, D) on the right of d/dt ∂L/∂q̇ − ∂L/∂q + ∂R/∂q̇ = Q. Both enter the basis
            (Q as a θ-free offset, which makes the equation-error system inhomogeneous).
    """
    q, qd, target = q.detach(), qd.detach(), target.detach()
    t = None if t is None else t.detach()
    Q = None if Q is None else Q.detach()
    if not system.time_dependent:
        t = None  # times that L does not use change nothing
    basis = linear_basis(system, q, qd, compile=compile, t=t, Q=Q)
    if basis is not None:
        return BasisModel(basis, target)
    if system.coefficients is not None:
        in_c = System(
            name=f"{system.name} (coefficients)",
            lagrangian=system.coefficients.lagrangian,
            param_names=system.coefficients.names,
            dof=system.dof,
            linear_in_params=True,
            dissipation=system.coefficients.dissipation,
            time_dependent=system.time_dependent,
        )
        return BasisModel(
            linear_basis(in_c, q, qd, compile=compile, t=t, Q=Q), target,
            system.coefficients.of_params,
        )
    return AutodiffModel(system, q, qd, target, t=t, Q=Q)
