"""URIs, close codes and message types in broker code come from protocol_spec, by name.

Scans the source (nothing is imported): a ``"wamp.…"`` string literal outside a
docstring, a bare WebSocket close code handed to ``close``/``fail``/``abort`` (or used
as a ``code`` default), or a message type compared with a bare number fails the test.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

NOT_YET_SCANNED: tuple[str, ...] = ()

_CLOSE_CALLS = frozenset({"close", "fail", "abort"})
_CLOSE_CODES = range(1000, 1016)


def _sources() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted((ROOT / "broker").rglob("*.py")):
        name = str(path.relative_to(ROOT))
        if not name.startswith(NOT_YET_SCANNED):
            yield name, ast.parse(path.read_text(encoding="utf-8"))


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the constant nodes that are docstrings (module, class, function, attribute)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if not isinstance(body, list):
            continue
        for stmt in body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
                found.add(id(stmt.value))
    return found


def _wamp_literals(name: str, tree: ast.Module) -> list[str]:
    skip = _docstrings(tree)
    return [
        f"{name}:{node.lineno}: {node.value!r}"
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and node.value.startswith("wamp.")
        and id(node) not in skip
    ]


def _is_code(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and type(node.value) is int and node.value in _CLOSE_CODES


def _bare_close_codes(name: str, tree: ast.Module) -> list[str]:
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            if node.func.attr in _CLOSE_CALLS:
                values = [*node.args, *(k.value for k in node.keywords if k.arg == "code")]
                found += [f"{name}:{v.lineno}" for v in values if _is_code(v)]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            args = node.args
            positional = [*args.posonlyargs, *args.args]
            defaults = list(
                zip(positional[len(positional) - len(args.defaults) :], args.defaults, strict=True)
            )
            defaults += [
                (a, d) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True) if d
            ]
            found += [
                f"{name}:{node.lineno}" for a, d in defaults if a.arg == "code" and _is_code(d)
            ]
    return found


def _bare_type_numbers(name: str, tree: ast.Module) -> list[str]:
    """Comparisons like ``kind == 48`` or ``message.TYPE != 8``."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        named = any(
            (isinstance(o, ast.Name) and o.id in ("kind", "msg_type", "message_type"))
            or (isinstance(o, ast.Attribute) and o.attr in ("TYPE", "request_type"))
            for o in operands
        )
        numbers = any(isinstance(o, ast.Constant) and type(o.value) is int for o in operands)
        if named and numbers:
            found.append(f"{name}:{node.lineno}")
    return found


def test_no_wamp_uri_literals_in_broker() -> None:
    offenders = [hit for name, tree in _sources() for hit in _wamp_literals(name, tree)]
    assert offenders == [], "use protocol_spec.errors / protocol_spec.meta constants"


def test_no_bare_close_codes_in_broker() -> None:
    offenders = [hit for name, tree in _sources() for hit in _bare_close_codes(name, tree)]
    assert offenders == [], "use protocol_spec.errors.CloseCode"


def test_no_bare_message_type_numbers_in_broker() -> None:
    offenders = [hit for name, tree in _sources() for hit in _bare_type_numbers(name, tree)]
    assert offenders == [], "use protocol_spec.messages.MessageType"


def test_the_scanner_finds_what_it_forbids() -> None:
    # Guard against a checker that silently finds nothing.
    tree = ast.parse(
        '"""wamp.docstring is fine."""\n'
        'x = "wamp.session.on_join"\n'
        "def close(code: int = 1000) -> None: ...\n"
        "peer.close(1002, 'bye')\n"
        "ok = kind == 48\n"
    )
    assert _wamp_literals("m", tree) == ["m:2: 'wamp.session.on_join'"]
    assert _bare_close_codes("m", tree) == ["m:3", "m:4"]
    assert _bare_type_numbers("m", tree) == ["m:5"]
