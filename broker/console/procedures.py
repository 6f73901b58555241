"""Router-specific meta procedures and the node status event (``wamp.broker.*``).

What the WAMP meta API lacks for the console: the nodes and their link state, paged
lists with details (sessions with transport, address and join time; subscriptions and
registrations with their subscribers/callees per node) and message rates. They live
in the ``wamp.`` namespace because the router answers only reserved URIs itself; the
realm's roles authorize them like every meta procedure. protocol_spec/wamp.md
documents the arguments and answers.

``NodeStatus`` samples this node once a second: it keeps five minutes of counter
samples (``wamp.broker.stats_rates``) and, when the console is on, publishes the node's
status to every node's subscribers of ``wamp.broker.on_status`` in the console's realm.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from broker.core.cluster import RemoteSession
from broker.core.ids import random_id
from broker.core.publication import Publication
from broker.core.registration import InternalError
from protocol_spec import errors
from protocol_spec import meta as names
from protocol_spec.messages import MessageType

if TYPE_CHECKING:
    from broker.core.realm import Realm
    from broker.core.router import Router
    from broker.core.session import Session
    from broker.metrics.views import ClusterView, TransportView

__all__ = ["MAX_PAGE", "NodeStatus"]

MAX_PAGE = 500
"""Most rows one paged call answers."""
HISTORY = 300
"""Samples kept (one a second: five minutes)."""

Reply = tuple[list[Any] | None, dict[str, Any] | None]


def _page_args(kw: dict[str, Any]) -> tuple[int, int, str]:
    offset, limit, search = kw.get("offset", 0), kw.get("limit", 100), kw.get("search", "")
    for name, value in (("offset", offset), ("limit", limit)):
        if type(value) is not int or value < 0:
            raise InternalError(errors.INVALID_ARGUMENT, f"{name} must be a non-negative integer")
    if not isinstance(search, str):
        raise InternalError(errors.INVALID_ARGUMENT, "search must be a string")
    return offset, min(limit, MAX_PAGE), search.lower()


def _page(rows: Iterable[dict[str, Any]], kw: dict[str, Any], keys: tuple[str, ...]) -> Reply:
    """Filter ``rows`` by ``search`` (substring of any of ``keys``), sort by ID, slice."""
    offset, limit, search = _page_args(kw)
    if search:
        rows = (r for r in rows if any(search in str(r.get(k, "")).lower() for k in keys))
    ordered = sorted(rows, key=lambda r: int(r.get("id", r.get("session", 0))))
    return None, {"total": len(ordered), "offset": offset, "rows": ordered[offset : offset + limit]}


class NodeStatus:
    """This node's status, its counter history and the ``wamp.broker.*`` procedures."""

    def __init__(
        self,
        node: str,
        version: str,
        router: Router,
        transport: TransportView,
        cluster: ClusterView | None,
        console_realm: str | None,
    ) -> None:
        self.node = node or "standalone"
        self.version = version
        self.router = router
        self.transport = transport
        self.cluster = cluster
        self.console = router.realms.get(console_realm) if console_realm else None
        self.started = time.time()
        self.samples: deque[list[float]] = deque(maxlen=HISTORY)
        self.joined: dict[int, float] = {}
        """Session ID → when this node first saw it (local or remote), epoch seconds."""
        self._timer: asyncio.TimerHandle | None = None

    def install(self) -> None:
        """Answer the procedures in every realm and start sampling once a second."""
        for realm in self.router.realms.values():
            procedures: dict[str, Callable[[Realm, dict[str, Any]], Reply]] = {
                names.BROKER_NODE_LIST: lambda r, kw: ([self.node_list(r)], None),
                names.BROKER_STATS_RATES: lambda r, kw: ([self.rates()], None),
                names.BROKER_SESSION_PAGE: self.session_page,
                names.BROKER_SUBSCRIPTION_PAGE: self.subscription_page,
                names.BROKER_REGISTRATION_PAGE: self.registration_page,
            }
            for uri, func in procedures.items():
                realm.dealer.internal[uri] = _bind(realm, func)
        self._tick()

    def close(self) -> None:
        """Stop sampling."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    # --- sampling ---------------------------------------------------------------------
    def totals(self) -> list[float]:
        """[time, messages in, messages out, events delivered, calls, errors] now."""
        stats = self.transport.stats
        return [
            round(time.time(), 3),
            float(sum(stats.messages_in)),
            float(sum(stats.messages_out)),
            float(stats.messages_out[MessageType.EVENT]),
            float(stats.messages_in[MessageType.CALL]),
            float(stats.messages_out[MessageType.ERROR]),
        ]

    def status(self) -> dict[str, Any]:
        """This node as ``wamp.broker.node.list`` and ``on_status`` describe it."""
        cluster = self.cluster
        if cluster is None:
            link, rtt = "standalone", None
        else:
            m = cluster.metrics()
            link, rtt = m["state"], m["redis_rtt"]
        return {
            "node": self.node,
            "version": self.version,
            "link": link,
            "redis_rtt": rtt,
            "sessions": sum(len(r.sessions) for r in self.router.realms.values()),
            "realms": {name: len(r.sessions) for name, r in self.router.realms.items()},
            "uptime": round(time.time() - self.started, 1),
            "totals": self.totals(),
        }

    def _tick(self) -> None:
        try:
            self.samples.append(self.totals())
            self._note_joins()
            if self.console is not None:
                status = self.status()
                event = Publication(names.BROKER_ON_STATUS, random_id(), {}, [status], None)
                self.console.broker.deliver(event)
        finally:
            self._timer = asyncio.get_running_loop().call_later(1.0, self._tick)

    def _note_joins(self) -> None:
        now = round(time.time(), 1)
        seen: set[int] = set()
        for realm in self.router.realms.values():
            seen.update(realm.sessions)
            seen.update(realm.remote.sessions)
        for sid in seen - self.joined.keys():
            self.joined[sid] = now
        for sid in self.joined.keys() - seen:
            del self.joined[sid]

    def rates(self) -> dict[str, Any]:
        """This node's counter samples of the last five minutes."""
        return {"node": self.node, "samples": list(self.samples)}

    # --- procedures -------------------------------------------------------------------
    def node_list(self, realm: Realm) -> list[dict[str, Any]]:
        """This node in full; the others as this node's mirror knows them."""
        nodes = [{**self.status(), "local": True}]
        counts: dict[str, int] = {}
        for node in realm.remote.session_nodes.values():
            counts[node] = counts.get(node, 0) + 1
        mirror = getattr(self.cluster, "mirror", None)
        others = set(counts) | set(getattr(mirror, "nodes", {}))
        for node in sorted(others - {self.node}):
            nodes.append({"node": node, "local": False, "realm_sessions": counts.get(node, 0)})
        return nodes

    def session_page(self, realm: Realm, kw: dict[str, Any]) -> Reply:
        """Sessions of the realm on every node, with transport, node and join time."""
        rows = [{**s.info(), "node": self.node} for s in realm.sessions.values()]
        nodes = realm.remote.session_nodes
        rows += [{**i, "node": nodes.get(sid, "")} for sid, i in realm.remote.sessions.items()]
        for row in rows:
            row["joined"] = self.joined.get(row["session"])
        return _page(rows, kw, ("session", "authid", "authrole", "node"))

    def subscription_page(self, realm: Realm, kw: dict[str, Any]) -> Reply:
        """Subscriptions of the realm with their subscriber counts per node."""
        rows: dict[int, dict[str, Any]] = {}
        for sub in realm.broker.subscriptions():
            rows[sub.id] = {**sub.info(), "nodes": {self.node: len(sub.subscribers)}}
        for remote in realm.remote.subscriptions.values():
            row = rows.setdefault(remote.id, {**remote.info(), "nodes": {}})
            row["nodes"].update({n: len(ids) for n, ids in remote.nodes.items()})
        return _page(rows.values(), kw, ("uri",))

    def registration_page(self, realm: Realm, kw: dict[str, Any]) -> Reply:
        """Registrations of the realm with their callee counts per node."""
        rows = []
        for reg in realm.dealer.registrations():
            per_node: dict[str, int] = {}
            for callee in reg.callees:
                node = callee.node if isinstance(callee, RemoteSession) else self.node
                per_node[node] = per_node.get(node, 0) + 1
            rows.append({**reg.info(), "nodes": per_node})
        return _page(rows, kw, ("uri",))


def _bind(
    realm: Realm, func: Callable[[Realm, dict[str, Any]], Reply]
) -> Callable[[Session, list[Any], dict[str, Any]], Reply]:
    return lambda session, args, kwargs: func(realm, kwargs)
