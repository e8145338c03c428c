"""task=benchmark: the seed report's Fig. 7 — time per q̈ evaluation against the number of
points for every solver, beside the hand-written closed form — and the fit's whole
per-iteration step (all starts' loss and θ-gradient)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from lagfit_cli.core.timing import Method, sample_states, solver_table, step_table
from lagfit_cli.core.solvers import SOLVERS
from lagfit_cli.errors import LagfitError
from lagfit_cli.io.report import Report
from lagfit_cli.core.systems import build_system, true_params
from . import register_task
from lagfit_cli.app.tasks.common import DTYPES, resolve_device

COMPILED_SUFFIX = "+compile"


def parse_method(spec: str) -> Method:
    """``NAME`` (eager) or ``NAME+compile`` (torch.compile) for a registered solver."""
    name, compiled = (spec[: -len(COMPILED_SUFFIX)], True) if spec.endswith(COMPILED_SUFFIX) else (spec, False)
    if name not in SOLVERS:
        raise LagfitError(
            f"task.methods: unknown solver {name!r} in {spec!r}; known: {', '.join(sorted(SOLVERS))}"
        )
    if compiled and not SOLVERS[name].compilable:
        raise LagfitError(f"task.methods: solver {name!r} cannot be compiled ({spec!r})")
    return Method(name, "true" if compiled else "false")


def fig7(table: pd.DataFrame, title: str):
    """Time per q̈ evaluation vs number of points, log-log, one line per method."""
    from lagfit_cli.io import plots  # matplotlib: only when figures are drawn

    from lagfit_cli.io.style import figsize, wrap

    with plots.style():
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=figsize(2, aspect=0.5))
        for method, rows in table.groupby("method", sort=False):
            rows = rows.sort_values("n_points")
            yerr = np.vstack([rows.median_s - rows.min_s, rows.max_s - rows.median_s])
            style = "--" if method.startswith("closed_form") else "-"
            ax.errorbar(rows.n_points, rows.median_s, yerr=yerr, fmt=style + "o", ms=3, capsize=2, label=method)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("number of points $N$ (states $(q, \\dot q)$)")
        ax.set_ylabel("time per $\\ddot q$ evaluation (s)\nmedian; bars: min–max")
        ax.set_title(wrap(title, fig, 0.7))
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), title="method")  # outside the data
    return fig


@register_task("benchmark")
def benchmark_task(cfg: DictConfig) -> Report:
    bench = cfg.task
    methods = [parse_method(spec) for spec in bench.methods]
    spec = OmegaConf.to_container(cfg.system, resolve=True)
    system = build_system(spec)
    dtype, device = DTYPES[cfg.dtype], resolve_device(cfg.device)
    truth = true_params(system, spec).to(dtype=dtype, device=device)
    if not bool(torch.isfinite(truth).all()):
        raise LagfitError("benchmark: needs known values for every system.params entry")

    report = Report()
    table = solver_table(
        system, truth[None, :], methods, list(bench.n_points),
        repeats=bench.repeats, warmup=bench.warmup, loop_max_points=bench.loop_max_points,
        max_seconds_per_call=bench.max_seconds_per_call, seed=cfg.seed,
        reference=bench.reference if bench.reference in {m.name for m in methods} else methods[0].name,
    )
    report.tables["benchmark"] = table
    title = f"q̈ solvers on {system.name} ({cfg.dtype}, {device}, {torch.get_num_threads()} thread(s))"
    if cfg.report.figures:
        report.figures["fig7_benchmark"] = fig7(table, title)

    if bench.step_starts > 0:
        q, qd = sample_states(system, bench.step_points, seed=cfg.seed, dtype=dtype, device=device)
        with torch.no_grad():
            target = SOLVERS["closed_form" if system.closed_form else "batched"](system, q, qd, truth[None, :])[0]
        gen = torch.Generator().manual_seed(cfg.seed)
        unit = torch.rand((bench.step_starts, system.n_params), generator=gen, dtype=torch.float64)
        theta = (truth.cpu().double() * (0.5 + unit)).to(dtype=dtype, device=device)
        step_methods = [parse_method(s) for s in bench.step_methods]
        report.tables["benchmark_step"] = step_table(
            system, theta, q, qd, target, step_methods, repeats=bench.repeats, warmup=bench.warmup,
            expected_calls=bench.step_expected_calls,
        )

    largest = table[table.n_points == table.n_points.max()]
    report.metrics = {
        "task": "benchmark",
        "system": system.name,
        "dtype": cfg.dtype,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "n_points": list(bench.n_points),
        "median_s_at_largest_n": dict(zip(largest.method, largest.median_s.astype(float))),
    }
    shown = table[["method", "n_points", "median_s", "speedup_vs_loop", "ratio_to_closed_form"]]
    report.summary.append(f"benchmark ({title}):\n" + shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    if "benchmark_step" in report.tables:
        step = report.tables["benchmark_step"][["method", "n_starts", "n_points", "median_s", "first_s", "setup_s"]]
        report.summary.append("fit step (loss and θ-gradient, all starts):\n" + step.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    return report
