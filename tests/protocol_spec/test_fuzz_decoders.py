"""Property tests: decoders never fail with anything but ProtocolError; messages round-trip."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import cbor2
import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

import protocol_spec
from protocol_spec import MESSAGE_CLASSES, SERIALIZERS, MessageType, ProtocolError, Serializer

FUZZ = settings(max_examples=300, deadline=None, database=None)

JSON, MSGPACK, CBOR = SERIALIZERS
CODES = sorted(int(t) for t in MessageType)
MAX_ID = protocol_spec.MAX_ID


def _decode_or_protocol_error(serializer: Serializer, frame: str | bytes) -> None:
    """Decode ``frame``; only a message object or ProtocolError is acceptable."""
    try:
        message = serializer.decode(frame)
    except ProtocolError:
        return
    assert type(message) in MESSAGE_CLASSES.values()


# --- raw input -------------------------------------------------------------------


@FUZZ
@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash_any_decoder(data: bytes) -> None:
    for serializer in SERIALIZERS:
        _decode_or_protocol_error(serializer, data)


@FUZZ
@given(st.text(max_size=256))
def test_arbitrary_text_never_crashes_any_decoder(text: str) -> None:
    for serializer in SERIALIZERS:
        _decode_or_protocol_error(serializer, text)


# --- well-formed documents holding arbitrary values ----------------------------------

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=10), children, max_size=6)
    ),
    max_leaves=15,
)
binary_values = st.recursive(
    json_scalars | st.binary(max_size=20),
    lambda children: (
        st.lists(children, max_size=6)
        | st.dictionaries(st.text(max_size=10) | st.binary(max_size=4), children, max_size=6)
    ),
    max_leaves=15,
)
# Elements shaped like real message fields, so more lists get past the arity check.
field_like = (
    st.integers(min_value=-1, max_value=2**53 + 1)
    | st.sampled_from(["com.myapp.t", "wamp.error.x", "", "\x00AQ=="])
    | st.dictionaries(st.sampled_from(["abc", "_abc", "ab", "A"]), json_scalars, max_size=2)
)


@FUZZ
@given(json_values)
def test_any_json_document_decodes_or_raises_protocol_error(value: Any) -> None:
    _decode_or_protocol_error(JSON, json.dumps(value))


@FUZZ
@given(binary_values)
def test_any_msgpack_document_decodes_or_raises_protocol_error(value: Any) -> None:
    _decode_or_protocol_error(MSGPACK, msgpack.packb(value, use_bin_type=True))


@FUZZ
@given(binary_values)
def test_any_cbor_document_decodes_or_raises_protocol_error(value: Any) -> None:
    _decode_or_protocol_error(CBOR, cbor2.dumps(value))


@FUZZ
@given(st.sampled_from(CODES), st.lists(field_like | json_values, max_size=7))
def test_lists_with_a_valid_type_code_decode_or_raise_protocol_error(
    code: int, rest: list[Any]
) -> None:
    raw = [code, *rest]
    _decode_or_protocol_error(JSON, json.dumps(raw))
    _decode_or_protocol_error(MSGPACK, msgpack.packb(raw, use_bin_type=True))
    _decode_or_protocol_error(CBOR, cbor2.dumps(raw))


@FUZZ
@given(st.sampled_from(CODES), st.lists(field_like | binary_values, max_size=7))
def test_lists_with_bytes_and_a_valid_type_code_decode_or_raise_protocol_error(
    code: int, rest: list[Any]
) -> None:
    raw = [code, *rest]
    _decode_or_protocol_error(MSGPACK, msgpack.packb(raw, use_bin_type=True))
    _decode_or_protocol_error(CBOR, cbor2.dumps(raw))


@FUZZ
@given(st.sampled_from(CODES), st.lists(json_values, max_size=7), st.data())
def test_truncated_frames_decode_or_raise_protocol_error(
    code: int, rest: list[Any], data: st.DataObject
) -> None:
    for serializer in SERIALIZERS:
        frame = serializer.dumps([code, *rest])
        cut = data.draw(st.integers(min_value=0, max_value=len(frame)))
        _decode_or_protocol_error(serializer, frame[:cut])


# --- valid messages round-trip ---------------------------------------------------

ids = st.integers(min_value=1, max_value=MAX_ID)
uris = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789_.", min_size=1, max_size=30)
keys = st.from_regex(r"[a-z][a-z0-9_]{2,8}|_[a-z0-9_]{3,8}", fullmatch=True)
# A string starting with NUL would come back from JSON as bytes: WAMP's convention.
texts = st.text(max_size=20).filter(lambda s: not s.startswith("\x00"))
payload_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
    | st.binary(max_size=20)
)
payload_values = st.recursive(
    payload_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=15,
)
option_dicts = st.dictionaries(keys, payload_values, max_size=4)
args = st.none() | st.lists(payload_values, min_size=1, max_size=4)
kwargs = st.none() | st.dictionaries(texts, payload_values, min_size=1, max_size=4)

# One strategy per field name; every message class is built from these.
FIELD_STRATEGIES: dict[str, st.SearchStrategy[Any]] = {
    "request": ids,
    "session": ids,
    "publication": ids,
    "subscription": ids,
    "registration": ids,
    "request_type": st.sampled_from(CODES),
    "realm": uris,
    "topic": uris,
    "procedure": uris,
    "reason": uris,
    "error": uris,
    "authmethod": st.sampled_from(["anonymous", "ticket", "wampcra", "cryptosign"]),
    "signature": texts,
    "details": option_dicts,
    "options": option_dicts,
    "extra": option_dicts,
    "args": args,
    "kwargs": kwargs,
}
OPTIONAL_DETAILS = st.none() | option_dicts  # UNSUBSCRIBED / UNREGISTERED


def _strategy_for(cls: type[Any]) -> st.SearchStrategy[Any]:
    fields: dict[str, st.SearchStrategy[Any]] = {}
    for field in dataclasses.fields(cls):
        if field.name == "details" and field.default is None:
            fields[field.name] = OPTIONAL_DETAILS
        else:
            fields[field.name] = FIELD_STRATEGIES[field.name]
    return st.builds(cls, **fields)


def _canonical(message: Any) -> Any:
    """Positional args become ``[]`` when only keyword arguments are sent."""
    if getattr(message, "kwargs", None) and message.args is None:
        return dataclasses.replace(message, args=[])
    return message


messages = st.sampled_from(sorted(MESSAGE_CLASSES.values(), key=lambda c: c.TYPE)).flatmap(
    _strategy_for
)


def test_every_message_class_has_field_strategies() -> None:
    for cls in MESSAGE_CLASSES.values():
        _strategy_for(cls)


@FUZZ
@given(messages)
def test_valid_messages_round_trip_through_every_serializer(message: Any) -> None:
    expected = _canonical(message)
    for serializer in SERIALIZERS:
        assert serializer.decode(serializer.encode(message)) == expected


@FUZZ
@given(messages)
def test_valid_messages_survive_crossing_serializers(message: Any) -> None:
    expected = _canonical(message)
    for source in SERIALIZERS:
        received = source.decode(source.encode(message))
        for target in SERIALIZERS:
            assert target.decode(target.encode(received)) == expected
