"""Measured time series: one or more runs of positions over time (``data=trajectory``).

This module holds the container every trajectory feature shares (reading, derivative
estimation, the weak form, simulation and rollout): a :class:`Run` is one recording, and
:class:`Trajectories` is the set a fit uses. Arrays are float64 numpy arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


@dataclass(frozen=True)
class Run:
    """One recording: ``t`` (n,), ``q`` (n, D); optional measured ``qd`` (n, D) and applied
    generalised forces ``Q`` (n, D)."""

    t: np.ndarray
    q: np.ndarray
    qd: Optional[np.ndarray] = None
    Q: Optional[np.ndarray] = None
    #: the run's id as written in the file (or the file name when runs come from a glob)
    name: str = "0"

    @property
    def n_samples(self) -> int:
        return self.t.shape[0]

    @property
    def dof(self) -> int:
        return self.q.shape[1]


@dataclass(frozen=True)
class Trajectories:
    """Every run of a measurement; all runs have the same coordinates (D)."""

    runs: tuple[Run, ...]
    #: the user's names for the coordinates, for tables and figures (defaults q0, q1, …)
    coordinate_names: tuple[str, ...] = field(default=())
    #: what reading noticed and warned about (irregular sampling, dropped outliers)
    warnings: tuple[str, ...] = field(default=())

    @property
    def dof(self) -> int:
        return self.runs[0].dof

    @property
    def n_samples(self) -> int:
        return sum(run.n_samples for run in self.runs)

    @property
    def has_forces(self) -> bool:
        return any(run.Q is not None for run in self.runs)
