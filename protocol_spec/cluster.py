"""The cluster wire: envelopes and records broker nodes exchange through Redis.

One dataclass per envelope kind, like ``messages`` does for WAMP (frozen, except the
event and inbox envelopes: one is built per cross-node event, call and answer, and a
frozen dataclass costs several times more to build). Every
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

from dataclasses import dataclass, field
from typing import Any, ClassVar, Final

from .cluster_codec import (
    VERSION,
    ClusterProtocolError,
    Envelope,
    Record,
    _dump,
    anything,
    as_map,
    boolean,
    decode_envelope,
    decoder,
    fail,
    integer,
    integers,
    load,
    load_many,
    mapping,
    mapping_or_empty,
    nested,
    opt_integer,
    opt_list,
    opt_mapping,
    opt_text,
    packer,
    text,
    wire,
    wire_keys,
)

__all__ = [
    "CONTROL_TYPES",
    "HISTORY_SUFFIX",
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
    "InboxSwitch",
    "KillSessions",
    "NodeGone",
    "NodeHello",
    "PatternsChanged",
    "PeerRecord",
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
    "decode_inboxes",
    "pack_error",
    "pack_event",
    "pack_interrupt",
    "pack_invocation",
    "pack_result",
    "publication_marker",
    "wire_keys",
]

KILL_SELECTORS: Final = frozenset({"session", "authid", "authrole", "all"})


def _features(value: Any) -> dict[str, Any]:
    # Redis's cmsgpack packs an empty Lua table as an empty array
    if value is None or value == []:
        return {}
    return mapping(value)


def _session_info(value: Any) -> dict[str, Any]:
    info = mapping(value)
    if type(info.get("session")) is not int:
        raise fail("must describe a session (integer 'session')")
    return info


def _selector(value: Any) -> str:
    if type(value) is not str or value not in KILL_SELECTORS:
        raise fail(f"must be one of {sorted(KILL_SELECTORS)}")
    return str(value)


def _testaments(value: Any) -> list[dict[str, Any]]:
    if value is None:
        return []
    if type(value) is not list:
        raise fail("must be a list of testaments")
    for item in value:
        if type(item) is not dict or type(item.get("topic")) is not str:
            raise fail("must be a list of testaments (maps with a string 'topic')")
    return value


def _patterns(value: Any) -> tuple[tuple[str, str], ...]:
    if type(value) is not list:
        raise fail("must be a list of [match, uri] pairs")
    out = []
    for item in value:
        if type(item) is not list or len(item) != 2 or not all(type(x) is str for x in item):
            raise fail("must be a list of [match, uri] pairs of strings")
        out.append((item[0], item[1]))
    return tuple(out)


def _pattern_list(value: tuple[tuple[str, str], ...]) -> list[list[str]]:
    return [list(pair) for pair in value]


# --- records -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SessionRecord(Record):
    """``wamp:node:{node}:sessions`` value: ``{realm, info}`` (``wamp.session.get``)."""

    realm: str = field(metadata=wire("realm", text))
    info: dict[str, Any] = field(metadata=wire("info", _session_info))


@dataclass(frozen=True, slots=True)
class SubscriptionRecord(Record):
    """``wamp:node:{node}:subs`` value and ``sub`` of SubscriptionChanged.

    ``{realm, id, uri, match, created, subscribers}``; no subscribers: the node has none.
    """

    realm: str = field(metadata=wire("realm", text))
    id: int = field(metadata=wire("id", integer))
    uri: str = field(metadata=wire("uri", text))
    match: str = field(metadata=wire("match", text))
    created: str = field(default="", metadata=wire("created", text))
    subscribers: tuple[int, ...] = field(default=(), metadata=wire("subscribers", integers, list))


@dataclass(frozen=True, slots=True)
class CalleeRecord(Record):
    """``wamp:node:{node}:regs`` value and ``e`` of CalleeAdded: one callee of a registration.

    ``reg`` and ``seq`` are 0 until the claim script fills them in.
    """

    node: str = field(metadata=wire("node", text))
    realm: str = field(metadata=wire("realm", text))
    uri: str = field(metadata=wire("uri", text))
    match: str = field(metadata=wire("match", text))
    invoke: str = field(metadata=wire("invoke", text))
    session: int = field(metadata=wire("session", integer))
    disclose: bool = field(default=False, metadata=wire("disclose", boolean))
    authid: str | None = field(default=None, metadata=wire("authid", opt_text))
    authrole: str | None = field(default=None, metadata=wire("authrole", opt_text))
    features: dict[str, Any] | None = field(default=None, metadata=wire("features", _features))
    reg: int = field(default=0, metadata=wire("reg", integer))
    seq: int = field(default=0, metadata=wire("seq", integer))


@dataclass(frozen=True, slots=True)
class TestamentsRecord(Record):
    """``wamp:node:{node}:testaments`` value: ``{realm, testaments: [{topic, args, kwargs, options}]}``."""

    realm: str = field(metadata=wire("realm", text))
    testaments: list[dict[str, Any]] = field(metadata=wire("testaments", _testaments))


@dataclass(frozen=True, slots=True)
class PeerRecord(Record):
    """``wamp:{ctl}:node:{node}:peer`` value: where the node takes direct links.

    ``machine`` says who shares the node's loopback (a loopback ``host`` is only dialed
    from there); ``token`` must open the dialer's hello (broker/cluster/peers.py); ``tls``:
    the node takes links with mutual TLS only (absent in records of older nodes: false).
    """

    host: str = field(metadata=wire("host", text))
    port: int = field(metadata=wire("port", integer))
    machine: str = field(metadata=wire("machine", text))
    token: str = field(metadata=wire("token", text))
    tls: bool = field(default=False, metadata=wire("tls", boolean))


# --- event envelopes -------------------------------------------------------------------------
@dataclass(slots=True)
class EventEnvelope(Envelope):
    """An event on ``wamp:ev:{realm}:{topic}`` (and a retained event's stored value).

    ``{v, n, r, t, p, d, a, k, f, o, e}``: ``d`` the EVENT details the origin computed
    (publisher disclosure), ``f`` the black/whitelisting PUBLISH options or nil; ``o``
    the per-topic offset and ``e`` the topic's history epoch, or nil for a topic
    without history.
    """

    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    topic: str = field(metadata=wire("t", text))
    publication: int = field(metadata=wire("p", integer))
    details: dict[str, Any] = field(metadata=wire("d", mapping_or_empty))
    args: list[Any] | None = field(default=None, metadata=wire("a", opt_list))
    kwargs: dict[str, Any] | None = field(default=None, metadata=wire("k", opt_mapping))
    filter: dict[str, Any] | None = field(default=None, metadata=wire("f", opt_mapping))
    # set by the history publish script (cluster.md, "Event history"); keep them last:
    # the script replaces the packed nil pair at the end of the map (``HISTORY_SUFFIX``)
    offset: int | None = field(default=None, metadata=wire("o", opt_integer))
    epoch: str | None = field(default=None, metadata=wire("e", opt_text))


HISTORY_SUFFIX: Final = b"\xa1o\xc0\xa1e\xc0"
"""How a packed ``EventEnvelope`` without offset and epoch ends (``o`` nil, ``e`` nil)."""


def publication_marker(publication: int) -> bytes:
    """Bytes every packed ``EventEnvelope`` of ``publication`` contains (its ``p`` pair).

    A cheap first test when looking for one publication among many packed envelopes
    (other bytes may match too: decode to be sure).
    """
    return _dump({"p": publication})[1:]  # without the one-entry map header


def _event(value: Any) -> EventEnvelope:
    return EventEnvelope._from_fields(mapping(value))


pack_event: Final = packer(EventEnvelope)
"""``EventEnvelope(*fields).pack()`` without the instance (every cross-node publish)."""
_decode_event: Final = decoder(EventEnvelope)


def decode_event(data: bytes | str) -> EventEnvelope:
    """Decode an event envelope; raise ``ClusterProtocolError`` when malformed."""
    env = load(data)
    version = env.get("v")
    if version != VERSION:
        raise ClusterProtocolError(f"unsupported cluster protocol version {version!r}")
    try:
        return _decode_event(env)  # every delivered cross-node event: no lookups
    except (KeyError, ClusterProtocolError):
        return EventEnvelope._from_fields(env)  # names the fault


# --- control envelopes (wamp:ctl) ------------------------------------------------------------
class ControlMessage(Envelope):
    """An envelope on the control channel ``wamp:ctl``."""

    __slots__ = ()

    node: str


@dataclass(frozen=True, slots=True)
class NodeHello(ControlMessage):
    """``hello``: node ``n`` (re)published its state; load it."""

    OP: ClassVar[str] = "hello"
    node: str = field(metadata=wire("n", text))


@dataclass(frozen=True, slots=True)
class NodeGone(ControlMessage):
    """``gone``: node ``n`` left (or was reaped); drop everything of it."""

    OP: ClassVar[str] = "gone"
    node: str = field(metadata=wire("n", text))


@dataclass(frozen=True, slots=True)
class SessionJoined(ControlMessage):
    """``join``: a session joined realm ``r`` on node ``n``; ``info`` describes it."""

    OP: ClassVar[str] = "join"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    info: dict[str, Any] = field(metadata=wire("info", _session_info))


@dataclass(frozen=True, slots=True)
class SessionLeft(ControlMessage):
    """``leave``: session ``s`` of node ``n`` left realm ``r``."""

    OP: ClassVar[str] = "leave"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    session: int = field(metadata=wire("s", integer))
    authid: str | None = field(default=None, metadata=wire("authid", opt_text))
    authrole: str | None = field(default=None, metadata=wire("authrole", opt_text))


@dataclass(frozen=True, slots=True)
class SubscriptionChanged(ControlMessage):
    """``sub``: node ``n``'s subscribers of one subscription (none: it has it no more)."""

    OP: ClassVar[str] = "sub"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    sub: SubscriptionRecord = field(metadata=wire("sub", nested(SubscriptionRecord), as_map))


@dataclass(frozen=True, slots=True)
class CalleeAdded(ControlMessage):
    """``reg``: a callee of node ``n`` joined a registration (sent by the claim script)."""

    OP: ClassVar[str] = "reg"
    node: str = field(metadata=wire("n", text))
    entry: CalleeRecord = field(metadata=wire("e", nested(CalleeRecord), as_map))


@dataclass(frozen=True, slots=True)
class CalleeRemoved(ControlMessage):
    """``unreg``: callee ``s`` of node ``n`` left registration ``reg`` (release script)."""

    OP: ClassVar[str] = "unreg"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    reg: int = field(metadata=wire("reg", integer))
    session: int = field(metadata=wire("s", integer))


@dataclass(frozen=True, slots=True)
class RetainedChanged(ControlMessage):
    """``retain``: the retained event of topic ``t`` is now ``ev``."""

    OP: ClassVar[str] = "retain"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    topic: str = field(metadata=wire("t", text))
    event: EventEnvelope = field(
        metadata=wire("ev", lambda v: EventEnvelope._from_fields(mapping(v)), as_map)
    )


@dataclass(frozen=True, slots=True)
class KillSessions(ControlMessage):
    """``kill``: end the sessions of realm ``r`` matching ``sel``/``val`` (meta API kill).

    ``sel`` is ``session``, ``authid``, ``authrole`` or ``all``; session ``except`` is
    spared; the sessions get GOODBYE ``reason`` (nil: ``wamp.close.killed``).
    """

    OP: ClassVar[str] = "kill"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    selector: str = field(metadata=wire("sel", _selector))
    value: Any = field(default=None, metadata=wire("val", anything))
    except_session: int | None = field(default=None, metadata=wire("except", opt_integer))
    reason: str | None = field(default=None, metadata=wire("reason", opt_text))
    message: str | None = field(default=None, metadata=wire("message", opt_text))


@dataclass(frozen=True, slots=True)
class PatternsChanged(ControlMessage):
    """``pat`` (Redis Cluster only): every prefix/wildcard subscription node ``n`` has in ``r``.

    ``p`` is the whole set, ``[[match, uri], …]`` (empty: none any more); a publisher
    that knows a pattern matching its topic also sends the event on the realm's
    pattern channel (protocol_spec/cluster.md, "Redis Cluster").
    """

    OP: ClassVar[str] = "pat"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    patterns: tuple[tuple[str, str], ...] = field(metadata=wire("p", _patterns, _pattern_list))


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
        PatternsChanged,
    )
}
"""``op`` → class of every control envelope."""


