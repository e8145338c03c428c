r"""Fast paths: the compile policy, the parameter-linear solver, and the fit's fused step.

Three ideas, each measured (``lagfit_cli.benchmark``, ``bench/jax_reference.py``):

**Compilation** (``solver.compile = auto | true | false``). ``torch.compile`` (inductor, C++
codegen) turns the block-diagonal autograd graph of the ``broadcast`` solver into one fused
loop over the B×N points: no per-op dispatch, no (B, N) temporaries. The price is the
compile itself (seconds, see ``COMPILE_COST_S``), so ``auto`` compiles only when the
expected eager time of the work it is asked for exceeds that price (``should_compile``).
Compiled calls run with the default dtype set to the data's (inductor bakes the default
dtype of factory ops in at trace time: pytorch#184405, #109458), and every compiled
variant is checked against the eager one in the tests. ``vmap`` of ``jacfwd`` is not
compiled (pytorch#151196, #154036).

**Parameter-linear Lagrangians.** When L = L₀(q, q̇) + Σⱼ θⱼ φⱼ(q, q̇), every term of eq. 6 is
linear in θ: H(θ) = H₀ + Σⱼ θⱼ Hⱼ and r(θ) = r₀ + Σⱼ θⱼ rⱼ at each point, where Hⱼ = ∂²φⱼ/∂q̇∂q̇ᵀ
and rⱼ = ∇_q φⱼ − (∇_q∇_q̇ᵀφⱼ) q̇. The basis (Hⱼ, rⱼ) is computed once per dataset by autodiff
(eq. 6's terms at θ = 0 and θ = eⱼ); each call is then a (B, P) × (P, N·D) product and a
D×D solve, and the fit's gradient has a closed adjoint (``LinearBasis.loss_and_grad``).
Linearity is never taken on trust: the system's ``linear_in_params`` flag (``None``: not
declared) is checked at the data, comparing the autodiff terms at random θ of mixed signs
and scales with the basis' prediction; a flag of ``True`` that fails is an error, ``None``
that passes is accepted, ``False`` is respected. (A Lagrangian piecewise in θ, e.g. |m| q̇²,
could pass the probes undeclared; such a system should declare ``linear_in_params=False``.)
The eager basis uses plain ``torch.autograd`` (``autograd_terms``): torch.func's first call
imports torch._dynamo, 1.5 s that a short eager fit would otherwise pay.

``fast`` = ``linear`` when the check passes, else ``broadcast``; compiled with fewer than
``FAST_LINEAR_MIN_STARTS`` starts it uses the fused ``broadcast`` loop, which reads only
(q, q̇) per point where the basis is 2(P+1)·D² numbers.

**The fused step** (``make_loss_and_grad``): θ (B, P) -> (loss (B,), ∂loss/∂θ (B, P)) for
all starts at once, loss_b = mean over (N, D) of (q̈_b − q̈_target)². Eager, it works in
chunks of starts that stay in cache; compiled, it is one or two fused loops.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Union

import torch
from torch import Tensor

from .dynamics import (
    EAGER_ONLY,
    SOLVERS,
    Solver,
    autograd_terms,
    broadcast_qdd,
    euler_lagrange_terms,
    get_solver,
    register_solver,
    solve_mass_matrix,
)
from .errors import LagfitError
from .systems import System

LossAndGrad = Callable[[Tensor], tuple[Tensor, Tensor]]
COMPILE_CHOICES = ("auto", "true", "false")

# --------------------------------------------------------------------------- cost model
# Measured on the project's 2-core CPU machine, float64, one thread, anharmonic system
# (wall clock on a shared, busy machine; see the issue-4 note). They only steer
# ``compile=auto``; a wrong guess costs time, never accuracy.

#: Seconds one compile costs in a fresh process: importing dynamo and inductor (~3 s) plus
#: tracing and C++ codegen of one graph (1–4 s; less with a warm on-disk inductor cache).
COMPILE_COST_S = 5.0
#: Eager seconds per point-evaluation (one start at one point), by kind of work.
EAGER_S_PER_POINT = {
    "generic_qdd": 150e-9,  # broadcast autograd graph, q̈ only
    "generic_step": 300e-9,  # ... and the θ-gradient through it
    "linear_qdd": 5e-9,  # basis products + solve
    "linear_step": 6e-9,  # chunked products + adjoint
    "closed_form_qdd": 8e-9,
}
#: Compiled seconds per point-evaluation (the fused loops), by kind of work.
COMPILED_S_PER_POINT = {
    "generic_qdd": 1e-9,
    "generic_step": 2e-9,
    "linear_qdd": 1e-9,  # at B ≥ FAST_LINEAR_MIN_STARTS; B = 1 reads the whole basis
    "linear_step": 3e-9,
    "closed_form_qdd": 0.8e-9,
}
#: Compiled ``fast`` uses the linear basis from this many starts up; below, the fused
#: ``broadcast`` loop, which reads only (q, q̇) where the basis is (2P+2)×N numbers.
FAST_LINEAR_MIN_STARTS = 4
#: Eager chunks hold about this many (start, point) pairs, so temporaries stay in cache.
EAGER_CHUNK_POINTS = 1 << 17
#: Compiled calls with less work than this (B × N) run single-threaded (see ``_Compiled``).
SERIAL_MAX_POINTS = 1 << 18


def check_compile(choice: Union[str, bool]) -> str:
    """Normalise a ``solver.compile`` value (YAML may hand over a bool) to auto|true|false."""
    if isinstance(choice, bool):
        return "true" if choice else "false"
    if choice not in COMPILE_CHOICES:
        raise LagfitError(
            f"solver.compile: expected one of {', '.join(COMPILE_CHOICES)}; got {choice!r}"
        )
    return choice


def should_compile(choice: str, kind: str, point_evaluations: float) -> bool:
    """Whether ``choice`` (auto|true|false) compiles work of ``kind`` and this size.

    ``auto`` compiles when the eager time saved over ``point_evaluations`` (B × N × the
    number of calls expected) exceeds ``COMPILE_COST_S``.
    """
    choice = check_compile(choice)
    if choice != "auto":
        return choice == "true"
    saved = EAGER_S_PER_POINT[kind] - COMPILED_S_PER_POINT[kind]
    return point_evaluations * saved > COMPILE_COST_S


def break_even_points(kind: str) -> float:
    """The B × N × calls above which ``auto`` compiles work of ``kind``."""
    return COMPILE_COST_S / (EAGER_S_PER_POINT[kind] - COMPILED_S_PER_POINT[kind])


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype) -> Iterator[None]:
    """Run with ``torch.get_default_dtype() == dtype`` (for tracing and compiled calls)."""
    previous = torch.get_default_dtype()
    if previous == dtype or not dtype.is_floating_point:
        yield
        return
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)


class _Compiled:
    """``torch.compile(fn)``, compiled on first use, called under the data's default dtype.

    Shapes are static (``dynamic=False``): the fit calls with one shape throughout, static
    kernels are the fastest, and dynamo's automatic dynamic shapes break forward-mode AD
    inside vmap (symbolic strides). Each new shape recompiles; dynamo gives up after
    ``torch._dynamo.config.recompile_limit`` shapes per function and runs it eagerly.

    Calls whose work (B × N point evaluations) is below ``SERIAL_MAX_POINTS`` run a
    single-threaded build: an OpenMP fork/join costs more than such a loop, and on a busy
    machine a parallel region waits a whole scheduler tick (milliseconds) for its
    descheduled thread.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self._fn = fn
        self._compiled: dict[bool, Callable[..., Any]] = {}

    def __call__(self, work: int, *tensors: Tensor) -> Any:
        serial = work < SERIAL_MAX_POINTS
        if serial not in self._compiled:
            options = {"cpp.threads": 1} if serial else None
            self._compiled[serial] = torch.compile(
                self._fn, fullgraph=True, dynamic=False, options=options
            )
        with default_dtype(tensors[0].dtype):
            return self._compiled[serial](*tensors)


