"""WAMP v2 messages: one frozen dataclass per message type, and their decoding.

Every message travels as a list whose first element is the type code. Each class
below names its wire format in its docstring and its row in protocol_spec/wamp.md.
``decode_message`` turns a decoded list (from any serializer) into a message,
checking arity, element types, the ID range and Options/Details keys; it raises
``ProtocolError`` and never asserts. URI *syntax* is checked by the router with
``protocol_spec.uri`` because the rules depend on the ``match`` option and a bad
URI earns an ERROR reply, not an ABORT.

Payloads: ``args`` and ``kwargs`` are optional. ``to_list`` emits ``kwargs`` only
when non-empty and ``args`` only when non-empty or needed before ``kwargs``.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any, ClassVar, Final

from .errors import ProtocolError
from .uri import is_valid_key

__all__ = [
    "MAX_ID",
    "MESSAGE_CLASSES",
    "Abort",
    "Authenticate",
    "Call",
    "Cancel",
    "Challenge",
    "Error",
    "Event",
    "Goodbye",
    "Hello",
    "Interrupt",
    "Invocation",
    "Message",
    "MessageType",
    "Publish",
    "Published",
    "Register",
    "Registered",
    "Result",
    "Subscribe",
    "Subscribed",
    "Unregister",
    "Unregistered",
    "Unsubscribe",
    "Unsubscribed",
    "Welcome",
    "Yield",
    "decode_message",
]

MAX_ID: Final = 2**53
"""IDs are integers in 1..2^53 (they must fit a JavaScript double exactly)."""


class MessageType(IntEnum):
    """WAMP message type codes (first element of every message)."""

    HELLO = 1
    WELCOME = 2
    ABORT = 3
    CHALLENGE = 4
    AUTHENTICATE = 5
    GOODBYE = 6
    ERROR = 8
    PUBLISH = 16
    PUBLISHED = 17
    SUBSCRIBE = 32
    SUBSCRIBED = 33
    UNSUBSCRIBE = 34
    UNSUBSCRIBED = 35
    EVENT = 36
    CALL = 48
    CANCEL = 49
    RESULT = 50
    REGISTER = 64
    REGISTERED = 65
    UNREGISTER = 66
    UNREGISTERED = 67
    INVOCATION = 68
    INTERRUPT = 69
    YIELD = 70


# Field kinds used by the decoding table.
_ID = "id"  # int in 1..2^53
_ID0 = "id0"  # int in 0..2^53 (0 only where the spec allows it)
_INT = "int"
_STR = "str"
_DICT = "dict"  # Options/Details: str keys obeying the key rule
_ARGS = "args"  # optional trailing list
_KWARGS = "kwargs"  # optional trailing dict with str keys


def _payload(args: list[Any] | None, kwargs: dict[str, Any] | None) -> list[Any]:
    if kwargs:
        return [args if args is not None else [], kwargs]
    if args:
        return [args]
    return []


@dataclass(frozen=True, slots=True)
class Hello:
    """``[HELLO, Realm|uri, Details|dict]``: a client asks to join a realm (wamp.md §Session)."""

    TYPE: ClassVar[int] = 1
    SPEC: ClassVar[tuple[str, ...]] = (_STR, _DICT)
    realm: str
    details: dict[str, Any]

    def to_list(self) -> list[Any]:
        return [1, self.realm, self.details]


@dataclass(frozen=True, slots=True)
class Welcome:
    """``[WELCOME, Session|id, Details|dict]``: the router accepts the session (§Session)."""

    TYPE: ClassVar[int] = 2
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _DICT)
    session: int
    details: dict[str, Any]

    def to_list(self) -> list[Any]:
        return [2, self.session, self.details]


@dataclass(frozen=True, slots=True)
class Abort:
    """``[ABORT, Details|dict, Reason|uri]``: the session ends before or instead of WELCOME."""

    TYPE: ClassVar[int] = 3
    SPEC: ClassVar[tuple[str, ...]] = (_DICT, _STR)
    details: dict[str, Any]
    reason: str

    def to_list(self) -> list[Any]:
        return [3, self.details, self.reason]


@dataclass(frozen=True, slots=True)
class Challenge:
    """``[CHALLENGE, AuthMethod|string, Extra|dict]``: the router asks for proof (§Auth)."""

    TYPE: ClassVar[int] = 4
    SPEC: ClassVar[tuple[str, ...]] = (_STR, _DICT)
    authmethod: str
    extra: dict[str, Any]

    def to_list(self) -> list[Any]:
        return [4, self.authmethod, self.extra]


@dataclass(frozen=True, slots=True)
class Authenticate:
    """``[AUTHENTICATE, Signature|string, Extra|dict]``: the client's answer (§Auth)."""

    TYPE: ClassVar[int] = 5
    SPEC: ClassVar[tuple[str, ...]] = (_STR, _DICT)
    signature: str
    extra: dict[str, Any]

    def to_list(self) -> list[Any]:
        return [5, self.signature, self.extra]


