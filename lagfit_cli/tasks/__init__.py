"""Tasks: thin orchestrations of the core, selected by ``task.name``.

A task is ``fn(cfg) -> Report``; register it with :func:`register_task` and add
``conf/task/NAME.yaml``. Importing this package registers the built-in tasks.
"""

from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig

from ..report import Report

Task = Callable[[DictConfig], Report]
TASKS: dict[str, Task] = {}


def register_task(name: str) -> Callable[[Task], Task]:
    def decorator(fn: Task) -> Task:
        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        TASKS[name] = fn
        return fn

    return decorator


from . import fit  # noqa: E402,F401  (registers the built-in tasks)
from . import landscape, noise_study  # noqa: E402,F401
from . import seed_report  # noqa: E402,F401
from . import benchmark  # noqa: E402,F401
