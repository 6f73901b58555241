"""What this node knows of the other nodes, applied to the local core (no I/O here).

Remote callees and callers become ``RemoteSession`` stand-ins with a ``NodePeer``:
the dealer routes calls to them exactly as to local sessions, and what it sends them
becomes an inbox envelope for their node (protocol_spec/cluster.md, "Call envelopes").
Remote sessions and subscriptions go into each realm's ``RemoteView`` for the meta API.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from broker.core.cluster import RemoteSession
from broker.core.interfaces import EncodeCache
from broker.core.realm import Realm
from broker.core.router import Router
from protocol_spec import errors
from protocol_spec.messages import Error, Interrupt, Invocation, Message, MessageType, Result, Yield

from . import keys
from .events import event_fields

__all__ = ["Mirror", "NodePeer", "NodeState"]

log = logging.getLogger(__name__)

Send = Callable[[bytes, dict[str, Any]], None]
"""Ship an inbox envelope: (the node's inbox channel, envelope)."""


class NodePeer:
    """The ``Peer`` of a stand-in session: turns dealer messages into inbox envelopes.

    For a remote *callee* it carries INVOCATION/INTERRUPT to the callee's node; for a
    remote *caller* (one per caller node and local callee) RESULT/ERROR back to it.
    """

    __slots__ = ("callee", "channel", "origin", "realm", "send_to")

    transport_info: dict[str, Any] = {"type": "cluster"}

    def __init__(self, send_to: Send, origin: str, node: str, realm: str, callee: int) -> None:
        self.send_to = send_to
        self.origin = origin
        self.channel = keys.inbox(node)
        self.realm = realm
        self.callee = callee

    def send(self, message: Message, cache: EncodeCache | None = None) -> None:
        """Ship the message as an envelope (other message types are not routed here)."""
        env: dict[str, Any]
        if isinstance(message, Invocation):
            env = {
                "op": "inv",
                "i": message.request,
                "reg": message.registration,
                "d": message.details,
                "a": message.args,
                "k": message.kwargs,
            }
        elif isinstance(message, Interrupt):
            env = {"op": "int", "i": message.request, "o": message.options}
        elif isinstance(message, Result):
            env = {"op": "res", "i": message.request, "d": message.details}
            env["a"], env["k"] = message.args, message.kwargs
        elif isinstance(message, Error):
            env = {"op": "err", "i": message.request, "d": message.details, "e": message.error}
            env["a"], env["k"] = message.args, message.kwargs
        else:
            return
        env["n"] = self.origin
        env["r"] = self.realm
        env["s"] = self.callee
        self.send_to(self.channel, env)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Stand-ins have no transport."""


@dataclass
class NodeState:
    """Everything known about one other node."""

    sessions: set[tuple[str, int]] = field(default_factory=set)
    subs: set[tuple[str, int]] = field(default_factory=set)
    callees: dict[tuple[str, int], RemoteSession] = field(default_factory=dict)
    callers: dict[tuple[str, int], RemoteSession] = field(default_factory=dict)


class Mirror:
    """Applies control and inbox envelopes from other nodes to the router's realms."""

    def __init__(self, router: Router, node: str, send_to: Send) -> None:
        self.router = router
        self.node = node
        self.send_to = send_to
        self.nodes: dict[str, NodeState] = {}

    def _realm(self, name: Any) -> Realm | None:
        return self.router.realms.get(name) if isinstance(name, str) else None

    def state(self, node: str) -> NodeState:
        """The state of ``node``, created on first mention."""
        found = self.nodes.get(node)
        if found is None:
            found = self.nodes[node] = NodeState()
        return found

    # --- control envelopes ------------------------------------------------------------
    def control(self, node: str, env: dict[str, Any]) -> None:
        """Apply one control envelope from another node ``node`` (its ``n``)."""
        handler = _CONTROL.get(env.get("op", ""))
        if handler is not None:
            handler(self, node, env)

    def _join(self, node: str, env: dict[str, Any]) -> None:
        realm = self._realm(env.get("r"))
        info = env.get("info")
        if realm is None or not isinstance(info, dict):
            return
        sid = int(info["session"])
        if sid in realm.remote.sessions:
            return
        realm.remote.add_session(node, info)
        self.state(node).sessions.add((realm.name, sid))
        realm.broker.publish_meta("wamp.session.on_join", [info])

    def _leave(self, node: str, env: dict[str, Any]) -> None:
        realm = self._realm(env.get("r"))
        if realm is None:
            return
        self.remove_session(node, realm, int(env["s"]), "callee disconnected")

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
                "wamp.session.on_leave", [sid, info.get("authid"), info.get("authrole")]
            )

    def _sub(self, node: str, env: dict[str, Any]) -> None:
        realm = self._realm(env.get("r"))
        sub = env.get("sub")
        if realm is None or not isinstance(sub, dict):
            return
        self.set_sub(node, realm, sub)

    def set_sub(self, node: str, realm: Realm, sub: dict[str, Any]) -> None:
        """Record ``node``'s subscribers of one subscription."""
        subscribers = [int(s) for s in sub.get("subscribers") or []]
        realm.remote.set_subscription(
            node, int(sub["id"]), sub["uri"], sub["match"], sub.get("created", ""), subscribers
        )
        key = (realm.name, int(sub["id"]))
        if subscribers:
            self.state(node).subs.add(key)
        else:
            self.state(node).subs.discard(key)

    def _reg(self, node: str, env: dict[str, Any]) -> None:
        entry = env.get("e")
        if isinstance(entry, dict):
            self.add_callee(node, entry)

    def add_callee(self, node: str, entry: dict[str, Any]) -> None:
        """A remote callee joined a registration (entry as in ``wamp:node:*:regs``)."""
        realm = self._realm(entry.get("realm"))
        if realm is None:
            return
        sid = int(entry["session"])
        state = self.state(node)
        proxy = state.callees.get((realm.name, sid))
        if proxy is None:
            proxy = RemoteSession(
                sid, NodePeer(self.send_to, self.node, node, realm.name, sid), node
            )
            features = entry.get("features")
            proxy.client_roles = {
                "callee": {"features": features if isinstance(features, dict) else {}}
            }
            proxy.authid = str(entry.get("authid", ""))
            proxy.authrole = str(entry.get("authrole", ""))
            proxy.realm = realm
            state.callees[(realm.name, sid)] = proxy
        realm.dealer.add_remote_callee(
            proxy,
            entry["uri"],
            entry["match"],
            entry["invoke"],
            bool(entry.get("disclose")),
            int(entry["reg"]),
            int(entry.get("seq", 0)),
        )

    def _unreg(self, node: str, env: dict[str, Any]) -> None:
        realm = self._realm(env.get("r"))
        if realm is None:
            return
        proxy = self.state(node).callees.get((realm.name, int(env["s"])))
        if proxy is not None:
            realm.dealer.remove_remote_callee(proxy, int(env["reg"]))

    def _retain(self, node: str, env: dict[str, Any]) -> None:
        realm = self._realm(env.get("r"))
        ev = env.get("ev")
        if realm is not None and isinstance(ev, dict):
            self.retain(realm, ev)

    @staticmethod
    def retain(realm: Realm, ev: dict[str, Any]) -> None:
        """Record a retained event envelope published on another node."""
        realm.broker.retain_remote(*event_fields(ev))

    def _kill(self, node: str, env: dict[str, Any]) -> None:
        realm = self._realm(env.get("r"))
        if realm is None:
            return
        selector, value, spare = env.get("sel"), env.get("v"), env.get("except")
        reason = env.get("reason") or errors.CLOSE_KILLED
        for session in list(realm.sessions.values()):
            if session.id == spare:
                continue
            if (
                (selector == "session" and session.id == value)
                or (selector == "authid" and session.authid == value)
                or (selector == "authrole" and session.authrole == value)
                or selector == "all"
            ):
                self.router.kill(session, reason, env.get("message"))

    # --- inbox envelopes -----------------------------------------------------------------
    def inbox(self, env: dict[str, Any]) -> None:
        """Apply one call envelope addressed to this node."""
        node = env.get("n")
        realm = self._realm(env.get("r"))
        if not isinstance(node, str) or realm is None:
            return
        op = env.get("op")
        key = (realm.name, int(env["s"]))
        state = self.state(node)
        request = int(env["i"])
        if op == "inv":
            caller = state.callers.get(key)
            if caller is None:
                peer = NodePeer(self.send_to, self.node, node, realm.name, key[1])
                caller = RemoteSession(0, peer, node)
                caller.realm = realm
                state.callers[key] = caller
            realm.dealer.invoke_remote(
                caller,
                request,
                key[1],
                int(env["reg"]),
                env.get("d") or {},
                env.get("a"),
                env.get("k"),
            )
        elif op == "int":
            caller = state.callers.get(key)
            if caller is not None:
                realm.dealer.interrupt_remote(caller, request, env.get("o") or {})
        elif op in ("res", "err"):
            callee = state.callees.get(key)
            if callee is None:
                return
            details = env.get("d") or {}
            if op == "res":
                options = {"progress": True} if details.get("progress") is True else {}
                realm.dealer.yield_(callee, Yield(request, options, env.get("a"), env.get("k")))
            else:
                error = Error(
                    MessageType.INVOCATION,
                    request,
                    details,
                    str(env.get("e")),
                    env.get("a"),
                    env.get("k"),
                )
                realm.dealer.invocation_error(callee, error)

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
            realm = self.router.realms.get(realm_name)
            if realm is not None:
                yield realm, proxy

    def abandon_calls(self, uri: str, text: str) -> None:
        """The link to the other nodes is down: end every call that crosses it."""
        for state in self.nodes.values():
            for realm, proxy in self._proxies(state.callees):
                realm.dealer.abandon(proxy, uri, text)
            for realm, proxy in self._proxies(state.callers):
                realm.dealer.abandon(proxy, uri, text)

    def drop_node(self, node: str, why: str) -> None:
        """Forget every session, subscription, callee and caller of ``node``."""
        state = self.nodes.pop(node, None)
        if state is None:
            return
        for realm, proxy in self._proxies(state.callers):
            realm.dealer.abandon(proxy, errors.CANCELED, why)
        for realm, proxy in self._proxies(state.callees):
            realm.dealer.detach(proxy, why)
        for realm in self.router.realms.values():
            for info in realm.remote.drop_node(node):
                realm.broker.publish_meta(
                    "wamp.session.on_leave",
                    [info["session"], info.get("authid"), info.get("authrole")],
                )

    def load_node(
        self,
        node: str,
        sessions: list[dict[str, Any]],
        subs: list[dict[str, Any]],
        regs: list[dict[str, Any]],
    ) -> None:
        """Bring ``node``'s state in line with a snapshot of its hashes."""
        state = self.state(node)
        wanted_sessions = {(e["realm"], int(e["info"]["session"])) for e in sessions}
        for realm_name, sid in list(state.sessions - wanted_sessions):
            realm = self.router.realms.get(realm_name)
            if realm is not None:
                self.remove_session(node, realm, sid, "callee disconnected")
        for entry in sessions:
            self._join(node, {"r": entry["realm"], "info": entry["info"]})
        wanted_subs = {(e["realm"], int(e["id"])) for e in subs}
        for realm_name, sub_id in list(state.subs - wanted_subs):
            realm = self.router.realms.get(realm_name)
            remote = realm.remote.subscriptions.get(sub_id) if realm is not None else None
            if realm is not None and remote is not None:
                self.set_sub(
                    node, realm, {"id": sub_id, "uri": remote.topic, "match": remote.match}
                )
        for entry in subs:
            realm = self._realm(entry.get("realm"))
            if realm is not None:
                self.set_sub(node, realm, entry)
        wanted_regs = {(e["realm"], int(e["reg"]), int(e["session"])) for e in regs}
        for (realm_name, sid), proxy in list(state.callees.items()):
            realm = self.router.realms.get(realm_name)
            if realm is None:
                continue
            for reg_id in list(proxy.registrations):
                if (realm_name, reg_id, sid) not in wanted_regs:
                    realm.dealer.remove_remote_callee(proxy, reg_id)
        for entry in regs:
            self.add_callee(node, entry)


_CONTROL: dict[str, Callable[[Mirror, str, dict[str, Any]], None]] = {
    "join": Mirror._join,
    "leave": Mirror._leave,
    "sub": Mirror._sub,
    "reg": Mirror._reg,
    "unreg": Mirror._unreg,
    "retain": Mirror._retain,
    "kill": Mirror._kill,
}
