"""The package's shape, as the README's Layout section states it: dependencies point one way
(no import circles, not even behind ``if TYPE_CHECKING:`` or inside a function), each layer
imports only the layers below it, and no module grows past one job's length."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import tomostream

PACKAGE = Path(tomostream.__file__).parent
#: The ground floor every layer may use.
GROUND = {"errors", "vocabulary", "unique_ids", "epics_env", "childproc", "background"}
#: What each layer may import besides the ground floor (the top: cli, demo, may import all).
ALLOWED = {
    "recon": set(),
    "pva": {"recon"},
    "ioc": set(),
    "io": set(),
    "server": {"recon", "pva", "ioc", "io"},
    "devices": {"pva", "io"},
    "plans": {"devices", "io", "recon"},
    "sim": {"recon", "pva", "ioc", "io"},
    "liveview": {"devices"},
}
#: Longest module [lines]: past it, a module does more than one job.
MAX_LINES = 450


def _modules() -> dict[str, Path]:
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The tomostream modules ``name`` imports, wherever the import statement stands."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            base = node.module
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + [node.module or ""]).rstrip(".")
            targets = [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


MODULES = _modules()
GRAPH = {name: _imports(name, path, MODULES) for name, path in MODULES.items()}


def _layer(name: str) -> str:
    return name.split(".")[1] if "." in name else ""


def test_the_import_graph_is_read_from_the_sources():
    assert "tomostream.recon.reconstructor" in GRAPH["tomostream.recon"]
    assert "tomostream.errors" in GRAPH["tomostream.server.session"]


def test_no_module_imports_itself_through_others():
    circles, done, path = [], set(), []

    def visit(name: str) -> None:
        path.append(name)
        for other in sorted(GRAPH[name]):
            if other in path:
                circles.append(path[path.index(other):] + [other])
            elif other not in done:
                visit(other)
        path.pop()
        done.add(name)

    for name in sorted(GRAPH):
        if name not in done:
            visit(name)
    assert not circles, "import circles:\n" + "\n".join(" -> ".join(c) for c in circles)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_each_layer_imports_only_the_layers_below_it(layer):
    allowed = ALLOWED[layer] | GROUND | {layer}
    wrong = sorted(f"{name} imports {other}" for name, others in GRAPH.items()
                   if _layer(name) == layer for other in others if _layer(other) not in allowed)
    assert not wrong, "\n".join(wrong)


def test_no_module_is_longer_than_one_job():
    long = {name: n for name, path in MODULES.items()
            if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"
