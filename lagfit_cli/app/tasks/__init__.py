"""Tasks: thin orchestrations of the core, selected by ``task.name``.

A task is ``fn(cfg) -> Report``; register it with :func:`register_task` and add
``conf/task/NAME.yaml``. Importing this package registers the built-in tasks.
"""

from __future__ import annotations

from typing import Callable

from omegaconf import DictConfig

from lagfit_cli.core.registry import Registry
from lagfit_cli.io.report import Report

Task = Callable[[DictConfig], Report]
TASKS: Registry[Task] = Registry("task", "task")
register_task = TASKS.register


from lagfit_cli.app.tasks import fit  # noqa: E402,F401  (registers the built-in tasks)
from lagfit_cli.app.tasks import landscape  # noqa: E402,F401
from lagfit_cli.app.tasks import noise_study  # noqa: E402,F401
from lagfit_cli.app.tasks import seed_report  # noqa: E402,F401
from lagfit_cli.app.tasks import benchmark  # noqa: E402,F401
from lagfit_cli.app.tasks import simulate  # noqa: E402,F401
