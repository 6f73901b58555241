"""The WAMP v2 wire protocol as this project speaks it: messages, codecs, URIs, errors.

Imports only the standard library and the serializers (msgpack, cbor2), so both
the broker and the client SDK can depend on it. The prose lives beside the code:
README.md (feature status) and wamp.md (message table, options, policies).
"""

from __future__ import annotations

from . import errors, meta, uri
from .errors import DecodeError, ProtocolError, WampError
from .messages import *  # noqa: F403
from .messages import __all__ as _messages_all
from .serializers import SERIALIZERS, SUBPROTOCOLS, Serializer, by_name, by_subprotocol

__all__ = [
    "errors",
    "meta",
    "uri",
    "WampError",
    "ProtocolError",
    "DecodeError",
    "SERIALIZERS",
    "SUBPROTOCOLS",
    "Serializer",
    "by_name",
    "by_subprotocol",
    *_messages_all,
]
