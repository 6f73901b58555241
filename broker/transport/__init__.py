"""Transport adapters that feed the sans-I/O router: one port for WebSocket, RawSocket and
HTTP long-poll (``listener``), RawSocket-only TCP ports and Unix sockets, and the session
glue they share (``peer``)."""

from __future__ import annotations

from broker.config import ListenerSettings, TransportSettings

from .listener import Listener
from .peer import SessionHub, WampPeer

__all__ = ["Listener", "ListenerSettings", "SessionHub", "TransportSettings", "WampPeer"]
