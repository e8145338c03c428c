"""The benchmark core's tables: shape and bookkeeping only (no timing assertions)."""

import math

import torch

from lagfit_cli.core.timing import SOLVER_COLUMNS, Method, solver_table, step_table, time_call
from lagfit_cli.core.solvers import SOLVERS
from lagfit_cli.core.systems import ANHARMONIC


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


def test_benchmark_task_writes_the_table_and_fig7(lagfit):
    import pandas as pd

    proc = lagfit(
        "experiment=benchmark", "benchmark.n_points=[10,40]", "benchmark.repeats=2", "benchmark.warmup=1",
        "benchmark.methods=[loop,batched,fast,closed_form]", "benchmark.step_starts=4",
        "benchmark.step_points=50", "benchmark.step_methods=[batched,fast]",
    )
    assert proc.returncode == 0, proc.stderr
    table = pd.read_csv(proc.run_dir / "benchmark.csv")
    assert list(table.columns[:8]) == [
        "method", "n_points", "median_s", "min_s", "max_s", "points_per_s", "speedup_vs_loop", "ratio_to_closed_form",
    ]
    assert set(table.method) == {"loop", "batched", "fast", "closed_form"}
    assert (table.min_s <= table.median_s).all() and (table.median_s <= table.max_s).all()
    assert (table[table.method == "closed_form"].ratio_to_closed_form == 1).all()
    assert (table[table.method == "loop"].speedup_vs_loop == 1).all()
    assert (proc.run_dir / "figures" / "fig7_benchmark.png").is_file()
    assert set(pd.read_csv(proc.run_dir / "benchmark_step.csv").method) == {"batched", "fast"}


def test_benchmark_rejects_a_method_it_cannot_run(lagfit):
    proc = lagfit("experiment=benchmark", "benchmark.methods=[vmap+compile]")
    assert proc.returncode == 2
    assert "benchmark.methods" in proc.stderr and "cannot be compiled" in proc.stderr


def test_solver_compile_is_validated(lagfit):
    proc = lagfit("solver.compile=sometimes")
    assert proc.returncode == 2 and "solver.compile" in proc.stderr