@dataclass(frozen=True, slots=True)
class Goodbye:
    """``[GOODBYE, Details|dict, Reason|uri]``: either side closes the session (§Session)."""

    TYPE: ClassVar[int] = 6
    SPEC: ClassVar[tuple[str, ...]] = (_DICT, _STR)
    details: dict[str, Any]
    reason: str

    def to_list(self) -> list[Any]:
        return [6, self.details, self.reason]


@dataclass(frozen=True, slots=True)
class Error:
    """``[ERROR, REQUEST.Type|int, REQUEST.Request|id, Details|dict, Error|uri, Args?, Kw?]``.

    The error answer to SUBSCRIBE, UNSUBSCRIBE, PUBLISH, REGISTER, UNREGISTER, CALL
    (router → client) or INVOCATION (callee → router). See wamp.md §Errors.
    """

    TYPE: ClassVar[int] = 8
    SPEC: ClassVar[tuple[str, ...]] = (_INT, _ID, _DICT, _STR, _ARGS, _KWARGS)
    request_type: int
    request: int
    details: dict[str, Any]
    error: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None

    def to_list(self) -> list[Any]:
        return [8, self.request_type, self.request, self.details, self.error] + _payload(
            self.args, self.kwargs
        )


@dataclass(frozen=True, slots=True)
class Publish:
    """``[PUBLISH, Request|id, Options|dict, Topic|uri, Args?, Kw?]`` (§PubSub)."""

    TYPE: ClassVar[int] = 16
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _DICT, _STR, _ARGS, _KWARGS)
    request: int
    options: dict[str, Any]
    topic: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None

    def to_list(self) -> list[Any]:
        return [16, self.request, self.options, self.topic] + _payload(self.args, self.kwargs)


@dataclass(frozen=True, slots=True)
class Published:
    """``[PUBLISHED, PUBLISH.Request|id, Publication|id]``: acknowledged publish (§PubSub)."""

    TYPE: ClassVar[int] = 17
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _ID)
    request: int
    publication: int

    def to_list(self) -> list[Any]:
        return [17, self.request, self.publication]


@dataclass(frozen=True, slots=True)
class Subscribe:
    """``[SUBSCRIBE, Request|id, Options|dict, Topic|uri]`` (§PubSub)."""

    TYPE: ClassVar[int] = 32
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _DICT, _STR)
    request: int
    options: dict[str, Any]
    topic: str

    def to_list(self) -> list[Any]:
        return [32, self.request, self.options, self.topic]


@dataclass(frozen=True, slots=True)
class Subscribed:
    """``[SUBSCRIBED, SUBSCRIBE.Request|id, Subscription|id]`` (§PubSub)."""

    TYPE: ClassVar[int] = 33
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _ID)
    request: int
    subscription: int

    def to_list(self) -> list[Any]:
        return [33, self.request, self.subscription]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """``[UNSUBSCRIBE, Request|id, SUBSCRIBED.Subscription|id]`` (§PubSub)."""

    TYPE: ClassVar[int] = 34
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _ID)
    request: int
    subscription: int

    def to_list(self) -> list[Any]:
        return [34, self.request, self.subscription]


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """``[UNSUBSCRIBED, UNSUBSCRIBE.Request|id]`` or ``[35, 0, Details|dict]`` (revocation)."""

    TYPE: ClassVar[int] = 35
    SPEC: ClassVar[tuple[str, ...]] = (_ID0, _DICT)
    OPTIONAL_FROM: ClassVar[int] = 1
    request: int
    details: dict[str, Any] | None = None

    def to_list(self) -> list[Any]:
        if self.details is None:
            return [35, self.request]
        return [35, self.request, self.details]


