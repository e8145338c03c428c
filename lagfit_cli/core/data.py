"""Datasets (q, q̇, q̈) and the registry of ways to make them (``data.name``).

A dataset holds N states, each with D coordinates: ``q``, ``qd`` and ``qdd`` are (N, D).
Synthetic targets come from the Euler–Lagrange solver at the system's true parameters,
with random applied forces (``data.force``) and times (``data.t_bounds``) where asked for.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Optional

import torch
from torch import Tensor

from lagfit_cli.core.solvers import Solver, check_mass_matrix
from lagfit_cli.errors import ArgumentError
from lagfit_cli.core.registry import Registry
from lagfit_cli.core.systems import System


@dataclass(frozen=True)
class Dataset:
    """States and accelerations: q, qd, qdd are (N, D).

    ``grid_shape`` is the shape of the state grid the points were flattened from (one
    entry per state variable: q0..q(D−1), q̇0..q̇(D−1)), or None for scattered points.
    """

    q: Tensor
    qd: Tensor
    qdd: Tensor
    grid_shape: Optional[tuple[int, ...]] = None
    #: q̈ was computed from the system at its true parameters (after checking the mass
    #: matrix there: ``synthetic_targets``), not measured
    synthetic: bool = False
    #: time of each state (N,), for Lagrangians and forces that depend on t; None if unknown
    t: Optional[Tensor] = None
    #: applied generalised forces Q (N, D) on the right of d/dt ∂L/∂q̇ − ∂L/∂q + ∂R/∂q̇ = Q;
    #: None means no applied force
    Q: Optional[Tensor] = None
    #: which run (trajectory) each state came from (N,) int64; None for one run or scattered
    run: Optional[Tensor] = None

    @property
    def n_points(self) -> int:
        return self.q.shape[0]

    @property
    def dof(self) -> int:
        return self.q.shape[1]

    def to(self, dtype: torch.dtype, device: torch.device | str) -> "Dataset":
        def move(x: Optional[Tensor]) -> Optional[Tensor]:
            return None if x is None else x.to(device=device, dtype=dtype)

        return replace(
            self,
            q=move(self.q),
            qd=move(self.qd),
            qdd=move(self.qdd),
            t=move(self.t),
            Q=move(self.Q),
            run=None if self.run is None else self.run.to(device=device),
        )


@dataclass(frozen=True)
class DataRequest:
    """What a dataset builder gets: its config section and the system it serves."""

    spec: Mapping[str, Any]
    system: System
    truth: Tensor  # (P,) float64, NaN where the true value is unknown
    solver: Solver
    generator: torch.Generator


DatasetBuilder = Callable[[DataRequest], Dataset]
DATASETS: Registry[DatasetBuilder] = Registry("dataset", "data")
#: ``@register_dataset(name)``: register ``builder(request) -> Dataset`` (``data.name``)
register_dataset = DATASETS.register


def build_dataset(request: DataRequest) -> Dataset:
    return DATASETS.lookup(request.spec["name"])(request)


def synthetic_targets(
    request: DataRequest, q: Tensor, qd: Tensor, *, t: Optional[Tensor] = None,
    Q: Optional[Tensor] = None,
) -> Tensor:
    """q̈ at the true parameters: (N, D) (with the data's times and applied forces)."""
    unknown = [n for n, v in zip(request.system.param_names, request.truth.tolist()) if v != v]
    if unknown:
        raise ArgumentError(
            f"params.{unknown[0]}", f"data={request.spec['name']} makes synthetic data from "
            "the true values, so each must be a number (null = unknown is for measured data, "
            "data=csv)"
        )
    # an exactly singular mass matrix would make the solve fail: say so first
    timed = t if request.system.time_dependent else None
    check_mass_matrix(request.system, q, qd, request.truth, t=timed)
    extras = {k: v for k, v in (("t", timed), ("Q", Q)) if v is not None}
    with torch.no_grad():
        return request.solver(request.system, q, qd, request.truth[None, :], **extras)[0]


def times_and_forces(request: DataRequest, n: int) -> tuple[Optional[Tensor], Optional[Tensor]]:
    """The times and applied forces of n synthetic states, from the seeded data stream.

    Times (only for a system that depends on t): uniform in ``data.t_bounds``. Forces
    (only when ``data.force`` gives bounds [lo, hi]): each state gets an independent
    generalised force uniform in [lo, hi] on each coordinate in ``data.force_coords``
    (null: every coordinate; the others get 0). A random force at scattered states is the
    simplest way to make a known force vary independently of the state, which is what
    fixes the absolute scale of L and R (``System.with_forces``).
    """
    spec, dof = request.spec, request.system.dof
    t = None
    if request.system.time_dependent:
        low, high = (float(v) for v in (spec.get("t_bounds") or (0.0, 10.0)))
        t = low + (high - low) * torch.rand(n, generator=request.generator, dtype=torch.float64)
    force = spec.get("force")
    if force is None:
        return t, None
    low, high = (float(v) for v in force)
    coords = spec.get("force_coords")
    coords = list(range(dof)) if coords is None else [int(c) for c in coords]
    bad = [c for c in coords if not 0 <= c < dof]
    if bad:
        raise ArgumentError(
            "force_coords", f"coordinate {bad[0]} does not exist (the system has {dof}: 0..{dof - 1})"
        )
    Q = torch.zeros((n, dof), dtype=torch.float64)
    draws = low + (high - low) * torch.rand((n, len(coords)), generator=request.generator, dtype=torch.float64)
    Q[:, coords] = draws
    return t, Q


#: the largest grid data=grid builds (n^(2D) grows fast: 50 nodes and D = 2 are 6.25e6)
MAX_GRID_POINTS = 1_000_000


@register_dataset("grid")
def grid_dataset(request: DataRequest) -> Dataset:
    """An n-point grid over every state variable, flattened: n^(2D) points.

    (The seed report's code tiles both grids the same way, which puts every point on the
    diagonal q = q̇·const; this is the full n × n grid its text and Fig. 1 describe.)
    """
    n, dof = int(request.spec["n"]), request.system.dof
    if 2 * dof * math.log10(max(n, 1)) > 7 or n ** (2 * dof) > MAX_GRID_POINTS:
        total = n ** (2 * dof) if 2 * dof * math.log10(max(n, 1)) < 15 else None
        shown = f"{total:,}" if total is not None else f"about 10^{int(2 * dof * math.log10(n))}"
        n_shown = f"{n:,}" if n < 10**15 else f"{float(n):.3g}"
        raise ArgumentError(
            "n", f"a grid of {n_shown} points per state variable has {n_shown}^{2 * dof} = "
            f"{shown} points for {dof} coordinates (limit {MAX_GRID_POINTS:,}); "
            "lower data.n or use data=uniform data.n_points=N"
        )
    q_axis = torch.linspace(*request.spec["q_bounds"], n, dtype=torch.float64)
    qd_axis = torch.linspace(*request.spec["qd_bounds"], n, dtype=torch.float64)
    axes = [q_axis] * dof + [qd_axis] * dof
    mesh = torch.meshgrid(*axes, indexing="ij")
    states = torch.stack([m.reshape(-1) for m in mesh], dim=-1)  # (n^(2D), 2D)
    q, qd = states[:, :dof].contiguous(), states[:, dof:].contiguous()
    t, Q = times_and_forces(request, q.shape[0])
    return Dataset(
        q, qd, synthetic_targets(request, q, qd, t=t, Q=Q), grid_shape=(n,) * (2 * dof),
        synthetic=True, t=t, Q=Q,
    )


@register_dataset("uniform")
def uniform_dataset(request: DataRequest) -> Dataset:
    """``n_points`` states drawn uniformly in the bounds (every q_i in q_bounds, every q̇_i in
    qd_bounds) from the seeded data stream: (N, D) each, whatever D is."""
    n, dof = int(request.spec["n_points"]), request.system.dof
    unit = torch.rand((n, 2 * dof), generator=request.generator, dtype=torch.float64)
    low = torch.tensor([request.spec["q_bounds"][0]] * dof + [request.spec["qd_bounds"][0]] * dof)
    high = torch.tensor([request.spec["q_bounds"][1]] * dof + [request.spec["qd_bounds"][1]] * dof)
    states = low + (high - low) * unit
    q, qd = states[:, :dof].contiguous(), states[:, dof:].contiguous()
    t, Q = times_and_forces(request, n)
    return Dataset(q, qd, synthetic_targets(request, q, qd, t=t, Q=Q), synthetic=True, t=t, Q=Q)

