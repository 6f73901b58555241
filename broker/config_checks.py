"""The checks every configuration section shares (broker/config.py) and the error they raise."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ConfigError", "check_keys", "kind_name", "str_list", "typed"]


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


def check_keys(section: str, table: Any, allowed: set[str]) -> None:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table")
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"[{section}]: unknown key(s) {', '.join(unknown)}")


def typed(section: str, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"[{section}] {key}: expected {kind_name(kind)}, got a boolean")
    if not isinstance(value, kind):
        raise ConfigError(
            f"[{section}] {key}: expected {kind_name(kind)}, got {type(value).__name__}"
        )
    return value


def kind_name(kind: type | tuple[type, ...]) -> str:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    return " or ".join(k.__name__ for k in kinds)


def str_list(section: str, key: str, value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"[{section}] {key}: expected a list of strings")
    return tuple(value)
