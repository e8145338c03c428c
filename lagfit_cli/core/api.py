r"""The Python API: ``fit`` one Lagrangian to one dataset, and read a CSV.

    import lagfit_cli as lf
    data = lf.read_csv("examples/pendulum.csv", columns={"q0": "theta", "qd0": "omega", "qdd0": "alpha"})
    result = lf.fit("0.5*m*l**2*qd**2 + m*g*l*cos(q)", data, params={"m": None, "l": None, "g": None})
    result.table()    # one row per parameter as reported
    result.metrics    # what metrics.json holds

``lagfit run`` (task=fit) is a thin layer over :func:`fit_dataset`: it builds the system and
data from the config, calls it with the config's options and writes what it returns. The
defaults of :class:`FitOptions` are the CLI's (a test composes the CLI config and compares).

What a fit does, in order:

1. **Residual model** (``solvers.jacobian``): q̈ residuals and their Jacobian, through the
   parameter-linear basis when L is linear in θ or in coefficients c(θ).
2. **Starts** (``starts``): ``n_starts`` draws (log-uniform over decades around
   ``init_center`` by default; the report's ±box around the truth with ``init="box"``),
   redrawn where the mass matrix is not definite on the data; plus, where the equation-error
   system exists, the **exact start** solved from it in one SVD.
3. **Optimiser**: ``lm`` (Levenberg–Marquardt in the gauge-fixed coordinates, ``lm``) or
   ``gd`` (the report's gradient descent with eq. 2's rate, ``fit``).
4. **Verdict**: each start's status; whether the best start converged and whether the
   starts that reached the lowest loss agree on the reported values; identifiability from
   the Jacobian at the best fit (``identify``); the residual RMS relative to q̈'s RMS.
   ``fit_ok`` is False, with a warning saying what to try, when the fit cannot be trusted.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import torch
from torch import Tensor

from lagfit_cli.core.data import Dataset
from lagfit_cli.core.datafile import column_names, read_states
from lagfit_cli.errors import ArgumentError, LagfitError
from lagfit_cli.core.fit import (
    CONVERGED,
    STATUSES,
    FitResult,
    gradient_descent,
    relative_error,
    reported_values,
)
from lagfit_cli.core.identify import Identifiability, identifiability
from lagfit_cli.core.profiles import Profiles, profile_values
from lagfit_cli.core.uncertainty import (
    METHODS as UNCERTAINTY_METHODS,
    Uncertainty,
    bootstrap_uncertainty,
    covariance_uncertainty,
    none_uncertainty,
)
from lagfit_cli.core.lm import levenberg_marquardt
from lagfit_cli.core.eiv import check_estimator, estimate
from lagfit_cli.core.random import generator
from lagfit_cli.core.solvers import check_mass_matrix, make_loss_and_grad
from lagfit_cli.core.solvers.jacobian import ResidualModel, coefficient_jacobian, make_residual_model
from lagfit_cli.core.starts import initial_guesses
from lagfit_cli.core.step_size import auto_lr
from lagfit_cli.core.systems import SYSTEMS, ParameterRatio, System, build_system
from lagfit_cli.core.weak import WeakModel, WeakOptions

DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: reported values of starts at the best loss agree when within this relative distance
AGREEMENT_RTOL = 1e-6
#: starts whose loss is within this factor (plus the rounding floor) of the best reached it
SAME_LOSS_RTOL = 1e-6
#: residual RMS / q̈ RMS above this: the model leaves part of the data unexplained
ADEQUACY_WARN = 1e-3
#: residual RMS / q̈ RMS above this: the model explains almost nothing (< 10 % of q̈'s
#: variance), whatever the optimiser says: not trustworthy. Noise alone stays below it: on
#: the harmonic grid, σ = 1 on q, q̇ (the report's "no valley") leaves about 0.87
MODEL_FAIL = 0.95
#: the exact start for coefficients c(θ): θ matched to ĉ from this many starts, iterations
MATCH_STARTS, MATCH_ITERS = 4, 50
#: a residual whose variance the velocities explain beyond this fraction (R²), when the
#: model also leaves more than ADEQUACY_WARN of q̈ unexplained, is a missing term (friction)
VELOCITY_R2_FAIL = 0.5
#: statuses whose reported value q̈ determines
IDENTIFIABLE = ("ratio", "absolute")


@dataclass(frozen=True)
class FitOptions:
    """How a fit runs; the defaults are the command line's (``conf/optim``, ``conf/init``)."""

    optimizer: str = "lm"
    n_starts: int = 16
    #: iterations: None = the optimiser's default (lm 100, gd 1000)
    iters: Optional[int] = None
    init: str = "decades"
    init_center: float = 1.0
    #: decades either side of the centre (init="decades"), or the box half-width ("box")
    init_width: float = 1.0
    exact_start: bool = True
    solver: str = "fast"
    compile: str = "auto"
    seed: int = 0
    device: str = "cpu"
    dtype: str = "float64"
    # lm
    ftol: float = 1e-10
    xtol: float = 1e-10
    gtol: float = 1e-8
    # gd (the seed report's eq. 2)
    lr: Union[float, str] = 0.1
    adaptive: bool = True
    grad_tol: float = 1e-12
    loss_tol: float = 1e-24
    auto_step_fraction: float = 0.1
    auto_samples: int = 256
    #: gd's history keeps every k-th iteration, and at most this many rows (None: all)
    history_every: int = 1
    history_max_rows: Optional[int] = 10000
    #: error bars: covariance (s²(JᵀJ)⁻¹, delta method) | bootstrap | none (``uncertainty``)
    uncertainty: str = "covariance"
    #: uncertainty="bootstrap": resamples of the rows, refitted as one batch
    n_boot: int = 200
    #: profiles of the loss along each identifiable value (``core.profiles``): K LM batches
    profiles: bool = True
    #: fit the weak form of the Euler–Lagrange equation (``core.weak``, ``derivatives=weak``)
    #: instead of q̈: needs data with times (``data=trajectory``); None = the q̈ residuals
    weak: Optional[WeakOptions] = None
    #: ls (least squares on q̈, the default) | eiv (errors in variables: orthogonal distance
    #: regression, ``core.eiv``) | tls (bias-corrected equation error, L linear in θ or c(θ))
    estimator: str = "ls"
    #: the noise σ on q, q̇, q̈ that eiv/tls assume: a number >= 0 or "auto" (``core.eiv``)
    sigma_q: Union[float, str, None] = None
    sigma_qd: Union[float, str, None] = None
    sigma_qdd: Union[float, str, None] = None

    @property
    def n_iters(self) -> int:
        return self.iters if self.iters is not None else DEFAULT_ITERS[self.optimizer]