# --------------------------------------------------------------------------- allocator

#: glibc mallopt parameters (malloc.h): M_TRIM_THRESHOLD, M_MMAP_THRESHOLD.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def tune_allocator(mmap_threshold: int = 1 << 28, trim_threshold: int = 1 << 30) -> bool:
    """Keep freed tensor memory in the process (glibc only): a process-wide, opt-in switch.

    By default glibc serves every allocation above ~128 KB–32 MB with a fresh ``mmap`` and
    returns it on free, so each eager op on (N,)-sized tensors pays page faults again; on
    the project's VM that is most of the eager time at 10⁶ points (closed form: 28 ms ->
    3.5 ms, compiled q̈: 0.73 -> 0.46 ms, one thread). Raising both thresholds makes freed
    blocks reusable. The cost: the process keeps its peak heap until exit. Meant for the
    CLI's entry point, not for library use. Returns whether it took effect.
    """
    import ctypes
    import ctypes.util
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(
        mallopt(_M_TRIM_THRESHOLD, trim_threshold)
    )


# --------------------------------------------------------------------------- linear basis


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


def _fused_qdd(theta, hessian, rhs, offset_hessian, offset_rhs):
    hessian_b, rhs_b = _fused_terms(theta, hessian, rhs, offset_hessian, offset_rhs)
    return solve_mass_matrix(hessian_b, rhs_b)


