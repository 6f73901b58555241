"""The product code stays readable: modules under ~600 lines, functions under ~60 (STYLE.md).

Every module of broker/, client_sdk/ and protocol_spec/ is measured.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("broker", "client_sdk", "protocol_spec")
MAX_MODULE_LINES = 600
MAX_FUNCTION_LINES = 60

NOT_YET: set[tuple[str, str]] = set()
"""Functions allowed over the limit for now (none)."""


def _modules() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def _name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _functions() -> list[tuple[str, str, int]]:
    found = []
    for path in _modules():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                found.append((_name(path), node.name, lines))
    return found


def test_modules_are_under_600_lines() -> None:
    sizes = {_name(p): len(p.read_text(encoding="utf-8").splitlines()) for p in _modules()}
    assert {name: n for name, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_functions_are_under_60_lines() -> None:
    long = [
        (module, name, lines)
        for module, name, lines in _functions()
        if lines > MAX_FUNCTION_LINES and (module, name) not in NOT_YET
    ]
    assert long == []


def test_the_dealer_handlers_are_measured() -> None:
    measured = {(module, name) for module, name, _ in _functions()}
    assert {("broker/core/dealer.py", "call"), ("broker/core/dealer.py", "register")} <= measured
