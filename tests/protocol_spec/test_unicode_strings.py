"""Valid strings (protocol_spec/wamp.md, "Valid strings"), as properties over all Unicode.

Every decoder accepts exactly the strings made of Unicode scalar values, wherever they sit
(Args, KwArgs keys and values, nested map keys, Options and Details values, URIs), and
whatever it accepts every serializer can encode again: the nine (decode with X, encode
with Y) pairs and the cluster's msgpack envelope all round-trip. A lone surrogate, in
any serializer's spelling, is a ``ProtocolError`` at decode, never a value that fails
later on its way to somebody else.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from protocol_spec.errors import ProtocolError
from protocol_spec.serializers import SERIALIZERS, by_name

from ._unicode_wire import SERIALIZER_NAMES, has_lone_surrogate, has_surrogate, hostile_frame

ANY_CHAR = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
TRICKY = st.sampled_from(
    ["\ud800", "\udc00", "\udfff", "a\ud83d", "\ude00b", "\U0001f600", "\ud7ff\ue000", "\uffff"]
)
ANY_TEXT = st.one_of(st.text(ANY_CHAR, max_size=12), TRICKY, st.lists(TRICKY).map("".join)).filter(
    lambda t: not t.startswith("\x00")
)  # "\0"+base64 is JSON's bytes convention
"""Any Python string, lone surrogates included (Hypothesis leaves them out by default)."""
VALID_TEXT = st.text(
    st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=("Cs",)),
    max_size=12,
).filter(lambda t: not t.startswith("\x00"))  # "\0"+base64 is JSON's bytes convention

Template = Callable[[str], list[Any]]


def _payload(s: str) -> tuple[list[Any], dict[str, Any]]:
    return [s, {s: [s, 1]}, [[s]]], {s: s, "nested": {"deep": [{s: s}]}}


def _publish(s: str) -> list[Any]:
    return [16, 1, {"acknowledge": True, "retain": True, "xnote": s}, "com.topic", *_payload(s)]


def _event(s: str) -> list[Any]:
    return [36, 1, 2, {"retained": True, "topic": "com.topic", "xnote": s}, *_payload(s)]


def _call(s: str) -> list[Any]:
    return [48, 1, {"timeout": 1000, "xnote": s}, "com.proc", *_payload(s)]


def _invocation(s: str) -> list[Any]:
    return [68, 1, 2, {"procedure": "com.proc", "xnote": s}, *_payload(s)]


def _yield(s: str) -> list[Any]:
    return [70, 1, {"xnote": s}, *_payload(s)]


def _result(s: str) -> list[Any]:
    return [50, 1, {"xnote": s}, *_payload(s)]


def _error(s: str) -> list[Any]:
    return [8, 48, 1, {"xnote": s}, "com.app.error", *_payload(s)]


TEMPLATES: dict[str, Template] = {
    "publish": _publish,
    "event (retained)": _event,
    "call": _call,
    "invocation": _invocation,
    "yield": _yield,
    "result": _result,
    "error": _error,
}

URI_TEMPLATES: dict[str, Template] = {
    "publish topic": lambda s: [16, 1, {}, "com." + s, [], {}],
    "call procedure": lambda s: [48, 1, {}, "com." + s, [], {}],
    "error uri": lambda s: [8, 68, 1, {}, "com." + s, [], {}],
}

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _frames(message: list[Any]) -> list[tuple[str, str | bytes, bool]]:
    """(serializer, frame, valid?) in every spelling (JSON twice: escapes and raw UTF-8).

    In JSON escapes a high+low pair of surrogates is one valid character; in UTF-8
    (msgpack, CBOR, raw JSON text) any surrogate is invalid.
    """
    frames = [
        (name, hostile_frame(name, message), not has_surrogate(message))
        for name in SERIALIZER_NAMES
    ]
    frames[0] = ("json", frames[0][1], not has_lone_surrogate(message))
    frames.append(("json", hostile_frame("json", message, utf8=True), not has_surrogate(message)))
    return frames


@SETTINGS
@given(s=ANY_TEXT)
def test_a_lone_surrogate_anywhere_is_a_protocol_error_in_every_serializer(s: str) -> None:
    for build in (*TEMPLATES.values(), *URI_TEMPLATES.values()):
        message = build(s)
        for name, frame, valid in _frames(message):
            if not valid:
                with pytest.raises(ProtocolError):
                    by_name(name).decode(frame)
            elif build in TEMPLATES.values():
                by_name(name).decode(frame)  # valid strings in payload positions: accepted


@SETTINGS
@given(s=VALID_TEXT)
def test_every_accepted_string_crosses_all_nine_serializer_pairs(s: str) -> None:
    for build in TEMPLATES.values():
        message = build(s)
        decoded = [by_name(name).decode(frame) for name, frame, _ in _frames(message)]
        assert all(d == decoded[0] for d in decoded), "serializers disagree on the message"
        for source in decoded[:3]:  # decoded by json, msgpack, cbor
            for target in SERIALIZERS:
                again = target.decode(target.encode(source))
                assert again == source, (target.name, source)


@SETTINGS
@given(s=VALID_TEXT)
def test_every_accepted_string_crosses_nodes_in_a_cluster_envelope(s: str) -> None:
    """cluster.md: envelopes are msgpack maps; whatever a decoder accepted fits in one."""
    for build in TEMPLATES.values():
        for name, frame, _ in _frames(build(s)):
            message = by_name(name).decode(frame)
            envelope = {"op": "x", "m": message.to_list()}
            packed = msgpack.packb(envelope, use_bin_type=True)
            assert msgpack.unpackb(packed, raw=False, strict_map_key=False) == envelope


def _msgpack_str(data: bytes) -> bytes:
    return b"\xd9" + bytes([len(data)]) + data


def _cbor_text(data: bytes) -> bytes:
    return b"\x78" + bytes([len(data)]) + data


@SETTINGS
@given(data=st.binary(max_size=40))
def test_arbitrary_bytes_in_a_string_are_refused_or_valid_everywhere(data: bytes) -> None:
    """Invalid UTF-8 (surrogate forms, overlong forms, stray bytes) never becomes a str."""
    assume(not data.startswith(b"\x00"))  # a NUL-led string is bytes to a JSON peer
    frames: list[tuple[str, str | bytes]] = [
        ("msgpack", b"\x96\x10\x01\x80\xa9com.topic\x91" + _msgpack_str(data) + b"\x80"),
        ("cbor", b"\x86\x10\x01\xa0\x69com.topic\x81" + _cbor_text(data) + b"\xa0"),
        ("json", b'[16,1,{},"com.topic",["' + data.replace(b'"', b"").replace(b"\\", b"") + b'"]]'),
    ]
    for name, frame in frames:
        try:
            message = by_name(name).decode(frame)
        except ProtocolError:
            continue
        assert not has_surrogate(message.to_list())
        for target in SERIALIZERS:
            assert target.decode(target.encode(message)).to_list() == message.to_list()


def test_the_issue_frame_is_refused_and_an_escaped_pair_is_one_character() -> None:
    json = by_name("json")
    with pytest.raises(ProtocolError, match="surrogate"):
        json.decode('[16,7,{"acknowledge":true},"t",["\\ud800"]]')
    with pytest.raises(ProtocolError, match="surrogate"):
        json.decode(b'[16,7,{"acknowledge":true,"x\\udc00y":1},"t",[]]')
    with pytest.raises(ProtocolError):
        json.decode('[16,7,{},"t",["\ud800"]]')  # the character itself, in a str frame
    pair = json.decode(b'[16,7,{},"t",["\\ud83d\\ude00"]]')
    assert pair.args == ["\U0001f600"]
    escaped_backslash = json.decode(b'[16,7,{},"t",["\\\\ud800"]]')
    assert escaped_backslash.args == ["\\ud800"]  # six ASCII characters, not a surrogate


def test_msgpack_and_cbor_refuse_the_utf8_form_of_a_surrogate() -> None:
    assert struct.pack(">B", 0xED) + b"\xa0\x80" == "\ud800".encode("utf-8", "surrogatepass")
    for name in ("msgpack", "cbor"):
        with pytest.raises(ProtocolError):
            by_name(name).decode(hostile_frame(name, [16, 7, {}, "t", ["\ud800"]]))
        with pytest.raises(ProtocolError):
            by_name(name).decode(hostile_frame(name, [16, 7, {}, "t", [], {"\udc00": 1}]))