def _fused_loss_and_grad(theta, hessian, rhs, offset_hessian, offset_rhs, target):
    hessian_b, rhs_b = _fused_terms(theta, hessian, rhs, offset_hessian, offset_rhs)
    qdd = solve_mass_matrix(hessian_b, rhs_b)
    residual = qdd - target
    losses = residual.square().mean(dim=(1, 2))
    adjoint = solve_mass_matrix(hessian_b.mT, residual * (2.0 / residual[0].numel()))
    from_rhs = (adjoint[:, None] * rhs[None]).sum(dim=(2, 3))
    outer = adjoint[..., :, None] * qdd[..., None, :]
    from_hessian = (outer[:, None] * hessian[None]).sum(dim=(2, 3, 4))
    return losses, from_rhs - from_hessian


def _fused_args(basis: LinearBasis) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return basis.fused_args


def _terms_at(system: System, q: Tensor, qd: Tensor, thetas: Tensor, compile: str):
    """Eq. 6's (hessian, rhs) at every point for each row of thetas: (K, N, D, D), (K, N, D)."""
    states = (thetas.shape[0],) + tuple(q.shape)

    def terms(q_: Tensor, qd_: Tensor, thetas_: Tensor) -> tuple[Tensor, Tensor]:
        return euler_lagrange_terms(
            system.lagrangian,
            q_.expand(states).contiguous(),
            qd_.expand(states).contiguous(),
            thetas_[:, None, :],
        )

    if should_compile(compile, "generic_qdd", thetas.shape[0] * q.shape[0]):
        return _Compiled(terms)(thetas.shape[0] * q.shape[0], q, qd, thetas)
    # Eagerly, in chunks of points: the autograd graph holds ~30 (K, chunk, D) tensors.
    chunk = max(1, EAGER_CHUNK_POINTS // thetas.shape[0])
    parts = [
        autograd_terms(
            system.lagrangian,
            q_c.expand((thetas.shape[0],) + tuple(q_c.shape)),
            qd_c.expand((thetas.shape[0],) + tuple(qd_c.shape)),
            thetas[:, None, :],
        )
        for q_c, qd_c in zip(q.split(chunk), qd.split(chunk))
    ]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([h for h, _ in parts], dim=1), torch.cat([r for _, r in parts], dim=1)


def linear_basis(
    system: System, q: Tensor, qd: Tensor, *, compile: str = "auto", require: bool = False
) -> Optional[LinearBasis]:
    """The system's ``LinearBasis`` at (q, qd), or ``None`` where L is not linear in θ.

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
            raise LagfitError(
                f"solver.name=linear: system {system.name!r} is declared nonlinear in its "
                "parameters; use solver.name=fast or broadcast"
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
        hessians, rhss = _terms_at(system, q.detach(), qd.detach(), thetas, compile)
    offset_h, offset_r = hessians[0], rhss[0]
    basis_h = hessians[1 : n_params + 1] - offset_h
    basis_r = rhss[1 : n_params + 1] - offset_r
    probes = thetas[n_params + 1 :]

    linear = bool(torch.isfinite(hessians).all() and torch.isfinite(rhss).all())
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
            raise LagfitError(
                f"solver.name=linear: the Lagrangian of system {system.name!r} is not linear "
                "in its parameters; use solver.name=fast or broadcast"
            )
        return None
    has_offset = bool(offset_h.any() or offset_r.any())
    return LinearBasis(
        hessian=basis_h,
        rhs=basis_r,
        offset_hessian=offset_h if has_offset else None,
        offset_rhs=offset_r if has_offset else None,
    )


class _BasisCache:
    """The last few bases, keyed by (system, q, qd) identity and in-place version."""

    def __init__(self, size: int = 4) -> None:
        self._entries: list[tuple[Any, ...]] = []
        self._size = size

    def get(self, system: System, q: Tensor, qd: Tensor, compile: str, require: bool):
        if q.requires_grad or qd.requires_grad:
            # The basis is differentiable in θ only: ``fast`` then takes ``broadcast``,
            # which keeps the graph to (q, q̇); ``linear`` computes an uncached basis.
            return linear_basis(system, q, qd, compile=compile, require=True) if require else None
        for entry in self._entries:
            e_system, e_q, e_qv, e_qd, e_qdv, result = entry
            if (
                e_system is system
                and e_q() is q
                and e_qd() is qd
                and (e_qv, e_qdv) == (q._version, qd._version)
            ):
                if result is None and require:
                    break  # recompute, to raise the error
                return result
        result = linear_basis(system, q, qd, compile=compile, require=require)
        entry = (system, weakref.ref(q), q._version, weakref.ref(qd), qd._version, result)
        self._entries = [entry] + self._entries[: self._size - 1]
        return result


_BASES = _BasisCache()


@register_solver("linear")
def linear_solver(system: System, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """Eq. 6 through the parameter-linear basis (computed once per dataset, cached).

    Raises ``LagfitError`` when L is not linear in θ. Differentiable in theta.
    """
    basis = _BASES.get(system, q, qd, "auto", require=True)
    return basis.qdd(theta)


@register_solver("fast")
def fast_solver(system: System, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
    """``linear`` when L is linear in θ (checked at the data), else ``broadcast``."""
    basis = _BASES.get(system, q, qd, "auto", require=False)
    if basis is None:
        return SOLVERS["broadcast"](system, q, qd, theta)
    return basis.qdd(theta)


# --------------------------------------------------------------------------- make_solver


def _qdd_kind(name: str) -> str:
    return "closed_form_qdd" if name == "closed_form" else "generic_qdd"


class _PolicySolver:
    """A registered solver under a compile policy: the eager function, or its compiled twin
    (one per system), chosen per call by ``should_compile`` on B × N × expected_calls."""

    def __init__(self, name: str, choice: str, expected_calls: int) -> None:
        self.name = name
        self.choice = choice
        self.expected_calls = expected_calls
        self._eager = get_solver(name)
        self._compiled: dict[int, tuple[System, _Compiled]] = {}

    def __call__(self, system: System, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
        work = theta.shape[0] * q.shape[0] * self.expected_calls
        if not should_compile(self.choice, _qdd_kind(self.name), work):
            return self._eager(system, q, qd, theta)
        return self._compiled_for(system)(theta.shape[0] * q.shape[0], q, qd, theta)

    def _compiled_for(self, system: System) -> _Compiled:
        if id(system) not in self._compiled:
            eager = self._eager

            def bound(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
                return eager(system, q, qd, theta)

            self._compiled[id(system)] = (system, _Compiled(bound))
        return self._compiled[id(system)][1]


class _LinearPolicySolver:
    """``linear``/``fast`` under a compile policy: basis once per dataset, then the eager
    products or the fused compiled loop; ``fast`` falls back to ``broadcast``."""

    def __init__(self, name: str, choice: str, expected_calls: int) -> None:
        self.require = name == "linear"
        self.choice = choice
        self.expected_calls = expected_calls
        self._fallback = _PolicySolver("broadcast", choice, expected_calls)
        self._fused = _Compiled(_fused_qdd)

    def __call__(self, system: System, q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
        basis = _BASES.get(system, q, qd, _basis_choice(self.choice), self.require)
        if basis is None:
            return self._fallback(system, q, qd, theta)
        work = theta.shape[0] * q.shape[0] * self.expected_calls
        if not should_compile(self.choice, "linear_qdd", work):
            return basis.qdd(theta)
        if not self.require and theta.shape[0] < FAST_LINEAR_MIN_STARTS:
            return self._fallback(system, q, qd, theta)
        return self._fused(theta.shape[0] * q.shape[0], theta, *_fused_args(basis))


def _basis_choice(choice: str) -> str:
    """The basis is computed once, not in the hot loop: ``true`` compiles it only if that
    pays on its own (``auto``)."""
    return "false" if choice == "false" else "auto"


_POLICY_SOLVERS = {"linear": _LinearPolicySolver, "fast": _LinearPolicySolver}


def make_solver(
    name: str, compile: Union[str, bool] = "auto", *, expected_calls: int = 1
) -> Solver:
    """The solver ``name`` under the ``solver.compile`` policy.

    Args:
        name: a registered solver (``SOLVERS``).
        compile: ``false`` the eager function; ``true`` compiled (``LagfitError`` for
            solvers in ``EAGER_ONLY``); ``auto`` compiled only for calls whose work
            B × N × ``expected_calls`` repays the compile (``should_compile``).
        expected_calls: how often the caller will call it with the same shapes.

    Returns:
        ``solver(system, q (N, D), qd (N, D), theta (B, P)) -> qdd (B, N, D)``.
    """
    get_solver(name)  # unknown names fail here, with the list of known ones
    choice = check_compile(compile)
    if name in EAGER_ONLY:
        if choice == "true":
            raise LagfitError(
                f"solver.compile=true: solver {name!r} cannot be compiled; "
                "use solver.compile=auto or false"
            )
        return get_solver(name)
    if choice == "false" and name not in _POLICY_SOLVERS:
        return get_solver(name)
    return _POLICY_SOLVERS.get(name, _PolicySolver)(name, choice, expected_calls)


# --------------------------------------------------------------------------- fused step


def _generic_loss_and_grad(solver: Solver, system: System, q, qd, target, theta):
    """Eager loss and θ-gradient through any solver, by torch.autograd, in chunks of starts."""
    chunk = max(1, EAGER_CHUNK_POINTS // max(1, q.numel()))
    losses, grads = [], []
    for theta_c in theta.detach().split(chunk):
        theta_c = theta_c.clone().requires_grad_(True)
        with torch.enable_grad():
            loss = (solver(system, q, qd, theta_c) - target).square().mean(dim=(1, 2))
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
) -> LossAndGrad:
    """The fit's per-iteration step for all starts at once.

    Args:
        q, qd, target: (N, D) data and the q̈ to match.
        solver_name: a registered solver; ``fast`` (linear basis when L is linear in θ,
            else ``broadcast``) is the fastest.
        compile: ``auto|true|false`` (see ``make_solver``).
        expected_calls: how many iterations the fit will run (steers ``auto``).

    Returns:
        ``loss_and_grad(theta (B, P)) -> (loss (B,), grad (B, P))`` with
        loss_b = mean over (N, D) of (q̈_b − target)² and grad_b = ∂loss_b/∂θ_b. No graph
        is kept: the results are plain tensors.
    """
    get_solver(solver_name)
    choice = check_compile(compile)
    if target.shape != q.shape:
        raise ValueError(f"target {tuple(target.shape)} must match q {tuple(q.shape)}")
    q, qd, target = q.detach(), qd.detach(), target.detach()

    if solver_name in ("linear", "fast"):
        basis = linear_basis(
            system, q, qd, compile=_basis_choice(choice), require=solver_name == "linear"
        )
        if basis is not None:
            fused = _Compiled(_fused_loss_and_grad)
            fused_args = _fused_args(basis)

            def linear_step(theta: Tensor) -> tuple[Tensor, Tensor]:
                work = theta.shape[0] * q.shape[0] * expected_calls
                if should_compile(choice, "linear_step", work):
                    return fused(theta.shape[0] * q.shape[0], theta.detach(), *fused_args, target)
                return basis.loss_and_grad(theta.detach(), target)

            return linear_step
        solver_name = "broadcast"

    eager_solver = get_solver(solver_name)
    traced_solver = eager_solver
    if solver_name == "broadcast":
        traced_solver = functools.partial(broadcast_qdd, theta_per_point=True)
    if solver_name in EAGER_ONLY:
        if choice == "true":
            raise LagfitError(
                f"solver.compile=true: solver {solver_name!r} cannot be compiled; "
                "use solver.compile=auto or false"
            )
        choice = "false"

    def functional(theta: Tensor, q_: Tensor, qd_: Tensor, target_: Tensor):
        return _functional_loss_and_grad(traced_solver, system, q_, qd_, target_, theta)

    compiled = _Compiled(functional)

    def generic_step(theta: Tensor) -> tuple[Tensor, Tensor]:
        work = theta.shape[0] * q.shape[0] * expected_calls
        if should_compile(choice, "generic_step", work):
            return compiled(theta.shape[0] * q.shape[0], theta.detach(), q, qd, target)
        return _generic_loss_and_grad(eager_solver, system, q, qd, target, theta)

    return generic_step


__all__ = [
    "COMPILE_CHOICES",
    "COMPILE_COST_S",
    "LinearBasis",
    "autograd_terms",
    "break_even_points",
    "check_compile",
    "linear_basis",
    "make_loss_and_grad",
    "make_solver",
    "should_compile",
    "tune_allocator",
]
