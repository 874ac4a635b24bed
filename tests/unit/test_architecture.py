"""The import graph keeps the architecture: no loops, and dependencies point one way.

* ``engine`` knows no job: it imports nothing from ``jobs``, ``web`` or ``cli``;
* ``jobs`` import nothing from ``web`` or ``cli``; ``web`` nothing from ``cli``;
* only ``cli`` (where the program is assembled) loads ``cocov_jobs.jobs``;
* the product does not import ``cocov_jobs.testing`` (the demo, a command, may);
* the test tiers (``tests/unit``, ``tests/integration``, ``tests/acceptance``) do not import each
  other's modules: what they share lives in ``tests/support`` or ``cocov_jobs.testing``;
* ``bench/`` imports no ``tests`` module (it uses ``cocov_jobs.testing``).

Imports under ``if TYPE_CHECKING:`` are not executed and do not count.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "src" / "cocov_jobs"


def module_name(path: Path, base: Path) -> str:
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        yield node
        stack.extend(ast.iter_child_nodes(node))


def imports(path: Path, modules: set[str]) -> set[str]:
    """Modules of ``modules`` that the file at ``path`` imports when it runs."""
    found: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            while name and name not in modules:
                name = name.rpartition(".")[0]
            if name:
                found.add(name)
    return found


def graph() -> dict[str, set[str]]:
    files = {module_name(p, PACKAGE.parent): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: imports(path, modules) - {name} for name, path in files.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(edges.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def in_package(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


#: (importing package, imported package) pairs that must not occur.
FORBIDDEN = [
    ("cocov_jobs.engine", "cocov_jobs.jobs"),
    ("cocov_jobs.engine", "cocov_jobs.web"),
    ("cocov_jobs.engine", "cocov_jobs.cli"),
    ("cocov_jobs.jobs", "cocov_jobs.web"),
    ("cocov_jobs.jobs", "cocov_jobs.cli"),
    ("cocov_jobs.web", "cocov_jobs.cli"),
]


def test_the_package_has_no_import_loop() -> None:
    assert cycles(graph()) == []


def test_the_cycle_finder_finds_a_loop() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


@pytest.mark.parametrize(("source", "target"), FORBIDDEN)
def test_dependencies_point_one_way(source: str, target: str) -> None:
    wrong = sorted(
        f"{module} -> {imported}"
        for module, targets in graph().items()
        if in_package(module, source)
        for imported in targets
        if in_package(imported, target)
    )
    assert wrong == []


def test_only_the_commands_load_the_jobs() -> None:
    loaders = sorted(
        module
        for module, targets in graph().items()
        if "cocov_jobs.jobs" in targets
        and not in_package(module, "cocov_jobs.cli")
        and not in_package(module, "cocov_jobs.jobs")
    )
    assert loaders == []


def test_the_product_does_not_import_the_test_doubles() -> None:
    users = sorted(
        module
        for module, targets in graph().items()
        if any(in_package(t, "cocov_jobs.testing") for t in targets)
        and not in_package(module, "cocov_jobs.testing")
        and module != "cocov_jobs.cli.demo"
        and module != "cocov_jobs.cli.demo_sample"
    )
    assert users == []


def _test_imports(folder: Path) -> dict[str, set[str]]:
    files = {module_name(p, ROOT): p for p in folder.rglob("*.py")}
    tests = {module_name(p, ROOT) for p in (ROOT / "tests").rglob("*.py")}
    return {name: imports(path, tests) for name, path in files.items()}


#: The test tiers, each a folder of ``tests/``.
TIERS = {"unit", "integration", "acceptance"}


def tier(module: str) -> str:
    return module.split(".")[1] if module.count(".") >= 1 else ""


def test_test_tiers_do_not_import_each_other() -> None:
    crossing = sorted(
        f"{module} -> {imported}"
        for module, targets in _test_imports(ROOT / "tests").items()
        for imported in targets
        if tier(imported) in TIERS and tier(imported) != tier(module)
    )
    assert crossing == []


def test_benchmarks_import_no_test_module() -> None:
    users = sorted(m for m, targets in _test_imports(ROOT / "bench").items() if targets)
    assert users == []
