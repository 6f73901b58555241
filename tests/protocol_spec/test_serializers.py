"""The three serializers: bytes crossing between them, and malformed input."""

from __future__ import annotations

import json
import math

import cbor2
import msgpack
import pytest

from protocol_spec import (
    SERIALIZERS,
    SUBPROTOCOLS,
    DecodeError,
    Event,
    ProtocolError,
    Publish,
    Serializer,
    by_name,
    by_subprotocol,
)

JSON = by_name("json")
MSGPACK = by_name("msgpack")
CBOR = by_name("cbor")
BINARY = [MSGPACK, CBOR]

BLOB = bytes(range(256))


def test_decode_error_is_a_protocol_error() -> None:
    assert issubclass(DecodeError, ProtocolError)


def test_subprotocol_names_and_frame_kinds() -> None:
    assert SUBPROTOCOLS == ("wamp.2.json", "wamp.2.msgpack", "wamp.2.cbor")
    assert [s.rawsocket_id for s in SERIALIZERS] == [1, 2, 3]
    assert not JSON.binary
    assert MSGPACK.binary and CBOR.binary
    for serializer in SERIALIZERS:
        assert by_subprotocol(serializer.subprotocol) is serializer


def test_unknown_serializer_name_raises_key_error() -> None:
    with pytest.raises(KeyError):
        by_name("xml")
    with pytest.raises(KeyError):
        by_subprotocol("wamp.2.xml")


def test_json_writes_bytes_as_nul_and_base64() -> None:
    frame = JSON.encode(Publish(1, {}, "com.myapp.t", [b"hello"]))
    assert isinstance(frame, str)
    assert json.loads(frame) == [16, 1, {}, "com.myapp.t", ["\x00aGVsbG8="]]


def test_binary_serializers_write_bytes_natively() -> None:
    message = Publish(1, {}, "com.myapp.t", [b"hello"])
    assert msgpack.unpackb(MSGPACK.encode(message)) == [16, 1, {}, "com.myapp.t", [b"hello"]]
    assert cbor2.loads(CBOR.encode(message)) == [16, 1, {}, "com.myapp.t", [b"hello"]]


@pytest.mark.parametrize("target", BINARY, ids=lambda s: s.name)
def test_bytes_from_json_reach_binary_serializer_unchanged(target: Serializer) -> None:
    received = JSON.decode(JSON.encode(Publish(1, {}, "com.myapp.t", [BLOB])))
    forwarded = target.decode(target.encode(received))
    assert forwarded.args == [BLOB]


@pytest.mark.parametrize("source", BINARY, ids=lambda s: s.name)
def test_bytes_from_binary_serializer_reach_json_unchanged(source: Serializer) -> None:
    received = source.decode(source.encode(Publish(1, {}, "com.myapp.t", [BLOB])))
    frame = JSON.encode(received)
    assert JSON.decode(frame).args == [BLOB]


@pytest.mark.parametrize("source", SERIALIZERS, ids=lambda s: s.name)
@pytest.mark.parametrize("target", SERIALIZERS, ids=lambda s: s.name)
def test_nested_bytes_in_kwargs_cross_serializers(source: Serializer, target: Serializer) -> None:
    kwargs = {"blob": b"\x00\x01", "deep": {"items": [b"", {"more": b"\xff" * 40}]}}
    sent = Event(1, 2, {"topic": "com.myapp.t"}, ["text"], kwargs)
    received = target.decode(target.encode(source.decode(source.encode(sent))))
    assert received == sent


def test_json_string_with_inner_nul_is_not_bytes() -> None:
    received = JSON.decode('[16,1,{},"com.myapp.t",["a\\u0000b"]]')
    assert received.args == ["a\x00b"]


def test_json_accepts_utf8_bytes_as_well_as_text() -> None:
    frame = '[16,1,{},"com.myapp.t",["\u00fcber"]]'
    assert JSON.decode(frame.encode("utf-8")) == JSON.decode(frame)