def decode_control(data: bytes | str) -> ControlMessage:
    """Decode a control envelope; raise ``ClusterProtocolError`` when malformed."""
    return decode_envelope(load(data), CONTROL_TYPES, "control")


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


@dataclass(slots=True)
class InboxInvocation(InboxMessage):
    """``inv`` caller node → callee node: invoke registration ``reg`` on callee ``s``."""

    OP: ClassVar[str] = "inv"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    session: int = field(metadata=wire("s", integer))
    request: int = field(metadata=wire("i", integer))
    registration: int = field(metadata=wire("reg", integer))
    details: dict[str, Any] = field(metadata=wire("d", mapping_or_empty))
    args: list[Any] | None = field(default=None, metadata=wire("a", opt_list))
    kwargs: dict[str, Any] | None = field(default=None, metadata=wire("k", opt_mapping))


@dataclass(slots=True)
class InboxInterrupt(InboxMessage):
    """``int`` caller node → callee node: the call was canceled or timed out."""

    OP: ClassVar[str] = "int"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    session: int = field(metadata=wire("s", integer))
    request: int = field(metadata=wire("i", integer))
    options: dict[str, Any] = field(metadata=wire("o", mapping_or_empty))


@dataclass(slots=True)
class InboxResult(InboxMessage):
    """``res`` callee node → caller node: a result (``d.progress`` when progressive)."""

    OP: ClassVar[str] = "res"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    session: int = field(metadata=wire("s", integer))
    request: int = field(metadata=wire("i", integer))
    details: dict[str, Any] = field(metadata=wire("d", mapping_or_empty))
    args: list[Any] | None = field(default=None, metadata=wire("a", opt_list))
    kwargs: dict[str, Any] | None = field(default=None, metadata=wire("k", opt_mapping))

    @property
    def progress(self) -> bool:
        """Whether this is a progressive result."""
        return self.details.get("progress") is True


