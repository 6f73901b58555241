"""The dependency direction of DESIGN.md, enforced on the source (no imports executed).

client_sdk ──► protocol_spec ◄── broker; broker/core is sans-I/O.
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


def test_the_checker_sees_imports() -> None:
    # Guard against a checker that silently finds nothing.
    assert ("broker/transport/websocket.py", "websockets") in _imports("broker/transport")
