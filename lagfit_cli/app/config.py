"""Structured-config schemas: the types Hydra checks, and the ranges lagfit checks.

Hydra merges ``conf/`` and the command-line overrides onto these dataclasses, which
rejects unknown keys and values of the wrong type. :func:`validate` then checks ranges
and relations between values, before any work is done, so a bad value fails with one
clear line naming its key: first :func:`validate_static` (this module alone: no torch, so
a bad value is told at once), then :func:`validate_names` (names the core's registries
know, which imports the core).

Each task's settings live in its own node, ``task`` (``conf/task/NAME.yaml`` on the
``TASK_SCHEMAS[NAME]`` dataclass), and are checked only for that task.
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from lagfit_cli.errors import printable


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
    #: the expression of a user-defined Lagrangian (system=custom only)
    lagrangian: Optional[str] = None
    #: a Rayleigh dissipation function R(q, q̇, t; θ) written like the Lagrangian, over the
    #: same parameters (system=custom only); null = no friction
    dissipation: Optional[str] = None
    #: fixed known numbers a built-in system uses (driven_duffing: omega; cart_pole: g);
    #: untyped (checked by the system) so each system may name its own
    constants: Any = None


@dataclass
class DataConf:
    name: str = "grid"
    #: grid points per state variable (grid: n^(2D) points in all)
    n: int = 50
    #: the states the data are drawn in, every coordinate alike (each system sets its own)
    q_bounds: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    qd_bounds: list[float] = field(default_factory=lambda: [-1.0, 1.0])
    #: number of random states (data=uniform)
    n_points: int = 2000
    #: the CSV file to read (data=csv)
    path: Optional[str] = None
    #: column names in the file for lagfit's q0.., qd0.., qdd0.. (data=csv), e.g. {q0: theta};
    #: untyped and null by default (checked by validate) so a mapping of new keys can be given
    columns: Any = None
    # data=trajectory (docs/trajectories.md): time series, q̇ and q̈ by the derivatives group
    #: the time column's name in the file
    time_column: str = "t"
    #: the column that says which run a row belongs to (used when the file has it)
    run_column: Optional[str] = "run"
    #: coordinates (lagfit names, [q1]) recorded as wrapped angles: numpy.unwrap per run
    unwrap: list[str] = field(default_factory=list)
    #: [start, end]: seconds dropped at each run's start and end
    trim: list[float] = field(default_factory=lambda: [0.0, 0.0])
    #: a number, or {q0: factor, ...}, multiplying positions and velocities (units)
    scale: Any = None
    #: drop samples more than this many robust σ from the running median (null: keep all)
    outliers: Optional[float] = None
    #: synthetic data (grid, uniform): a random applied generalised force per state, uniform
    #: in [low, high], on the coordinates in force_coords (null: all); null = no force
    force: Optional[list[float]] = None
    force_coords: Optional[list[int]] = None
    #: synthetic data for a time-dependent system: each state's time, uniform in these bounds
    t_bounds: list[float] = field(default_factory=lambda: [0.0, 10.0])


@dataclass
class DerivativesConf:
    """How q̇ and q̈ are estimated from time series (data=trajectory; docs/trajectories.md)."""

    #: spline | savgol | finite_difference | weak
    name: str = "spline"
    #: samples dropped at each end of each run (null: the method's default)
    edge: Optional[int] = None
    #: spline/weak: auto (noise from the data) | gcv | the positions' noise σ (a number)
    smoothing: Any = "auto"
    #: spline/weak: the spline's degree (5: q̈ a smooth cubic; 3)
    degree: int = 5
    #: savgol: window (odd, samples); weak: samples per test function
    window: int = 15
    #: savgol: the polynomial order
    order: int = 5
    #: weak: fraction of a window shared with the next
    overlap: float = 0.5
    #: weak: p of the test function (1 − s²)^p
    power: int = 8


@dataclass
class NoiseConf:
    #: standard deviation of the Gaussian noise
    sigma: float = 0.0
    #: what the noise perturbs: the q, q̇ inputs (as in the report), the q̈ targets, or both
    apply_to: str = "inputs"


@dataclass
class InitConf:
    #: decades (log-uniform around center, the default) | box (the report's ±box_width
    #: around the truth where it is known)
    name: str = "decades"
    #: number of starts, run together as one batch
    n_starts: int = 16
    #: init=box: initial guesses are uniform in [c − box_width, c + box_width] per parameter
    box_width: float = 1.0
    #: init=decades: guesses are center·10^U(−decades, decades)
    decades: float = 1.0
    #: the centre of the guesses (box: for parameters whose true value is unknown)
    center: float = 1.0
    #: add the start solved from the equation-error system (L linear in θ or in
    #: coefficients of θ; optim=lm)
    exact_start: bool = True


@dataclass
class OptimConf:
    #: lm (Levenberg–Marquardt, the default) | gd (the seed report's gradient descent)
    name: str = "lm"
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
    #: optim=lm: a start has converged when an accepted step lowers the cost by less than
    #: ftol of itself, moves θ by less than xtol of |θ|, or every Jacobian column is within
    #: gtol of orthogonal to the residual
    ftol: float = 1e-10
    xtol: float = 1e-10
    gtol: float = 1e-8


@dataclass
class UncertaintyConf:
    #: error bars on the reported values: covariance (s²(JᵀJ)⁻¹ at the best fit, delta
    #: method, Student-t intervals) | bootstrap (rows resampled, refitted as one batch,
    #: percentile intervals) | none
    name: str = "covariance"
    #: uncertainty=bootstrap: the number of resamples
    n_boot: int = 200
    #: task=fit: the loss profiled along each identifiable value (profiles.csv,
    #: fig_profiles): a few small LM batches; off under uncertainty=none
    profiles: bool = True


@dataclass
class EstimatorConf:
    #: ls (least squares on q̈, the default) | eiv (errors in variables: orthogonal distance
    #: regression) | tls (bias-corrected equation error; L linear in θ or c(θ))
    name: str = "ls"
    #: the noise σ on q, q̇, q̈ that eiv / tls assume: a number >= 0, "auto" (time-ordered
    #: data), or null = the noise config's for synthetic data. Untyped: checked by validate
    sigma_q: Any = None
    sigma_qd: Any = None
    sigma_qdd: Any = None


@dataclass
class SolverConf:
    name: str = "fast"
    #: torch.compile the solver: auto (only when the work repays the compile), true, false
    compile: Any = "auto"


@dataclass
class ReportConf:
    #: figure file format
    format: str = "png"
    dpi: int = 150
    #: figure style: paper (3.4 in / 7.0 in wide, 8 pt text) | slides (5 in / 10 in, 14 pt)
    style: str = "paper"
    #: draw figures at all (tables and metrics are always written)
    figures: bool = True
    #: keep every k-th iteration of the fit's history (fit_history.csv, the path figures)
    history_every: int = 1
    #: at most this many history rows are kept: past it, every other row is dropped and the
    #: stride doubles, so memory never grows with optim.iters (null: no bound)
    history_max_rows: Optional[int] = 10000


@dataclass
class LimitsConf:
    """Refuse, before any work, a run whose estimate exceeds these (see app/limits.py)."""

    #: peak memory in GB (null: the memory available when the run starts)
    max_memory_gb: Optional[float] = None
    #: points × starts × parameters × iterations (+ landscape cells × points × parameters)
    max_work: Optional[float] = 1e15
    #: pixels of the largest figure (figure size × report.dpi²)
    max_figure_pixels: Optional[float] = 2.5e8


@dataclass
class CheckConf:
    #: fail the run (non-zero exit) if any identifiable ratio misses the truth by more
    #: than this relative error; None disables the check (used by experiment=smoke)
    max_ratio_rel_error: Optional[float] = None
    #: task=fit exits 3 (with a WARNING line) when the fit cannot be trusted: the best
    #: start did not converge, or the starts at the lowest loss disagree
    require_converged: bool = True


@dataclass
class RolloutConf:
    """After a fit on trajectory data (t and run columns): simulate the fitted model from
    each run's first state and compare (rollout.csv, fig_rollout, metrics' ``rollout``)."""

    #: run the check at all (only trajectory data have the time series it needs)
    enabled: bool = True
    #: seconds simulated from each run's start (capped at the run's length)
    horizon: float = 2.0
    #: the prediction has left the measurement when a coordinate strays more than this
    #: fraction of its range (over all runs' measured q)
    tolerance: float = 0.01
    #: scipy solve_ivp method and tolerances
    method: str = "DOP853"
    rtol: float = 1e-9
    atol: float = 1e-9


@dataclass
class LagfitConf:
    system: SystemConf = field(default_factory=SystemConf)
    data: DataConf = field(default_factory=DataConf)
    noise: NoiseConf = field(default_factory=NoiseConf)
    init: InitConf = field(default_factory=InitConf)
    optim: OptimConf = field(default_factory=OptimConf)
    solver: SolverConf = field(default_factory=SolverConf)
    uncertainty: UncertaintyConf = field(default_factory=UncertaintyConf)
    derivatives: DerivativesConf = field(default_factory=DerivativesConf)
    estimator: EstimatorConf = field(default_factory=EstimatorConf)
    #: the task's own settings: one of TASK_SCHEMAS, chosen by conf/task/NAME.yaml
    task: Any = None
    report: ReportConf = field(default_factory=ReportConf)
    check: CheckConf = field(default_factory=CheckConf)
    limits: LimitsConf = field(default_factory=LimitsConf)
    rollout: RolloutConf = field(default_factory=RolloutConf)
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"
    #: CPU threads for torch (0: torch's default, all cores); 1 is fastest for the
    #: many small operations of a fit, and immune to a busy machine
    threads: int = 1
    #: show a progress bar (auto: only when stderr is a terminal)
    progress: str = "auto"


# --------------------------------------------------------------------------- tasks
# The values are in conf/task/NAME.yaml (their one home); these give the keys and types.


@dataclass
class FitTaskConf:
    """task=fit: the descent paths of Fig. 3 are drawn over the landscape of x, y."""

    name: str = MISSING
    #: the two parameters drawn (None: a pair with a valley, see core.landscape.landscape_pair)
    x: Optional[str] = MISSING
    y: Optional[str] = MISSING
    #: grid points per axis of the landscape under the paths
    resolution: int = MISSING


@dataclass
class LandscapeTaskConf(FitTaskConf):
    """task=landscape: the loss over a grid of x × y."""

    #: [low, high] of each axis (None: [0.05, 2] × the true value, or [−1, 1] if it is 0)
    x_range: Optional[list[float]] = MISSING
    y_range: Optional[list[float]] = MISSING


@dataclass
class NoiseStudyTaskConf(LandscapeTaskConf):
    """task=noise_study: the loss along the slice ⊥ the valley (in the x, y plane) under noise."""

    sigmas: list[float] = MISSING
    realizations: int = MISSING
    slice_points: int = MISSING
    slice_halfwidth: float = MISSING
    threshold_fraction: float = MISSING
    show_sigma: float = MISSING
    #: fit every noisy copy with each of these estimators (ls | eiv | tls): the error of
    #: the fitted values vs σ (noise_estimators.csv, fig noise_estimators); [] = none
    estimators: list[str] = field(default_factory=list)


@dataclass
class BenchmarkTaskConf:
    """task=benchmark: q̈ time per solver and number of points, and the fit's whole step."""

    name: str = MISSING
    methods: list[str] = MISSING
    n_points: list[int] = MISSING
    repeats: int = MISSING
    warmup: int = MISSING
    loop_max_points: int = MISSING
    max_seconds_per_call: float = MISSING
    reference: str = MISSING
    step_starts: int = MISSING
    step_points: int = MISSING
    step_methods: list[str] = MISSING
    step_expected_calls: int = MISSING


