"""Control envelopes that end calls wait for the direct link they could overtake.

A node's call results travel on its direct link (``peers``) while its ``leave`` and
``gone`` travel through Redis: without care a result sent before the callee left could
arrive after the ``leave``, which fails the call the callee did answer. So when a
``leave`` or ``gone`` comes from a node with a live link to this one, the link is synced
first (everything the node sent before is delivered), and that node's control envelopes
are held meanwhile, so they still apply in the order the node sent them
(protocol_spec/cluster.md, "Direct links").
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from protocol_spec.cluster import ControlMessage, NodeGone, SessionLeft

from .peers import PeerLinks

__all__ = ["ControlBarrier"]

log = logging.getLogger(__name__)

ENDS_CALLS = (SessionLeft, NodeGone)
"""Control envelopes that fail calls pending on the sender's sessions."""


class ControlBarrier:
    """Applies each node's control envelopes in order, syncing its link before ``ENDS_CALLS``."""

    def __init__(
        self, peers: PeerLinks, apply: Callable[[ControlMessage], None], timeout: float
    ) -> None:
        self.peers = peers
        self.apply = apply
        self.timeout = timeout
        """Seconds a sync may take before the envelope applies anyway."""
        self._held: dict[str, deque[ControlMessage]] = {}

    def control(self, msg: ControlMessage) -> None:
        """Apply ``msg`` now, or after the syncs its node's earlier envelopes wait for."""
        held = self._held.get(msg.node)
        if held is not None:
            held.append(msg)
        elif isinstance(msg, ENDS_CALLS) and self.peers.inbound(msg.node):
            self._held[msg.node] = deque([msg])
            self.peers.sync(msg.node, lambda: self._release(msg.node), self.timeout)
        else:
            self.apply(msg)

    def _release(self, node: str) -> None:
        """The sync came back: apply what was held, up to the next envelope that needs one."""
        held = self._held.get(node)
        if held is None:
            return
        self._apply(held.popleft())
        while held:
            msg = held[0]
            if isinstance(msg, ENDS_CALLS) and self.peers.inbound(node):
                self.peers.sync(node, lambda: self._release(node), self.timeout)
                return
            self._apply(held.popleft())
        del self._held[node]

    def _apply(self, msg: ControlMessage) -> None:
        try:
            self.apply(msg)
        except Exception:  # as on the pub/sub link: one bad envelope, not the node's order
            log.exception("cluster: cannot apply a control envelope from %r", msg.node)

    @property
    def holding(self) -> int:
        """Control envelopes waiting for a sync (tests, metrics)."""
        return sum(len(held) for held in self._held.values())
