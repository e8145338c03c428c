"""A fit as tables (pandas): the per-iteration history, one row per start, one row per
parameter as reported. Pure functions of the fit's results; ``Report.write`` saves them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lagfit_cli.core.api import IDENTIFIABLE, FitReport, ratio_label
from lagfit_cli.core.fit import FitResult, relative_error, reported_values
from lagfit_cli.core.systems import System


def history_table(system: System, result: FitResult) -> pd.DataFrame:
    """One row per (start, iteration) up to where each start stopped; ``lr`` is gd's rate ε
    or lm's damping λ (``damping``), per ``result.method``."""
    h = result.history
    n_rows, _ = h.loss.shape
    stop = result.stop_iter.cpu().numpy()
    row_iter = h.iteration().cpu().numpy()
    # each start's rows up to its stop; in a thinned history its stop row is the first row
    # at or after it (the same frozen state), labelled with the stop iteration
    last_row = np.searchsorted(row_iter, stop, side="left")
    t_idx, b_idx = np.nonzero(np.arange(n_rows)[:, None] <= last_row[None, :])
    order = np.lexsort((t_idx, b_idx))
    t_idx, b_idx = t_idx[order], b_idx[order]
    columns = {
        "start": b_idx,
        "iter": t_idx if h.iters is None else np.minimum(row_iter[t_idx], stop[b_idx]),
        "loss": h.loss.cpu().numpy()[t_idx, b_idx],
        "grad_norm": h.grad_norm.cpu().numpy()[t_idx, b_idx],
        ("damping" if result.method == "lm" else "lr"): h.lr.cpu().numpy()[t_idx, b_idx],
    }
    theta = h.theta.cpu().numpy()
    for j, name in enumerate(system.param_names):
        columns[name] = theta[t_idx, b_idx, j]
    return pd.DataFrame(columns)


def results_table(fitted: FitReport) -> pd.DataFrame:
    """One row per start: status, raw θ, identifiable values (+ errors where the truth is known)."""
    system, result, ratios = fitted.system, fitted.result, fitted.ratios
    estimates = reported_values(system, ratios, result.theta)
    truths = reported_values(system, ratios, fitted.truth)
    errors = relative_error(estimates, truths).cpu().numpy()
    values = estimates.cpu().numpy()
    n_starts = result.theta.shape[0]
    table = pd.DataFrame(
        {
            "start": np.arange(n_starts),
            "kind": ["exact" if b == fitted.exact_start else "random" for b in range(n_starts)],
            "status": result.status,
            "iters": result.stop_iter.cpu().numpy(),
            "loss": result.loss.cpu().numpy(),
            "grad_norm": result.grad_norm.cpu().numpy(),
        }
    )
    for j, name in enumerate(system.param_names):
        table[f"{name}_init"] = result.theta_init[:, j].cpu().numpy()
    for j, name in enumerate(system.param_names):
        table[name] = result.theta[:, j].cpu().numpy()
    for r, row in enumerate(ratios):
        if row.status not in IDENTIFIABLE:
            continue
        label = ratio_label(row)
        if row.status == "ratio":
            table[label] = values[:, r]
        if bool(torch.isfinite(truths[r])):
            table[f"{label}_rel_error"] = errors[:, r]
    return table


def parameters_table(fitted: FitReport) -> pd.DataFrame:
    """fitted_params.csv: one row per parameter as reported (``FitReport.table``)."""
    return fitted.table()
