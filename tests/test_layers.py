"""The package's three layers import one way, app → io → core, and the core never imports
Hydra, OmegaConf or matplotlib: read off every module's import statements (ast), so a new
import that breaks the rule fails here, whether or not any test runs that code path."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lagfit_cli"
#: what each layer may import from lagfit_cli (besides itself)
ALLOWED = {"core": {"errors"}, "io": {"core", "errors"}, "app": {"core", "io", "errors", "conf"}}
#: third-party packages a layer must not import
FORBIDDEN = {"core": {"hydra", "omegaconf", "matplotlib"}, "io": {"hydra", "omegaconf"}}


def imported_modules(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                names.add(".".join(base + ([node.module] if node.module else [])))
            else:
                names.add(node.module)
    return names


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layers_import_one_way(layer):
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        for name in imported_modules(path):
            parts = name.split(".")
            if parts[0] == "lagfit_cli" and len(parts) > 1 and parts[1] != layer:
                assert parts[1] in ALLOWED[layer], f"{path.relative_to(PACKAGE)} imports {name}"
            assert parts[0] not in FORBIDDEN.get(layer, ()), f"{path.relative_to(PACKAGE)} imports {name}"


def test_the_package_root_imports_no_layer_eagerly():
    names = imported_modules(PACKAGE / "__init__.py")
    assert not {n for n in names if n.startswith("lagfit_cli.")}, names