DEFAULT_ITERS = {"lm": 100, "gd": 1000}
OPTIMIZERS = tuple(DEFAULT_ITERS)


@dataclass
class FitReport:
    """What ``fit`` returns: the fit, its verdict, and everything metrics.json holds."""

    system: System
    data: Dataset
    result: FitResult
    #: how each parameter is reported, as the data determine it (``identify``)
    ratios: tuple[ParameterRatio, ...]
    identifiability: Optional[Identifiability]
    truth: Tensor  # (P,), NaN where unknown
    metrics: dict[str, Any]
    warnings: list[str]
    exact_start: Optional[int] = None  # index of the exact start among the starts
    #: error bars on the reported values (``core.uncertainty``)
    uncertainty: Optional[Uncertainty] = None
    #: the loss profiled along each identifiable value (``FitOptions.profiles``)
    profiles: Optional[Profiles] = None

    @property
    def fit_ok(self) -> bool:
        return bool(self.metrics["fit_ok"])

    @property
    def best(self) -> int:
        return self.result.best

    @property
    def values(self) -> dict[str, float]:
        """The identifiable values as reported (``k/m``, ``g/l``, absolute names)."""
        return {label: v["estimate"] for label, v in self.metrics["ratios"].items()}

    def table(self):
        """A pandas DataFrame, one row per parameter as reported: name, kind
        (ratio|absolute|gauge|not_identifiable), value, std_error, ci_low, ci_high (the 95 %
        interval), true, rel_error, method (how the error was estimated)."""
        import pandas as pd

        unc = self.uncertainty or none_uncertainty(self.ratios)
        rows = []
        estimates = reported_values(self.system, self.ratios, self.result.theta[self.best])
        truths = reported_values(self.system, self.ratios, self.truth)
        errors = relative_error(estimates, truths)
        index = {name: j for j, name in enumerate(self.system.param_names)}
        for r, row in enumerate(self.ratios):
            # a gauge's "1" is a truth only where its own value was known
            known = bool(torch.isfinite(truths[r])) and bool(torch.isfinite(self.truth[index[row.name]]))
            rows.append(
                {
                    "name": ratio_label(row),
                    "kind": KIND_NAMES[row.status],
                    "value": float(estimates[r]) if row.status in IDENTIFIABLE + ("gauge",) else math.nan,
                    "std_error": float(unc.std_error[r]),
                    "ci_low": float(unc.ci_low[r]),
                    "ci_high": float(unc.ci_high[r]),
                    "true": float(truths[r]) if known else math.nan,
                    "rel_error": float(errors[r]) if known and row.status in IDENTIFIABLE else math.nan,
                    "method": unc.method if row.status in IDENTIFIABLE else "",
                }
            )
        return pd.DataFrame(rows)

    def summary(self) -> list[str]:
        """The console summary: one headline, one line per parameter, warnings."""
        m = self.metrics
        counts = ", ".join(f"{m['n_' + s]} {STATUS_WORDS.get(s, s)}" for s in STATUSES if m["n_" + s])
        lines = [
            f"fit {m['system']} ({m['n_points']} points, {m['optimizer']}): {m['n_starts']} "
            f"start{'s' if m['n_starts'] != 1 else ''}: "
            f"{counts}; best loss {m['best_loss']:.3e} in {m['fit_s']:.2f} s"
        ]
        if m.get("lr_mode") == "auto":
            lines.append(
                f"  optim.lr=auto: ε₀ = {m['optim_lr']:.4g} (largest sampled |∇loss| "
                f"{m['auto_max_grad_norm']:.4g}, longest first step ≤ {m['auto_target_step']:.4g})"
            )
        est = m.get("estimator") or {}
        if est.get("name", "ls") != "ls":
            plain = ", ".join(f"{k} = {v:.6g}" for k, v in est.get("ls_estimates", {}).items())
            lines.append(
                f"  estimator {est['name']} (σ_q = {est['sigma_q']:g}, σ_qd = {est['sigma_qd']:g}, "
                f"σ_qdd = {est['sigma_qdd']:g}); least squares gave {plain}"
            )
        errors = (m.get("uncertainty") or {}).get("values", {})
        for label, r in m["ratios"].items():
            truth = (
                f"true {r['true']:.10g}, rel. error {r['rel_error']:.2e}"
                if r["true"] is not None
                else "true value unknown"
            )
            e = errors.get(label, {})
            shown = format_estimate(r["estimate"], e.get("std_error"), e.get("ci_low"), e.get("ci_high"))
            lines.append(f"  {label} = {shown} ({truth})")
        if m.get("applied_force") and any(row.status == "absolute" for row in self.ratios):
            lines.append("  absolute values: the applied force Q in the data fixes the scale of L and R")
        for row in self.ratios:
            if row.status == "gauge":
                lines.append(f"  {row.name}: gauge (the scale; the ratios above are to it, its value is arbitrary)")
            elif row.status == "unidentifiable":
                lines.append(f"  {row.name}: not identifiable from these data")
        lines.extend(f"WARNING: {w}" for w in self.warnings)
        return lines


#: how the console names each start status
STATUS_WORDS = {"max_iters": "reached the iteration limit"}