@dataclass
class SimulateTaskConf:
    """task=simulate: integrate the system from initial states, write trajectory.csv."""

    name: str = MISSING
    #: rows [q0.., qd0..] (one per run), or None to draw n_runs states
    initial_states: Optional[Any] = MISSING
    n_runs: int = MISSING
    #: the bounds initial states are drawn in (None: data.q_bounds / data.qd_bounds)
    q_bounds: Optional[list[float]] = MISSING
    qd_bounds: Optional[list[float]] = MISSING
    duration: float = MISSING
    dt: float = MISSING
    method: str = MISSING
    rtol: float = MISSING
    atol: float = MISSING
    noise_q: float = MISSING
    noise_qd: float = MISSING
    velocities: bool = MISSING
    #: applied force per coordinate (numbers), or None
    force: Optional[Any] = MISSING
    vectorize: bool = MISSING
    solver: str = MISSING


#: task name -> the schema of its node (conf/task/NAME.yaml starts from task_NAME_schema;
#: seed_report runs fit, landscape and noise_study in one plane, and takes noise_study's keys)
TASK_SCHEMAS: dict[str, type] = {
    "fit": FitTaskConf,
    "landscape": LandscapeTaskConf,
    "noise_study": NoiseStudyTaskConf,
    "seed_report": NoiseStudyTaskConf,
    "benchmark": BenchmarkTaskConf,
    "simulate": SimulateTaskConf,
}


