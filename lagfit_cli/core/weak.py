r"""The weak form of the Euler–Lagrange equation: a residual model with no q̈ (``derivatives=weak``).

For each run, overlapping windows [a, b] of ``window`` samples each carry a smooth test
function that vanishes with its first ``power − 1`` derivatives at both ends,

    φ(t) = (1 − s²)^p,   s = (2t − a − b)/(b − a),   scaled so that ∫φ dt = 1.

Multiplying d/dt ∂L/∂q̇ − ∂L/∂q + ∂R/∂q̇ = Q by φ and integrating by parts (φ(a) = φ(b) = 0)
moves the time derivative onto φ:

    rᵢ = ∫ [ φ̇ ∂L/∂q̇ᵢ + φ (∂L/∂qᵢ − ∂R/∂q̇ᵢ + Qᵢ) ] dt = 0     (one residual per window and i)

so only q and q̇ at the samples are needed. The integral is the trapezoidal rule on the
samples' own times (``scipy.integrate.trapezoid``'s weights, built once as a matrix): for an
integrand that vanishes with its first p − 1 derivatives at both ends, the Euler–Maclaurin
corrections vanish to that order, so the rule is far more accurate than O(Δt²) here.

This module gives a model with the interface of ``core.solvers.jacobian`` (``residuals``,
``residuals_and_jacobian``, ``mass_ok``, ``equation_error``, ``n_residuals``), so
Levenberg–Marquardt, the exact start, identifiability and the error bars of ``core.api``
run on it unchanged:

``linear``
    L (and R) linear in θ, or L linear in coefficients c(θ) (``System.coefficients``): the
    residuals are r = A c − b, with A's columns the weak integrals of each coefficient's
    ∂L/∂q̇, ∂L/∂q (found by evaluating the gradients at K + 1 points, and checked at a
    further one), b from the θ-free part and Q. The Jacobian is A (∂c/∂θ by the chain rule),
    and A c = b is the equation-error system of the exact start.
``autodiff``
    Any other L: ∂L/∂q, ∂L/∂q̇ per sample by reverse-mode autograd of the summed Lagrangian
    (each sample's L depends on its own state only); the Jacobian in θ from the mixed
    derivatives ∂²L/∂q∂θⱼ, ∂²L/∂q̇∂θⱼ, P more reverse passes (plain ``torch.autograd``:
    ``torch.func`` would import torch's compiler stack, seconds per process).

Contract with the systems: ``getattr(system, "dissipation", None)`` is None or
R(q, qd, θ) broadcasting like the Lagrangian; when ``getattr(system, "time_dependent",
False)`` both take ``t=`` (the samples' times, (N,)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Optional

import torch
from torch import Tensor

from lagfit_cli.core.data import Dataset
from lagfit_cli.core.solvers.jacobian import EquationError, coefficient_jacobian, definite_everywhere
from lagfit_cli.core.systems import System
from lagfit_cli.errors import ArgumentError

#: starts per jacfwd call of the autodiff model
AUTODIFF_CHUNK = 4
#: the linear structure holds when the check point agrees to this relative tolerance
LINEAR_RTOL = 1e-9
#: samples at which mass_ok checks the mass matrix (evenly spread over the data)
MASS_SAMPLES = 2000


@dataclass(frozen=True)
class WeakOptions:
    """Test functions of the weak form (``conf/derivatives/weak.yaml``)."""

    #: samples per window (each test function's support)
    window: int = 151
    #: fraction of a window shared with the next (0 ≤ overlap < 1)
    overlap: float = 0.5
    #: p of the bump (1 − s²)^p: φ and its first p − 1 derivatives vanish at the ends
    power: int = 8

    def check(self) -> None:
        if self.window < 5:
            raise ArgumentError("derivatives.window", f"must be at least 5 samples, got {self.window}")
        if not (0 <= self.overlap < 1):
            raise ArgumentError("derivatives.overlap", f"must be in [0, 1), got {self.overlap}")
        if self.power < 2:
            raise ArgumentError("derivatives.power", f"must be at least 2 (φ̇ must vanish at the ends), got {self.power}")

    @property
    def stride(self) -> int:
        return max(1, int(round(self.window * (1 - self.overlap))))


def window_indices(run: Tensor, window: int, stride: int) -> Tensor:
    """(W, window) sample indices of every window of every run (runs are contiguous)."""
    rows = []
    run = run.cpu()
    change = torch.nonzero(run[1:] != run[:-1]).flatten() + 1
    bounds = [0, *change.tolist(), run.shape[0]]
    offsets = torch.arange(window)
    for start, end in zip(bounds[:-1], bounds[1:]):
        n = end - start
        if n < window:
            raise ArgumentError(
                "derivatives.window", f"a run has {n} samples, fewer than one window ({window}); "
                "lower derivatives.window or give longer runs"
            )
        starts = torch.arange(start, end - window + 1, stride)
        rows.append(starts[:, None] + offsets)
    return torch.cat(rows)


def window_weights(t: Tensor, index: Tensor, power: int) -> tuple[Tensor, Tensor]:
    """Quadrature-weighted φ and φ̇ on each window: (W, m) each, so that ∫ φ g dt ≈ Σ φ_w g."""
    tw = t[index]  # (W, m)
    a, b = tw[:, :1], tw[:, -1:]
    half = (b - a) / 2
    s = ((tw - (a + b) / 2) / half).clamp(-1.0, 1.0)
    base = 1 - s * s
    phi = base**power
    dphi = -2 * power * s * base ** (power - 1) / half
    # trapezoid weights on the window's own times (as scipy.integrate.trapezoid)
    dt = tw[:, 1:] - tw[:, :-1]
    weights = torch.zeros_like(tw)
    weights[:, :-1] += dt / 2
    weights[:, 1:] += dt / 2
    norm = (weights * phi).sum(-1, keepdim=True)  # ∫φ = 1
    return weights * phi / norm, weights * dphi / norm


class WeakModel:
    """Weak-form residuals of one Dataset (with t and run) and their Jacobian in θ."""

    def __init__(self, system: System, data: Dataset, options: WeakOptions = WeakOptions()) -> None:
        options.check()
        if data.t is None:
            raise ArgumentError("data", "the weak form needs the samples' times (data=trajectory)")
        self.system, self.options = system, options
        self.q, self.qd = data.q.detach(), data.qd.detach()
        self.t = data.t.detach()
        self.Q = None if data.Q is None else data.Q.detach()
        run = data.run if data.run is not None else torch.zeros(data.n_points, dtype=torch.long)
        self.index = window_indices(run, options.window, options.stride).to(self.q.device)
        self.phi, self.dphi = window_weights(self.t, self.index, options.power)
        self.dissipation = getattr(system, "dissipation", None)
        self.time_kw = {"t": self.t} if getattr(system, "time_dependent", False) else {}
        self.dof = system.dof
        self.n_rows = self.index.shape[0]
        self.n_residuals = self.n_rows * self.dof
        self.forcing = None if self.Q is None else self.integrate(self.Q, self.phi)  # (W, D)
        self.of_params = None
        self.kind = "weak-autodiff"
        self._linear = self._linear_structure()

    # ------------------------------------------------------------------ pieces

    def integrate(self, values: Tensor, weights: Tensor) -> Tensor:
        """Σ_m weights[w, m] values[index[w, m]]: (W, D) for values (N, D); (..., W, D) for (..., N, D)."""
        return torch.einsum("wm,...wmd->...wd", weights, values[..., self.index, :])

    def _terms(self, lagrangian, theta: Tensor, dissipation=None) -> tuple[Tensor, Tensor]:
        """(∂L/∂q − ∂R/∂q̇, ∂L/∂q̇) per sample at one θ (P,): (N, D) each (each sample's L
        depends on its own state only, so the gradient of the sum is per sample)."""
        with torch.enable_grad():
            q = self.q.detach().requires_grad_(True)
            qd = self.qd.detach().requires_grad_(True)
            total = lagrangian(q, qd, theta.detach(), **self.time_kw).sum()
            force, momentum = torch.autograd.grad(total, (q, qd), allow_unused=True)
            force = torch.zeros_like(q) if force is None else force
            momentum = torch.zeros_like(qd) if momentum is None else momentum
            if dissipation is not None:
                (friction,) = torch.autograd.grad(
                    dissipation(q, qd, theta.detach(), **self.time_kw).sum(), qd, allow_unused=True
                )
                if friction is not None:
                    force = force - friction
        return force.detach(), momentum.detach()

    def _term_jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """∂(force, momentum)/∂θⱼ per sample: (P, N, D) each, by 1 + P reverse passes: the
        per-sample mixed derivatives ∂²L/∂q∂θⱼ are the q-gradients of ∂(Σ L)/∂θⱼ."""
        kw = self.time_kw
        with torch.enable_grad():
            q = self.q.detach().requires_grad_(True)
            qd = self.qd.detach().requires_grad_(True)
            th = theta.detach().requires_grad_(True)
            (grad_l,) = torch.autograd.grad(self.system.lagrangian(q, qd, th, **kw).sum(), th, create_graph=True)
            grad_r = None
            if self.dissipation is not None:
                (grad_r,) = torch.autograd.grad(
                    self.dissipation(q, qd, th, **kw).sum(), th, create_graph=True, allow_unused=True
                )
            forces, momenta = [], []
            for j in range(th.shape[0]):
                zero = torch.zeros_like(q)
                dq, dqd = (zero, zero)
                if grad_l[j].requires_grad:
                    dq, dqd = torch.autograd.grad(grad_l[j], (q, qd), retain_graph=True, allow_unused=True)
                    dq = zero if dq is None else dq
                    dqd = zero if dqd is None else dqd
                force = dq
                if grad_r is not None and grad_r[j].requires_grad:
                    (dr,) = torch.autograd.grad(grad_r[j], qd, retain_graph=True, allow_unused=True)
                    force = force - (zero if dr is None else dr)
                forces.append(force.detach())
                momenta.append(dqd.detach())
        return torch.stack(forces), torch.stack(momenta)

    def _weak(self, force: Tensor, momentum: Tensor) -> Tensor:
        """(2, W, D): the inertial ∫ φ̇ ∂L/∂q̇ and the rest ∫ φ (∂L/∂q − ∂R/∂q̇) (no Q)."""
        return torch.stack((self.integrate(momentum, self.dphi), self.integrate(force, self.phi)))

    def _linear_structure(self) -> Optional[dict[str, Any]]:
        """A (2, M, K), b (2, M): the weak terms A c + b when linear in c; else None."""
        system = self.system
        coefficients = system.coefficients if self.dissipation is None else None
        if coefficients is not None:
            lagrangian, k, of_params = coefficients.lagrangian, len(coefficients.names), coefficients.of_params
        else:
            lagrangian, k, of_params = system.lagrangian, system.n_params, None
        dtype, device = self.q.dtype, self.q.device
        try:
            with torch.no_grad():
                ones = torch.ones(k, dtype=dtype, device=device)
                base = self._weak(*self._terms(lagrangian, ones, self.dissipation)).flatten(1)
                columns = []
                for j in range(k):
                    shifted = ones.clone()
                    shifted[j] += 1.0
                    columns.append(self._weak(*self._terms(lagrangian, shifted, self.dissipation)).flatten(1) - base)
                matrix = torch.stack(columns, dim=-1)  # (2, M, K)
                offset = base - matrix.sum(-1)  # (2, M)
                probe = 1.0 + 0.37 * torch.arange(1, k + 1, dtype=dtype, device=device) / k
                check = self._weak(*self._terms(lagrangian, probe, self.dissipation)).flatten(1)
        except (RuntimeError, ValueError, TypeError):
            return None
        predicted = matrix @ probe + offset
        scale = float(matrix.abs().max()) * float(probe.abs().max()) + float(offset.abs().max())
        if not (math.isfinite(scale) and bool(torch.isfinite(check).all())):
            return None
        rtol = max(LINEAR_RTOL, 1e3 * torch.finfo(dtype).eps)  # float32 data round at 1e-7
        if float((predicted - check).abs().max()) > rtol * max(scale, 1e-300):
            return None
        homogeneous = float(offset.abs().max()) <= 1e-12 * float(matrix.abs().max())
        if homogeneous:
            offset = torch.zeros_like(offset)
        self.of_params = of_params
        self.kind = "weak-coefficients" if of_params is not None else "weak-linear"
        total, total_offset = matrix.sum(0), offset.sum(0)
        if self.forcing is not None:
            total_offset = total_offset + self.forcing.reshape(-1)
        return {
            "matrix": total, "offset": total_offset, "inertial": matrix[0], "inertial_offset": offset[0],
            # transposed copies, contiguous: c @ Aᵀ is a fast GEMM (a strided view is not)
            "matrix_t": total.T.contiguous(), "inertial_t": matrix[0].T.contiguous(),
            "homogeneous": homogeneous and self.forcing is None,
        }

    # ------------------------------------------------------------------ the model interface
    #
    # Without forces the equation is homogeneous in L (L and cL give the same motion), and
    # the weak residual has the trivial zero c(θ) = 0 (or any θ whose coefficients vanish,
    # m1 = −m2 for the double pendulum). So the residual is taken relative to the RMS of the
    # inertial term ∫ φ̇ ∂L/∂q̇ (as q̈ = H⁻¹r is relative to the mass matrix): scale-free, and
    # large where L loses its kinetic energy. A known force fixes the scale; then the
    # residual is the plain A c − b.

    @property
    def normalised(self) -> bool:
        return self.Q is None

    def _residual_one(self, theta: Tensor) -> Tensor:
        inertial, rest = self._weak(*self._terms(self.system.lagrangian, theta, self.dissipation))
        weak = inertial + rest
        if self.forcing is not None:
            weak = weak + self.forcing
        weak = weak.reshape(-1)
        if self.normalised:
            weak = weak / inertial.square().mean().sqrt()
        return weak

    def _jacobian_one(self, theta: Tensor) -> Tensor:
        """(M, P) for the autodiff model (the quotient rule where the residual is relative)."""
        inertial, rest = self._weak(*self._terms(self.system.lagrangian, theta, self.dissipation))
        d_force, d_momentum = self._term_jacobian(theta)
        d_inertial = self.integrate(d_momentum, self.dphi)  # (P, W, D)
        d_raw = (d_inertial + self.integrate(d_force, self.phi)).flatten(1).T  # (M, P)
        if not self.normalised:
            return d_raw
        raw = (inertial + rest).reshape(-1)
        rms = inertial.square().mean().sqrt()
        d_rms = (d_inertial.flatten(1) * inertial.reshape(-1)).mean(-1) / rms  # (P,)
        return (d_raw - (raw / rms)[:, None] * d_rms[None, :]) / rms

    def residuals(self, theta: Tensor) -> Tensor:
        with torch.no_grad():
            if self._linear is not None:
                return self._linear_residuals(theta)[0]
            return torch.stack([self._residual_one(th) for th in theta])

    def _linear_residuals(self, theta: Tensor) -> tuple[Tensor, Optional[Tensor], Tensor]:
        """(r (B, M), the inertial RMS s (B,) or None, c (B, K))."""
        lin = self._linear
        c = theta if self.of_params is None else self.of_params(theta)
        raw = c @ lin["matrix_t"] + lin["offset"]
        if not self.normalised:
            return raw, None, c
        inertial = c @ lin["inertial_t"] + lin["inertial_offset"]
        rms = inertial.square().mean(-1).sqrt()
        return raw / rms[:, None], rms, c

    def residuals_and_jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        if self._linear is not None:
            lin = self._linear
            with torch.no_grad():
                residual, rms, c = self._linear_residuals(theta)
                jacobian = lin["matrix"].expand(theta.shape[0], *lin["matrix"].shape)
                if rms is not None:
                    # d(raw/s)/dc = (A − r ∇s ᵀ)/s,  ∇s = Pᵀ(P c + p₀)/(M s)
                    inertial = c @ lin["inertial_t"] + lin["inertial_offset"]
                    grad_s = inertial @ lin["inertial"] / (inertial.shape[-1] * rms[:, None])
                    jacobian = (jacobian - residual[:, :, None] * grad_s[:, None, :]) / rms[:, None, None]
            if self.of_params is not None:
                jacobian = jacobian @ coefficient_jacobian(self.of_params, theta)
            return residual, jacobian
        jacobian = torch.stack([self._jacobian_one(th) for th in theta])
        return self.residuals(theta), jacobian

    def reference_rms(self, theta: Tensor) -> float:
        """The scale the residual is judged against: 1 where the residuals are relative to the
        inertial term already; else the larger RMS of the inertial term ∫ φ̇ ∂L/∂q̇ at θ (P,)
        and of the known force's term ∫ φ·Q (which the other terms balance at the fit)."""
        if self.normalised:  # the residuals are relative to it already
            return 1.0
        with torch.no_grad():
            _, momentum = self._terms(self.system.lagrangian, theta, None)
            inertial = float(self.integrate(momentum, self.dphi).square().mean().sqrt())
        return inertial if self.forcing is None else max(inertial, float(self.forcing.square().mean().sqrt()))

    def mass_ok(self, theta: Tensor) -> Tensor:
        """(B,) whether ∂²L/∂q̇² is definite (one sign) at an even subsample of the data."""
        step = max(1, self.q.shape[0] // MASS_SAMPLES)
        kw = {"t": self.t[::step]} if self.time_kw else {}
        out = []
        for th in theta:
            with torch.enable_grad():
                q = self.q[::step].detach()
                qd = self.qd[::step].detach().requires_grad_(True)
                (momentum,) = torch.autograd.grad(
                    self.system.lagrangian(q, qd, th.detach(), **kw).sum(), qd, create_graph=True
                )
                rows = []
                for i in range(self.dof):
                    (row,) = torch.autograd.grad(momentum[:, i].sum(), qd, retain_graph=True, allow_unused=True)
                    rows.append(torch.zeros_like(qd) if row is None else row)
            hessian = torch.stack(rows, dim=-2).detach()  # (n, D, D)
            out.append(definite_everywhere(hessian[None])[0])
        return torch.stack(out)

    def equation_error(self) -> Optional[EquationError]:
        if self._linear is None:
            return None
        lin = self._linear
        return EquationError(lin["matrix"], -lin["offset"], lin["homogeneous"])

    def info(self) -> dict[str, Any]:
        return {
            "model": self.kind,
            "windows": self.n_rows,
            "window": self.options.window,
            "overlap": self.options.overlap,
            "power": self.options.power,
            "residuals": self.n_residuals,
        }
