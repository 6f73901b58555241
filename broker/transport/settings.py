"""Settings of the listening sockets and of every transport behind them.

One value, ``TransportSettings``, holds the limits shared by all transports (they
apply to a session whatever its transport) and the main listener (``host``/``port``:
HTTP, WebSocket at ``path``, long-poll at ``longpoll_path`` and RawSocket, told apart
by the first octet). ``listeners`` adds RawSocket-only sockets: TCP ports or Unix
socket paths.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ListenerSettings", "TransportSettings"]


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """An extra RawSocket-only listener: a TCP ``host``/``port`` or a Unix socket ``path``."""

    host: str = "127.0.0.1"
    port: int | None = None
    path: str | None = None
    """Unix socket path; a stale socket file left by a dead process is replaced."""
    mode: int = 0o660
    """Permissions of the Unix socket file."""

    @property
    def address(self) -> str:
        """``rs://host:port`` or ``rs://unix:/path``."""
        return f"rs://unix:{self.path}" if self.path else f"rs://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """Limits and timings of the listeners, shared by every transport."""

    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/ws"
    max_message_size: int = 4 * 1024 * 1024
    max_write_buffer: int = 4 * 1024 * 1024
    """Bytes waiting in one session's outgoing buffer before it is a slow consumer."""
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    open_timeout: float = 10.0
    """Seconds for an opening handshake (HTTP request head, RawSocket handshake)."""
    close_timeout: float = 5.0
    hello_timeout: float = 10.0
    """Seconds from the transport opening to WELCOME (HELLO and authentication)."""
    max_sessions: int = 50_000
    """Open sessions per node; more are refused (HTTP 503, RawSocket error 4)."""
    message_rate: float = 50_000.0
    """Sustained messages per second per session (token bucket refill); 0 disables."""
    message_burst: int = 100_000
    """Token bucket size: messages a session may send above the rate at once."""
    allowed_origins: tuple[str, ...] = ()
    """Browser Origins allowed to connect (empty: any); clients sending no Origin pass."""
    tls_cert: str | None = None
    """PEM certificate chain file: serve wss:// when set (with ``tls_key``)."""
    tls_key: str | None = None
    rawsocket: bool = True
    """Serve RawSocket on the main port too (first octet 0x7F)."""
    longpoll_path: str | None = "/lp"
    """Base path of the HTTP long-poll transport; None disables it."""
    longpoll_session_timeout: float = 30.0
    """Seconds a long-poll session lives without a pending or recent ``receive``."""
    longpoll_receive_timeout: float = 10.0
    """Seconds a ``receive`` is held open when nothing is waiting (then an empty answer)."""
    listeners: tuple[ListenerSettings, ...] = ()

    @property
    def scheme(self) -> str:
        """``wss`` with TLS, ``ws`` without."""
        return "wss" if self.tls_cert else "ws"