def register_configs() -> None:
    """Put the schemas in Hydra's ConfigStore; conf/config.yaml and conf/task/*.yaml build on them.

    The task schemas are stored outside the ``task`` group, so ``--help`` does not offer them.
    """
    store = ConfigStore.instance()
    store.store(name="lagfit_schema", node=LagfitConf)
    for name, schema in TASK_SCHEMAS.items():
        if name != "seed_report":  # conf/task/seed_report.yaml starts from noise_study.yaml
            store.store(name=f"task_{name}_schema", node=schema)
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
    "dissipation": "system.dissipation",
    "constants": "system.constants",
    "force_coords": "data.force_coords",
    "data": "data.name",
    "n": "data.n",
    "path": "data.path",
    "columns": "data.columns",
    "solver": "solver.name",
    "compile": "solver.compile",
    "task": "task.name",
    "uncertainty": "uncertainty.name",
    "n_boot": "uncertainty.n_boot",
    "unwrap": "data.unwrap",
    "trim": "data.trim",
    "scale": "data.scale",
    "estimator": "estimator.name",
    "sigma_q": "estimator.sigma_q",
    "sigma_qd": "estimator.sigma_qd",
    "sigma_qdd": "estimator.sigma_qdd",
    # task=simulate (core.simulate's arguments)
    "initial_states": "task.initial_states",
    "n_runs": "task.n_runs",
    "duration": "task.duration",
    "dt": "task.dt",
    "method": "task.method",
    "force": "task.force",
    "noise_qd": "task.noise_qd",
    # the rollout check (core.rollout's arguments)
    "horizon": "rollout.horizon",
    "tolerance": "rollout.tolerance",
}


