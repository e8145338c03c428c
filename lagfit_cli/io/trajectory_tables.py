"""Trajectories as the ``data=trajectory`` CSV table: ``t``, ``run``, ``q0, q1, …``, optional
``qd0, …`` and ``Q0, …`` (one file, one row per sample, runs one after another)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from lagfit_cli.core.trajectory import Trajectories


def trajectory_table(trajectories: Trajectories, velocities: bool = True) -> pd.DataFrame:
    """The runs as one table in the ``data=trajectory`` format (see the module doc)."""
    frames = []
    for r, run in enumerate(trajectories.runs):
        columns: dict[str, np.ndarray] = {"t": run.t, "run": np.full(run.n_samples, r, dtype=np.int64)}
        columns.update({f"q{i}": run.q[:, i] for i in range(run.dof)})
        if velocities and run.qd is not None:
            columns.update({f"qd{i}": run.qd[:, i] for i in range(run.dof)})
        if run.Q is not None:
            columns.update({f"Q{i}": run.Q[:, i] for i in range(run.dof)})
        frames.append(pd.DataFrame(columns))
    return pd.concat(frames, ignore_index=True)