@dataclass(slots=True)
class InboxError(InboxMessage):
    """``err`` callee node → caller node: the call failed with error URI ``e``."""

    OP: ClassVar[str] = "err"
    node: str = field(metadata=wire("n", text))
    realm: str = field(metadata=wire("r", text))
    session: int = field(metadata=wire("s", integer))
    request: int = field(metadata=wire("i", integer))
    details: dict[str, Any] = field(metadata=wire("d", mapping_or_empty))
    error: str = field(metadata=wire("e", text))
    args: list[Any] | None = field(default=None, metadata=wire("a", opt_list))
    kwargs: dict[str, Any] | None = field(default=None, metadata=wire("k", opt_mapping))


@dataclass(slots=True)
class InboxSwitch(InboxMessage):
    """``sw`` node X → node Y, through Redis only: X's envelopes for Y take X's direct link
    from here on (the link's ``W`` frame carries the same ``key``); everything X published
    to Y's inbox before is ahead of it. No realm, session or call: ``r``, ``s``, ``i`` are
    empty (cluster.md, "Falling back to Redis")."""

    OP: ClassVar[str] = "sw"
    node: str = field(metadata=wire("n", text))
    key: str = field(metadata=wire("key", text))
    realm: str = field(default="", metadata=wire("r", text))
    session: int = field(default=0, metadata=wire("s", integer))
    request: int = field(default=0, metadata=wire("i", integer))