class ConfigError(Exception):
    """A bad config value found by the checks here: its message is the one line to print."""


def config_message(err: Exception) -> str:
    """The one-line message of an error, naming the config key rather than the argument."""
    argument = getattr(err, "argument", None)  # lagfit_cli.errors.ArgumentError
    if argument is None:
        return str(err)
    head, _, rest = argument.partition(".")
    key = ARGUMENT_KEYS.get(argument) or ARGUMENT_KEYS.get(head, head) + (f".{rest}" if rest else "")
    return f"{key}: {err.detail}"


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"{key}: {message}")


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
    """All checks of a composed config (:func:`validate_static`, then :func:`validate_names`)."""
    validate_static(cfg)
    validate_names(cfg)


def validate_static(cfg: DictConfig) -> None:
    """Keys, ranges and relations: everything this module can tell alone (no torch)."""
    check_known_keys(cfg)
    _check_choice("solver.compile", str(cfg.solver.compile).lower(), {"auto", "true", "false"})
    if cfg.threads < 0:
        _fail("threads", f"must be 0 (torch's default) or a positive count, got {cfg.threads}")
    _check_choice("optim.name", cfg.optim.name, {"gd", "lm"})
    _check_choice("init.name", cfg.init.name, {"box", "decades"})
    _check_choice("uncertainty.name", cfg.uncertainty.name, {"covariance", "bootstrap", "none"})
    if cfg.uncertainty.n_boot < 2:
        _fail("uncertainty.n_boot", f"must be at least 2, got {cfg.uncertainty.n_boot}")
    _check_estimator(cfg)
    _check_positive("init.decades", cfg.init.decades, strict=False)
    for key in ("ftol", "xtol", "gtol"):
        _check_positive(f"optim.{key}", cfg.optim[key], strict=False)
    _check_choice("dtype", cfg.dtype, {"float32", "float64"})
    _check_choice("progress", cfg.progress, {"auto", "true", "false"})
    _check_choice("report.format", cfg.report.format, {"png", "pdf", "svg"})
    _check_choice("report.style", cfg.report.style, {"paper", "slides"})
    if not re.fullmatch(r"cpu|cuda(:[0-9]+)?", cfg.device):
        _fail("device", f"must be 'cpu' or 'cuda[:N]', got {printable(cfg.device)!r}")

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
    _check_bounds("data.q_bounds", cfg.data.q_bounds)
    _check_bounds("data.qd_bounds", cfg.data.qd_bounds)
    _check_bounds("data.t_bounds", cfg.data.t_bounds)
    if cfg.data.force is not None:
        force = list(cfg.data.force)
        if len(force) != 2 or not all(math.isfinite(v) for v in force) or force[0] > force[1]:
            _fail("data.force", f"must be null (no applied force) or finite [low, high] with low <= high, got {force}")
    if cfg.data.force_coords is not None and any(c < 0 for c in cfg.data.force_coords):
        _fail("data.force_coords", f"must be coordinate indices >= 0, got {list(cfg.data.force_coords)}")
    if cfg.data.n < 2:
        _fail("data.n", f"must be at least 2 grid points per state variable, got {cfg.data.n}")

    _check_positive("noise.sigma", cfg.noise.sigma, strict=False)
    if cfg.init.n_starts < 1:
        _fail("init.n_starts", f"must be at least 1, got {cfg.init.n_starts}")
    _check_positive("init.box_width", cfg.init.box_width, strict=False)
    _check_magnitude("init.box_width", cfg.init.box_width, cfg.dtype)
    _check_magnitude("init.center", cfg.init.center, cfg.dtype)
    _check_lr(cfg)
    if cfg.optim.iters < 1:
        _fail("optim.iters", f"must be at least 1, got {cfg.optim.iters}")
    _check_positive("optim.grad_tol", cfg.optim.grad_tol, strict=False)
    _check_positive("optim.loss_tol", cfg.optim.loss_tol, strict=False)
    if cfg.report.dpi < 20:
        _fail("report.dpi", f"must be at least 20, got {cfg.report.dpi}")
    if cfg.check.max_ratio_rel_error is not None:
        _check_positive("check.max_ratio_rel_error", cfg.check.max_ratio_rel_error)
    if cfg.report.history_every < 1:
        _fail("report.history_every", f"must be at least 1, got {cfg.report.history_every}")
    if cfg.report.history_max_rows is not None and cfg.report.history_max_rows < 2:
        _fail("report.history_max_rows", f"must be at least 2 (or null), got {cfg.report.history_max_rows}")
    for key in ("max_memory_gb", "max_work", "max_figure_pixels"):
        if cfg.limits[key] is not None:
            _check_positive(f"limits.{key}", cfg.limits[key])
    validate_data(cfg)
    validate_rollout(cfg.rollout)
    validate_task(cfg.task)


