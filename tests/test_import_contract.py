"""The dependency direction of DESIGN.md, enforced on the source (no imports executed).

client_sdk ──► protocol_spec ◄── broker; broker/core is sans-I/O and has no import cycles.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _imports(package: str) -> list[tuple[str, str]]:
    """(file, top-level module imported) for every import under ``package``."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.append((str(path.relative_to(ROOT)), name.split(".")[0]))
    return found


@pytest.mark.parametrize("forbidden", ["asyncio", "websockets", "redis", "socket", "threading"])
def test_broker_core_is_sans_io(forbidden: str) -> None:
    offenders = [f for f, mod in _imports("broker/core") if mod == forbidden]
    assert offenders == [], f"broker/core must not import {forbidden}: {offenders}"


def test_client_sdk_never_imports_broker() -> None:
    offenders = [f for f, mod in _imports("client_sdk") if mod == "broker"]
    assert offenders == []


def test_protocol_spec_imports_only_stdlib_and_serializers() -> None:
    allowed = set(sys.stdlib_module_names) | {"msgpack", "cbor2", "protocol_spec"}
    offenders = [(f, mod) for f, mod in _imports("protocol_spec") if mod not in allowed]
    assert offenders == []


# --- the module graph of broker/core ------------------------------------------------------
Graph = dict[str, set[str]]

TYPE_ONLY_BACK_REFERENCES = {("broker.core.session", "broker.core.realm")}
"""``Session.realm`` names the realm a session joined: typing only, never imported at run
time. Every other type-only import in broker/core points down the layers too."""

ROLES = (
    "authorization",
    "cluster",
    "context",
    "dealer",
    "invocations",
    "pubsub",
    "registration",
    "settings",
    "subscription",
)
"""What the realm is built from: none of it may know the realm (or the router)."""


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported(module: str, is_package: bool, node: ast.Import | ast.ImportFrom) -> set[str]:
    """Modules (and ``from`` targets, which may be modules) one import statement names."""
    if isinstance(node, ast.Import):
        return {alias.name for alias in node.names}
    base = module.split(".") if is_package else module.split(".")[:-1]
    if node.level:
        base = base[: len(base) - (node.level - 1)]
        target = ".".join([*base, node.module] if node.module else base)
    else:
        target = node.module or ""
    return {target} | {f"{target}.{alias.name}" for alias in node.names}


def _imports_in(node: ast.AST, module: str, is_package: bool, type_only: bool) -> set[str]:
    """What the statements under ``node`` import; ``if TYPE_CHECKING:`` only with type_only."""
    found: set[str] = set()
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test) and not type_only:
            for stmt in child.orelse:
                found |= _imports_in(stmt, module, is_package, type_only)
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            found |= _imported(module, is_package, child)
        found |= _imports_in(child, module, is_package, type_only)
    return found


def _module_graph(package: str, *, type_only: bool) -> Graph:
    """module → modules of ``package`` it imports (runtime only, or with TYPE_CHECKING ones)."""
    paths = {_module_name(p): p for p in sorted((ROOT / package).rglob("*.py"))}
    graph: Graph = {}
    for module, path in paths.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        found = _imports_in(tree, module, path.name == "__init__.py", type_only)
        graph[module] = {m for m in found if m in paths and m != module}
    return graph


def _cycles(graph: Graph) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def connect(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                connect(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return found


def test_broker_core_has_no_runtime_import_cycles() -> None:
    assert _cycles(_module_graph("broker/core", type_only=False)) == []


def test_broker_core_is_layered_even_for_the_type_checker() -> None:
    graph = _module_graph("broker/core", type_only=True)
    for importer, imported in TYPE_ONLY_BACK_REFERENCES:
        assert imported not in _module_graph("broker/core", type_only=False)[importer]
        graph[importer].discard(imported)
    assert _cycles(graph) == []


@pytest.mark.parametrize("role", ROLES)
def test_roles_never_import_the_realm(role: str) -> None:
    imported = _module_graph("broker/core", type_only=True)[f"broker.core.{role}"]
    assert imported.isdisjoint({"broker.core.realm", "broker.core.router", "broker.core.meta"})


def test_config_needs_no_transport() -> None:
    graph = _module_graph("broker", type_only=True)
    assert not any(m.startswith("broker.transport") for m in graph["broker.config"])


def test_the_cycle_finder_finds_cycles() -> None:
    graph: Graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [{"a", "b", "c"}]
    runtime = _module_graph("broker/core", type_only=False)
    typed = _module_graph("broker/core", type_only=True)
    assert "broker.core.dealer" in runtime["broker.core.realm"]
    assert "broker.core.realm" in typed["broker.core.session"] - runtime["broker.core.session"]


def test_the_checker_sees_imports() -> None:
    # Guard against a checker that silently finds nothing.
    assert ("broker/transport/websocket.py", "websockets") in _imports("broker/transport")
