"""Every config option composes against the schema and passes validation; the wheel ships
every config file."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from omegaconf import open_dict

from conftest import compose
from lagfit_cli import build_system
from lagfit_cli.app.config import ConfigError, validate, validate_static

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


@pytest.fixture(scope="module")
def hydra_compose():
    """Hydra's compose, with the hydra node, inside one initialization for the module."""
    from hydra import compose as hydra_compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from lagfit_cli.app.config import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module("lagfit_cli.conf", version_base="1.3"):
        yield lambda *overrides: hydra_compose("config", list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()


#: every config group a user chooses from (experiment presets compose on their own, below)
GROUPS = ("system", "data", "noise", "init", "optim", "solver", "task", "uncertainty", "derivatives", "estimator")


def composed_and_validated(hydra_compose, *overrides):
    """The job's config of ``overrides``, validated; no shipped config sets hydra.mode, which
    is why `lagfit run` composes once (app/cli.py: one_composition)."""
    cfg = hydra_compose(*overrides)
    assert cfg.hydra.mode is None, overrides
    with open_dict(cfg):
        del cfg["hydra"]
    validate(cfg)
    return cfg


def test_every_option_of_every_group_composes_and_validates(hydra_compose):
    """Composition i takes the i-th option of every group (the shorter groups cycle), so that
    every option composes against the schema and passes validation, beside others."""
    choices = {group: options(group) for group in GROUPS}
    assert all(choices.values()), choices
    for i in range(max(map(len, choices.values()))):
        overrides = [f"{group}={names[i % len(names)]}" for group, names in choices.items()]
        cfg = composed_and_validated(hydra_compose, *overrides)
        if cfg.system.name != "custom":  # custom starts empty: the user fills it
            system = build_system(dict(cfg.system))
            assert list(cfg.system.params) == list(system.param_names), overrides
            system.parameter_ratios(cfg.system.gauge)  # the configured gauge is accepted


def test_every_experiment_composes_and_validates(hydra_compose):
    for option in options("experiment"):
        composed_and_validated(hydra_compose, f"experiment={option}")


def test_an_override_of_hydra_mode_still_decides_the_mode(lagfit):
    result = lagfit.cli("run", "hydra.mode=MULTIRUN", "experiment=smoke", "report.figures=false",
                        "hydra.sweep.dir=sw")
    assert result.returncode == 0, result.stderr
    assert "1 of 1 jobs ok" in result.stderr and (lagfit.tmp_path / "sw" / "0" / "metrics.json").is_file()


def test_a_system_sets_its_data_bounds_and_the_command_line_wins():
    assert list(compose("system=pendulum").data.q_bounds) == [-1.5, 1.5]
    assert list(compose("system=pendulum", "data.q_bounds=[-1,2]").data.q_bounds) == [-1.0, 2.0]
    assert compose("system=double_pendulum").data.name == "uniform"
    assert compose("system=double_pendulum", "data=grid").data.name == "grid"


def test_task_keys_belong_to_their_task():
    assert "sigmas" in compose("task=noise_study").task and "sigmas" not in compose("task=fit").task
    assert compose("task=seed_report").task.keys() == compose("task=noise_study").task.keys()
    with pytest.raises(ConfigError, match="^task.sigmas: not a config key of task=fit"):
        validate_static(compose("+task.sigmas=[1]"))


@pytest.mark.slow
def test_the_wheel_ships_every_config_file(tmp_path):
    """What a pip install gets: the built wheel (not this checkout) holds every conf/**/*.yaml."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path),
         str(ROOT)],
        check=True, capture_output=True, timeout=600, cwd=tmp_path,
    )
    wheel, = tmp_path.glob("lagfit_cli-*.whl")
    shipped = {name for name in zipfile.ZipFile(wheel).namelist() if name.endswith(".yaml")}
    expected = {f"lagfit_cli/conf/{path.relative_to(CONF).as_posix()}" for path in CONF.rglob("*.yaml")}
    assert expected and expected == shipped

