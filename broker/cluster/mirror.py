"""What this node knows of the other nodes, applied to the local core (no I/O here).

Remote callees and callers become ``RemoteSession`` stand-ins with a ``NodePeer``:
the dealer routes calls to them exactly as to local sessions, and what it sends them
becomes an inbox envelope for their node (protocol_spec/cluster.md, "Envelopes").
Remote results and errors go to the dealer as such (``Dealer.calls.answer_result``,
``answer_error``). Remote sessions and subscriptions go into each realm's
``RemoteView`` for the meta API. The core is reached through the ``ClusterHost`` port.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from broker.core.cluster import RemoteSession
from broker.core.host import ClusterHost
from broker.core.interfaces import EncodeCache
from broker.core.realm import Realm
from protocol_spec import errors, meta
from protocol_spec.cluster import (
    CalleeAdded,
    CalleeRecord,
    CalleeRemoved,
    ClusterProtocolError,
    ControlMessage,
    InboxError,
    InboxInterrupt,
    InboxInvocation,
    InboxMessage,
    InboxResult,
    InboxSwitch,
    KillSessions,
    NodeGone,
    NodeHello,
    PatternsChanged,
    RetainedChanged,
    SessionJoined,
    SessionLeft,
    SessionRecord,
    SubscriptionChanged,
    SubscriptionRecord,
    pack_error,
    pack_interrupt,
    pack_invocation,
    pack_result,
)
from protocol_spec.cluster_rows import row_error, row_interrupt, row_invocation, row_result
from protocol_spec.errors import CloseCode
from protocol_spec.messages import Error, Interrupt, Invocation, Message, Result

from . import keys
from .events import publication_of
from .patterns import Patterns

__all__ = ["Mirror", "NodePeer", "NodeState"]

log = logging.getLogger(__name__)

Send = Callable[[bytes, bytes], None]
"""Ship a packed inbox envelope: (the node's inbox channel, envelope bytes)."""


class RowSink(Protocol):
    """A direct link to a node: takes packed rows (``protocol_spec.cluster_rows``)."""

    def send(self, data: bytes) -> None:
        """Queue one packed row."""


Route = Callable[[bytes], RowSink | None]
"""The direct link for a node's inbox channel, or None: its envelopes go through Redis."""


def _no_route(channel: bytes) -> RowSink | None:
    return None


class NodePeer:
    """The ``Peer`` of a stand-in session: turns dealer messages into inbox envelopes.

    For a remote *callee* it carries INVOCATION/INTERRUPT to the callee's node; for a
    remote *caller* (one per caller node and local callee) RESULT/ERROR back to it.
    """

    __slots__ = ("callee", "channel", "origin", "realm", "route", "send_to")

    transport_info: dict[str, Any] = {"type": "cluster"}

    def __init__(
        self,
        send_to: Send,
        origin: str,
        node: str,
        realm: str,
        callee: int,
        route: Route = _no_route,
    ) -> None:
        self.send_to = send_to
        self.origin = origin
        self.channel = keys.inbox(node)
        self.realm = realm
        self.callee = callee
        self.route = route

    def send(self, message: Message, cache: EncodeCache | None = None) -> None:
        """Ship the message as an envelope (other message types are not routed here):
        a row on the node's direct link if it has one, else a map through Redis.

        Either is packed straight from the message's fields (no instance built).
        """
        link = self.route(self.channel)
        if link is not None:
            row = _row(message, self.realm, self.callee)
            if row is not None:
                link.send(row)
            return
        kind = type(message)
        origin, realm, session = self.origin, self.realm, self.callee
        if kind is Result:
            m: Any = message
            data = pack_result(origin, realm, session, m.request, m.details, m.args, m.kwargs)
        elif kind is Invocation:
            m = message
            data = pack_invocation(
                origin, realm, session, m.request, m.registration, m.details, m.args, m.kwargs
            )
        elif kind is Error:
            m = message
            data = pack_error(
                origin, realm, session, m.request, m.details, m.error, m.args, m.kwargs
            )
        elif kind is Interrupt:
            m = message
            data = pack_interrupt(origin, realm, session, m.request, m.options)
        else:
            return
        self.send_to(self.channel, data)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Stand-ins have no transport."""


def _row(message: Message, realm: str, session: int) -> bytes | None:
    """``message`` as a direct link's row (None for a type not routed between nodes)."""
    kind = type(message)
    m: Any = message
    if kind is Result:
        return row_result(realm, session, m.request, m.details, m.args, m.kwargs)
    if kind is Invocation:
        return row_invocation(
            realm, session, m.request, m.registration, m.details, m.args, m.kwargs
        )
    if kind is Error:
        return row_error(realm, session, m.request, m.details, m.error, m.args, m.kwargs)
    if kind is Interrupt:
        return row_interrupt(realm, session, m.request, m.options)
    return None


@dataclass
class NodeState:
    """Everything known about one other node."""

    sessions: set[tuple[str, int]] = field(default_factory=set)
    subs: set[tuple[str, int]] = field(default_factory=set)
    callees: dict[tuple[str, int], RemoteSession] = field(default_factory=dict)
    callers: dict[tuple[str, int], RemoteSession] = field(default_factory=dict)


class Mirror:
    """Applies control and inbox envelopes from other nodes to the host's realms."""

    def __init__(
        self,
        host: ClusterHost,
        node: str,
        send_to: Send,
        hello: Callable[[str], None] = lambda node: None,
        patterns: Patterns | None = None,
    ) -> None:
        self.host = host
        self.patterns = patterns
        """Redis Cluster: the other nodes' announced pattern subscriptions."""
        self.node = node
        self.send_to = send_to
        self.hello = hello
        """Called with a node that said ``hello`` (its state is to be loaded)."""
        self.nodes: dict[str, NodeState] = {}
        self.route: Route = _no_route
        """The direct link of a node's inbox channel (``peers``), None for Redis."""
        self.forget: Callable[[str], None] = lambda node: None
        """Called with every node dropped (its direct links close)."""
        self.switched: Callable[[str, str], None] = lambda node, key: None
        """Gets (node, key) of each ``InboxSwitch``: that node's direct link takes over."""

    def _realm(self, name: str) -> Realm | None:
        return self.host.realms.get(name)

    def state(self, node: str) -> NodeState:
        """The state of ``node``, created on first mention."""
        found = self.nodes.get(node)
        if found is None:
            found = self.nodes[node] = NodeState()
        return found

    # --- control envelopes ------------------------------------------------------------
    def control(self, msg: ControlMessage) -> None:
        """Apply one control envelope from another node."""
        _CONTROL[type(msg)](self, msg)

    def _hello(self, msg: NodeHello) -> None:
        self.hello(msg.node)

    def _gone(self, msg: NodeGone) -> None:
        self.drop_node(msg.node, "callee node left")

    def _patterns(self, msg: PatternsChanged) -> None:
        if self.patterns is not None:
            self.patterns.announced(msg)

    def _join(self, msg: SessionJoined) -> None:
        realm = self._realm(msg.realm)
        if realm is not None:
            self.join_session(msg.node, realm, msg.info)

    def join_session(self, node: str, realm: Realm, info: dict[str, Any]) -> None:
        """A session of ``node`` joined ``realm``: remote view, on_join here."""
        sid = int(info["session"])
        if sid in realm.remote.sessions:
            return
        realm.remote.add_session(node, info)
        self.state(node).sessions.add((realm.name, sid))
        realm.broker.publish_meta(meta.SESSION_ON_JOIN, [info])

    def _leave(self, msg: SessionLeft) -> None:
        realm = self._realm(msg.realm)
        if realm is not None:
            self.remove_session(msg.node, realm, msg.session, "callee disconnected")

    def remove_session(self, node: str, realm: Realm, sid: int, why: str) -> None:
        """A remote session is gone: its stand-in leaves the dealer, on_leave here."""
        state = self.state(node)
        state.sessions.discard((realm.name, sid))
        proxy = state.callees.pop((realm.name, sid), None)
        if proxy is not None:
            realm.dealer.detach(proxy, why)
        info = realm.remote.remove_session(sid)
        if info is not None:
            realm.broker.publish_meta(
                meta.SESSION_ON_LEAVE, [sid, info.get("authid"), info.get("authrole")]
            )

    def _sub(self, msg: SubscriptionChanged) -> None:
        realm = self._realm(msg.realm)
        if realm is not None:
            self.set_sub(msg.node, realm, msg.sub)

    def set_sub(self, node: str, realm: Realm, sub: SubscriptionRecord) -> None:
        """Record ``node``'s subscribers of one subscription."""
        subscribers = list(sub.subscribers)
        realm.remote.set_subscription(node, sub.id, sub.uri, sub.match, sub.created, subscribers)
        key = (realm.name, sub.id)
        if subscribers:
            self.state(node).subs.add(key)
        else:
            self.state(node).subs.discard(key)

    def _reg(self, msg: CalleeAdded) -> None:
        self.add_callee(msg.node, msg.entry)

    def add_callee(self, node: str, entry: CalleeRecord) -> None:
        """A remote callee joined a registration (entry as in ``wamp:node:*:regs``)."""
        realm = self._realm(entry.realm)
        if realm is None:
            return
        sid = entry.session
        state = self.state(node)
        proxy = state.callees.get((realm.name, sid))
        if proxy is None:
            proxy = RemoteSession(
                sid, NodePeer(self.send_to, self.node, node, realm.name, sid, self.route), node
            )
            proxy.client_roles = {"callee": {"features": entry.features or {}}}
            proxy.authid = entry.authid or ""
            proxy.authrole = entry.authrole or ""
            proxy.realm = realm
            state.callees[(realm.name, sid)] = proxy
        realm.dealer.add_remote_callee(
            proxy, entry.uri, entry.match, entry.invoke, entry.disclose, entry.reg, entry.seq
        )

    def _unreg(self, msg: CalleeRemoved) -> None:
        realm = self._realm(msg.realm)
        if realm is None:
            return
        proxy = self.state(msg.node).callees.get((realm.name, msg.session))
        if proxy is not None:
            realm.dealer.remove_remote_callee(proxy, msg.reg)

    def _retain(self, msg: RetainedChanged) -> None:
        realm = self._realm(msg.realm)
        if realm is not None:
            realm.broker.retain_remote(publication_of(msg.event))

    def _kill(self, msg: KillSessions) -> None:
        realm = self._realm(msg.realm)
        if realm is None:
            return
        selector, value = msg.selector, msg.value
        reason = msg.reason or errors.CLOSE_KILLED
        for session in list(realm.sessions.values()):
            if session.id == msg.except_session:
                continue
            if (
                (selector == "session" and session.id == value)
                or (selector == "authid" and session.authid == value)
                or (selector == "authrole" and session.authrole == value)
                or selector == "all"
            ):
                self.host.kill(session, reason, msg.message)

    # --- inbox envelopes -----------------------------------------------------------------
    def inbox(self, msg: InboxMessage) -> None:
        """Apply one call envelope addressed to this node."""
        self.inboxes([msg], _never)

    def inboxes(
        self,
        found: list[InboxMessage | ClusterProtocolError],
        malformed: Callable[[ClusterProtocolError], None],
    ) -> None:
        """Apply the envelopes of one inbox message (``decode_inboxes``) in order;
        ``malformed`` gets each one that did not decode.
        """
        realms = self.host.realms
        for msg in found:
            try:
                apply = _INBOX[type(msg)]
            except KeyError:
                if type(msg) is InboxSwitch:  # rare: off the call path's table
                    self.switched(msg.node, msg.key)
                else:
                    malformed(msg)  # type: ignore[arg-type]  # decode_inboxes: errors
                continue
            realm = realms.get(msg.realm)  # type: ignore[union-attr]
            if realm is not None:
                apply(self, realm, msg)

    def _stand_ins(self, msg: InboxMessage, callers: bool) -> dict[tuple[str, int], RemoteSession]:
        """The caller (or callee) stand-ins of the envelope's node; empty when unknown."""
        state = self.nodes.get(msg.node)
        if state is None:
            return {}
        return state.callers if callers else state.callees

    def _caller(self, realm: Realm, msg: InboxMessage) -> RemoteSession:
        """The stand-in for (caller node, local callee), created on first call."""
        key = (msg.realm, msg.session)
        state = self.state(msg.node)
        caller = RemoteSession(
            0,
            NodePeer(self.send_to, self.node, msg.node, msg.realm, msg.session, self.route),
            msg.node,
        )
        caller.realm = realm
        state.callers[key] = caller
        return caller

    def _invoke(self, realm: Realm, msg: InboxInvocation) -> None:
        state = self.nodes.get(msg.node)
        caller = None if state is None else state.callers.get((msg.realm, msg.session))
        realm.dealer.invoke_remote(
            caller or self._caller(realm, msg),
            msg.request,
            msg.session,
            msg.registration,
            msg.details,
            msg.args,
            msg.kwargs,
        )

    def _interrupt(self, realm: Realm, msg: InboxInterrupt) -> None:
        caller = self._stand_ins(msg, True).get((msg.realm, msg.session))
        if caller is not None:
            realm.dealer.interrupt_remote(caller, msg.request, msg.options)

    def _result(self, realm: Realm, msg: InboxResult) -> None:
        state = self.nodes.get(msg.node)
        callee = None if state is None else state.callees.get((msg.realm, msg.session))
        if callee is not None:
            progress = msg.details.get("progress") is True
            realm.dealer.calls.answer_result(callee, msg.request, progress, msg.args, msg.kwargs)

    def _error(self, realm: Realm, msg: InboxError) -> None:
        callee = self._stand_ins(msg, False).get((msg.realm, msg.session))
        if callee is not None:
            realm.dealer.calls.answer_error(
                callee, msg.request, msg.details, msg.error, msg.args, msg.kwargs
            )

    # --- whole nodes ---------------------------------------------------------------------
    def local_callee_left(self, realm: str, sid: int) -> None:
        """Forget the caller stand-ins that served a local callee that left."""
        for state in self.nodes.values():
            state.callers.pop((realm, sid), None)

    def _proxies(
        self, proxies: dict[tuple[str, int], RemoteSession]
    ) -> Iterator[tuple[Realm, RemoteSession]]:
        """(realm, stand-in) of every stand-in whose realm still exists."""
        for (realm_name, _sid), proxy in proxies.items():
            realm = self._realm(realm_name)
            if realm is not None:
                yield realm, proxy

    def abandon_calls(self, uri: str, text: str) -> None:
        """The link to the other nodes is down: end every call that crosses it."""
        for node in list(self.nodes):
            self.abandon_node(node, uri, text)

    def abandon_node(self, node: str, uri: str, text: str) -> None:
        """End every call between this node and ``node`` (its envelopes were lost)."""
        state = self.nodes.get(node)
        if state is None:
            return
        for realm, proxy in self._proxies(state.callees):
            realm.dealer.abandon(proxy, uri, text)
        for realm, proxy in self._proxies(state.callers):
            realm.dealer.abandon(proxy, uri, text)

    def drop_node(self, node: str, why: str) -> None:
        """Forget every session, subscription, callee and caller of ``node``."""
        if self.patterns is not None:
            self.patterns.drop(node)
        self.forget(node)
        state = self.nodes.pop(node, None)
        if state is None:
            return
        for realm, proxy in self._proxies(state.callers):
            realm.dealer.abandon(proxy, errors.CANCELED, why)
        for realm, proxy in self._proxies(state.callees):
            realm.dealer.detach(proxy, why)
        for realm in self.host.realms.values():
            for info in realm.remote.drop_node(node):
                realm.broker.publish_meta(
                    meta.SESSION_ON_LEAVE,
                    [info["session"], info.get("authid"), info.get("authrole")],
                )

    def load_node(
        self,
        node: str,
        sessions: list[SessionRecord],
        subs: list[SubscriptionRecord],
        regs: list[CalleeRecord],
    ) -> None:
        """Bring ``node``'s state in line with a snapshot of its hashes."""
        state = self.state(node)
        wanted_sessions = {(e.realm, int(e.info["session"])) for e in sessions}
        for realm_name, sid in list(state.sessions - wanted_sessions):
            realm = self._realm(realm_name)
            if realm is not None:
                self.remove_session(node, realm, sid, "callee disconnected")
        for record in sessions:
            realm = self._realm(record.realm)
            if realm is not None:
                self.join_session(node, realm, record.info)
        wanted_subs = {(e.realm, e.id) for e in subs}
        for realm_name, sub_id in list(state.subs - wanted_subs):
            realm = self._realm(realm_name)
            remote = realm.remote.subscriptions.get(sub_id) if realm is not None else None
            if realm is not None and remote is not None:
                gone = SubscriptionRecord(realm_name, sub_id, remote.topic, remote.match)
                self.set_sub(node, realm, gone)
        for entry in subs:
            realm = self._realm(entry.realm)
            if realm is not None:
                self.set_sub(node, realm, entry)
        wanted_regs = {(e.realm, e.reg, e.session) for e in regs}
        for (realm_name, sid), proxy in list(state.callees.items()):
            realm = self._realm(realm_name)
            if realm is None:
                continue
            for reg_id in list(proxy.registrations):
                if (realm_name, reg_id, sid) not in wanted_regs:
                    realm.dealer.remove_remote_callee(proxy, reg_id)
        for callee in regs:
            self.add_callee(node, callee)


def _never(exc: ClusterProtocolError) -> None:
    """``Mirror.inbox``: a decoded envelope is never malformed."""
    raise exc


_CONTROL: dict[type[ControlMessage], Callable[[Mirror, Any], None]] = {
    NodeHello: Mirror._hello,
    NodeGone: Mirror._gone,
    SessionJoined: Mirror._join,
    SessionLeft: Mirror._leave,
    SubscriptionChanged: Mirror._sub,
    CalleeAdded: Mirror._reg,
    CalleeRemoved: Mirror._unreg,
    RetainedChanged: Mirror._retain,
    KillSessions: Mirror._kill,
    PatternsChanged: Mirror._patterns,
}
"""Control envelope class → how this node applies it (one entry per ``CONTROL_TYPES``)."""

_INBOX: dict[type, Callable[[Mirror, Realm, Any], None]] = {
    InboxInvocation: Mirror._invoke,
    InboxInterrupt: Mirror._interrupt,
    InboxResult: Mirror._result,
    InboxError: Mirror._error,
}
"""Inbox envelope class → how this node applies it (one entry per ``INBOX_TYPES`` but
``InboxSwitch``, which concerns the direct link: ``Mirror.switched``)."""