MALFORMED: list[tuple[str, Serializer, str | bytes]] = [
    ("json_garbage_bytes", JSON, b"\x93\xff\x00garbage"),
    ("json_garbage_text", JSON, "[16, 1, {}, "),
    ("json_invalid_utf8", JSON, b'[16,1,{},"com.myapp.t",["\xc3\x28"]]'),
    ("json_nan", JSON, '[16,1,{},"com.myapp.t",[NaN]]'),
    ("json_infinity", JSON, '[16,1,{},"com.myapp.t",[Infinity]]'),
    ("json_negative_infinity", JSON, '[16,1,{},"com.myapp.t",[-Infinity]]'),
    ("json_number_overflowing_to_infinity", JSON, '[16,1,{},"com.myapp.t",[1e400]]'),
    ("json_base64_garbage_after_nul", JSON, '[16,1,{},"com.myapp.t",["\\u0000not base64!"]]'),
    ("json_base64_bad_padding_after_nul", JSON, '[16,1,{},"com.myapp.t",["\\u0000abc"]]'),
    ("json_deep_nesting", JSON, "[" * 100_000 + "]" * 100_000),
    ("json_deep_nesting_with_bytes", JSON, "[" * 900 + '"\\u0000AA=="' + "]" * 900),
    ("json_two_documents", JSON, "[17,1,2][17,1,2]"),
    ("msgpack_garbage_bytes", MSGPACK, b"\xc1\xc1\xc1"),
    ("msgpack_truncated", MSGPACK, msgpack.packb([16, 1, {}, "com.myapp.t", ["x" * 50]])[:-10]),
    ("msgpack_trailing_data", MSGPACK, msgpack.packb([17, 1, 2]) + b"\x00"),
    ("msgpack_text_frame", MSGPACK, "[17, 1, 2]"),
    ("msgpack_ext_type", MSGPACK, msgpack.packb([16, 1, {}, "t", [msgpack.ExtType(5, b"x")]])),
    (
        "msgpack_timestamp_ext",
        MSGPACK,
        b"\x95\x10\x01\x80\xa1t\x91\xd6\xff\x00\x00\x00\x01",
    ),
    ("msgpack_invalid_utf8_string", MSGPACK, b"\x93\x11\x01\xa2\xc3\x28"),
    ("msgpack_nested_bytes_map_key", MSGPACK, msgpack.packb([16, 1, {}, "t", [{b"k": 1}]])),
    ("cbor_garbage_bytes", CBOR, b"\xff\xff\xff"),
    ("cbor_truncated", CBOR, cbor2.dumps([16, 1, {}, "com.myapp.t", ["x" * 50]])[:-10]),
    ("cbor_text_frame", CBOR, "[17, 1, 2]"),
    ("cbor_undefined_value", CBOR, bytes.fromhex("851001a0617481f7")),
    ("cbor_datetime_tag", CBOR, bytes.fromhex("851001a0617481c11a00000001")),
    ("cbor_set_tag", CBOR, bytes.fromhex("851001a0617481d9010283010203")),
    ("cbor_unknown_tag", CBOR, bytes.fromhex("851001a0617481d9c35001")),
    ("cbor_cyclic_shared_reference", CBOR, bytes.fromhex("851001a0617481d81c81d81d00")),
    ("cbor_nested_int_map_key", CBOR, cbor2.dumps([16, 1, {}, "t", [{1: 2}]])),
]


@pytest.mark.parametrize(
    ("serializer", "frame"), [(s, f) for _, s, f in MALFORMED], ids=[n for n, _, _ in MALFORMED]
)
def test_malformed_input_raises_decode_error(serializer: Serializer, frame: str | bytes) -> None:
    with pytest.raises(DecodeError):
        serializer.decode(frame)


def test_encoding_refuses_nan_for_json() -> None:
    with pytest.raises(ValueError):
        JSON.encode(Publish(1, {}, "com.myapp.t", [math.nan]))


def test_encoding_refuses_values_json_cannot_carry() -> None:
    with pytest.raises(TypeError):
        JSON.encode(Publish(1, {}, "com.myapp.t", [object()]))
