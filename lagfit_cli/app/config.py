"""Structured-config schemas: the types Hydra checks, and the ranges lagfit checks.

Hydra merges ``conf/`` and the command-line overrides onto these dataclasses, which
rejects unknown keys and values of the wrong type. :func:`validate` then checks ranges
and relations between values, before any work is done, so a bad value fails with one
clear line naming its key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig

from lagfit_cli.core.errors import ArgumentError, LagfitError


@dataclass
class SystemConf:
    name: str = MISSING
    #: true parameter values, in the system's order (the truth for synthetic data);
    #: null = unknown (only with data=csv: nothing is then reported against a truth).
    #: Untyped (checked by validate) so that system=custom can start from null and take a
    #: mapping of new names from the command line (a typed mapping refuses new keys)
    params: Any = field(default_factory=dict)
    #: parameter that identifiable ratios are taken against (None = the first)
    gauge: Optional[str] = None
    q_bounds: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    qd_bounds: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    #: the expression of a user-defined Lagrangian (system=custom only)
    lagrangian: Optional[str] = None


@dataclass
class DataConf:
    name: str = "grid"
    #: grid points per state variable (grid: n^(2D) points in all)
    n: int = 50
    q_bounds: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    qd_bounds: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    #: number of random states (data=uniform)
    n_points: int = 2000
    #: the CSV file to read (data=csv)
    path: Optional[str] = None
    #: column names in the file for lagfit's q0.., qd0.., qdd0.. (data=csv), e.g. {q0: theta};
    #: untyped and null by default (checked by validate) so a mapping of new keys can be given
    columns: Any = None


@dataclass
class NoiseConf:
    #: standard deviation of the Gaussian noise
    sigma: float = 0.0
    #: what the noise perturbs: the q, q̇ inputs (as in the report), the q̈ targets, or both
    apply_to: str = "inputs"


@dataclass
class InitConf:
    #: number of gradient-descent starts, run together as one batch
    n_starts: int = 16
    #: initial guesses are uniform in [truth − box_width, truth + box_width] per parameter
    box_width: float = 1.0
    #: the box centre for parameters whose true value is unknown (system.params.X=null)
    center: float = 1.0


@dataclass
class OptimConf:
    name: str = "gd"
    #: ε₀ of the adaptive rate ε = ε₀·exp(−(ε₀|∇loss|)³) (seed report, eq. 2): a number
    #: > 0, or "auto" (chosen from gradients sampled over the init box; see step_size.py)
    lr: Any = 0.1
    adaptive: bool = True
    iters: int = 1000
    #: a start has converged when its gradient norm falls below this
    grad_tol: float = 1e-12
    #: ... or when its loss falls below this
    loss_tol: float = 1e-24
    #: optim.lr=auto: the largest sampled first step is this fraction of the box side 2·box_width
    auto_step_fraction: float = 0.1
    #: optim.lr=auto: gradients are sampled at this many guesses in the init box (+ the starts)
    auto_samples: int = 256


@dataclass
class SolverConf:
    name: str = "fast"
    #: torch.compile the solver: auto (only when the work repays the compile), true, false
    compile: Any = "auto"


@dataclass
class TaskConf:
    name: str = "fit"


@dataclass
class ReportConf:
    #: figure file format
    format: str = "png"
    dpi: int = 150
    #: draw figures at all (tables and metrics are always written)
    figures: bool = True
    #: resolution of the loss-landscape grid drawn under the fit paths
    landscape_resolution: int = 60
    #: the two parameters drawn in the landscape/paths figure (None: a pair with a valley)
    landscape_params: Optional[list[str]] = None


@dataclass
class CheckConf:
    #: fail the run (non-zero exit) if any identifiable ratio misses the truth by more
    #: than this relative error; None disables the check (used by experiment=smoke)
    max_ratio_rel_error: Optional[float] = None


@dataclass
class BenchmarkConf:
    #: solvers to time; NAME+compile for the torch.compile'd variant
    methods: list[str] = field(default_factory=lambda: [
        "loop", "vmap", "batched", "broadcast", "broadcast+compile",
        "fast", "fast+compile", "closed_form", "closed_form+compile",
    ])
    n_points: list[int] = field(default_factory=lambda: [100, 1000, 10000, 100000, 1000000])
    repeats: int = 10
    warmup: int = 2
    #: the per-point loop is timed only up to here (never extrapolated)
    loop_max_points: int = 1000
    #: drop a method from larger sizes once one call takes longer than this
    max_seconds_per_call: float = 5.0
    #: ratio_to_closed_form divides by this method's time
    reference: str = "closed_form"
    #: the fit's per-iteration step: starts × points (0 starts: skip)
    step_starts: int = 256
    step_points: int = 10000
    step_methods: list[str] = field(default_factory=lambda: ["batched", "broadcast", "fast", "fast+compile"])
    step_expected_calls: int = 200


@dataclass
class LagfitConf:
    system: SystemConf = field(default_factory=SystemConf)
    data: DataConf = field(default_factory=DataConf)
    noise: NoiseConf = field(default_factory=NoiseConf)
    init: InitConf = field(default_factory=InitConf)
    optim: OptimConf = field(default_factory=OptimConf)
    solver: SolverConf = field(default_factory=SolverConf)
    task: TaskConf = field(default_factory=TaskConf)
    report: ReportConf = field(default_factory=ReportConf)
    check: CheckConf = field(default_factory=CheckConf)
    benchmark: BenchmarkConf = field(default_factory=BenchmarkConf)
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"
    #: CPU threads for torch (0: torch's default, all cores); 1 is fastest for the
    #: many small operations of a fit, and immune to a busy machine
    threads: int = 1
    #: show a progress bar (auto: only when stderr is a terminal)
    progress: str = "auto"
    landscape: "LandscapeConf" = field(default_factory=lambda: LandscapeConf())
    noise_study: "NoiseStudyConf" = field(default_factory=lambda: NoiseStudyConf())


@dataclass
class LandscapeConf:
    """task=landscape (and the noise study's grids): the loss over two parameters."""

    #: parameter on the horizontal / vertical axis (None: the gauge and the next parameter)
    x: Optional[str] = None
    y: Optional[str] = None
    #: [low, high] of each axis (None: [0.05, 2] × the true value, or [−1, 1] if it is 0)
    x_range: Optional[list[float]] = None
    y_range: Optional[list[float]] = None
    #: grid points per axis
    resolution: int = 80


@dataclass
class NoiseStudyConf:
    """task=noise_study: the loss along the slice ⊥ the valley under noise of each σ."""

    sigmas: list[float] = field(default_factory=lambda: [0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0])
    #: independent noise draws per σ
    realizations: int = 8
    #: points along the slice
    slice_points: int = 101
    #: the slice runs ± this fraction of |truth| (in the landscape's x, y plane) about the truth
    slice_halfwidth: float = 0.25
    #: threshold σ: the first σ whose mean RMS error exceeds this fraction of the clean loss range
    threshold_fraction: float = 0.05
    #: the σ shown in the with-noise panels of Figs. 4 and 6
    show_sigma: float = 0.3


def register_configs() -> None:
    """Put the root schema in Hydra's ConfigStore; conf/config.yaml builds on it."""
    ConfigStore.instance().store(name="lagfit_schema", node=LagfitConf)
    from lagfit_cli.app.slurm import register_slurm

    register_slurm()  # hydra/launcher=submitit_slurm: lagfit's launcher and its resolver


# --------------------------------------------------------------------------- ranges


#: the Python API's argument names (``ArgumentError.argument``) -> config keys; a dotted
#: argument maps by its first part (``params.m`` -> ``system.params.m``)
ARGUMENT_KEYS = {
    "system": "system.name",
    "params": "system.params",
    "gauge": "system.gauge",
    "lagrangian": "system.lagrangian",
    "data": "data.name",
    "n": "data.n",
    "path": "data.path",
    "columns": "data.columns",
    "solver": "solver.name",
    "compile": "solver.compile",
    "task": "task.name",
    "landscape_params": "report.landscape_params",
}


def config_message(err: LagfitError) -> str:
    """The one-line message of an error, naming the config key rather than the argument."""
    if not isinstance(err, ArgumentError):
        return str(err)
    head, _, rest = err.argument.partition(".")
    key = ARGUMENT_KEYS.get(err.argument) or ARGUMENT_KEYS.get(head, head) + (f".{rest}" if rest else "")
    return f"{key}: {err.detail}"


def _fail(key: str, message: str) -> None:
    raise LagfitError(f"{key}: {message}")


def _check_bounds(key: str, bounds: Any) -> None:
    values = list(bounds)
    if len(values) != 2:
        _fail(key, f"must be [low, high], got {values}")
    low, high = values
    if not (math.isfinite(low) and math.isfinite(high)):
        _fail(key, f"bounds must be finite, got {values}")
    if not low < high:
        _fail(key, f"low must be below high, got [{low}, {high}]")


def _check_choice(key: str, value: str, choices: Any) -> None:
    if value not in choices:
        _fail(key, f"must be one of {', '.join(sorted(choices))}; got {value!r}")


def _check_positive(key: str, value: float, strict: bool = True) -> None:
    ok = value > 0 if strict else value >= 0
    if not (ok and math.isfinite(value)):
        _fail(key, f"must be a finite number {'> 0' if strict else '>= 0'}, got {value}")


def validate(cfg: DictConfig) -> None:
    """Check ranges and choices of a composed config; raise LagfitError on the first problem."""
    from lagfit_cli.core.data import DATASETS
    from lagfit_cli.core.solvers import SOLVERS
    from lagfit_cli.core.noise import NOISE_TARGETS
    from .tasks import TASKS

    _check_choice("task.name", cfg.task.name, TASKS)
    _check_choice("solver.name", cfg.solver.name, SOLVERS)
    _check_choice("solver.compile", str(cfg.solver.compile).lower(), {"auto", "true", "false"})
    if cfg.threads < 0:
        _fail("threads", f"must be 0 (torch's default) or a positive count, got {cfg.threads}")
    _check_choice("data.name", cfg.data.name, DATASETS)
    _check_choice("optim.name", cfg.optim.name, {"gd"})
    _check_choice("dtype", cfg.dtype, {"float32", "float64"})
    _check_choice("progress", cfg.progress, {"auto", "true", "false"})
    _check_choice("report.format", cfg.report.format, {"png", "pdf", "svg"})
    _check_choice("noise.apply_to", cfg.noise.apply_to, NOISE_TARGETS)
    if not (cfg.device == "cpu" or cfg.device.startswith("cuda")):
        _fail("device", f"must be 'cpu' or 'cuda[:N]', got {cfg.device!r}")

    params = cfg.system.params
    if params is not None and not isinstance(params, Mapping):
        _fail("system.params", f"must be a mapping of parameter names to values, got {params!r}")
    for name, value in (params or {}).items():
        if value is None:
            continue  # unknown
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value)):
            _fail(
                f"system.params.{name}", f"must be a finite number or null (unknown), got {value!r}"
            )
    _check_bounds("system.q_bounds", cfg.system.q_bounds)
    _check_bounds("system.qd_bounds", cfg.system.qd_bounds)
    _check_bounds("data.q_bounds", cfg.data.q_bounds)
    _check_bounds("data.qd_bounds", cfg.data.qd_bounds)
    if cfg.data.n < 2:
        _fail("data.n", f"must be at least 2 grid points per state variable, got {cfg.data.n}")

    _check_positive("noise.sigma", cfg.noise.sigma, strict=False)
    if cfg.init.n_starts < 1:
        _fail("init.n_starts", f"must be at least 1, got {cfg.init.n_starts}")
    _check_positive("init.box_width", cfg.init.box_width, strict=False)
    _check_lr(cfg)
    if cfg.optim.iters < 1:
        _fail("optim.iters", f"must be at least 1, got {cfg.optim.iters}")
    _check_positive("optim.grad_tol", cfg.optim.grad_tol, strict=False)
    _check_positive("optim.loss_tol", cfg.optim.loss_tol, strict=False)
    if cfg.report.dpi < 20:
        _fail("report.dpi", f"must be at least 20, got {cfg.report.dpi}")
    if cfg.report.landscape_resolution < 2:
        _fail("report.landscape_resolution", f"must be at least 2, got {cfg.report.landscape_resolution}")
    if cfg.check.max_ratio_rel_error is not None:
        _check_positive("check.max_ratio_rel_error", cfg.check.max_ratio_rel_error)
    validate_studies(cfg)
    validate_data(cfg)
    validate_benchmark(cfg)