#: an error below this fraction of the value is rounding: the value is exact, "± 0"
EXACT_ERROR_RTOL = 1e-12


def format_estimate(value: float, std_error: Optional[float], low: Optional[float] = None, high: Optional[float] = None) -> str:
    """``13.080 ± 0.002 (95 %: 13.076 … 13.084)``: the error to two significant digits and
    the value to the same decimal place; full precision and ``± 0`` when the error is
    rounding (exact data); ``± inf (unbounded)`` when the data do not bound it; the value
    alone, to six significant digits, when there is no error."""
    if std_error is not None and math.isinf(std_error) and math.isfinite(value):
        return f"{value:.6g} ± inf (unbounded)"
    if std_error is None or not math.isfinite(std_error):
        return f"{value:.6g}"
    if std_error <= EXACT_ERROR_RTOL * max(abs(value), 1e-300):
        return f"{value:.10g} ± 0"
    decimals = max(0, 1 - math.floor(math.log10(std_error)))
    text = f"{value:.{decimals}f} ± {std_error:.{decimals}f}"
    if low is not None and high is not None and math.isfinite(low) and math.isfinite(high):
        text += f" (95 %: {low:.{decimals}f} … {high:.{decimals}f})"
    return text


KIND_NAMES = {
    "ratio": "ratio",
    "absolute": "absolute",
    "gauge": "gauge",
    "unidentifiable": "not_identifiable",
}


def ratio_label(row: ParameterRatio) -> str:
    """How a parameter's reported value is named: ``g/l`` for a ratio, its name otherwise."""
    return f"{row.name}/{row.denominator}" if row.status == "ratio" else row.name


# --------------------------------------------------------------------------- inputs


def read_csv(path: Union[str, Path], columns: Optional[Mapping[str, str]] = None, dof: Optional[int] = None) -> Dataset:
    """A dataset from a CSV file with columns q0.., qd0.., qdd0.. (or mapped by ``columns``,
    lagfit's name -> the file's header). ``dof``: the number of coordinates (default: as
    many as the file's q columns)."""
    path = Path(path).expanduser()
    mapping = dict(columns or {})
    if dof is None:
        dof = _count_coordinates(path, mapping)
    states = read_states(path, dof, mapping, min_rows=1)
    return Dataset(states["q"], states["qd"], states["qdd"])


def _count_coordinates(path: Path, mapping: Mapping[str, str]) -> int:
    import pandas as pd

    if not path.is_file():
        raise ArgumentError("path", f"{path}: no such file")
    try:
        header = pd.read_csv(path, nrows=0, skipinitialspace=True).columns
    except Exception as err:  # noqa: BLE001  any parse failure is the file's problem
        raise ArgumentError("path", f"{path}: not a readable CSV file ({err})") from None
    present = {str(c).strip() for c in header} | {k for k, v in mapping.items()}
    dof = 0
    while f"q{dof}" in present or mapping.get(f"q{dof}") in present:
        dof += 1
    if dof == 0:
        raise ArgumentError("columns", f"{path}: no column q0 (map yours with columns={{'q0': ...}})")
    return dof


def as_dataset(data: Any, dof: Optional[int] = None) -> Dataset:
    """A ``Dataset``, or a mapping / DataFrame of arrays named q0.., qd0.., qdd0.., with
    optional applied forces Q0.. (all or none) and times t."""
    if isinstance(data, Dataset):
        return data
    if hasattr(data, "to_dict") and hasattr(data, "columns"):  # a pandas DataFrame
        data = {str(c): data[c].to_numpy() for c in data.columns}
    if not isinstance(data, Mapping):
        raise ArgumentError("data", f"expected a Dataset, a dict or a DataFrame, got {type(data).__name__}")
    if dof is None:
        dof = sum(1 for key in data if re.fullmatch(r"q\d+", str(key)))
    needed = column_names(dof)
    missing = [name for name in needed if name not in data]
    if dof == 0 or missing:
        raise ArgumentError("data", f"needs arrays named {', '.join(needed or ['q0', 'qd0', 'qdd0'])}; missing {', '.join(missing) or 'q0'}")
    forces = [f"Q{i}" for i in range(dof)]
    present = [name for name in forces if name in data]
    if present and len(present) != dof:
        raise ArgumentError("data", f"applied forces need one array per coordinate ({', '.join(forces)}); missing {', '.join(n for n in forces if n not in data)}")
    optional = present + (["t"] if "t" in data else [])
    arrays = {name: torch.from_numpy(np.ascontiguousarray(data[name], dtype=np.float64)) for name in needed + optional}
    stack = lambda kind: torch.stack([arrays[f"{kind}{i}"] for i in range(dof)], dim=1)  # noqa: E731
    return Dataset(
        stack("q"), stack("qd"), stack("qdd"),
        t=arrays.get("t"), Q=stack("Q") if present else None,
    )


def as_system(
    system: Union[str, System], params: Optional[Mapping[str, Optional[float]]],
    dissipation: Optional[str] = None,
) -> System:
    """A ``System`` from a built-in name, an expression (with ``params`` and optionally a
    Rayleigh ``dissipation`` expression over the same parameters), or itself."""
    if dissipation is not None and (isinstance(system, System) or (isinstance(system, str) and system in SYSTEMS and system != "custom")):
        raise ArgumentError("dissipation", "is for a Lagrangian given as an expression; a built-in system or a System brings its own")
    if isinstance(system, System):
        return system
    if not isinstance(system, str):
        raise ArgumentError("system", f"expected a system name, an expression or a System, got {type(system).__name__}")
    if system in SYSTEMS and system != "custom":
        spec = {"name": system, "params": dict(params) if params else None}
        built = SYSTEMS.lookup(system)(spec)
        if params:
            build_system({"name": system, "params": dict(params)})  # names must match
        return built
    if params is None:
        raise ArgumentError("params", "an expression needs its parameters, e.g. params={'m': None, 'k': None}")
    return build_system({"name": "custom", "lagrangian": system, "params": dict(params), "dissipation": dissipation})