def validate_names(cfg: DictConfig) -> None:
    """Names that the core's registries must know (imports the core, and so torch)."""
    from lagfit_cli.core.data import DATASETS
    from lagfit_cli.core.noise import NOISE_TARGETS
    from lagfit_cli.core.solvers import SOLVERS

    from .tasks import TASKS

    _check_choice("task.name", cfg.task.name, TASKS)
    _check_choice("solver.name", cfg.solver.name, SOLVERS)
    _check_choice("data.name", cfg.data.name, DATASETS)
    from lagfit_cli.core.derivatives import DERIVATIVES

    _check_choice("derivatives.name", cfg.derivatives.name, DERIVATIVES)
    _check_choice("noise.apply_to", cfg.noise.apply_to, NOISE_TARGETS)


def check_known_keys(node: Any, prefix: str = "") -> None:
    """Refuse keys the schema does not know (``+key=...`` adds them past Hydra's own check)."""
    schema = OmegaConf.get_type(node)
    if not (isinstance(node, DictConfig) and dataclasses.is_dataclass(schema)):
        return  # an untyped node (system.params, data.columns) takes any key
    known = {f.name for f in dataclasses.fields(schema)}
    for key in node.keys():
        if key not in known:
            where = f" of task={node.name}" if prefix == "task." and "name" in node else ""
            _fail(f"{prefix}{key}", f"not a config key{where}; `lagfit run --cfg job` lists them")
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            check_known_keys(child, f"{prefix}{key}.")


