"""Transport adapters that feed the sans-I/O router (WebSocket today)."""

from __future__ import annotations

from .websocket import TransportSettings, WebSocketPeer, WebSocketTransport

__all__ = ["TransportSettings", "WebSocketPeer", "WebSocketTransport"]
