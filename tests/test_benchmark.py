"""The benchmark core's tables: shape and bookkeeping only (no timing assertions)."""

import math

import torch

from conftest import run_task
from lagfit_cli.core.timing import SOLVER_COLUMNS, Method, solver_table, step_table, time_call
from lagfit_cli.core.solvers import SOLVERS
from lagfit_cli.core.systems import ANHARMONIC


def test_time_call_reports_statistics():
    calls = []
    stats = time_call(lambda: calls.append(1), repeats=5, warmup=2)
    assert len(calls) == 7
    assert stats["repeats"] == 5 and stats["min_s"] > 0


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


def test_benchmark_task_tables_and_fig7():
    report = run_task(
        "experiment=benchmark", "task.n_points=[10,40]", "task.repeats=2", "task.warmup=1",
        "task.methods=[loop,batched,fast,closed_form]", "task.step_starts=4",
        "task.step_points=50", "task.step_methods=[batched,fast]",
    )
    table = report.tables["benchmark"]
    assert list(table.columns[:8]) == [
        "method", "n_points", "median_s", "min_s", "max_s", "points_per_s", "speedup_vs_loop", "ratio_to_closed_form",
    ]
    assert set(table.method) == {"loop", "batched", "fast", "closed_form"}
    assert (table[table.method == "closed_form"].ratio_to_closed_form == 1).all()
    assert (table[table.method == "loop"].speedup_vs_loop == 1).all()
    assert set(report.tables["benchmark_step"].method) == {"batched", "fast"}
    # Fig. 7: one line per method, through its median times, on log-log axes
    ax = report.figures["fig7_benchmark"].axes[0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["loop", "batched", "fast", "closed_form"]
    assert ax.get_xscale() == ax.get_yscale() == "log"
    fast = table[table.method == "fast"].sort_values("n_points")
    drawn = [(list(line.get_xdata()), list(line.get_ydata())) for line in ax.get_lines()]
    assert (list(fast.n_points), list(fast.median_s)) in drawn


def test_benchmark_rejects_a_method_it_cannot_run(lagfit):
    proc = lagfit("experiment=benchmark", "task.methods=[vmap+compile]")
    assert proc.returncode == 2
    assert "task.methods" in proc.stderr and "cannot be compiled" in proc.stderr


def test_solver_compile_is_validated(lagfit):
    proc = lagfit("solver.compile=sometimes")
    assert proc.returncode == 2 and "solver.compile" in proc.stderr
