"""Timing core for the benchmark task (the seed report's Fig. 7): pure, returns DataFrames.

Nothing here prints, writes files or reads config; the task wires it to the report layer.

``solver_table`` times each method's q̈ over a list of point counts (warm-up, repeats,
medians) and ``step_table`` times the fit's whole per-iteration step. A *method* is a
registered solver under a compile choice (``Method("broadcast", compile="true")``); the
per-point ``loop`` is timed only up to ``loop_max_points``, and nothing is extrapolated:
``speedup_vs_loop`` is NaN where the loop was not run.
"""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Optional, Sequence

import pandas as pd
import torch
from torch import Tensor

from lagfit_cli.core.solvers import make_loss_and_grad, make_solver
from lagfit_cli.core.systems import System

SOLVER_COLUMNS = [
    "method",
    "n_points",
    "median_s",
    "min_s",
    "max_s",
    "points_per_s",
    "speedup_vs_loop",
    "ratio_to_closed_form",
]


def time_call(
    fn: Callable[[], object], repeats: int = 20, warmup: int = 3, device: Optional[torch.device] = None
) -> dict[str, float]:
    """Wall-clock statistics of ``fn()`` over ``repeats`` calls after ``warmup`` calls.

    Returns:
        dict with median_s, min_s, max_s, repeats, first_s (the first warm-up call, which
        includes any compile; NaN when warmup is 0).
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    sync = _synchronizer(device)
    first = math.nan
    for i in range(warmup):
        start = time.perf_counter()
        fn()
        sync()
        if i == 0:
            first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "max_s": max(times),
        "repeats": repeats,
        "first_s": first,
    }


def _synchronizer(device: Optional[torch.device]) -> Callable[[], None]:
    if device is not None and torch.device(device).type == "cuda":
        return torch.cuda.synchronize
    return lambda: None


@dataclass(frozen=True)
class Method:
    """One line of Fig. 7: a registered solver under a compile choice.

    ``cold`` re-creates the data tensors before each call, so solvers that cache
    per-dataset work (``linear``, ``fast``) pay for it every time.
    """

    solver: str
    compile: str = "false"
    cold: bool = False
    label: Optional[str] = None

    @property
    def name(self) -> str:
        if self.label:
            return self.label
        suffix = {"true": "+compile", "auto": "+auto"}.get(self.compile, "")
        return self.solver + suffix + ("(cold)" if self.cold else "")


def sample_states(system: System, n_points: int, *, seed: int = 0, dtype=torch.float64, device="cpu"):
    """(q, qd), each (n_points, D), uniform in [-1, 1], from a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    q = torch.rand(n_points, system.dof, generator=generator, dtype=dtype) * 2 - 1
    qd = torch.rand(n_points, system.dof, generator=generator, dtype=dtype) * 2 - 1
    return q.to(device), qd.to(device)


def _fresh_compile_state(method: Method) -> None:
    """Each compiled measurement starts from scratch: its first call shows the compile."""
    if method.compile != "false":
        torch._dynamo.reset()


def solver_table(
    system: System,
    theta: Tensor,
    methods: Sequence[Method],
    n_points: Iterable[int],
    *,
    repeats: int = 20,
    warmup: int = 3,
    loop_max_points: int = 1000,
    max_seconds_per_call: float = math.inf,
    seed: int = 0,
    reference: str = "closed_form",
) -> pd.DataFrame:
    """Time each method's q̈ at each point count.

    Args:
        theta: (B, P) parameters (B = 1 for the report's Fig. 7).
        methods: what to time; the ``loop`` solver only up to ``loop_max_points``.
        max_seconds_per_call: skip a method at larger sizes once one call took longer.
        reference: the method name that ``ratio_to_closed_form`` divides by.

    Returns:
        One row per (method, n_points) with ``SOLVER_COLUMNS`` plus first_s (first call,
        compile included) and repeats.
    """
    rows = []
    too_slow: set[str] = set()
    for n in n_points:
        q, qd = sample_states(system, n, seed=seed, dtype=theta.dtype, device=theta.device)
        for method in methods:
            if method.name in too_slow or (method.solver == "loop" and n > loop_max_points):
                continue
            _fresh_compile_state(method)
            solver = make_solver(method.solver, method.compile)
            if method.cold:
                call = lambda: solver(system, q.clone(), qd.clone(), theta)  # noqa: E731
            else:
                call = lambda: solver(system, q, qd, theta)  # noqa: E731
            slow = method.solver == "loop"  # seconds per call: a few repeats suffice
            with torch.no_grad():
                stats = time_call(
                    call,
                    repeats=min(repeats, 3) if slow else repeats,
                    warmup=min(warmup, 1) if slow else warmup,
                    device=theta.device,
                )
            if stats["median_s"] > max_seconds_per_call:
                too_slow.add(method.name)
            rows.append({"method": method.name, "n_points": n, **stats})
    return _with_ratios(pd.DataFrame(rows), reference, theta.shape[0])


def _with_ratios(table: pd.DataFrame, reference: str, n_starts: int) -> pd.DataFrame:
    if table.empty:
        return pd.DataFrame(columns=SOLVER_COLUMNS)
    table["points_per_s"] = table["n_points"] * n_starts / table["median_s"]
    by_n = table.set_index(["method", "n_points"])["median_s"]

    def lookup(method: str, n: int) -> float:
        return float(by_n.get((method, n), math.nan))

    table["speedup_vs_loop"] = [lookup("loop", n) / t for n, t in zip(table["n_points"], table["median_s"])]
    table["ratio_to_closed_form"] = [
        t / lookup(reference, n) for n, t in zip(table["n_points"], table["median_s"])
    ]
    extra = [c for c in table.columns if c not in SOLVER_COLUMNS]
    return table[SOLVER_COLUMNS + extra]


def step_table(
    system: System,
    theta: Tensor,
    q: Tensor,
    qd: Tensor,
    target: Tensor,
    methods: Sequence[Method],
    *,
    repeats: int = 20,
    warmup: int = 3,
    expected_calls: int = 1,
) -> pd.DataFrame:
    """Time the fit's per-iteration step (loss and θ-gradient for all B starts).

    Returns:
        One row per method: method, n_starts, n_points, median_s, min_s, max_s,
        first_s (compile included), setup_s (``make_loss_and_grad``: basis, checks).
    """
    rows = []
    for method in methods:
        _fresh_compile_state(method)
        start = time.perf_counter()
        step = make_loss_and_grad(
            system, q, qd, target, method.solver, method.compile, expected_calls=expected_calls
        )
        setup = time.perf_counter() - start
        stats = time_call(lambda: step(theta), repeats=repeats, warmup=warmup, device=theta.device)
        rows.append(
            {"method": method.name, "n_starts": theta.shape[0], "n_points": q.shape[0], **stats, "setup_s": setup}
        )
    return pd.DataFrame(rows)