@dataclass(frozen=True, slots=True)
class Event:
    """``[EVENT, Subscription|id, Publication|id, Details|dict, Args?, Kw?]`` (§PubSub).

    ``Details.topic`` is set for pattern-based subscriptions.
    """

    TYPE: ClassVar[int] = 36
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _ID, _DICT, _ARGS, _KWARGS)
    subscription: int
    publication: int
    details: dict[str, Any]
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None

    def to_list(self) -> list[Any]:
        return [36, self.subscription, self.publication, self.details] + _payload(
            self.args, self.kwargs
        )


@dataclass(frozen=True, slots=True)
class Call:
    """``[CALL, Request|id, Options|dict, Procedure|uri, Args?, Kw?]`` (§RPC)."""

    TYPE: ClassVar[int] = 48
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _DICT, _STR, _ARGS, _KWARGS)
    request: int
    options: dict[str, Any]
    procedure: str
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None

    def to_list(self) -> list[Any]:
        return [48, self.request, self.options, self.procedure] + _payload(self.args, self.kwargs)


@dataclass(frozen=True, slots=True)
class Cancel:
    """``[CANCEL, CALL.Request|id, Options|dict]``; Options.mode: skip|kill|killnowait."""

    TYPE: ClassVar[int] = 49
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _DICT)
    request: int
    options: dict[str, Any]

    def to_list(self) -> list[Any]:
        return [49, self.request, self.options]


@dataclass(frozen=True, slots=True)
class Result:
    """``[RESULT, CALL.Request|id, Details|dict, Args?, Kw?]``; Details.progress for partials."""

    TYPE: ClassVar[int] = 50
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _DICT, _ARGS, _KWARGS)
    request: int
    details: dict[str, Any]
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None

    def to_list(self) -> list[Any]:
        return [50, self.request, self.details] + _payload(self.args, self.kwargs)


@dataclass(frozen=True, slots=True)
class Register:
    """``[REGISTER, Request|id, Options|dict, Procedure|uri]``; Options.match, invoke (§RPC)."""

    TYPE: ClassVar[int] = 64
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _DICT, _STR)
    request: int
    options: dict[str, Any]
    procedure: str

    def to_list(self) -> list[Any]:
        return [64, self.request, self.options, self.procedure]


@dataclass(frozen=True, slots=True)
class Registered:
    """``[REGISTERED, REGISTER.Request|id, Registration|id]`` (§RPC)."""

    TYPE: ClassVar[int] = 65
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _ID)
    request: int
    registration: int

    def to_list(self) -> list[Any]:
        return [65, self.request, self.registration]


@dataclass(frozen=True, slots=True)
class Unregister:
    """``[UNREGISTER, Request|id, REGISTERED.Registration|id]`` (§RPC)."""

    TYPE: ClassVar[int] = 66
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _ID)
    request: int
    registration: int

    def to_list(self) -> list[Any]:
        return [66, self.request, self.registration]


@dataclass(frozen=True, slots=True)
class Unregistered:
    """``[UNREGISTERED, UNREGISTER.Request|id]`` or ``[67, 0, Details|dict]`` (revocation)."""

    TYPE: ClassVar[int] = 67
    SPEC: ClassVar[tuple[str, ...]] = (_ID0, _DICT)
    OPTIONAL_FROM: ClassVar[int] = 1
    request: int
    details: dict[str, Any] | None = None

    def to_list(self) -> list[Any]:
        if self.details is None:
            return [67, self.request]
        return [67, self.request, self.details]


@dataclass(frozen=True, slots=True)
class Invocation:
    """``[INVOCATION, Request|id, REGISTERED.Registration|id, Details|dict, Args?, Kw?]``.

    Router → callee. Details may carry procedure, caller, caller_authid,
    caller_authrole, receive_progress, timeout (§RPC).
    """

    TYPE: ClassVar[int] = 68
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _ID, _DICT, _ARGS, _KWARGS)
    request: int
    registration: int
    details: dict[str, Any]
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None

    def to_list(self) -> list[Any]:
        return [68, self.request, self.registration, self.details] + _payload(
            self.args, self.kwargs
        )


