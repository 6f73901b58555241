"""The three WAMP serializers: ``wamp.2.json``, ``wamp.2.msgpack``, ``wamp.2.cbor``.

Each serializer turns a message object into a frame payload (``str`` for JSON, sent
as a WebSocket text frame; ``bytes`` for msgpack and CBOR, sent as binary frames)
and back. Binary values are Python ``bytes`` everywhere; JSON carries them as a
string holding ``"\\u0000"`` followed by their base64 form (WAMP's convention), so
sessions of different serializers exchange bytes unchanged.

Decoding raises ``DecodeError`` for bytes that do not parse and ``ProtocolError``
for a parsed value that is not a valid message. Every string a decoder returns (map
keys and values at any depth) is valid Unicode: a sequence of scalar values, with no
lone UTF-16 surrogate, so it can be re-encoded as UTF-8 by every serializer
(protocol_spec/wamp.md, "Valid strings"). msgpack and CBOR get this from their strict
UTF-8 decoders; JSON text can spell a surrogate as a ``\\uD800`` escape, checked here.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from typing import Any, Final

import cbor2
import msgpack

from .errors import DecodeError
from .messages import decode_message

__all__ = [
    "SERIALIZERS",
    "SUBPROTOCOLS",
    "CborSerializer",
    "JsonSerializer",
    "MsgpackSerializer",
    "Serializer",
    "by_name",
    "by_subprotocol",
]


class Serializer:
    """Base class: ``encode`` a message to a frame payload, ``decode`` one back."""

    name: str = ""
    subprotocol: str = ""
    binary: bool = True
    rawsocket_id: int = 0

    def dumps(self, obj: list[Any]) -> str | bytes:
        """Serialize a plain list (a message's wire form)."""
        raise NotImplementedError

    def loads(self, data: str | bytes) -> Any:
        """Parse a frame payload into plain Python values; raise ``DecodeError``."""
        raise NotImplementedError

    def encode(self, message: Any) -> str | bytes:
        """Serialize a message object."""
        return self.dumps(message.to_list())

    def decode(self, data: str | bytes) -> Any:
        """Parse and validate one message; raise ``ProtocolError`` when invalid."""
        return decode_message(self.loads(data))

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.subprotocol}>"


def _json_default(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return "\x00" + base64.b64encode(bytes(value)).decode("ascii")
    raise TypeError(f"cannot serialize {type(value).__name__} to JSON")


def _json_unwrap(value: Any) -> Any:
    """Turn every ``"\\u0000"+base64`` string inside ``value`` back into bytes."""
    if type(value) is str:
        if value[:1] == "\x00":
            try:
                return base64.b64decode(value[1:], validate=True)
            except (binascii.Error, ValueError) as exc:
                raise DecodeError("invalid base64 in a JSON binary string") from exc
        return value
    if type(value) is list:
        return [_json_unwrap(item) for item in value]
    if type(value) is dict:
        return {key: _json_unwrap(item) for key, item in value.items()}
    return value


_SURROGATE_ESCAPE: Final = re.compile(r"\\u[dD][89a-fA-F]")
"""A ``\\uD800``-``\\uDFFF`` escape (or ``\\\\uD8..``, a false alarm the walk clears)."""
_SURROGATE: Final = re.compile("[\ud800-\udfff]")


def _reject_surrogates(value: Any) -> None:
    """Raise ``DecodeError`` if a string anywhere in ``value`` (keys too) holds a surrogate.

    JSON joins an escaped pair (``\\ud83d\\ude00``) into one character; what is left
    is a lone surrogate, which no serializer can encode as UTF-8.
    """
    stack = [value]
    while stack:
        item = stack.pop()
        kind = type(item)
        if kind is str:
            if not item.isascii() and _SURROGATE.search(item):  # isascii: O(1) flag
                raise DecodeError("a string holds a lone UTF-16 surrogate (not valid Unicode)")
        elif kind is list:
            stack.extend(item)
        elif kind is dict:
            stack.extend(item)
            stack.extend(item.values())


def _reject_constant(name: str) -> Any:
    raise DecodeError(f"JSON constant {name} is not allowed")


def _parse_finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):  # 1e400 parses to inf: as unwelcome as Infinity
        raise DecodeError(f"JSON number {text[:20]} is out of range")
    return value


_PLAIN_LEAVES: Final = frozenset({type(None), bool, int, float, str, bytes})


