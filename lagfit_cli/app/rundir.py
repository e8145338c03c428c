"""Claiming a run folder: no run ever writes into a folder that holds another run.

A run claims its folder when it starts, *before* Hydra writes ``.hydra/`` into it, by
creating :data:`LOCK_FILE` with an exclusive create (``O_CREAT | O_EXCL``): of two runs
started at once into one folder exactly one gets it. The lock holds the owner's pid, host
and start time. When the job ends the lock is removed (a finished run is then marked by
``metrics.json``, a failed or interrupted one by ``error.txt``). So a folder is refused when
it holds

- ``metrics.json``: a finished run (``already holds a finished run``);
- ``error.txt``: a run that failed or was interrupted (its record is kept);
- the lock of a live process: a run in progress;
- the lock of a process that is no longer alive: a run that was killed (a *stale* lock,
  reported as such and never silently reused).

The folder is the one Hydra resolves (``hydra.run.dir``, however it was spelled:
``++hydra.run.dir=X``, ``${oc.env:RUNDIR}``, ``${now:...}``), so the claim is made in a Hydra
callback, :class:`ClaimRunDir`, that sees the composed config. Hydra turns an ``Exception``
raised in a callback into a warning and goes on, so a refusal is raised as
:class:`RunDirRefused`, a ``BaseException`` the CLI catches (as Hydra lets ``SystemExit``
through). A sweep claims its sweep folder the same way; its jobs claim their own folders
when they start.
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any, Optional

from hydra.experimental.callback import Callback

from lagfit_cli.errors import LagfitError
from lagfit_cli.io.report import ERROR_FILE, METRICS_FILE

LOCK_FILE = ".lagfit.lock"

#: the folders this process holds the lock of (released by :func:`release`)
CLAIMED: set[Path] = set()


class RunDirRefused(BaseException):
    """A run folder that must not be written into: one line for the CLI, exit code 2.

    A ``BaseException`` so that Hydra's callback machinery (which turns exceptions into
    warnings) lets it through to the CLI.
    """

    def __init__(self, message: str):
        self.message = message
        super().__init__(message)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # it exists, owned by someone else
    return True


def read_lock(path: Path) -> dict[str, Any]:
    try:
        owner = json.loads(path.read_text(encoding="utf-8", errors="replace"))
        return owner if isinstance(owner, dict) else {}
    except (OSError, ValueError):
        return {}


def lock_problem(key: str, folder: Path) -> str:
    """The refusal for a folder holding a lock: a live run, or a killed one (stale lock)."""
    lock = folder / LOCK_FILE
    owner = read_lock(lock)
    pid, host, started = owner.get("pid"), owner.get("host"), owner.get("started", "?")
    same_host = host == socket.gethostname()
    if isinstance(pid, int) and same_host and not _pid_alive(pid):
        return (
            f"{key}: {folder} holds the lock of a run that was killed (pid {pid}, started "
            f"{started}, no longer running): its results are incomplete; remove {lock} "
            "to reuse the folder, or choose another"
        )
    where = f"pid {pid}" + ("" if same_host or host is None else f" on {host}")
    return (
        f"{key}: {folder} is in use by another lagfit run ({where}, started {started}); "
        "choose another folder"
    )


def folder_problem(key: str, folder: Path) -> Optional[str]:
    """Why ``folder`` cannot take a new run (None: it can)."""
    if folder.exists() and not folder.is_dir():
        return f"{key}: {folder} is a file, not a folder"
    if (folder / LOCK_FILE).exists():
        return lock_problem(key, folder)
    if (folder / METRICS_FILE).exists():
        return f"{key}: {folder} already holds a finished run; choose another folder"
    if (folder / ERROR_FILE).exists():
        return (
            f"{key}: {folder} already holds a run that failed or was interrupted (see its "
            f"{ERROR_FILE}); choose another folder"
        )
    return None


def claim(key: str, folder: Path) -> None:
    """Create ``folder`` and take its lock, or raise :class:`LagfitError` saying why not."""
    folder = Path(os.path.abspath(folder))
    if folder in CLAIMED:
        return
    problem = folder_problem(key, folder)
    if problem:
        raise LagfitError(problem)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / LOCK_FILE, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if not folder.is_dir():
            raise LagfitError(f"{key}: {folder} is a file, not a folder") from None
        raise LagfitError(lock_problem(key, folder)) from None
    except OSError as err:
        raise LagfitError(f"{key}: cannot create {folder}: {err.strerror or err}") from None
    owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(owner) + "\n")
    except OSError as err:
        (folder / LOCK_FILE).unlink(missing_ok=True)
        raise LagfitError(f"{key}: cannot write in {folder}: {err.strerror or err}") from None
    CLAIMED.add(folder)
    # re-check after taking the lock: a run that held it may have finished meanwhile
    for marker in (METRICS_FILE, ERROR_FILE):
        if (folder / marker).exists():
            release(folder)
            raise LagfitError(folder_problem(key, folder) or f"{key}: {folder} holds another run")


def release(folder: Path) -> None:
    """Remove this process's lock of ``folder`` (no-op when it holds none)."""
    folder = Path(os.path.abspath(folder))
    if folder in CLAIMED:
        CLAIMED.discard(folder)
        (folder / LOCK_FILE).unlink(missing_ok=True)


def release_all() -> None:
    for folder in list(CLAIMED):
        release(folder)


def _selected(config: Any, key: str) -> Optional[Path]:
    from omegaconf import OmegaConf

    try:
        value = OmegaConf.select(config, key)
    except Exception:  # noqa: BLE001  an interpolation error: Hydra reports it itself
        return None
    return None if value is None else Path(str(value))


def sweep_problem(sweep_dir: Path) -> Optional[str]:
    """Why a sweep must not run into ``sweep_dir``: a job folder under it holds a run."""
    key = "hydra.sweep.dir"
    if sweep_dir.exists() and not sweep_dir.is_dir():
        return f"{key}: {sweep_dir} is a file, not a folder"
    if not sweep_dir.is_dir():
        return None
    if (sweep_dir / LOCK_FILE).exists():
        return lock_problem(key, sweep_dir)
    for marker in (METRICS_FILE, ERROR_FILE, LOCK_FILE):
        found = next(iter(sweep_dir.rglob(marker)), None)
        if found is not None:
            return (
                f"{key}: {sweep_dir} already holds the jobs of another sweep (e.g. "
                f"{found.parent}); choose another folder"
            )
    return None


class ClaimRunDir(Callback):
    """Hydra callback: claim the run (or sweep) folder before Hydra writes into it."""

    def on_run_start(self, config: Any, **kwargs: Any) -> None:
        folder = _selected(config, "hydra.run.dir")
        if folder is None:
            return
        try:
            claim("hydra.run.dir", folder)
        except LagfitError as err:
            raise RunDirRefused(str(err)) from None

    def on_multirun_start(self, config: Any, **kwargs: Any) -> None:
        folder = _selected(config, "hydra.sweep.dir")
        if folder is None:
            return
        folder = Path(os.path.abspath(folder))
        problem = sweep_problem(folder)
        if problem is None:
            try:
                claim("hydra.sweep.dir", folder)
            except LagfitError as err:
                problem = str(err)
        if problem:
            raise RunDirRefused(problem)

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        folder = _selected(config, "hydra.sweep.dir")
        if folder is not None:
            release(folder)