def _check_lr(cfg: DictConfig) -> None:
    lr = cfg.optim.lr
    if isinstance(lr, str):
        if lr != "auto":
            _fail("optim.lr", f"must be a finite number > 0 or 'auto', got {lr!r}")
        _check_positive("optim.auto_step_fraction", cfg.optim.auto_step_fraction)
        if cfg.optim.auto_samples < 1:
            _fail("optim.auto_samples", f"must be at least 1, got {cfg.optim.auto_samples}")
        if not cfg.init.box_width > 0:
            _fail("optim.lr", "auto needs init.box_width > 0 (ε₀ is chosen from gradients sampled over the box)")
        return
    if isinstance(lr, bool) or not isinstance(lr, (int, float)):
        _fail("optim.lr", f"must be a finite number > 0 or 'auto', got {lr!r}")
    _check_positive("optim.lr", float(lr))


def _check_range(key: str, value: Any) -> None:
    if value is not None:
        _check_bounds(key, value)


def validate_studies(cfg: DictConfig) -> None:
    """Ranges of the landscape and noise_study sections (checked for every task)."""
    ls, ns = cfg.landscape, cfg.noise_study
    _check_range("landscape.x_range", ls.x_range)
    _check_range("landscape.y_range", ls.y_range)
    if ls.resolution < 2:
        _fail("landscape.resolution", f"must be at least 2, got {ls.resolution}")
    if len(ns.sigmas) < 1:
        _fail("noise_study.sigmas", "must name at least one σ")
    for sigma in ns.sigmas:
        _check_positive("noise_study.sigmas", sigma)
    if ns.realizations < 1:
        _fail("noise_study.realizations", f"must be at least 1, got {ns.realizations}")
    if ns.slice_points < 3:
        _fail("noise_study.slice_points", f"must be at least 3, got {ns.slice_points}")
    _check_positive("noise_study.slice_halfwidth", ns.slice_halfwidth)
    _check_positive("noise_study.threshold_fraction", ns.threshold_fraction)
    _check_positive("noise_study.show_sigma", ns.show_sigma)


