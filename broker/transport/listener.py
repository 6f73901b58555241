"""The listening sockets: one port for every transport, plus RawSocket-only sockets.

The main port (``host``/``port``, TLS when configured) reads the first octet of each
connection: ``0x7F`` starts a RawSocket handshake (``rs://host:port``), anything
else is HTTP (``ws://host:port/ws``, long-poll under ``/lp``, ``/healthz``,
``/readyz``, ``/metrics``). ``listeners`` in the settings add RawSocket-only TCP
ports and Unix sockets (a stale socket file is replaced; its mode is set).

Every transport attaches its sessions to one ``SessionHub``, so limits, metrics and
the slow-consumer policy are the same whatever the transport.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import ssl
import stat
from pathlib import Path
from typing import cast

from broker.config import ListenerSettings, TransportSettings
from broker.core.router import Router
from broker.metrics import TransportStats

from .http import HttpApp, HttpConnection, Route
from .longpoll import LongPoll
from .peer import SessionHub, WampPeer
from .rawsocket import MAGIC, RawSocketConnection

__all__ = ["FirstOctet", "Listener"]

log = logging.getLogger(__name__)


class FirstOctet(asyncio.Protocol):
    """Reads the first octet of a connection and hands it to RawSocket or HTTP."""

    def __init__(self, listener: Listener) -> None:
        self.listener = listener
        self.transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        self.listener.hub.transports.add(transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.listener.settings.open_timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        transport = self.transport
        if transport is None or not data:
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.transport = None
        listener = self.listener
        protocol: asyncio.Protocol
        if data[0] == MAGIC and listener.settings.rawsocket:
            protocol = RawSocketConnection(listener.hub)
        else:
            protocol = HttpConnection(
                listener.hub, listener.http_routes, listener.longpoll, listener.http_apps
            )
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        protocol.data_received(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.listener.hub.transports.discard(self.transport)


class Listener:
    """Accepts connections on every configured socket and runs each as a WAMP session."""

    def __init__(self, router: Router, settings: TransportSettings) -> None:
        self.router = router
        self.settings = settings
        self.hub = SessionHub(router, settings)
        self.http_routes: dict[str, Route] = {
            "/healthz": lambda: (200, "text/plain; charset=utf-8", "ok\n"),
        }
        self.http_apps: dict[str, HttpApp] = {}  # path → handler (the HTTP API)
        self.longpoll = LongPoll(self.hub) if settings.longpoll_path else None
        self.servers: list[asyncio.Server] = []
        self.addresses: list[str] = []
        self.tls: ssl.SSLContext | None = None
        """The TLS context every listener serves (``reload_tls`` changes it in place)."""

    # --- what the server and the metrics read ----------------------------------------------
    @property
    def stats(self) -> TransportStats:
        """The transport counters the metrics read."""
        return self.hub.stats

    @property
    def connections(self) -> set[WampPeer]:
        """The open sessions of every transport."""
        return self.hub.peers

    @property
    def slow_consumers(self) -> int:
        """Sessions closed because they did not read fast enough."""
        return self.hub.slow_consumers

    @property
    def bound_port(self) -> int:
        """The main port actually bound (useful with port 0)."""
        if not self.servers:
            raise RuntimeError("server has no socket")
        for sock in self.servers[0].sockets:
            return int(sock.getsockname()[1])
        raise RuntimeError("server has no socket")

    # --- life -------------------------------------------------------------------------------
    async def start(self, sock: socket.socket | None = None) -> None:
        """Bind the main port (or serve ``sock``, a listening socket) and every extra listener.

        A worker of ``broker --workers N`` passes the socket it was handed or bound with
        SO_REUSEPORT (broker.server.listening_socket).
        """
        s = self.settings
        loop = asyncio.get_running_loop()
        context = self.tls = tls_context(s)
        if sock is not None:
            main = await loop.create_server(
                lambda: FirstOctet(self), sock=sock, ssl=context, backlog=1024
            )
        else:
            main = await loop.create_server(
                lambda: FirstOctet(self), s.host, s.port, ssl=context, backlog=1024
            )
        self.servers.append(main)
        for extra in s.listeners:
            self.servers.append(await self._open_rawsocket(extra, context))

    def reload_tls(self) -> bool:
        """Load the certificate and key files again (SIGHUP): connections made from now on
        get them, open ones keep theirs. False when no listener has TLS. Raises
        ``ssl.SSLError`` or ``OSError`` when the files do not load: the old ones stay."""
        s = self.settings
        if self.tls is None or not s.tls_cert:
            return False
        tls_context(s)  # they load and match: only then is the live context changed
        self.tls.load_cert_chain(s.tls_cert, s.tls_key)
        return True

    async def _open_rawsocket(
        self, extra: ListenerSettings, context: ssl.SSLContext | None
    ) -> asyncio.Server:
        loop = asyncio.get_running_loop()
        hub = self.hub
        if extra.path:
            remove_stale_socket(extra.path)
            server = await loop.create_unix_server(lambda: RawSocketConnection(hub), extra.path)
            os.chmod(extra.path, extra.mode)
            self.addresses.append(extra.address)
        else:
            server = await loop.create_server(
                lambda: RawSocketConnection(hub), extra.host, extra.port or 0, ssl=context
            )
            port = server.sockets[0].getsockname()[1]
            self.addresses.append(f"rs{'s' if context else ''}://{extra.host}:{port}")
        log.info("listening on %s (RawSocket only)", self.addresses[-1])
        return server

    def stop_accepting(self) -> None:
        """Close the listening sockets; open connections stay."""
        for server in self.servers:
            server.close()
        for extra in self.settings.listeners:
            if extra.path:
                with contextlib.suppress(OSError):
                    os.unlink(extra.path)

    async def wait_connections_closed(self, timeout: float) -> bool:
        """Wait until every session closed, at most ``timeout`` seconds."""
        return await self.hub.wait_empty(timeout)

    async def close(self) -> None:
        """Close every connection and the listening sockets."""
        self.stop_accepting()
        self.hub.stop()
        if self.longpoll is not None:
            self.longpoll.close_all()
        self.hub.abort_all()
        await asyncio.sleep(0)  # let the aborted transports report connection_lost


def remove_stale_socket(path: str) -> None:
    """Remove a socket file no process listens on; refuse to touch anything else."""
    target = Path(path)
    try:
        mode = target.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        target.unlink()  # stale: the process that bound it is gone
        log.info("removed stale socket file %s", path)
        return
    finally:
        probe.close()
    raise OSError(f"{path} is in use by another process")


def tls_context(settings: TransportSettings) -> ssl.SSLContext | None:
    """A server TLS context (TLS 1.2+) from the configured PEM files, or None."""
    if not settings.tls_cert:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    return context
