"""Wires the router, the transport and the cluster backend; start, drain, close.

Shutdown order (SIGTERM/SIGINT or ``BrokerServer.close``): stop accepting new
connections, send GOODBYE ``wamp.close.system_shutdown`` to every session, take
this node out of the cluster (its sessions and registrations leave at once), wait
up to ``drain_timeout`` for peers to answer and disconnect, then close whatever
is left. ``close`` is idempotent.

HTTP routes beside the WebSocket: ``/healthz`` (the process is alive) and
``/readyz`` (200 when serving normally; 503 while the cluster link is degraded).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from broker.cluster.redis import ClusterTiming, RedisCluster
from broker.config import Settings
from broker.core.interfaces import TimerHandle
from broker.core.router import Router
from broker.httpapi import HttpApiService
from broker.metrics import CONTENT_TYPE, render
from broker.transport.listener import Listener

__all__ = ["AsyncioScheduler", "BrokerServer"]

log = logging.getLogger(__name__)


class AsyncioScheduler:
    """The core's ``Scheduler`` on the running asyncio loop."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` after ``delay`` seconds; exceptions are logged, not raised."""

        def guarded() -> None:
            try:
                callback()
            except Exception:
                log.exception("internal error in a scheduled router callback")

        return asyncio.get_running_loop().call_later(delay, guarded)


class BrokerServer:
    """One broker process: router + listeners (WebSocket, RawSocket, long-poll)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.router = Router(settings.realms, AsyncioScheduler())
        self.transport = Listener(self.router, settings.transport)
        self.http_api = HttpApiService(self.router, settings, self.transport)
        self.transport.http_routes["/metrics"] = lambda: (
            200,
            CONTENT_TYPE,
            render(self) + self.http_api.metrics_text(),
        )
        self.transport.http_routes["/readyz"] = self._readiness
        self.cluster: RedisCluster | None = None
        if settings.redis_url:
            timing = ClusterTiming(**settings.cluster_timing)
            self.cluster = RedisCluster(settings.redis_url, settings.node_id, self.router, timing)
            for realm in self.router.realms.values():
                realm.cluster = self.cluster
        self._closed: asyncio.Event | None = None
        self._closing = False

    @property
    def url(self) -> str:
        """The WebSocket URL clients connect to."""
        t = self.settings.transport
        return f"{t.scheme}://{t.host}:{self.transport.bound_port}{t.path}"

    async def start(self) -> None:
        """Start listening; log the URL (tests read it back with port 0)."""
        self._closed = asyncio.Event()
        if self.cluster is not None:
            await self.cluster.start()
        self.http_api.start(self.cluster.node if self.cluster else "local")
        await self.transport.start()
        if self.settings.development_default:
            log.warning(
                "no realm configured: serving the development default, realm %r open to "
                "anonymous clients",
                self.settings.realms[0].name,
            )
        log.info(
            "listening on %s (realms: %s)",
            self.url,
            ", ".join(r.name for r in self.settings.realms),
        )
        t = self.settings.transport
        base = f"{t.host}:{self.transport.bound_port}"
        if t.rawsocket:
            log.info("RawSocket on rs%s://%s", "s" if t.tls_cert else "", base)
        if t.longpoll_path:
            log.info("long-poll at http%s://%s%s", "s" if t.tls_cert else "", base, t.longpoll_path)

    def _readiness(self) -> tuple[int, str, str]:
        cluster = self.cluster
        if self._closing:
            return 503, "text/plain; charset=utf-8", "shutting down\n"
        if cluster is None or cluster.available:
            return 200, "text/plain; charset=utf-8", "ready\n"
        return 503, "text/plain; charset=utf-8", f"cluster {cluster.state_text}\n"

    async def wait_closed(self) -> None:
        """Wait until ``close`` has finished."""
        assert self._closed is not None
        await self._closed.wait()

    async def close(self) -> None:
        """Drain and stop (idempotent)."""
        if self._closing:
            if self._closed is not None:
                await self._closed.wait()
            return
        self._closing = True
        transport = self.transport
        transport.stop_accepting()
        await self.http_api.close()
        told = self.router.shutdown()
        log.info("shutting down: told %d session(s) goodbye", len(told))
        if self.cluster is not None:
            await self.cluster.close()
        drained = await transport.wait_connections_closed(self.settings.drain_timeout)
        if not drained:
            log.warning(
                "drain timeout: closing %d remaining connection(s)", len(transport.connections)
            )
        await transport.close()
        log.info("stopped")
        if self._closed is not None:
            self._closed.set()
