"""``make_solver``: a registered solver under a ``compile`` policy (see ``compile``)."""

from __future__ import annotations

from typing import Optional, Union

from torch import Tensor

from lagfit_cli.errors import ArgumentError
from lagfit_cli.core.solvers.base import FALLBACK, Solver, get_solver
from lagfit_cli.core.solvers.compile import (
    FAST_LINEAR_MIN_STARTS,
    Compiled,
    check_compile,
    should_compile,
)
from lagfit_cli.core.solvers.linear import basis_choice, cached_basis, fused_args, fused_qdd
from lagfit_cli.core.systems import System


class _PolicySolver:
    """A registered solver under a compile policy: the eager function, or its compiled twin
    (one per system), chosen per call by ``should_compile`` on B × N × expected_calls."""

    def __init__(self, name: str, choice: str, expected_calls: int) -> None:
        self.name = name
        self.choice = choice
        self.expected_calls = expected_calls
        self._eager = get_solver(name)
        self._kind = f"{self._eager.cost_kind}_qdd"
        self._compiled: dict[int, tuple[System, Compiled]] = {}

    def __call__(
        self, system: System, q: Tensor, qd: Tensor, theta: Tensor, *,
        t: Optional[Tensor] = None, Q: Optional[Tensor] = None,
    ) -> Tensor:
        if t is not None or Q is not None:  # the compiled graphs are traced without them
            return self._eager(system, q, qd, theta, t=t, Q=Q)
        work = theta.shape[0] * q.shape[0] * self.expected_calls
        if not should_compile(self.choice, self._kind, work):
            return self._eager(system, q, qd, theta)
        return self._compiled_for(system)(theta.shape[0] * q.shape[0], q, qd, theta)

    def _compiled_for(self, system: System) -> Compiled:
        if id(system) not in self._compiled:
            eager = self._eager

            def bound(q: Tensor, qd: Tensor, theta: Tensor) -> Tensor:
                return eager(system, q, qd, theta)

            self._compiled[id(system)] = (system, Compiled(bound))
        return self._compiled[id(system)][1]


class _LinearPolicySolver:
    """``linear``/``fast`` under a compile policy: basis once per dataset, then the eager
    products or the fused compiled loop; ``fast`` falls back to ``FALLBACK``."""

    def __init__(self, name: str, choice: str, expected_calls: int) -> None:
        self.require = get_solver(name).basis == "require"
        self.choice = choice
        self.expected_calls = expected_calls
        self._fallback = _PolicySolver(FALLBACK, choice, expected_calls)
        self._fused = Compiled(fused_qdd)

    def __call__(
        self, system: System, q: Tensor, qd: Tensor, theta: Tensor, *,
        t: Optional[Tensor] = None, Q: Optional[Tensor] = None,
    ) -> Tensor:
        basis = cached_basis(system, q, qd, basis_choice(self.choice), self.require, t=t, Q=Q)
        if basis is None:
            return self._fallback(system, q, qd, theta, t=t, Q=Q)
        work = theta.shape[0] * q.shape[0] * self.expected_calls
        if not should_compile(self.choice, "linear_qdd", work):
            return basis.qdd(theta)
        if not self.require and theta.shape[0] < FAST_LINEAR_MIN_STARTS and t is None and Q is None:
            return self._fallback(system, q, qd, theta)
        return self._fused(theta.shape[0] * q.shape[0], theta, *fused_args(basis))


def refuse_compile(name: str, choice: str) -> str:
    """The policy a solver runs under: ``false`` for solvers that cannot be compiled
    (an error if ``true`` was asked for), else ``choice``."""
    if get_solver(name).compilable:
        return choice
    if choice == "true":
        raise ArgumentError(
            "compile", f"true: solver {name!r} cannot be compiled; use compile=auto or false"
        )
    return "false"


def make_solver(
    name: str, compile: Union[str, bool] = "auto", *, expected_calls: int = 1
) -> Solver:
    """The solver ``name`` under the ``compile`` policy.

    Args:
        name: a registered solver (``SOLVERS``).
        compile: ``false`` the eager function; ``true`` compiled (an error for solvers that
            are not ``compilable``); ``auto`` compiled only for calls whose work
            B × N × ``expected_calls`` repays the compile (``should_compile``).
        expected_calls: how often the caller will call it with the same shapes.

    Returns:
        ``solver(system, q (N, D), qd (N, D), theta (B, P)) -> qdd (B, N, D)``.
    """
    solver = get_solver(name)  # unknown names fail here, with the list of known ones
    choice = refuse_compile(name, check_compile(compile))
    if solver.basis is not None:
        return _LinearPolicySolver(name, choice, expected_calls)
    if choice == "false":
        return solver
    return _PolicySolver(name, choice, expected_calls)


def bind_data(solver: Solver, t: Optional[Tensor] = None, Q: Optional[Tensor] = None) -> Solver:
    """``solver`` with one dataset's times and applied forces filled in.

    For callers that evaluate q̈ at that dataset's N states (or a noisy copy of them, row for
    row) through the plain ``solver(system, q, qd, theta)`` signature: figures, landscapes,
    noise studies. Explicit ``t=``/``Q=`` keywords still win. The solver itself when both are
    None.
    """
    if t is None and Q is None:
        return solver

    def bound(system: System, q: Tensor, qd: Tensor, theta: Tensor, **extras) -> Tensor:
        times = extras.get("t", t) if system.time_dependent else None
        forces = extras.get("Q", Q)
        if forces is not None and forces.shape[0] != q.shape[0]:
            raise ValueError(f"bound forces are for {forces.shape[0]} states, got {q.shape[0]}")
        return solver(system, q, qd, theta, t=times, Q=forces)

    return bound
