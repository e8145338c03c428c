"""The set-up every task shares: config -> system, truth, solver, clean and noisy data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor

from lagfit_cli.core.data import DataRequest, Dataset, build_dataset
from lagfit_cli.core.solvers import Solver, check_mass_matrix, make_solver
from lagfit_cli.core.solvers.policy import bind_data
from lagfit_cli.errors import LagfitError
from lagfit_cli.core.noise import add_noise
from lagfit_cli.core.random import generator
from lagfit_cli.core.systems import ParameterRatio, System, build_system, true_params

DTYPES = {"float32": torch.float32, "float64": torch.float64}


@dataclass
class Problem:
    system: System
    system_spec: dict[str, Any]
    truth: Tensor  # (P,) in the run's dtype and device; NaN where unknown (params.X=null)
    #: how each parameter is reported (System.parameter_ratios at system.gauge)
    ratios: tuple[ParameterRatio, ...]
    solver: Solver
    clean: Dataset  # noise-free data
    data: Dataset  # what the fit sees (noisy where noise.sigma > 0)
    dtype: torch.dtype
    device: torch.device
    seed: int
    #: centre of the initial-guess box: the truth, or init.center where it is unknown (P,)
    center: Tensor

    @property
    def truth_known(self) -> bool:
        return bool(torch.isfinite(self.truth).all())


def resolve_device(name: str) -> torch.device:
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise LagfitError(f"device: must be 'cpu' or 'cuda[:N]', got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise LagfitError(f"device: {name!r} was asked for, but torch sees no CUDA device")
    return device


def prepare_problem(cfg: DictConfig) -> Problem:
    dtype, device = DTYPES[cfg.dtype], resolve_device(cfg.device)
    spec = OmegaConf.to_container(cfg.system, resolve=True)
    system = build_system(spec)
    ratios = system.parameter_ratios(spec.get("gauge"))
    truth64 = true_params(system, spec)
    center64 = torch.where(torch.isnan(truth64), float(cfg.init.center), truth64)
    solver = make_solver(cfg.solver.name, cfg.solver.compile)
    data_spec = OmegaConf.to_container(cfg.data, resolve=True)
    request = DataRequest(data_spec, system, truth64, solver, generator(cfg.seed, "data"))
    clean64 = build_dataset(request)
    # synthetic data were checked at the truth before their targets were made
    if not clean64.synthetic:
        # measured data: a built-in default is no truth; only values the user gave are
        given = user_given_params(system)
        truth64 = torch.where(
            torch.tensor([n in given for n in system.param_names]), truth64, torch.nan
        )
        center64 = torch.where(torch.isnan(truth64), float(cfg.init.center), truth64)
        check_measured_mass_matrix(system, clean64, truth64, center64)
    check_finite_targets(clean64)
    clean = clean64.to(dtype, device)
    # figures, landscapes and noise studies evaluate q̈ at these states: with their t and Q
    solver = bind_data(solver, clean.t, clean.Q)
    truth = truth64.to(dtype=dtype, device=device)
    noisy = add_noise(clean, cfg.noise.sigma, cfg.noise.apply_to, generator(cfg.seed, "noise"))
    check_finite_noise(noisy, cfg.noise.sigma, cfg.dtype)
    center = center64.to(dtype=dtype, device=device)
    return Problem(
        system, spec, truth, ratios, solver, clean, noisy, dtype, device, cfg.seed, center
    )


def user_given_params(system: System) -> set[str]:
    """The parameters whose value the user gave on the command line (``system.params.X=v``,
    ``system.params={...}``, or a whole ``system=custom``), as Hydra recorded the overrides.
    Outside a Hydra run (tests calling a task directly) every parameter counts as given."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return set(system.param_names)
    given: set[str] = set()
    for override in HydraConfig.get().overrides.task:
        key, _, value = override.lstrip("+~").partition("=")
        if key == "system.params" or (key == "system" and value == "custom"):
            given.update(system.param_names)
        elif key.startswith("system.params."):
            given.add(key.split(".", 2)[2])
    return given


def _values(system: System, theta: Tensor) -> str:
    return "(" + ", ".join(f"{n}={float(v):.4g}" for n, v in zip(system.param_names, theta)) + ")"


def check_measured_mass_matrix(system: System, data: Dataset, truth: Tensor, center: Tensor) -> None:
    """The mass-matrix check for measured data: at the truth, or where the descent starts."""
    t = data.t if system.time_dependent else None
    if bool(torch.isfinite(truth).all()):
        check_mass_matrix(system, data.q, data.qd, truth, t=t)
    else:
        # unknown truths (measured data): check where the descent starts instead
        try:
            check_mass_matrix(system, data.q, data.qd, center, t=t)
        except LagfitError as err:
            raise LagfitError(
                f"{err} [checked at the centre of the initial guesses, θ = "
                f"{_values(system, center)}; unknown values are centred at init.center]"
            ) from None


def check_finite_targets(data: Dataset) -> None:
    if not bool(torch.isfinite(data.qdd).all()):
        n_bad = int((~torch.isfinite(data.qdd)).any(-1).sum())
        raise LagfitError(
            f"q̈ is not finite at {n_bad} of {data.n_points} data points at the true parameters; "
            "check system.params and the state bounds"
        )


def check_finite_noise(data: Dataset, sigma: float, dtype: str) -> None:
    """Noise so large that the noisy data overflow: say so, naming noise.sigma."""
    for name in ("q", "qd", "qdd"):
        values = getattr(data, name)
        if not bool(torch.isfinite(values).all()):
            n_bad = int((~torch.isfinite(values)).any(-1).sum())
            raise LagfitError(
                f"noise.sigma: noise of σ = {sigma:g} makes {n_bad} of {data.n_points} noisy "
                f"{name} values overflow {dtype}; lower noise.sigma"
            )


def problem_metrics(task: str, problem: Problem) -> dict:
    """The head every task's metrics.json starts with: what was run, on which system."""
    names = problem.system.param_names
    return {
        "task": task,
        "system": problem.system.name,
        "params": list(names),
        "true_params": {n: float(v) for n, v in zip(names, problem.truth.tolist())},
        "n_points": problem.data.n_points,
    }
