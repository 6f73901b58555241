"""Encoding one outgoing message for one recipient, without hurting anyone else.

A message the router forwards was decoded from another session, maybe with another
serializer; a few values pass every decoder yet one encoder cannot carry them (a NaN
float to JSON, a 2^70 integer to msgpack; see protocol_spec/wamp.md, "What cannot be
encoded for one recipient"). ``frame_for`` turns such a failure into ``None`` for this
recipient only: it never raises into the router's handling of the sender, it logs one
warning per message and serializer (a fan-out shares the failure through the encode
cache), and it leaves the reply policy to the caller of ``Peer.send`` (the dealer turns
an undeliverable RESULT or INVOCATION into an ERROR for the caller).

Transport-independent: any transport with a ``Serializer`` and a framing function uses it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Final

from broker.core.interfaces import EncodeCache
from protocol_spec.messages import Message
from protocol_spec.serializers import Serializer

__all__ = ["UNENCODABLE", "encode_payload", "frame_for"]

log = logging.getLogger(__name__)


class _Unencodable:
    """The encode cache's marker for "this serializer cannot carry this message"."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "UNENCODABLE"


UNENCODABLE: Final = _Unencodable()


def encode_payload(serializer: Serializer, message: Message) -> bytes | None:
    """The frame payload (UTF-8 bytes for text serializers), or ``None`` with one warning.

    Every exception of the encoder is caught: a value this serializer cannot carry is
    the recipient's problem, and must never become the sender's (close 1011).
    """
    try:
        data = serializer.encode(message)
        return data.encode("utf-8") if isinstance(data, str) else data
    except Exception as exc:  # TypeError, ValueError, OverflowError, UnicodeError, encoder bugs
        log.warning(
            "cannot encode %s for %s recipients: %s: %s",
            type(message).__name__,
            serializer.name,
            type(exc).__name__,
            exc,
        )
        return None


def frame_for(
    serializer: Serializer,
    message: Message,
    cache: EncodeCache | None,
    frame: Callable[[bytes], bytes],
    key: str | None = None,
) -> bytes | None:
    """The framed bytes of ``message`` for ``serializer``, shared through ``cache``.

    The payload is cached under the serializer's name and the framed bytes under
    ``key`` (a transport's framing, e.g. ``websocket:json``; the serializer's name when
    not given), so a fan-out serializes once per serializer and frames once per
    framing. ``None`` when the serializer cannot carry the message, or ``frame``
    refuses the payload (``ValueError``: over a RawSocket peer's maximum); the failure
    is cached too, so a fan-out encodes and logs it once.
    """
    if cache is None:
        payload = encode_payload(serializer, message)
        return None if payload is None else _framed(frame, payload, message)
    name = serializer.name
    frame_key = key or name
    found = cache.get(frame_key)
    if found is None:
        encoded = cache.get(name) if frame_key != name else None
        if encoded is None:
            payload = encode_payload(serializer, message)
            encoded = UNENCODABLE if payload is None else payload
            if frame_key != name:
                cache[name] = encoded
        if isinstance(encoded, bytes):
            framed = _framed(frame, encoded, message)
            found = UNENCODABLE if framed is None else framed
        else:
            found = UNENCODABLE
        cache[frame_key] = found
    return found if isinstance(found, bytes) else None


def _framed(frame: Callable[[bytes], bytes], payload: bytes, message: Message) -> bytes | None:
    try:
        return frame(payload)
    except ValueError as exc:
        log.warning("cannot send %s: %s", type(message).__name__, exc)
        return None
