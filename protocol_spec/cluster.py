"""The cluster wire: envelopes and records broker nodes exchange through Redis.

One frozen dataclass per envelope kind, like ``messages`` does for WAMP. Every
envelope is a msgpack map with short keys (protocol_spec/cluster.md, "Envelopes"):
``v`` the protocol version, ``op`` the kind (events have none: their channel says it)
and ``n`` the sending node. Records are the values of the per-node hashes
(cluster.md, "Keys"); they carry no version and no ``op``.

Decoding (``decode_event``, ``decode_control``, ``decode_inbox``, ``Record.unpack``)
checks the map, the version, the kind and every field's type, and raises
``ClusterProtocolError`` with the reason; nothing else escapes. ``CONTROL_TYPES`` and
``INBOX_TYPES`` are the one table per channel mapping ``op`` to its class.

Each field's wire key is in its ``metadata["key"]``; ``wire_keys(cls)`` lists them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, ClassVar, Final, TypeVar

import msgpack

__all__ = [
    "CONTROL_TYPES",
    "INBOX_TYPES",
    "KILL_SELECTORS",
    "VERSION",
    "CalleeAdded",
    "CalleeRecord",
    "CalleeRemoved",
    "ClusterProtocolError",
    "ControlMessage",
    "Envelope",
    "EventEnvelope",
    "InboxError",
    "InboxInterrupt",
    "InboxInvocation",
    "InboxMessage",
    "InboxResult",
    "KillSessions",
    "NodeGone",
    "NodeHello",
    "Probe",
    "Record",
    "RetainedChanged",
    "SessionJoined",
    "SessionLeft",
    "SessionRecord",
    "SubscriptionChanged",
    "SubscriptionRecord",
    "TestamentsRecord",
    "decode_control",
    "decode_event",
    "decode_inbox",
    "wire_keys",
]

VERSION: Final = 1
"""The cluster protocol version every envelope carries as ``v``."""

KILL_SELECTORS: Final = frozenset({"session", "authid", "authrole", "all"})


class ClusterProtocolError(ValueError):
    """A cluster envelope or record that does not follow protocol_spec/cluster.md."""


Decode = Callable[[Any], Any]
Encode = Callable[[Any], Any]


# --- field checks ----------------------------------------------------------------------
def _fail(what: str) -> ClusterProtocolError:
    return ClusterProtocolError(what)


def _str(value: Any) -> str:
    if type(value) is not str:
        raise _fail("must be a string")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)


def _int(value: Any) -> int:
    if type(value) is not int:
        raise _fail("must be an integer")
    return value


def _opt_int(value: Any) -> int | None:
    return None if value is None else _int(value)


def _bool(value: Any) -> bool:
    if type(value) is not bool:
        raise _fail("must be a boolean")
    return value


def _map(value: Any) -> dict[str, Any]:
    if type(value) is not dict:
        raise _fail("must be a map")
    return value


def _map_or_empty(value: Any) -> dict[str, Any]:
    return {} if value is None else _map(value)


def _opt_map(value: Any) -> dict[str, Any] | None:
    return None if value is None else _map(value)


def _opt_list(value: Any) -> list[Any] | None:
    if value is not None and type(value) is not list:
        raise _fail("must be a list or nil")
    return value


def _any(value: Any) -> Any:
    return value


def _int_tuple(value: Any) -> tuple[int, ...]:
    if value is None:
        return ()
    if type(value) is not list or not all(type(v) is int for v in value):
        raise _fail("must be a list of integers")
    return tuple(value)


def _features(value: Any) -> dict[str, Any]:
    # Redis's cmsgpack packs an empty Lua table as an empty array
    if value is None or value == []:
        return {}
    return _map(value)


def _session_info(value: Any) -> dict[str, Any]:
    info = _map(value)
    if type(info.get("session")) is not int:
        raise _fail("must describe a session (integer 'session')")
    return info


def _selector(value: Any) -> str:
    if type(value) is not str or value not in KILL_SELECTORS:
        raise _fail(f"must be one of {sorted(KILL_SELECTORS)}")
    return str(value)


def _testaments(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if type(value) is not list:
        raise _fail("must be a list of testaments")
    for item in value:
        if type(item) is not dict or type(item.get("topic")) is not str:
            raise _fail("must be a list of testaments (maps with a string 'topic')")
    return value


def _w(key: str, decode: Decode, encode: Encode | None = None) -> dict[str, Any]:
    """Field metadata: carried under ``key``, checked by ``decode``, written by ``encode``."""
    return {"key": key, "decode": decode, "encode": encode}


_Spec = tuple[tuple[str, str, Decode, Encode | None, Any], ...]
_SPECS: dict[type, _Spec] = {}


def _spec(cls: type) -> _Spec:
    """(attribute, key, decode, encode, default) of each field of ``cls``, cached."""
    spec = _SPECS.get(cls)
    if spec is None:
        spec = tuple(
            (f.name, f.metadata["key"], f.metadata["decode"], f.metadata["encode"], f.default)
            for f in fields(cls)
        )
        _SPECS[cls] = spec
    return spec


def wire_keys(cls: type) -> tuple[str, ...]:
    """The wire keys of ``cls``'s fields in declaration order (``v`` and ``op`` excluded)."""
    return tuple(key for _name, key, _dec, _enc, _default in _spec(cls))