def _truth(system: System, params: Optional[Mapping[str, Optional[float]]], truth: Optional[Mapping[str, float]]) -> Tensor:
    """(P,) float64: a value where the caller gave one (``truth``, or a number in
    ``params``), NaN elsewhere. Built-in defaults are never truths."""
    given = dict(truth or {})
    for name, value in (params or {}).items():
        if value is not None:
            given.setdefault(name, value)
    unknown = [n for n in given if n not in system.param_names]
    if unknown:
        raise ArgumentError("truth", f"unknown parameter {unknown[0]!r}; parameters: {', '.join(system.param_names)}")
    return torch.tensor([float(given.get(n, math.nan)) for n in system.param_names], dtype=torch.float64)


# --------------------------------------------------------------------------- fit


def fit(
    system: Union[str, System],
    data: Any,
    *,
    params: Optional[Mapping[str, Optional[float]]] = None,
    truth: Optional[Mapping[str, float]] = None,
    gauge: Optional[str] = None,
    on_iteration: Optional[Callable[[int, Tensor], None]] = None,
    derivatives: Union[str, Mapping[str, Any], None] = None,
    dissipation: Optional[str] = None,
    **options: Any,
) -> FitReport:
    """Fit the parameters of a Lagrangian to data.

    Args:
        system: a built-in name (``"double_pendulum"``), an expression in q0.., qd0..
            (``"0.5*m*qd**2 - 0.5*k*q**2"``, with ``params``), or a ``System``.
        data: a ``Dataset`` (e.g. from :func:`read_csv`), or a dict / DataFrame of arrays
            named q0.., qd0.., qdd0.. (optionally applied forces Q0.. and times t); or time series: ``Trajectories`` or the path (or glob)
            of a trajectory CSV (``core.trajectory_file``; docs/trajectories.md).
        derivatives: for time series, how q̇, q̈ are estimated: ``"spline"`` (default),
            ``"savgol"``, ``"finite_difference"`` or ``"weak"`` (no q̈: the weak form), or a
            mapping with the keys of ``conf/derivatives`` (``{"name": "savgol", "window": 31}``).
        params: for an expression, its parameters in order, each a known value or None.
        truth: known true values to report errors against (nothing else is a truth).
        gauge: the parameter ratios are reported against (where the data allow).
        dissipation: for an expression, a Rayleigh function R over the same ``params``
            (``"0.5*c*qd**2"``): the fit then solves d/dt ∂L/∂q̇ − ∂L/∂q + ∂R/∂q̇ = Q.
        options: any field of :class:`FitOptions` (n_starts, iters, optimizer, solver,
            seed, device, dtype, init, init_center, init_width, ...).
    """
    unknown = sorted(set(options) - set(FitOptions.__dataclass_fields__))
    if unknown:
        raise ArgumentError(unknown[0], f"not an option of fit; options: {', '.join(FitOptions.__dataclass_fields__)}")
    built = as_system(system, params, dissipation)
    dataset, weak = _time_series(data, built.dof, derivatives)
    if weak is not None:
        options.setdefault("weak", weak)
    opts = FitOptions(**options)
    if dataset is None:
        dataset = as_dataset(data, built.dof)
    if dataset.dof != built.dof:
        raise ArgumentError("data", f"has {dataset.dof} coordinates, the system {built.dof}")
    return fit_dataset(built, dataset, _truth(built, params, truth), opts, gauge=gauge, on_iteration=on_iteration)


def _time_series(data: Any, dof: int, derivatives) -> tuple[Optional[Dataset], Optional[WeakOptions]]:
    """(Dataset, weak options) for Trajectories or a trajectory file; (None, None) otherwise."""
    from lagfit_cli.core.derivatives import estimate_dataset, required_samples
    from lagfit_cli.core.trajectory import Trajectories
    from lagfit_cli.core.trajectory_file import read_trajectories

    spec = {"name": derivatives or "spline"} if not isinstance(derivatives, Mapping) else dict(derivatives)
    spec.setdefault("name", "spline")
    if spec["name"] == "weak":
        spec.setdefault("window", WeakOptions.window)
    if isinstance(data, (str, Path)):
        need, _, why = required_samples(spec)
        data = read_trajectories(data, dof=dof, min_samples=need, need_text=why)
    if not isinstance(data, Trajectories):
        if derivatives is not None:
            raise ArgumentError("derivatives", "is for time series (Trajectories or a trajectory CSV path)")
        return None, None
    if data.dof != dof:
        raise ArgumentError("data", f"has {data.dof} coordinates, the system {dof}")
    weak = None
    if spec["name"] == "weak":
        weak = WeakOptions(**{k: spec[k] for k in ("window", "overlap", "power") if k in spec})
    return estimate_dataset(data, spec), weak