INBOX_TYPES: Final[dict[str, type[InboxMessage]]] = {
    cls.OP: cls for cls in (InboxInvocation, InboxInterrupt, InboxResult, InboxError, InboxSwitch)
}
"""``op`` → class of every inbox envelope."""

_INBOX_DECODERS: Final = {op: decoder(cls) for op, cls in INBOX_TYPES.items()}
"""``op`` → the generated decoder of its class (the cross-node call path)."""

pack_invocation: Final = packer(InboxInvocation)
"""``InboxInvocation(*fields).pack()`` without the instance (the cross-node call path)."""
pack_interrupt: Final = packer(InboxInterrupt)
"""``InboxInterrupt(*fields).pack()`` without the instance."""
pack_result: Final = packer(InboxResult)
"""``InboxResult(*fields).pack()`` without the instance."""
pack_error: Final = packer(InboxError)
"""``InboxError(*fields).pack()`` without the instance."""


def decode_inbox(data: bytes | str) -> InboxMessage:
    """Decode an inbox envelope; raise ``ClusterProtocolError`` when malformed."""
    return decode_envelope(load(data), INBOX_TYPES, "inbox")


def decode_inboxes(data: bytes | str) -> list[InboxMessage | ClusterProtocolError]:
    """Decode an inbox message: one envelope or several back to back (see cluster.md).

    Each envelope decodes on its own: a malformed one is its ``ClusterProtocolError`` in
    the list and the others still count. Bytes that do not split into maps raise it.
    """
    found: list[InboxMessage | ClusterProtocolError] = []
    for env in load_many(data):
        try:
            if env.get("v") == VERSION:
                found.append(_INBOX_DECODERS[env["op"]](env))
                continue
        except (KeyError, TypeError, ClusterProtocolError):
            pass  # malformed: the checks below name the fault
        try:
            found.append(decode_envelope(env, INBOX_TYPES, "inbox"))
        except ClusterProtocolError as exc:
            found.append(exc)
    return found


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