#: the largest magnitude of a parameter-sized number: products of four of them stay finite
MAX_MAGNITUDE = {"float64": 1.3e77, "float32": 4.2e9}


def _check_magnitude(key: str, value: float, dtype: str) -> None:
    limit = MAX_MAGNITUDE.get(dtype, MAX_MAGNITUDE["float32"])
    if math.isfinite(value) and abs(value) > limit:
        _fail(key, f"{value:g} is too large for {dtype} arithmetic (the loss multiplies such "
                   f"numbers; at most {limit:g})")


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


ESTIMATOR_NAMES = ("ls", "eiv", "tls")


def _check_estimator(cfg: DictConfig) -> None:
    """estimator.name, and each σ: null, auto, or a finite number >= 0."""
    _check_choice("estimator.name", cfg.estimator.name, ESTIMATOR_NAMES)
    for key in ("sigma_q", "sigma_qd", "sigma_qdd"):
        value = cfg.estimator[key]
        if value is None or value == "auto":
            continue
        number = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not (number and math.isfinite(value) and value >= 0):
            _fail(f"estimator.{key}", f"must be a finite number >= 0, auto, or null (the noise config's), got {printable(str(value))!r}")


def _check_range(key: str, value: Any) -> None:
    if value is not None:
        _check_bounds(key, value)


def validate_task(task: DictConfig) -> None:
    """The keys of the chosen task's node (each task has its own; see TASK_SCHEMAS)."""
    if task is None or "name" not in task:
        _fail("task", "needs a task; choose one with task=NAME (lagfit run --help lists them)")
    schema = TASK_SCHEMAS.get(task.name)
    if schema is None:
        return  # a task registered by a plugin checks its own keys
    if "x" in task and task.x is not None and task.x == task.y:
        _fail("task.y", f"must differ from task.x (both are {task.x!r})")
    if "resolution" in task and task.resolution < 2:
        _fail("task.resolution", f"must be at least 2, got {task.resolution}")
    if "x_range" in task:
        _check_range("task.x_range", task.x_range)
        _check_range("task.y_range", task.y_range)
    if "sigmas" in task:
        if len(task.sigmas) < 1:
            _fail("task.sigmas", "must name at least one σ")
        for sigma in task.sigmas:
            _check_positive("task.sigmas", sigma)
        if task.realizations < 1:
            _fail("task.realizations", f"must be at least 1, got {task.realizations}")
        if task.slice_points < 3:
            _fail("task.slice_points", f"must be at least 3, got {task.slice_points}")
        _check_positive("task.slice_halfwidth", task.slice_halfwidth)
        _check_positive("task.threshold_fraction", task.threshold_fraction)
        _check_positive("task.show_sigma", task.show_sigma)
        for name in task.get("estimators") or []:
            _check_choice("task.estimators", name, ESTIMATOR_NAMES)
    if "methods" in task:
        validate_benchmark(task)
    if task.name == "simulate":
        validate_simulate(task)