def check_options(opts: FitOptions) -> None:
    """One clear error per bad option (the CLI checks the same keys before any work)."""
    if opts.optimizer not in OPTIMIZERS:
        raise ArgumentError("optimizer", f"must be one of {', '.join(OPTIMIZERS)}; got {opts.optimizer!r}")
    if opts.n_starts < 1:
        raise ArgumentError("n_starts", f"must be at least 1, got {opts.n_starts}")
    if opts.n_iters < 1:
        raise ArgumentError("iters", f"must be at least 1, got {opts.n_iters}")
    if opts.uncertainty not in UNCERTAINTY_METHODS:
        raise ArgumentError("uncertainty", f"must be one of {', '.join(UNCERTAINTY_METHODS)}; got {opts.uncertainty!r}")
    if opts.n_boot < 2:
        raise ArgumentError("n_boot", f"must be at least 2, got {opts.n_boot}")
    if opts.dtype not in DTYPES:
        raise ArgumentError("dtype", f"must be float32 or float64, got {opts.dtype!r}")
    if not (math.isfinite(opts.init_width) and opts.init_width >= 0):
        raise ArgumentError("init_width", f"must be a finite number >= 0, got {opts.init_width}")
    check_estimator(opts)


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ArgumentError("device", f"must be 'cpu' or 'cuda[:N]', got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ArgumentError("device", f"{name!r} was asked for, but torch sees no CUDA device")
    return device


def has_applied_force(data: Dataset) -> bool:
    """Whether the data carry a known applied force: a Q column that is not zero everywhere
    (a zero force fixes no scale)."""
    return data.Q is not None and bool((data.Q != 0).any())


def _check_extras(system: System, data: Dataset) -> None:
    """One clear error for times or forces of the wrong shape, or a timed L without times."""
    n, dof = data.q.shape
    if data.Q is not None and tuple(data.Q.shape) != (n, dof):
        raise ArgumentError("Q", f"applied forces must be (N, D) = ({n}, {dof}), got {tuple(data.Q.shape)}")
    if data.t is not None and tuple(data.t.shape) != (n,):
        raise ArgumentError("t", f"times must be one per state ({n},), got {tuple(data.t.shape)}")
    for name, values in (("Q", data.Q), ("t", data.t)):
        if values is not None and not bool(torch.isfinite(values).all()):
            raise ArgumentError(name, f"{'applied forces' if name == 'Q' else 'times'} must be finite numbers")
    if system.time_dependent and data.t is None:
        raise ArgumentError(
            "t", f"system {system.name!r} depends on time t, but the data have no times "
            "(give them a time column t)"
        )


def fit_dataset(
    system: System,
    data: Dataset,
    truth: Tensor,
    opts: FitOptions = FitOptions(),
    *,
    gauge: Optional[str] = None,
    on_iteration: Optional[Callable[[int, Tensor], None]] = None,
) -> FitReport:
    """``fit`` on built objects: the entry point the command line shares with ``fit``.

    Args:
        truth: (P,) float64, NaN where unknown.
    """
    check_options(opts)
    if opts.weak is not None and opts.optimizer != "lm":
        raise ArgumentError("optimizer", "the weak form (derivatives=weak) is fitted with lm only")
    if opts.weak is not None and opts.estimator != "ls":
        raise ArgumentError(
            "estimator", f"estimator={opts.estimator} corrects noisy q, q̇ on the q̈ residuals; the weak "
            "form (derivatives=weak) has none: use estimator=ls with it, or a derivatives method with eiv"
        )
    check_estimator(opts, data, system)  # the σ's eiv/tls need, before any work
    dtype, device = DTYPES[opts.dtype], resolve_device(opts.device)
    system.parameter_ratios(gauge)  # an impossible gauge fails here, before any work
    data = data.to(dtype, device)
    _check_extras(system, data)
    notes: list[str] = []
    forced = has_applied_force(data)
    if forced:  # a known force fixes L's (and R's) overall scale: values become absolute
        system = system.with_forces()
        if gauge is not None and not any(gauge in group for group in system.scale_groups):
            notes.append(
                f"system.gauge={gauge} is not used: the applied force in the data fixes the "
                "scale, so the values are absolute"
            )
            gauge = None
    started = time.perf_counter()
    if opts.weak is not None:
        model = WeakModel(system, data, opts.weak)
    else:
        model = make_residual_model(
            system, data.q, data.qd, data.qdd, compile=_basis_compile(opts.compile), t=data.t, Q=data.Q
        )

    # starts: the box is centred on the truth where one is known (the report's method)
    center = torch.full((system.n_params,), float(opts.init_center), dtype=torch.float64)
    if opts.init == "box":
        center = torch.where(torch.isnan(truth), center, truth)
    draws, unusable = initial_guesses(
        opts.init, center, opts.n_starts, opts.init_width, generator(opts.seed, "init"),
        usable=lambda theta: model.mass_ok(theta.to(dtype=dtype, device=device)).cpu(),
    )
    theta0 = draws.to(dtype=dtype, device=device)
    exact = None
    exact_info: dict[str, Any] = {"available": False}
    if opts.exact_start and opts.optimizer == "lm":
        exact, exact_info = equation_error_start(system, model, theta0, _free(system, gauge, device))
        if exact is not None:
            theta0 = torch.cat([theta0, exact[None]])

    if opts.optimizer == "lm":
        scale = _rms(data.qdd)
        if opts.weak is not None:  # the weak terms' own scale: at the exact start (the data's
            # solution) where there is one, else the median over a few starts
            scale = (model.reference_rms(exact) if exact is not None
                     else float(np.median([model.reference_rms(th) for th in theta0[-4:]])))
        floor = 0.5 * model.n_residuals * (64 * torch.finfo(dtype).eps * scale) ** 2
        result = levenberg_marquardt(
            model, theta0, _free(system, gauge, device), iters=opts.n_iters,
            ftol=opts.ftol, xtol=opts.xtol, gtol=opts.gtol, floor=floor, on_iteration=on_iteration,
        )
    else:
        result = _gradient_descent(system, data, truth, opts, theta0, on_iteration)
    estimated = None
    if opts.estimator != "ls":
        ls_result = result
        estimated = estimate(system, data, model, result, _free(system, gauge, device), opts)
        result = estimated.result
    fit_s = time.perf_counter() - started

    best = result.best
    residual, jacobian = model.residuals_and_jacobian(result.theta[best : best + 1])
    ident = identifiability(system, jacobian[0], result.theta[best], gauge)
    ratios = ident.ratios
    warnings: list[str] = notes
    reference = model.reference_rms(result.theta[best]) if opts.weak is not None else None
    metrics = _metrics(system, data, truth, opts, result, ratios, ident, fit_s, warnings, reference)
    if opts.weak is not None:
        metrics["weak"] = model.info()
    else:  # compares q̈ residuals with q̇ (not the weak form's residuals)
        _check_missing_friction(data, residual[0], metrics, warnings, system.dissipation is not None)
    metrics["applied_force"] = forced
    metrics["dissipation"] = system.dissipation is not None
    metrics["time_dependent"] = system.time_dependent
    started = time.perf_counter()
    if estimated is not None:
        uncertainty = estimated.uncertainty(system, ratios, result.theta[best], opts)
        metrics["estimator"] = estimated.metrics(system, ratios, ls_result, truth)
        warnings.extend(estimated.warnings)
    else:
        uncertainty = _uncertainty(system, data, model, opts, result.theta[best], ratios, residual[0], jacobian[0], gauge)
        metrics["estimator"] = {"name": "ls"}
    metrics["uncertainty"] = uncertainty.metrics(reported_values(system, ratios, result.theta[best].cpu().double()))
    metrics["uncertainty_s"] = time.perf_counter() - started
    warnings.extend(uncertainty.warnings)
    profiles = None
    # the profiles are of the least-squares loss: an eiv/tls estimate is not its minimum
    if opts.profiles and estimated is None:
        started = time.perf_counter()
        profiles = profile_values(
            system, ratios, model, result.theta[best], _free(system, gauge, device),
            std_error=uncertainty.std_error, dof=uncertainty.dof,
            iters=opts.n_iters if opts.optimizer == "lm" else DEFAULT_ITERS["lm"],
            ftol=opts.ftol, xtol=opts.xtol, gtol=opts.gtol,
        )
        metrics["profiles"] = profiles.metrics()
        metrics["profiles_s"] = time.perf_counter() - started
        warnings.extend(profiles.warnings)
    metrics["exact_start"] = {**exact_info, "index": len(draws) if exact is not None else None}
    metrics["starts_unusable"] = unusable
    return FitReport(
        system, data, result, ratios, ident, truth.to(dtype=dtype, device=device), metrics, warnings,
        exact_start=len(draws) if exact is not None else None, uncertainty=uncertainty,
        profiles=profiles,
    )


def _check_missing_friction(
    data: Dataset, residual: Tensor, metrics: dict[str, Any], warnings: list[str], has_friction: bool
) -> None:
    """Fail the verdict when the best fit's residual is a function of the velocities.

    Measurement noise leaves a residual that no simple function of the state predicts; a
    missing friction term (a conservative L fitted to damped motion) leaves one that is
    nearly linear in q̇. The residual of each coordinate is regressed on (1, q̇₀, …, q̇_{D−1});
    if that explains more than ``VELOCITY_R2_FAIL`` of its variance while the model misses
    more than ``ADEQUACY_WARN`` of q̈'s RMS at a converged best start, the fit is not
    trustworthy (``fit_ok`` False).
    """
    n, dof = data.q.shape
    res = residual.detach().to(torch.float64).reshape(n, dof)
    features = torch.cat((torch.ones(n, 1, dtype=torch.float64, device=res.device), data.qd.to(torch.float64)), dim=1)
    total = float(res.square().sum())
    if n <= features.shape[1] or total == 0.0:
        metrics["residual_velocity_r2"] = None
        return
    solution = torch.linalg.lstsq(features.cpu(), res.cpu()).solution
    explained = 1.0 - float((res.cpu() - features.cpu() @ solution).square().sum()) / total
    metrics["residual_velocity_r2"] = explained
    converged = metrics["best_status"] == CONVERGED  # else the warning about that says it
    if converged and explained > VELOCITY_R2_FAIL and metrics["relative_residual_rms"] > ADEQUACY_WARN:
        metrics["fit_ok"] = False
        remedy = (
            "add a dissipation function (system.dissipation)" if not has_friction
            else "the dissipation function does not capture it"
        )
        warnings.append(
            f"the residual is a function of the velocities ({explained:.0%} of its variance is "
            f"linear in q̇): the model misses a velocity-dependent term such as friction; {remedy}"
            " — the fit is not trustworthy"
        )


def _uncertainty(system, data, model, opts, theta, ratios, residual, jacobian, gauge) -> Uncertainty:
    """The error bars ``opts.uncertainty`` asks for, at the best start (``core.uncertainty``)."""
    free = _free(system, gauge, theta.device)
    if opts.uncertainty == "covariance":
        return covariance_uncertainty(system, ratios, theta, residual, jacobian, free)
    if opts.uncertainty == "bootstrap":
        return bootstrap_uncertainty(
            system, ratios, model, theta, free, getattr(model, "n_rows", data.n_points), data.dof,
            opts.n_boot, opts.seed,
            iters=opts.n_iters if opts.optimizer == "lm" else DEFAULT_ITERS["lm"],
            ftol=opts.ftol, xtol=opts.xtol, gtol=opts.gtol,
        )
    return none_uncertainty(ratios)


def _basis_compile(choice: Union[str, bool]) -> str:
    return "false" if str(choice).lower() == "false" else "auto"


def _rms(values: Tensor) -> float:
    return float(values.square().mean().sqrt())


def _free(system: System, gauge: Optional[str], device) -> Tensor:
    """The parameters the fit moves: all but each scale group's gauge (and one-member
    groups, which q̈ does not fix at all)."""
    rows = system.parameter_ratios(gauge)
    return torch.tensor([row.status in IDENTIFIABLE for row in rows], dtype=torch.bool, device=device)


def _gradient_descent(system, data, truth, opts, theta0, on_iteration) -> FitResult:
    loss_and_grad = make_loss_and_grad(
        system, data.q, data.qd, data.qdd, opts.solver, opts.compile, expected_calls=opts.n_iters + 1,
        t=data.t if system.time_dependent else None, Q=data.Q,
    )
    lr, lr_info = opts.lr, {"lr_mode": "fixed"}
    if opts.lr == "auto":
        box = opts.init_width
        unit = torch.rand((opts.auto_samples, system.n_params), generator=generator(opts.seed, "auto_lr"), dtype=torch.float64)
        center = torch.where(torch.isnan(truth), torch.full_like(truth, opts.init_center), truth)
        samples = (center + box * (2 * unit - 1)).to(dtype=theta0.dtype, device=theta0.device)
        target = opts.auto_step_fraction * 2 * box
        try:
            choice = auto_lr(loss_and_grad, torch.cat([samples, theta0]), target, opts.adaptive)
        except ValueError as err:
            raise ArgumentError("lr", f"auto cannot choose ε₀: {err}") from None
        lr = choice.lr
        lr_info = {
            "lr_mode": "auto",
            "auto_max_grad_norm": choice.max_grad_norm,
            "auto_target_step": choice.target_step,
            "auto_step_fraction": float(opts.auto_step_fraction),
            "auto_samples": choice.n_samples,
        }
    result = gradient_descent(
        loss_and_grad, theta0, lr=float(lr), iters=opts.n_iters, adaptive=opts.adaptive,
        grad_tol=opts.grad_tol, loss_tol=opts.loss_tol, on_iteration=on_iteration,
        history_every=opts.history_every, history_max_rows=opts.history_max_rows,
    )
    result.lr_info = lr_info
    return result


# --------------------------------------------------------------------------- exact start


def equation_error_start(
    system: System, model: ResidualModel, theta0: Tensor, free: Tensor
) -> tuple[Optional[Tensor], dict[str, Any]]:
    """θ solved from the equation-error system A c = b (``solvers.jacobian``), or None.

    A's columns are scaled to unit norm; its singular values say how many directions of c
    the data leave free (``nullity``: 1 for the overall scale of a homogeneous system).
    For L linear in θ, c is θ; for coefficients c(θ), θ is fitted to c by Levenberg–Marquardt
    from every start (a K-residual problem, no data) and the closest match is kept.
    """
    system_ee = model.equation_error()
    if system_ee is None:
        return None, {"available": False}
    matrix, rhs = system_ee.matrix, system_ee.rhs
    norms = matrix.norm(dim=0)
    norms = torch.where(norms > 0, norms, torch.ones_like(norms))
    scaled = matrix / norms
    _, singular, vh = torch.linalg.svd(scaled, full_matrices=False)
    tolerance = singular[0] * 1e-9 if singular.numel() else 0.0
    nullity = int((singular <= tolerance).sum())
    if system_ee.homogeneous:
        c = vh[-1] / norms
    else:
        c = torch.linalg.lstsq(scaled, rhs[:, None]).solution[:, 0] / norms
    info = {
        "available": True,
        "nullity": nullity,
        "homogeneous": system_ee.homogeneous,
        "singular_value_ratio": float(singular[-1] / singular[0]) if singular.numel() else None,
    }
    if not bool(torch.isfinite(c).all()):
        return None, {**info, "available": False}
    of_params = getattr(model, "of_params", None)
    if of_params is None:
        theta = c.clone()
        if system_ee.homogeneous:  # fix the free scale: the largest start-like magnitude
            theta = theta * (theta0.abs().median() / theta.abs().max())
            gauge = int((~free).nonzero()[0]) if bool((~free).any()) else int(theta.abs().argmax())
            theta = theta * torch.sign(theta[gauge]) if theta[gauge] != 0 else theta
        return theta, info
    return _match_coefficients(of_params, c, system_ee.homogeneous, theta0, free), info


class _CoefficientMatch:
    """Residuals c(θ)/‖c(θ)‖ ∓ ĉ/‖ĉ‖ (homogeneous) or c(θ) − ĉ: θ for given coefficients."""

    def __init__(self, of_params, target: Tensor, normalise: bool) -> None:
        self.of_params, self.target, self.normalise = of_params, target, normalise
        self.n_residuals = target.numel()

    def _residual_fn(self, theta: Tensor) -> Tensor:
        c = self.of_params(theta)
        if self.normalise:
            c = c / c.norm(dim=-1, keepdim=True)
        return c - self.target

    def residuals(self, theta: Tensor) -> Tensor:
        with torch.no_grad():
            return self._residual_fn(theta)

    def residuals_and_jacobian(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        return self.residuals(theta), coefficient_jacobian(self._residual_fn, theta)


def _match_coefficients(of_params, c: Tensor, homogeneous: bool, theta0: Tensor, free: Tensor) -> Optional[Tensor]:
    starts = theta0[:MATCH_STARTS]
    target = c
    if homogeneous:  # ĉ is known up to scale: take the sign the starts' coefficients have
        with torch.no_grad():
            sign = torch.sign((of_params(starts) @ c).sum())
        target = (sign if sign != 0 else 1.0) * c / c.norm()
    model = _CoefficientMatch(of_params, target, homogeneous)
    floor = 0.5 * model.n_residuals * (64 * torch.finfo(target.dtype).eps * float(target.abs().max())) ** 2
    match = levenberg_marquardt(model, starts, free, iters=MATCH_ITERS, floor=floor)
    loss = match.loss.nan_to_num(float("inf"))
    best = int(loss.argmin())
    return match.theta[best] if math.isfinite(float(loss[best])) else None


# --------------------------------------------------------------------------- verdict


def _metrics(system, data, truth, opts, result, ratios, ident, fit_s, warnings, reference=None) -> dict[str, Any]:
    """``reference``: the RMS the residual is judged against (None: q̈'s; the weak form's
    inertial term for ``FitOptions.weak``)."""
    names = system.param_names
    best = result.best
    theta_best = result.theta[best]
    estimates = reported_values(system, ratios, theta_best)
    truths = reported_values(system, ratios, truth.to(theta_best))
    errors = relative_error(estimates, truths)

    def number(value: Tensor):
        return float(value) if bool(torch.isfinite(value)) else None

    identifiable = [r for r, row in enumerate(ratios) if row.status in IDENTIFIABLE]
    reported = {
        ratio_label(ratios[r]): {
            "status": ratios[r].status,
            "estimate": float(estimates[r]),
            "true": number(truths[r]),
            "rel_error": number(errors[r]),
        }
        for r in identifiable
    }
    known_errors = [v["rel_error"] for v in reported.values() if v["rel_error"] is not None]
    counts = {status: result.status.count(status) for status in STATUSES}
    minima = _minima(system, ratios, result, identifiable)
    qdd_rms = _rms(data.qdd) if reference is None else reference
    of_what = "q̈'s RMS" if reference is None else "the weak-form terms' RMS"
    residual_rms = math.sqrt(max(float(result.loss[best]), 0.0))
    relative_residual = residual_rms / qdd_rms if qdd_rms > 0 else math.inf

    best_ok = result.status[best] == CONVERGED
    at_best = minima[0]["starts"] if minima else []
    agree = len([m for m in minima if m["best"]]) <= 1
    if not best_ok:
        warnings.append(
            f"the best start did not converge ({result.status[best]} after {int(result.stop_iter[best])} "
            f"iterations): the values below are not a minimum; try more iterations (iters), "
            f"more starts (n_starts), or optimizer lm"
        )
    if not agree:
        labels = "; ".join(", ".join(f"{k} = {v:.6g}" for k, v in m["values"].items()) for m in minima if m["best"])
        warnings.append(
            f"starts that reach the lowest loss disagree on the reported values ({labels}): "
            "the data do not single out one answer; more varied data or fewer parameters may help"
        )
    hidden = [row.name for row in ratios if row.status == "unidentifiable"]
    structural = {row.name: row.status for row in system.parameter_ratios()}
    newly_hidden = [n for n in hidden if structural.get(n) != "unidentifiable"]
    if newly_hidden:
        warnings.append(
            f"the data do not determine {', '.join(newly_hidden)} (the Jacobian of q̈ has no "
            "component along it): reported as not identifiable"
        )
    explains_nothing = relative_residual > MODEL_FAIL
    if explains_nothing:
        warnings.append(
            f"the model leaves {relative_residual:.1%} of {of_what} unexplained (residual RMS "
            f"{residual_rms:.3g}): it explains almost none of the data; check the data (noise that "
            "swamps q̈, e.g. q̈ differentiated from noisy positions: try derivatives=weak; wrapped "
            "angles: data.unwrap; units; the column mapping) and the Lagrangian — the fit is not trustworthy"
        )
    elif relative_residual > ADEQUACY_WARN and best_ok:
        warnings.append(
            f"the model leaves {relative_residual:.1%} of {of_what} unexplained (residual RMS "
            f"{residual_rms:.3g}): noise in the data, or a missing term (damping, a force)"
        )
    check_warnings = _mass_matrix_warnings(system, data, theta_best)
    warnings.extend(check_warnings)
    fit_ok = best_ok and agree and not explains_nothing
    return {
        "system": system.name,
        "params": list(names),
        "true_params": {n: number(v) for n, v in zip(names, truth)},
        "truth_known": bool(torch.isfinite(truth).all()),
        "n_points": data.n_points,
        "optimizer": opts.optimizer,
        "fit_ok": fit_ok,
        "n_starts": len(result.status),
        **{f"n_{status}": counts[status] for status in STATUSES},
        "best_start": best,
        "best_status": result.status[best],
        "best_loss": float(result.loss[best]),
        "best_params": {n: float(v) for n, v in zip(names, theta_best.tolist())},
        "ratios": reported,
        "gauges": [row.name for row in ratios if row.status == "gauge"],
        "unidentifiable": hidden,
        "max_ratio_rel_error": max(known_errors) if known_errors else None,
        "minima": minima,
        "n_at_best": len(at_best),
        "identifiability": {
            "method": "jacobian at the best fit",
            "condition_number": ident.condition if math.isfinite(ident.condition) else None,
            "full_condition_number": ident.full_condition if math.isfinite(ident.full_condition) else None,
            "null_dimension": ident.null_dimension,
        },
        "relative_residual_rms": relative_residual,
        "residual_rms": residual_rms,
        "warnings": warnings,
        "fit_s": fit_s,
        "optim_lr": result.lr0,
        **result.lr_info,
        "solver": opts.solver,
        "device": str(data.q.device),
        "dtype": opts.dtype,
        "seed": opts.seed,
    }


def _minima(system, ratios, result, identifiable) -> list[dict[str, Any]]:
    """Distinct minima among the converged starts, lowest loss first: each with its reported
    values, loss, starts, and whether it is at the lowest loss (``best``)."""
    values = reported_values(system, ratios, result.theta)[:, identifiable]
    labels = [ratio_label(ratios[r]) for r in identifiable]
    loss = result.loss
    order = [b for b in torch.argsort(loss.nan_to_num(float("inf"))).tolist() if result.status[b] == CONVERGED]
    groups: list[dict[str, Any]] = []
    for b in order:
        for group in groups:
            ref = values[group["starts"][0]]
            scale = ref.abs().clamp_min(1e-300)
            if bool(((values[b] - ref).abs() <= AGREEMENT_RTOL * scale + 1e-12).all()):
                group["starts"].append(b)
                break
        else:
            groups.append({"starts": [b], "loss": float(loss[b])})
    if not groups:
        return []
    lowest = groups[0]["loss"]
    floor = max(abs(lowest) * SAME_LOSS_RTOL, 1e-28)
    return [
        {
            "values": {label: float(v) for label, v in zip(labels, values[g["starts"][0]].tolist())},
            "loss": g["loss"],
            "starts": g["starts"],
            "best": g["loss"] <= lowest + floor,
        }
        for g in groups
    ]


def _mass_matrix_warnings(system: System, data: Dataset, theta: Tensor) -> list[str]:
    """The mass-matrix check at the fitted θ, as a warning (the results are still written)."""
    try:
        check_mass_matrix(system, data.q, data.qd, theta, t=data.t if system.time_dependent else None)
    except LagfitError as err:
        return [f"at the fitted parameters: {err}"]
    return []
