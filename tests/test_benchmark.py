"""The benchmark core's tables: shape and bookkeeping only (no timing assertions)."""

import math

import torch

from lagfit_cli.benchmark import SOLVER_COLUMNS, Method, solver_table, step_table, time_call
from lagfit_cli.dynamics import SOLVERS
from lagfit_cli.systems import ANHARMONIC


def test_time_call_reports_statistics():
    calls = []
    stats = time_call(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7
    assert stats["min_s"] <= stats["median_s"] <= stats["max_s"] and stats["repeats"] == 5


def test_solver_table_columns_and_ratios():
    theta = torch.tensor([[2.0, 4.0, 0.1]], dtype=torch.float64)
    methods = [Method("closed_form"), Method("loop"), Method("fast"), Method("linear", cold=True)]
    table = solver_table(ANHARMONIC, theta, methods, [10, 40], repeats=2, warmup=1, loop_max_points=10)
    assert list(table.columns[: len(SOLVER_COLUMNS)]) == SOLVER_COLUMNS
    assert set(table["method"]) == {"closed_form", "loop", "fast", "linear(cold)"}
    assert not ((table["method"] == "loop") & (table["n_points"] == 40)).any()  # never extrapolated
    reference = table[table["method"] == "closed_form"]
    assert (reference["ratio_to_closed_form"] == 1).all()
    fast_40 = table[(table["method"] == "fast") & (table["n_points"] == 40)].iloc[0]
    assert math.isnan(fast_40["speedup_vs_loop"])
    fast_10 = table[(table["method"] == "fast") & (table["n_points"] == 10)].iloc[0]
    assert fast_10["speedup_vs_loop"] > 0 and fast_10["points_per_s"] > 0


def test_step_table_rows():
    q = torch.linspace(-1, 1, 30, dtype=torch.float64)[:, None]
    qd = torch.linspace(1, -1, 30, dtype=torch.float64)[:, None]
    theta = torch.tensor([[2.0, 4.0, 0.1], [1.0, 3.0, 0.2]], dtype=torch.float64)
    target = SOLVERS["closed_form"](ANHARMONIC, q, qd, theta[:1])[0]
    table = step_table(ANHARMONIC, theta, q, qd, target, [Method("fast"), Method("batched")], repeats=2, warmup=1)
    assert list(table["method"]) == ["fast", "batched"] and (table["n_starts"] == 2).all()
