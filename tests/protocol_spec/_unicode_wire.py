"""Frames that carry any Python string, lone surrogates included, in each serializer.

A well-behaved encoder refuses a lone surrogate, so a test that wants to see what the
router does with one has to build the frame itself, as a careless or hostile client
would: JSON with ``\\uD800`` escapes (valid JSON grammar), msgpack ``str`` and CBOR
text strings holding the surrogate's UTF-8 form (``ED A0 80``, invalid UTF-8).
"""

from __future__ import annotations

import json
import struct
from typing import Any

import msgpack

__all__ = ["SERIALIZER_NAMES", "has_lone_surrogate", "has_surrogate", "hostile_frame"]

SERIALIZER_NAMES = ("json", "msgpack", "cbor")

_PACKER = msgpack.Packer(use_bin_type=True, unicode_errors="surrogatepass")


def has_surrogate(value: Any) -> bool:
    """True if any string in ``value`` (map keys too) holds a code point D800..DFFF."""
    if isinstance(value, str):
        return any(0xD800 <= ord(c) <= 0xDFFF for c in value)
    if isinstance(value, list):
        return any(has_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(has_surrogate(k) or has_surrogate(v) for k, v in value.items())
    return False


def has_lone_surrogate(value: Any) -> bool:
    """Like ``has_surrogate`` once each high+low pair is joined into one character.

    What a JSON peer means by ``"\\ud800\\udc00"`` is U+10000: valid.
    """
    if isinstance(value, str):
        try:
            value.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            return True
        return False
    if isinstance(value, list):
        return any(has_lone_surrogate(item) for item in value)
    if isinstance(value, dict):
        return any(has_lone_surrogate(k) or has_lone_surrogate(v) for k, v in value.items())
    return False


def _cbor_head(major: int, length: int) -> bytes:
    if length < 24:
        return bytes([major << 5 | length])
    if length < 0x100:
        return bytes([major << 5 | 24, length])
    if length < 0x10000:
        return bytes([major << 5 | 25]) + struct.pack(">H", length)
    if length < 0x100000000:
        return bytes([major << 5 | 26]) + struct.pack(">I", length)
    return bytes([major << 5 | 27]) + struct.pack(">Q", length)


def _cbor(value: Any) -> bytes:
    """A minimal CBOR encoder (RFC 8949) that writes strings with ``surrogatepass``."""
    if value is None:
        return b"\xf6"
    if value is True or value is False:
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return _cbor_head(0, value) if value >= 0 else _cbor_head(1, -1 - value)
    if isinstance(value, float):
        return b"\xfb" + struct.pack(">d", value)
    if isinstance(value, bytes):
        return _cbor_head(2, len(value)) + value
    if isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        return _cbor_head(3, len(data)) + data
    if isinstance(value, list):
        return _cbor_head(4, len(value)) + b"".join(_cbor(item) for item in value)
    if isinstance(value, dict):
        return _cbor_head(5, len(value)) + b"".join(_cbor(k) + _cbor(v) for k, v in value.items())
    raise TypeError(f"cannot encode {type(value).__name__}")


def hostile_frame(serializer: str, message: list[Any], *, utf8: bool = False) -> str | bytes:
    """``message`` as ``serializer`` would carry it, whatever strings it holds.

    JSON: ASCII text with ``\\uXXXX`` escapes (a lone surrogate stays a lone escape), or
    with ``utf8=True`` UTF-8 bytes where a surrogate is written as its (invalid) UTF-8
    form. msgpack and CBOR: strings written with ``surrogatepass``.
    """
    if serializer == "json":
        if utf8:
            return json.dumps(message, ensure_ascii=False).encode("utf-8", "surrogatepass")
        return json.dumps(message)
    if serializer == "msgpack":
        packed: bytes = _PACKER.pack(message)
        return packed
    return _cbor(message)
