"""Helpers shared by the protocol_spec tests: vector files and the bytes convention."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import protocol_spec

SPEC_DIR = Path(protocol_spec.__file__).parent
VECTORS_DIR = SPEC_DIR / "vectors"


def load_vectors(name: str) -> list[dict[str, Any]]:
    """Read one JSON vector file from protocol_spec/vectors."""
    with (VECTORS_DIR / name).open(encoding="utf-8") as handle:
        vectors: list[dict[str, Any]] = json.load(handle)
    return vectors


def restore_bytes(value: Any) -> Any:
    """Turn every ``"\\u0000"+base64`` string inside a JSON value into ``bytes``."""
    if isinstance(value, str) and value.startswith("\x00"):
        return base64.b64decode(value[1:], validate=True)
    if isinstance(value, list):
        return [restore_bytes(item) for item in value]
    if isinstance(value, dict):
        return {key: restore_bytes(item) for key, item in value.items()}
    return value


def frame_for(serializer: protocol_spec.Serializer, json_value: Any) -> str | bytes:
    """Build the frame a peer speaking ``serializer`` would send for a vector's value."""
    if serializer.name == "json":
        return json.dumps(json_value)
    return serializer.dumps(restore_bytes(json_value))
