"""lagfit: fit the parameters of a Lagrangian to data, and study how well that can work.

The package is three layers, imported one way, ``app → io → core``:

- ``lagfit_cli.core``: the math (systems, solvers, data, fitting), on tensors;
- ``lagfit_cli.io``: tables, metrics.json and figures;
- ``lagfit_cli.app``: the ``lagfit`` command (Hydra).

Importing ``lagfit_cli`` is cheap: the names below load the core on first use, and nothing
here imports Hydra, OmegaConf or matplotlib.
"""

from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_EXPORTS = {
    "fit": "lagfit_cli.core.api",
    "fit_dataset": "lagfit_cli.core.api",
    "read_csv": "lagfit_cli.core.api",
    "FitOptions": "lagfit_cli.core.api",
    "FitReport": "lagfit_cli.core.api",
    "Dataset": "lagfit_cli.core.data",
    "LagfitError": "lagfit_cli.errors",
    "ArgumentError": "lagfit_cli.errors",
    "System": "lagfit_cli.core.systems",
    "SYSTEMS": "lagfit_cli.core.systems",
    "build_system": "lagfit_cli.core.systems",
    "register_system": "lagfit_cli.core.systems",
    "compile_lagrangian": "lagfit_cli.core.expressions",
    "SOLVERS": "lagfit_cli.core.solvers",
    "get_solver": "lagfit_cli.core.solvers",
    "register_solver": "lagfit_cli.core.solvers",
    "check_mass_matrix": "lagfit_cli.core.solvers",
    "Run": "lagfit_cli.core.trajectory",
    "Trajectories": "lagfit_cli.core.trajectory",
    "simulate": "lagfit_cli.core.simulate",
    "rollout": "lagfit_cli.core.rollout",
    "Rollout": "lagfit_cli.core.rollout",
    "IntegrationFailure": "lagfit_cli.core.simulate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'lagfit_cli' has no attribute {name!r}")
    importlib.import_module("lagfit_cli.core")  # fills the registries in order
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
