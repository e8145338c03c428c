"""Tasks: thin orchestrations of the core, selected by ``task.name``.

A task is ``fn(cfg) -> Report``; register it with :func:`register_task` and add
``conf/task/NAME.yaml``. Importing this package registers the built-in tasks.
"""

from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig

from ..registry import Registry
from ..report import Report

Task = Callable[[DictConfig], Report]
TASKS: Registry[Task] = Registry("task", "task.name")
register_task = TASKS.register


from . import fit  # noqa: E402,F401  (registers the built-in tasks)
from . import landscape, noise_study  # noqa: E402,F401
from . import seed_report  # noqa: E402,F401
from . import benchmark  # noqa: E402,F401
