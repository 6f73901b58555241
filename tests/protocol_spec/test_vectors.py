"""The hand-written vectors in protocol_spec/vectors hold for every serializer."""

from __future__ import annotations

from typing import Any

import pytest

import protocol_spec
from protocol_spec import SERIALIZERS, ProtocolError, Serializer
from protocol_spec.uri import is_valid_uri

from ._wire import frame_for, load_vectors, restore_bytes

MESSAGE_VECTORS = load_vectors("messages.json")
URI_VECTORS = load_vectors("uris.json")
VALID = [v for v in MESSAGE_VECTORS if v["valid"]]
INVALID = [v for v in MESSAGE_VECTORS if not v["valid"]]


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


def _by_serializer(vectors: list[dict[str, Any]]) -> list[Any]:
    return [pytest.param(s, v, id=f"{s.name}-{v['name']}") for s in SERIALIZERS for v in vectors]


def test_vector_names_are_unique() -> None:
    names = _ids(MESSAGE_VECTORS) + _ids(URI_VECTORS)
    assert len(names) == len(set(names))


def test_every_message_type_has_a_valid_vector() -> None:
    covered = {v["message"][0] for v in VALID}
    assert covered == {int(t) for t in protocol_spec.MessageType}


def test_invalid_vectors_name_the_expected_error() -> None:
    assert all(v.get("error") for v in INVALID)


@pytest.mark.parametrize(("serializer", "vector"), _by_serializer(VALID))
def test_valid_vector_decodes_to_its_class(serializer: Serializer, vector: dict[str, Any]) -> None:
    message = serializer.decode(frame_for(serializer, vector["message"]))
    assert type(message).__name__ == vector["class"]
    assert message.to_list() == restore_bytes(vector["message"])


@pytest.mark.parametrize(("serializer", "vector"), _by_serializer(INVALID))
def test_invalid_vector_raises_protocol_error(
    serializer: Serializer, vector: dict[str, Any]
) -> None:
    with pytest.raises(ProtocolError) as caught:
        serializer.decode(frame_for(serializer, vector["message"]))
    assert vector["error"] in str(caught.value)


@pytest.mark.parametrize(("serializer", "vector"), _by_serializer(VALID))
def test_valid_vector_round_trips(serializer: Serializer, vector: dict[str, Any]) -> None:
    message = serializer.decode(frame_for(serializer, vector["message"]))
    again = serializer.decode(serializer.encode(message))
    assert again == message


@pytest.mark.parametrize("vector", VALID, ids=_ids(VALID))
def test_valid_vector_travels_through_every_serializer_pair(vector: dict[str, Any]) -> None:
    for source in SERIALIZERS:
        received = source.decode(frame_for(source, vector["message"]))
        for target in SERIALIZERS:
            assert target.decode(target.encode(received)) == received


# kwargs keys that are not strings cannot be written in JSON, so these are built here.
NON_STR_KWARGS_KEYS: list[tuple[str, list[Any]]] = [
    ("publish_kwargs_int_key", [16, 1, {}, "com.myapp.t", [], {1: "one"}]),
    ("call_kwargs_bytes_key", [48, 1, {}, "com.myapp.p", [], {b"k": "v"}]),
    ("event_kwargs_mixed_keys", [36, 1, 2, {}, [], {"ok": 1, 2: "two"}]),
    ("options_bytes_key", [32, 1, {b"match": "prefix"}, "com.myapp.t"]),
]


@pytest.mark.parametrize("serializer", [s for s in SERIALIZERS if s.binary], ids=lambda s: s.name)
@pytest.mark.parametrize(
    "message", [m for _, m in NON_STR_KWARGS_KEYS], ids=[n for n, _ in NON_STR_KWARGS_KEYS]
)
def test_non_string_map_keys_are_protocol_errors(
    serializer: Serializer, message: list[Any]
) -> None:
    with pytest.raises(ProtocolError):
        serializer.decode(serializer.dumps(message))


def test_non_string_kwargs_keys_rejected_by_the_message_decoder_itself() -> None:
    with pytest.raises(ProtocolError, match="keyword arguments"):
        protocol_spec.decode_message([16, 1, {}, "com.myapp.t", [], {1: "one"}])


@pytest.mark.parametrize("vector", URI_VECTORS, ids=_ids(URI_VECTORS))
def test_uri_vector(vector: dict[str, Any]) -> None:
    assert is_valid_uri(vector["uri"], vector["match"], strict=vector["strict"]) is vector["valid"]