def _check_plain(value: Any) -> Any:
    """Reject values JSON could not carry: exotic types, non-str map keys, shared containers.

    CBOR decoders build datetimes, sets, tags, ``undefined`` and even cyclic lists
    (shared references); msgpack allows bytes map keys. None of them can be forwarded
    to a session using another serializer, so they are refused at the door. Leaves are
    checked where they are met; only containers go on the stack (the hot path: every
    message a peer sends).
    """
    kind = type(value)
    if kind is not list and kind is not dict:
        if kind not in _PLAIN_LEAVES:
            raise DecodeError(f"values of type {kind.__name__} are not allowed")
        return value
    leaves = _PLAIN_LEAVES
    seen = {id(value)}
    stack = [value]
    while stack:
        item = stack.pop()
        children: Any = item
        if type(item) is dict:
            for key in item:
                if type(key) is not str:
                    raise DecodeError("map keys must be strings")
            children = item.values()
        for child in children:
            kind = type(child)
            if kind in leaves:
                continue
            if kind is not list and kind is not dict:
                raise DecodeError(f"values of type {kind.__name__} are not allowed")
            if id(child) in seen:
                raise DecodeError("shared or cyclic containers are not allowed")
            seen.add(id(child))
            stack.append(child)
    return value


class JsonSerializer(Serializer):
    """``wamp.2.json``: UTF-8 JSON text, binary as ``"\\u0000"``+base64 strings."""

    name = "json"
    subprotocol = "wamp.2.json"
    binary = False
    rawsocket_id = 1

    def __init__(self) -> None:
        self._encoder = json.JSONEncoder(
            separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
        )
        self._decoder = json.JSONDecoder(
            parse_constant=_reject_constant, parse_float=_parse_finite_float
        )

    def dumps(self, obj: list[Any]) -> str:
        return self._encoder.encode(obj)

    def loads(self, data: str | bytes) -> Any:
        try:
            if isinstance(data, str):
                text = data
                if not text.isascii():
                    text.encode("utf-8")  # a surrogate given as a character, not an escape
            else:
                text = bytes(data).decode("utf-8")  # strict: rejects encoded surrogates
            value = self._decoder.decode(text)
            if "\\u" in text:  # one fast scan; escapes are rare in UTF-8 JSON
                if _SURROGATE_ESCAPE.search(text):
                    _reject_surrogates(value)
                if "\\u0000" in text:
                    value = _json_unwrap(value)
        except DecodeError:
            raise
        except UnicodeError:
            raise DecodeError("invalid JSON: the text is not valid UTF-8 Unicode") from None
        except (ValueError, RecursionError) as exc:
            raise DecodeError(f"invalid JSON: {exc}") from None
        return value


class MsgpackSerializer(Serializer):
    """``wamp.2.msgpack``: MessagePack with the bin type for bytes, str map keys."""

    name = "msgpack"
    subprotocol = "wamp.2.msgpack"
    binary = True
    rawsocket_id = 2

    def __init__(self) -> None:
        self._packer = msgpack.Packer(use_bin_type=True, autoreset=True)

    def dumps(self, obj: list[Any]) -> bytes:
        packed: bytes = self._packer.pack(obj)
        return packed

    def loads(self, data: str | bytes) -> Any:
        if isinstance(data, str):
            raise DecodeError("msgpack messages must arrive as binary frames")
        try:
            value = msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_no_ext)
        except DecodeError:
            raise
        except Exception as exc:  # msgpack raises many unrelated types
            raise DecodeError(f"invalid msgpack: {type(exc).__name__}") from None
        return _check_plain(value)


def _no_ext(code: int, data: bytes) -> Any:
    raise DecodeError(f"msgpack extension type {code} is not allowed")


class CborSerializer(Serializer):
    """``wamp.2.cbor``: CBOR (RFC 8949), bytes as byte strings."""

    name = "cbor"
    subprotocol = "wamp.2.cbor"
    binary = True
    rawsocket_id = 3

    def dumps(self, obj: list[Any]) -> bytes:
        return cbor2.dumps(obj)

    def loads(self, data: str | bytes) -> Any:
        if isinstance(data, str):
            raise DecodeError("CBOR messages must arrive as binary frames")
        try:
            value = cbor2.loads(data)
        except Exception as exc:  # cbor2 raises several exception types
            raise DecodeError(f"invalid CBOR: {type(exc).__name__}") from None
        return _check_plain(value)


SERIALIZERS: Final[tuple[Serializer, ...]] = (
    JsonSerializer(),
    MsgpackSerializer(),
    CborSerializer(),
)
SUBPROTOCOLS: Final[tuple[str, ...]] = tuple(s.subprotocol for s in SERIALIZERS)
_BY_NAME: Final = {s.name: s for s in SERIALIZERS}
_BY_SUBPROTOCOL: Final = {s.subprotocol: s for s in SERIALIZERS}


def by_name(name: str) -> Serializer:
    """Return the serializer called ``json``, ``msgpack`` or ``cbor``; ``KeyError`` if unknown."""
    return _BY_NAME[name]


def by_subprotocol(subprotocol: str) -> Serializer:
    """Return the serializer for a WebSocket subprotocol name such as ``wamp.2.json``."""
    return _BY_SUBPROTOCOL[subprotocol]