def _load(data: bytes | str) -> dict[Any, Any]:
    try:
        value = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several types for bad input
        raise ClusterProtocolError(f"undecodable envelope: {exc}") from None
    if type(value) is not dict:
        raise ClusterProtocolError("an envelope must be a map")
    return value


def _dump(value: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb(value, use_bin_type=True)
    return data


_T = TypeVar("_T", bound="_Wire")


_Codec = tuple[Callable[[Any], dict[str, Any]], Callable[[dict[Any, Any]], Any]]
_CODECS: dict[type, _Codec] = {}


def _codec(cls: type) -> _Codec:
    """(encode, decode) of ``cls``, generated once from its fields (as dataclasses does).

    ``encode`` builds the map (with ``v`` and ``op`` for envelopes); ``decode`` builds the
    instance from a map and raises ``KeyError`` or ``ClusterProtocolError`` when malformed.
    """
    found = _CODECS.get(cls)
    if found is not None:
        return found
    ns: dict[str, Any] = {"cls": cls}
    items: list[str] = []
    if hasattr(cls, "OP"):  # an envelope
        items.append(f"'v': {VERSION!r}")
        if cls.OP:
            items.append(f"'op': {cls.OP!r}")
    args: list[str] = []
    for i, (name, key, decode, encode, default) in enumerate(_spec(cls)):
        ns[f"d{i}"], ns[f"e{i}"], ns[f"m{i}"] = decode, encode, default
        items.append(f"{key!r}: " + (f"self.{name}" if encode is None else f"e{i}(self.{name})"))
        value = f"d{i}(env[{key!r}])"
        args.append(
            f"{name}={value}"
            if default is MISSING
            else f"{name}={value} if {key!r} in env else m{i}"
        )
    source = (
        f"def encode(self):\n    return {{{', '.join(items)}}}\n"
        f"def decode(env):\n    return cls({', '.join(args)})\n"
    )
    exec(source, ns)  # generated from our own field names and keys only
    found = _CODECS[cls] = (ns["encode"], ns["decode"])
    return found


class _Wire:
    """What envelopes and records share: the field-driven map codec."""

    __slots__ = ()

    def _fields_map(self) -> dict[str, Any]:
        return _codec(type(self))[0](self)

    @classmethod
    def _from_fields(cls: type[_T], env: dict[Any, Any]) -> _T:
        try:
            found: _T = _codec(cls)[1](env)
        except (KeyError, ClusterProtocolError):
            return cls._explain(env)  # the slow path names the fault
        return found

    @classmethod
    def _explain(cls: type[_T], env: dict[Any, Any]) -> _T:
        kwargs: dict[str, Any] = {}
        for name, key, decode, _encode, default in _spec(cls):
            if key in env:
                try:
                    kwargs[name] = decode(env[key])
                except ClusterProtocolError as exc:
                    raise ClusterProtocolError(f"{cls.__name__}.{key} {exc}") from None
            elif default is MISSING:
                raise ClusterProtocolError(f"{cls.__name__} without {key!r}")
        return cls(**kwargs)


class Record(_Wire):
    """A value stored in a per-node hash (cluster.md, "Keys"): a plain msgpack map."""

    __slots__ = ()

    def to_map(self) -> dict[str, Any]:
        """The record as a map (for nesting in an envelope)."""
        return self._fields_map()

    def pack(self) -> bytes:
        """The record as msgpack bytes."""
        return _dump(self.to_map())

    @classmethod
    def from_map(cls: type[_T], value: Any) -> _T:
        """Check and build the record from a decoded map."""
        if type(value) is not dict:
            raise ClusterProtocolError(f"{cls.__name__} must be a map")
        return cls._from_fields(value)

    @classmethod
    def unpack(cls: type[_T], data: bytes | str) -> _T:
        """Decode and check a record read from Redis."""
        return cls._from_fields(_load(data))


def _record(cls: type[Record]) -> Decode:
    return cls.from_map


def _to_map(value: Record) -> dict[str, Any]:
    return value.to_map()


class Envelope(_Wire):
    """A message between nodes: ``{v, op, n, …}`` packed with msgpack."""

    __slots__ = ()

    OP: ClassVar[str] = ""
    """The ``op`` value (empty for event envelopes, whose channel names them)."""

    def to_map(self) -> dict[str, Any]:
        """The envelope as a map, version and kind included."""
        return self._fields_map()

    def pack(self) -> bytes:
        """The envelope as msgpack bytes."""
        return _dump(self.to_map())


def _decode(env: dict[Any, Any], table: dict[str, type[_E]], channel: str) -> _E:
    version = env.get("v")
    if version != VERSION:
        raise ClusterProtocolError(f"unsupported cluster protocol version {version!r}")
    op = env.get("op")
    cls = table.get(op) if type(op) is str else None
    if cls is None:
        raise ClusterProtocolError(f"unknown {channel} envelope op {op!r}")
    return cls._from_fields(env)


_E = TypeVar("_E", bound=Envelope)


# --- records -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionRecord(Record):
    """``wamp:node:{node}:sessions`` value: ``{realm, info}`` (``wamp.session.get``)."""

    realm: str = field(metadata=_w("realm", _str))
    info: dict[str, Any] = field(metadata=_w("info", _session_info))


@dataclass(frozen=True, slots=True)
class SubscriptionRecord(Record):
    """``wamp:node:{node}:subs`` value and ``sub`` of SubscriptionChanged.

    ``{realm, id, uri, match, created, subscribers}``; no subscribers: the node has none.
    """

    realm: str = field(metadata=_w("realm", _str))
    id: int = field(metadata=_w("id", _int))
    uri: str = field(metadata=_w("uri", _str))
    match: str = field(metadata=_w("match", _str))
    created: str = field(default="", metadata=_w("created", _str))
    subscribers: tuple[int, ...] = field(default=(), metadata=_w("subscribers", _int_tuple, list))


@dataclass(frozen=True, slots=True)
class CalleeRecord(Record):
    """``wamp:node:{node}:regs`` value and ``e`` of CalleeAdded: one callee of a registration.

    ``reg`` and ``seq`` are 0 until the claim script fills them in.
    """

    node: str = field(metadata=_w("node", _str))
    realm: str = field(metadata=_w("realm", _str))
    uri: str = field(metadata=_w("uri", _str))
    match: str = field(metadata=_w("match", _str))
    invoke: str = field(metadata=_w("invoke", _str))
    session: int = field(metadata=_w("session", _int))
    disclose: bool = field(default=False, metadata=_w("disclose", _bool))
    authid: str | None = field(default=None, metadata=_w("authid", _opt_str))
    authrole: str | None = field(default=None, metadata=_w("authrole", _opt_str))
    features: dict[str, Any] | None = field(default=None, metadata=_w("features", _features))
    reg: int = field(default=0, metadata=_w("reg", _int))
    seq: int = field(default=0, metadata=_w("seq", _int))


@dataclass(frozen=True, slots=True)
class TestamentsRecord(Record):
    """``wamp:node:{node}:testaments`` value: ``{realm, testaments: [{topic, args, kwargs, options}]}``."""

    realm: str = field(metadata=_w("realm", _str))
    testaments: list[dict[str, Any]] = field(metadata=_w("testaments", _testaments))


# --- event envelopes -------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EventEnvelope(Envelope):
    """An event on ``wamp:ev:{realm}:{topic}`` (and a retained event's stored value).

    ``{v, n, r, t, p, d, a, k, f}``: ``d`` the EVENT details the origin computed
    (publisher disclosure), ``f`` the black/whitelisting PUBLISH options or nil.
    """

    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    topic: str = field(metadata=_w("t", _str))
    publication: int = field(metadata=_w("p", _int))
    details: dict[str, Any] = field(metadata=_w("d", _map_or_empty))
    args: list[Any] | None = field(default=None, metadata=_w("a", _opt_list))
    kwargs: dict[str, Any] | None = field(default=None, metadata=_w("k", _opt_map))
    filter: dict[str, Any] | None = field(default=None, metadata=_w("f", _opt_map))


def _event(value: Any) -> EventEnvelope:
    return EventEnvelope._from_fields(_map(value))


def decode_event(data: bytes | str) -> EventEnvelope:
    """Decode an event envelope; raise ``ClusterProtocolError`` when malformed."""
    env = _load(data)
    version = env.get("v")
    if version != VERSION:
        raise ClusterProtocolError(f"unsupported cluster protocol version {version!r}")
    return EventEnvelope._from_fields(env)


# --- control envelopes (wamp:ctl) ------------------------------------------------------------
class ControlMessage(Envelope):
    """An envelope on the control channel ``wamp:ctl``."""

    __slots__ = ()

    node: str


@dataclass(frozen=True, slots=True)
class NodeHello(ControlMessage):
    """``hello``: node ``n`` (re)published its state; load it."""

    OP: ClassVar[str] = "hello"
    node: str = field(metadata=_w("n", _str))


@dataclass(frozen=True, slots=True)
class NodeGone(ControlMessage):
    """``gone``: node ``n`` left (or was reaped); drop everything of it."""

    OP: ClassVar[str] = "gone"
    node: str = field(metadata=_w("n", _str))


@dataclass(frozen=True, slots=True)
class SessionJoined(ControlMessage):
    """``join``: a session joined realm ``r`` on node ``n``; ``info`` describes it."""

    OP: ClassVar[str] = "join"
    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    info: dict[str, Any] = field(metadata=_w("info", _session_info))


@dataclass(frozen=True, slots=True)
class SessionLeft(ControlMessage):
    """``leave``: session ``s`` of node ``n`` left realm ``r``."""

    OP: ClassVar[str] = "leave"
    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    session: int = field(metadata=_w("s", _int))
    authid: str | None = field(default=None, metadata=_w("authid", _opt_str))
    authrole: str | None = field(default=None, metadata=_w("authrole", _opt_str))


@dataclass(frozen=True, slots=True)
class SubscriptionChanged(ControlMessage):
    """``sub``: node ``n``'s subscribers of one subscription (none: it has it no more)."""

    OP: ClassVar[str] = "sub"
    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    sub: SubscriptionRecord = field(metadata=_w("sub", _record(SubscriptionRecord), _to_map))


@dataclass(frozen=True, slots=True)
class CalleeAdded(ControlMessage):
    """``reg``: a callee of node ``n`` joined a registration (sent by the claim script)."""

    OP: ClassVar[str] = "reg"
    node: str = field(metadata=_w("n", _str))
    entry: CalleeRecord = field(metadata=_w("e", _record(CalleeRecord), _to_map))


@dataclass(frozen=True, slots=True)
class CalleeRemoved(ControlMessage):
    """``unreg``: callee ``s`` of node ``n`` left registration ``reg`` (release script)."""

    OP: ClassVar[str] = "unreg"
    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    reg: int = field(metadata=_w("reg", _int))
    session: int = field(metadata=_w("s", _int))


@dataclass(frozen=True, slots=True)
class RetainedChanged(ControlMessage):
    """``retain``: the retained event of topic ``t`` is now ``ev``."""

    OP: ClassVar[str] = "retain"
    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    topic: str = field(metadata=_w("t", _str))
    event: EventEnvelope = field(
        metadata=_w("ev", lambda v: EventEnvelope._from_fields(_map(v)), _to_map)
    )


@dataclass(frozen=True, slots=True)
class KillSessions(ControlMessage):
    """``kill``: end the sessions of realm ``r`` matching ``sel``/``val`` (meta API kill).

    ``sel`` is ``session``, ``authid``, ``authrole`` or ``all``; session ``except`` is
    spared; the sessions get GOODBYE ``reason`` (nil: ``wamp.close.killed``).
    """

    OP: ClassVar[str] = "kill"
    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    selector: str = field(metadata=_w("sel", _selector))
    value: Any = field(default=None, metadata=_w("val", _any))
    except_session: int | None = field(default=None, metadata=_w("except", _opt_int))
    reason: str | None = field(default=None, metadata=_w("reason", _opt_str))
    message: str | None = field(default=None, metadata=_w("message", _opt_str))


CONTROL_TYPES: Final[dict[str, type[ControlMessage]]] = {
    cls.OP: cls
    for cls in (
        NodeHello,
        NodeGone,
        SessionJoined,
        SessionLeft,
        SubscriptionChanged,
        CalleeAdded,
        CalleeRemoved,
        RetainedChanged,
        KillSessions,
    )
}
"""``op`` → class of every control envelope."""


def decode_control(data: bytes | str) -> ControlMessage:
    """Decode a control envelope; raise ``ClusterProtocolError`` when malformed."""
    return _decode(_load(data), CONTROL_TYPES, "control")


# --- inbox envelopes (wamp:inbox:{node}) -----------------------------------------------------
class InboxMessage(Envelope):
    """An envelope on a node's inbox: one call crossing nodes.

    ``s`` is the callee session (on the callee's node); ``i`` the invocation key the
    caller node chose for this call.
    """

    __slots__ = ()

    node: str
    realm: str
    session: int
    request: int


@dataclass(frozen=True, slots=True)
class InboxInvocation(InboxMessage):
    """``inv`` caller node → callee node: invoke registration ``reg`` on callee ``s``."""

    OP: ClassVar[str] = "inv"
    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    session: int = field(metadata=_w("s", _int))
    request: int = field(metadata=_w("i", _int))
    registration: int = field(metadata=_w("reg", _int))
    details: dict[str, Any] = field(metadata=_w("d", _map_or_empty))
    args: list[Any] | None = field(default=None, metadata=_w("a", _opt_list))
    kwargs: dict[str, Any] | None = field(default=None, metadata=_w("k", _opt_map))


@dataclass(frozen=True, slots=True)
class InboxInterrupt(InboxMessage):
    """``int`` caller node → callee node: the call was canceled or timed out."""

    OP: ClassVar[str] = "int"
    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    session: int = field(metadata=_w("s", _int))
    request: int = field(metadata=_w("i", _int))
    options: dict[str, Any] = field(metadata=_w("o", _map_or_empty))


@dataclass(frozen=True, slots=True)
class InboxResult(InboxMessage):
    """``res`` callee node → caller node: a result (``d.progress`` when progressive)."""

    OP: ClassVar[str] = "res"
    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    session: int = field(metadata=_w("s", _int))
    request: int = field(metadata=_w("i", _int))
    details: dict[str, Any] = field(metadata=_w("d", _map_or_empty))
    args: list[Any] | None = field(default=None, metadata=_w("a", _opt_list))
    kwargs: dict[str, Any] | None = field(default=None, metadata=_w("k", _opt_map))

    @property
    def progress(self) -> bool:
        """Whether this is a progressive result."""
        return self.details.get("progress") is True


@dataclass(frozen=True, slots=True)
class InboxError(InboxMessage):
    """``err`` callee node → caller node: the call failed with error URI ``e``."""

    OP: ClassVar[str] = "err"
    node: str = field(metadata=_w("n", _str))
    realm: str = field(metadata=_w("r", _str))
    session: int = field(metadata=_w("s", _int))
    request: int = field(metadata=_w("i", _int))
    details: dict[str, Any] = field(metadata=_w("d", _map_or_empty))
    error: str = field(metadata=_w("e", _str))
    args: list[Any] | None = field(default=None, metadata=_w("a", _opt_list))
    kwargs: dict[str, Any] | None = field(default=None, metadata=_w("k", _opt_map))


INBOX_TYPES: Final[dict[str, type[InboxMessage]]] = {
    cls.OP: cls for cls in (InboxInvocation, InboxInterrupt, InboxResult, InboxError)
}
"""``op`` → class of every inbox envelope."""


def decode_inbox(data: bytes | str) -> InboxMessage:
    """Decode an inbox envelope; raise ``ClusterProtocolError`` when malformed."""
    return _decode(_load(data), INBOX_TYPES, "inbox")


# --- probes ------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Probe:
    """A probe on ``wamp:probe:{node}``: 8 random bytes, raw (not msgpack).

    The node publishes it on its command connection and waits for it on its pub/sub
    connection; only the token the node is waiting for counts.
    """

    SIZE: ClassVar[int] = 8
    token: bytes

    def pack(self) -> bytes:
        """The probe as sent."""
        return self.token

    @classmethod
    def unpack(cls, data: Any) -> Probe:
        """Check a received probe; raise ``ClusterProtocolError`` when it cannot be one."""
        if type(data) is not bytes or len(data) != cls.SIZE:
            raise ClusterProtocolError("a probe is 8 raw bytes")
        return cls(data)
