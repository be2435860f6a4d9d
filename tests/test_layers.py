"""Layers point one way (docs/architecture.md): what both sides exchange through Redis (``exchange``) sits below the
supervisor's side and the workers' side, and neither side imports the other. Only a single instance (``single``),
which is both at once, and the project's settings and entry points (``supervisor_project``) may put them together.

Checked on the source, imports inside functions included, so a shortcut taken in a hurry fails here rather than
in a review."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

SUPERVISOR_SIDE = {"apps", "environments", "controller", "proxy", "live", "alerts", "monitoring", "apitokens", "api",
                   "audit", "fleet"}
WORKER_SIDE = {"workers"}
COMPOSITIONS = {"single"}

FORBIDDEN = {
    "exchange": SUPERVISOR_SIDE | WORKER_SIDE | COMPOSITIONS,
    **{package: SUPERVISOR_SIDE | COMPOSITIONS for package in WORKER_SIDE},
    **{package: WORKER_SIDE | COMPOSITIONS for package in SUPERVISOR_SIDE},
}


def imported_packages(path):
    """(line, top-level package) of every absolute import in PATH."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_a_package_imports_nothing_from_the_layers_it_must_not_know(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no Python files: the layer map is out of date"
    crossings = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in files for line, name in imported_packages(path) if name in FORBIDDEN[package]]
    assert not crossings, "\n".join(crossings)


def test_every_django_app_of_the_project_is_placed_in_a_layer():
    placed = set(FORBIDDEN) | COMPOSITIONS | {"supervisor_project", "cluster", "samples", "tests", "bench"}
    packages = {path.parent.name for path in ROOT.glob("*/__init__.py")}
    assert packages - placed == set(), "place new packages in SUPERVISOR_SIDE, WORKER_SIDE or COMPOSITIONS"


# The API's plumbing is what the endpoints of every supervisor-side app are built on: it may know who asks
# (apitokens) and record each call (audit), never what they ask about, or each app's endpoints would import each other through it.
PLUMBING = {"api/auth.py": SUPERVISOR_SIDE - {"api", "apitokens", "audit"}}


@pytest.mark.parametrize("module", sorted(PLUMBING))
def test_the_api_plumbing_imports_no_app_whose_endpoints_it_serves(module):
    crossings = [f"{module}:{line} imports {name}"
                 for line, name in imported_packages(ROOT / module) if name in PLUMBING[module]]
    assert not crossings, "\n".join(crossings)


def test_the_local_cluster_starts_processes_and_imports_no_side():
    """bin/cluster runs the documented commands as child processes: importing an app would load Django in the
    launcher, with the calling shell's settings rather than each role's. It makes the cluster's key pairs with
    exchange.keys, which needs no settings to do so."""
    crossings = [f"{path.relative_to(ROOT)}:{line} imports {name}"
                 for path in sorted((ROOT / "cluster").rglob("*.py")) for line, name in imported_packages(path)
                 if name in (set(FORBIDDEN) - {"exchange"}) | COMPOSITIONS | {"django"}]
    assert not crossings, "\n".join(crossings)
