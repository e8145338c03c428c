"""Every config option composes against the schema and passes validation."""

from pathlib import Path

import pytest
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra

from lagfit_cli.app.config import register_configs, validate

CONF = Path(__file__).resolve().parents[1] / "conf"


def options(group):
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def compose_with(*overrides):
    GlobalHydra.instance().clear()
    register_configs()
    with initialize_config_module("lagfit_cli.conf", version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("group", ["system", "data", "noise", "init", "optim", "solver", "task", "experiment"])
def test_every_option_composes_and_validates(group):
    for option in options(group):
        cfg = compose_with(f"{group}={option}")
        validate(cfg)


def test_installed_package_ships_every_yaml():
    import lagfit_cli.conf as shipped

    shipped_dir = Path(shipped.__file__).parent
    for path in CONF.rglob("*.yaml"):
        assert (shipped_dir / path.relative_to(CONF)).is_file(), path
