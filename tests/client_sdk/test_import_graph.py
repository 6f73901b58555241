"""Import contracts of client_sdk, read from the source with ``ast`` (nothing is imported).

No import cycle among client_sdk modules (imports under ``if TYPE_CHECKING:`` are not
run, so they do not count; imports inside functions do). The roles (``pubsub``,
``rpc``) reach their session only through ``SessionPort``: they never import
``session`` and never touch a private member of the session they are given.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[2] / "client_sdk"
ROLE_MODULES = ("pubsub", "rpc")


def module_names(package_dir: Path) -> dict[str, Path]:
    """Every module of the package under ``package_dir`` by dotted name (top level only)."""
    package = package_dir.name
    names = {package: package_dir / "__init__.py"}
    for path in package_dir.glob("*.py"):
        if path.name != "__init__.py":
            names[f"{package}.{path.stem}"] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def runtime_imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run: all but the body of ``if TYPE_CHECKING:``."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                yield from runtime_imports(ast.Module(body=[child], type_ignores=[]))
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        yield from runtime_imports(node)


def imported_modules(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's own modules that ``module`` imports at run time."""
    is_package = path.name == "__init__.py"
    package_parts = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in runtime_imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            if node.level:
                base_parts = package_parts[: len(package_parts) - node.level + 1]
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from pkg import name``: name may be a submodule or an attribute of pkg.
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def import_graph(package_dir: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports at run time."""
    names = module_names(package_dir)
    known = set(names)
    return {name: imported_modules(name, path, known) for name, path in names.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def write_package(root: Path, files: dict[str, str]) -> Path:
    package = root / "pkg"
    package.mkdir(parents=True)
    for name, text in {"__init__.py": "", **files}.items():
        (package / name).write_text(text)
    return package


def test_the_checker_finds_a_runtime_cycle_and_ignores_type_checking_imports(
    tmp_path: Path,
) -> None:
    cyclic = write_package(
        tmp_path / "a",
        {
            "a.py": "from .b import B\n",
            "b.py": "def f():\n    from pkg import c\n",
            "c.py": "from . import a\n",
        },
    )
    assert cycles(import_graph(cyclic)) == [["pkg.a", "pkg.b", "pkg.c"]]
    typed = write_package(
        tmp_path / "b",
        {
            "a.py": "from .b import B\n",
            "b.py": (
                "from typing import TYPE_CHECKING\n"
                "if TYPE_CHECKING:\n    from .a import A\nelse:\n    import json\n"
            ),
        },
    )
    graph = import_graph(typed)
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == set()
    assert cycles(graph) == []


def test_client_sdk_has_no_import_cycle() -> None:
    graph = import_graph(PACKAGE_DIR)
    assert "client_sdk.session" in graph["client_sdk.client"]  # the graph is really read
    assert cycles(graph) == []


def test_roles_do_not_import_the_session_module() -> None:
    graph = import_graph(PACKAGE_DIR)
    for role in ROLE_MODULES:
        assert "client_sdk.session" not in graph[f"client_sdk.{role}"], role
        assert "client_sdk.port" in graph[f"client_sdk.{role}"], role


def _session_expressions(node: ast.AST) -> bool:
    """``session`` or ``self._session``: the object a role holds as its port."""
    if isinstance(node, ast.Name):
        return node.id == "session"
    return (
        isinstance(node, ast.Attribute)
        and node.attr == "_session"
        and isinstance(node.value, ast.Name)
        and node.value.id == "self"
    )


def test_roles_touch_no_private_member_of_their_session() -> None:
    offences = []
    for role in ROLE_MODULES:
        path = PACKAGE_DIR / f"{role}.py"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and _session_expressions(node.value)
            ):
                offences.append(f"{role}.py:{node.lineno}: .{node.attr}")
    assert offences == []