def validate_data(cfg: DictConfig) -> None:
    """Checks of the keys added for data=uniform / data=csv and unknown true values."""
    columns = cfg.data.columns
    if columns is not None and not (
        isinstance(columns, Mapping) and all(isinstance(v, str) for v in columns.values())
    ):
        _fail(
            "data.columns",
            f"must map lagfit's column names to the file's, e.g. {{q0: theta}}; got {columns!r}",
        )
    if cfg.data.n_points < 1:
        _fail("data.n_points", f"must be at least 1, got {cfg.data.n_points}")
    unknown = [name for name, value in (cfg.system.params or {}).items() if value is None]
    if unknown and cfg.check.max_ratio_rel_error is not None:
        _fail(
            "check.max_ratio_rel_error",
            f"needs known true values, but system.params.{unknown[0]} is null (unknown)",
        )
    if not math.isfinite(cfg.init.center):
        _fail("init.center", f"must be a finite number, got {cfg.init.center}")


def validate_benchmark(cfg: DictConfig) -> None:
    b = cfg.benchmark
    if not b.methods:
        _fail("benchmark.methods", "must name at least one solver")
    if not b.n_points or min(b.n_points) < 1:
        _fail("benchmark.n_points", f"must be a list of point counts >= 1, got {list(b.n_points)}")
    for key in ("repeats", "step_expected_calls"):
        if b[key] < 1:
            _fail(f"benchmark.{key}", f"must be at least 1, got {b[key]}")
    for key in ("warmup", "step_starts", "loop_max_points"):
        if b[key] < 0:
            _fail(f"benchmark.{key}", f"must be >= 0, got {b[key]}")
    if b.step_starts and b.step_points < 1:
        _fail("benchmark.step_points", f"must be at least 1, got {b.step_points}")
    _check_positive("benchmark.max_seconds_per_call", b.max_seconds_per_call)