#: scipy solve_ivp's explicit methods (core.simulate.METHODS; not imported: no torch here)
INTEGRATION_METHODS = ("DOP853", "RK45", "RK23")


def validate_rollout(rollout: DictConfig) -> None:
    _check_positive("rollout.horizon", rollout.horizon)
    _check_positive("rollout.tolerance", rollout.tolerance)
    _check_choice("rollout.method", rollout.method, INTEGRATION_METHODS)
    _check_positive("rollout.rtol", rollout.rtol)
    _check_positive("rollout.atol", rollout.atol)


#: the most samples (runs × times) task=simulate writes
MAX_SIMULATED_SAMPLES = 10_000_000


def validate_simulate(task: DictConfig) -> None:
    _check_positive("task.duration", task.duration)
    _check_positive("task.dt", task.dt)
    if task.dt > task.duration:
        _fail("task.dt", f"the sampling interval {task.dt:g} s is longer than task.duration={task.duration:g} s")
    _check_choice("task.method", task.method, INTEGRATION_METHODS)
    _check_positive("task.rtol", task.rtol)
    _check_positive("task.atol", task.atol)
    _check_positive("task.noise_q", task.noise_q, strict=False)
    _check_positive("task.noise_qd", task.noise_qd, strict=False)
    if task.initial_states is None and task.n_runs < 1:
        _fail("task.n_runs", f"must be at least 1, got {task.n_runs}")
    _check_range("task.q_bounds", task.q_bounds)
    _check_range("task.qd_bounds", task.qd_bounds)
    runs = len(task.initial_states) if task.initial_states is not None and not isinstance(task.initial_states, (int, float, str)) else task.n_runs
    samples = runs * (task.duration / task.dt + 1)
    if samples > MAX_SIMULATED_SAMPLES:
        _fail("task.dt", f"{runs} runs × {task.duration:g} s / {task.dt:g} s are about {samples:.3g} samples, "
              f"more than {MAX_SIMULATED_SAMPLES:,}; raise task.dt or lower task.duration / task.n_runs")


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
    trim = list(cfg.data.trim)
    if len(trim) != 2 or any(not (math.isfinite(v) and v >= 0) for v in trim):
        _fail("data.trim", f"must be [start, end], seconds >= 0 dropped at each run's ends, got {trim}")
    if cfg.data.outliers is not None:
        _check_positive("data.outliers", cfg.data.outliers)
    if cfg.data.name == "trajectory" and cfg.noise.sigma > 0 and cfg.noise.apply_to != "inputs":
        _fail("noise.apply_to", "data=trajectory estimates q̈ from the positions; noise can only go on the inputs (q, q̇)")
    if cfg.derivatives.name == "weak" and cfg.data.name == "trajectory" and cfg.optim.name != "lm":
        _fail("optim.name", "derivatives=weak is fitted with lm only (optim=lm)")
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


def validate_benchmark(task: DictConfig) -> None:
    b = task
    if not b.methods:
        _fail("task.methods", "must name at least one solver")
    if not b.n_points or min(b.n_points) < 1:
        _fail("task.n_points", f"must be a list of point counts >= 1, got {list(b.n_points)}")
    for key in ("repeats", "step_expected_calls"):
        if b[key] < 1:
            _fail(f"task.{key}", f"must be at least 1, got {b[key]}")
    for key in ("warmup", "step_starts", "loop_max_points"):
        if b[key] < 0:
            _fail(f"task.{key}", f"must be >= 0, got {b[key]}")
    if b.step_starts and b.step_points < 1:
        _fail("task.step_points", f"must be at least 1, got {b.step_points}")
    _check_positive("task.max_seconds_per_call", b.max_seconds_per_call)
