"""The cluster backend reaches the core only through its port (broker.core.ports)."""

from __future__ import annotations

import ast
from pathlib import Path

from broker.core.host import ClusterHost
from broker.core.realm import RealmSettings
from broker.core.router import Router
from broker.server import AsyncioScheduler

ROOT = Path(__file__).resolve().parents[3]


def _imported_modules(package: str) -> list[tuple[str, str]]:
    """(file, fully qualified module) for every absolute or relative import under ``package``."""
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        here = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                found += [(path.name, alias.name) for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = here.rsplit(".", node.level - 1)[0] if node.level else ""
                module = ".".join(p for p in (base, node.module or "") if p)
                found += [(path.name, f"{module}.{alias.name}") for alias in node.names]
                found.append((path.name, module))
    return found


def test_no_backend_module_imports_the_router() -> None:
    offenders = [
        (f, m) for f, m in _imported_modules("broker/cluster") if m.startswith("broker.core.router")
    ]
    assert offenders == []


def test_the_core_never_imports_a_backend() -> None:
    offenders = [
        (f, m) for f, m in _imported_modules("broker/core") if m.startswith("broker.cluster")
    ]
    assert offenders == []


def test_the_checker_sees_relative_imports() -> None:
    assert ("realm.py", "broker.core.ports.LocalCluster") in _imported_modules("broker/core")


def test_the_router_is_a_cluster_host() -> None:
    host: ClusterHost = Router((RealmSettings("realm1"),), AsyncioScheduler())
    assert "realm1" in host.realms