@dataclass(frozen=True, slots=True)
class Interrupt:
    """``[INTERRUPT, INVOCATION.Request|id, Options|dict]``: router asks the callee to stop."""

    TYPE: ClassVar[int] = 69
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _DICT)
    request: int
    options: dict[str, Any]

    def to_list(self) -> list[Any]:
        return [69, self.request, self.options]


@dataclass(frozen=True, slots=True)
class Yield:
    """``[YIELD, INVOCATION.Request|id, Options|dict, Args?, Kw?]``; Options.progress (§RPC)."""

    TYPE: ClassVar[int] = 70
    SPEC: ClassVar[tuple[str, ...]] = (_ID, _DICT, _ARGS, _KWARGS)
    request: int
    options: dict[str, Any]
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None

    def to_list(self) -> list[Any]:
        return [70, self.request, self.options] + _payload(self.args, self.kwargs)


Message = (
    Hello
    | Welcome
    | Abort
    | Challenge
    | Authenticate
    | Goodbye
    | Error
    | Publish
    | Published
    | Subscribe
    | Subscribed
    | Unsubscribe
    | Unsubscribed
    | Event
    | Call
    | Cancel
    | Result
    | Register
    | Registered
    | Unregister
    | Unregistered
    | Invocation
    | Interrupt
    | Yield
)

MESSAGE_CLASSES: Final[dict[int, type[Any]]] = {
    cls.TYPE: cls
    for cls in (
        Hello,
        Welcome,
        Abort,
        Challenge,
        Authenticate,
        Goodbye,
        Error,
        Publish,
        Published,
        Subscribe,
        Subscribed,
        Unsubscribe,
        Unsubscribed,
        Event,
        Call,
        Cancel,
        Result,
        Register,
        Registered,
        Unregister,
        Unregistered,
        Invocation,
        Interrupt,
        Yield,
    )
}


def _check_dict(value: Any, position: int, name: str) -> dict[str, Any]:
    if type(value) is not dict:
        raise ProtocolError(f"{name}: element {position} must be a dict")
    for key in value:
        if not is_valid_key(key):
            raise ProtocolError(f"{name}: invalid key {key!r} in element {position}")
    return value


def _check_field(kind: str, value: Any, position: int, name: str) -> Any:
    if kind == _ID or kind == _ID0:
        low = 1 if kind == _ID else 0
        if type(value) is not int or not low <= value <= MAX_ID:
            raise ProtocolError(f"{name}: element {position} must be an ID in {low}..2^53")
        return value
    if kind == _STR:
        if type(value) is not str:
            raise ProtocolError(f"{name}: element {position} must be a string")
        return value
    if kind == _DICT:
        return _check_dict(value, position, name)
    if kind == _ARGS:
        if type(value) is not list:
            raise ProtocolError(f"{name}: arguments (element {position}) must be a list")
        return value
    if kind == _KWARGS:
        if type(value) is not dict or not all(type(k) is str for k in value):
            raise ProtocolError(
                f"{name}: keyword arguments (element {position}) must be a dict with string keys"
            )
        return value
    # _INT
    if type(value) is not int:
        raise ProtocolError(f"{name}: element {position} must be an integer")
    return value


def decode_message(raw: Any) -> Any:
    """Validate a decoded WAMP message (a list) and build its message object.

    Raises ``ProtocolError`` on anything malformed: not a list, unknown type code,
    wrong arity, wrong element type, an ID out of range or a bad Options key.
    """
    if type(raw) is not list or not raw:
        raise ProtocolError("a WAMP message must be a non-empty list")
    code = raw[0]
    if type(code) is not int:
        raise ProtocolError("the message type must be an integer")
    cls = MESSAGE_CLASSES.get(code)
    if cls is None:
        raise ProtocolError(f"unknown message type {code}")
    spec: tuple[str, ...] = cls.SPEC
    name: str = cls.__name__.upper()
    given = len(raw) - 1
    required = len(spec)
    while required and spec[required - 1] in (_ARGS, _KWARGS):
        required -= 1
    required = min(required, getattr(cls, "OPTIONAL_FROM", required))
    if not required <= given <= len(spec):
        raise ProtocolError(f"{name}: expected {required}..{len(spec)} elements, got {given}")
    values = [_check_field(spec[i], raw[i + 1], i + 1, name) for i in range(given)]
    return cls(*values)
