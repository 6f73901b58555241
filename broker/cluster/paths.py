"""The two paths of a cross-node call's envelopes: a direct link, or a Redis inbox.

``CallPaths`` ties this node's ``PeerLinks`` (broker/cluster/peers.py) to the rest of the
cluster backend: rows that came on a link go to the mirror; a link that breaks ends the
calls crossing it; the envelopes of a first dial that never connected, and the marker
that moves a node's traffic back to its link, go through the outbox to that node's inbox
(protocol_spec/cluster.md, "Direct links between nodes").
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

from protocol_spec import errors
from protocol_spec.cluster import ClusterProtocolError, InboxMessage, InboxSwitch
from protocol_spec.cluster_rows import decode_rows

from . import keys
from .link import ClusterTiming
from .mirror import Mirror, RowSink
from .outbox import Outbox
from .peers import PeerLinks, PeerTLS
from .state import LinkState, LinkStateMachine

__all__ = ["CallPaths"]

log = logging.getLogger(__name__)


class CallPaths:
    """Where this node's call envelopes for another node go, and what comes back on links."""

    def __init__(
        self,
        node: str,
        mirror: Mirror,
        outbox: Outbox,
        link_state: LinkStateMachine,
        malformed: Callable[[bytes, ClusterProtocolError], None],
        tls: PeerTLS | None = None,
    ) -> None:
        self.node = node
        self.mirror, self.outbox, self.link_state = mirror, outbox, link_state
        self._malformed = partial(malformed, b"direct link")
        self.peers = PeerLinks(node, self._from_peer, self._lost, tls)
        self.peers.reroute = self._reroute
        self.peers.switch = self._switch
        self._direct = self.peers.by_channel
        mirror.route = self.route
        mirror.forget = self.peers.forget
        mirror.switched = self.peers.switched

    def time_by(self, timing: ClusterTiming) -> None:
        """The links' timings from the cluster's (protocol_spec/cluster.md)."""
        peers = self.peers
        peers.retry = timing.peer_retry
        # a dead node is dropped within node_timeout + a heartbeat: one outliving that lives
        peers.grace = timing.node_timeout + 2 * timing.heartbeat_interval
        # a link silent for half node_timeout is asked; silent for node_timeout after: ended
        peers.ping_after, peers.ping_timeout = timing.node_timeout / 2, timing.node_timeout

    def route(self, channel: bytes) -> RowSink | None:
        """The direct link of a node's inbox channel; None: through Redis (or not at all)."""
        if self.link_state.state is LinkState.UP:  # else nothing goes, as on the Redis path
            return self._direct.get(channel) or self.peers.route(channel)
        return None

    def _from_peer(self, node: str, data: bytes) -> None:
        """Inbox envelopes (rows) that came on ``node``'s direct link."""
        try:
            self.mirror.inboxes(decode_rows(node, data), self._malformed)
        except ClusterProtocolError as exc:
            self._malformed(exc)
        except Exception:
            log.exception("cluster: cannot apply envelopes from a direct link")

    def heard(self, found: list[InboxMessage | ClusterProtocolError]) -> None:
        """Envelopes that came through Redis: their nodes are alive (``PeerLinks.heard``)."""
        for msg in found:
            if not isinstance(msg, ClusterProtocolError):
                self.peers.heard(msg.node)

    def _reroute(self, node: str, body: bytes) -> None:
        """Envelopes that waited for a dial to ``node`` that never connected: via Redis."""
        if self.link_state.state is not LinkState.UP:
            return  # as any inbox envelope then: not sent (their calls fail elsewhere)
        channel = keys.inbox(node)
        for envelope in decode_rows(self.node, body):
            if not isinstance(envelope, ClusterProtocolError):  # our own rows: never
                self.outbox.post(channel, envelope.pack())

    def _switch(self, node: str, key: str) -> bool:
        """Publish the marker after which ``node``'s envelopes take the direct link."""
        if self.link_state.state is not LinkState.UP:
            return False
        self.outbox.post(keys.inbox(node), InboxSwitch(self.node, key).pack())
        return True

    def _lost(self, node: str, why: str) -> None:
        text = f"the direct link with node {node} broke: {why}"
        self.mirror.abandon_node(node, errors.UNAVAILABLE, text)
