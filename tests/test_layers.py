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


def module_level_imports(module: str) -> set[str]:
    """Modules that importing ``module`` imports: its import statements at module level
    (not inside functions, not under ``if TYPE_CHECKING``), and its packages' ``__init__``."""
    parts = module.split(".")
    path = PACKAGE.parent.joinpath(*parts)
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    tree = ast.parse(path.read_text())
    package = ".".join(parts if path.name == "__init__.py" else parts[:-1])
    names = {".".join(parts[:i]) for i in range(1, len(parts))}  # the packages above it

    def visit(statements):
        for node in statements:
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                module_name = ".".join(base + ([node.module] if node.module else []))
                names.add(module_name)
                # `from package import submodule` imports the submodule
                names.update(f"{module_name}.{alias.name}" for alias in node.names)
            elif isinstance(node, ast.If) and "TYPE_CHECKING" not in ast.unparse(node.test):
                visit(node.body), visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body), visit(node.orelse), visit(node.finalbody)
                for handler in node.handlers:
                    visit(handler.body)

    visit(tree.body)
    return names


def import_closure(module: str) -> set[str]:
    """Every module importing ``module`` pulls in, following lagfit_cli's own modules."""
    seen, todo = set(), [module]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        parts = name.split(".")
        if parts[0] != "lagfit_cli":
            continue
        path = PACKAGE.parent.joinpath(*parts)
        if path.is_dir() or path.with_suffix(".py").is_file():
            todo.extend(module_level_imports(name))
    return seen


@pytest.mark.parametrize("module, not_imported", [
    ("lagfit_cli.app.cli", {"torch", "matplotlib", "hydra", "pandas", "scipy"}),  # --help, usage errors
    ("lagfit_cli.app.hydra_app", {"torch", "matplotlib", "scipy"}),  # a bad config is told before torch
    ("lagfit_cli.io.sweep_plot", {"torch", "scipy"}),  # a sweep's summary: matplotlib and pandas only
])
def test_start_up_paths_import_no_heavy_package(module, not_imported):
    """What each path imports at once (functions import the rest when they need it): the
    command's start-up, a job's config check, the summary a sweep writes in its parent process."""
    heavy = {name.split(".")[0] for name in import_closure(module)} & not_imported
    assert not heavy, f"importing {module} imports {sorted(heavy)}"
