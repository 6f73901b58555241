"""Wires the router, the transport and the cluster backend; start, drain, close.

Shutdown order (SIGTERM/SIGINT or ``BrokerServer.close``): stop accepting new
connections, send GOODBYE ``wamp.close.system_shutdown`` to every session, take
this node out of the cluster (its sessions and registrations leave at once), wait
up to ``drain_timeout`` for peers to answer and disconnect, then close whatever
is left. ``close`` is idempotent.

HTTP routes beside the WebSocket: ``/healthz`` (the process is alive) and
``/readyz`` (200 when serving normally; 503 while the cluster link is not ``up``: it
turns the moment a Redis command fails or goes unanswered for ``command_timeout``,
before any acknowledged publish waiting on it is answered ``wamp.error.unavailable``).

CPU-bound authentication work (PBKDF2 ticket checks) runs on ``ThreadOffload``, a
small thread pool with a bounded queue, so it never blocks the event loop
(hashlib releases the GIL while deriving).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from broker import __version__
from broker.cluster.redis import ClusterTiming, RedisCluster
from broker.config import Settings, TransportSettings
from broker.console.http import ConsoleApp
from broker.console.procedures import NodeStatus
from broker.core.interfaces import TimerHandle
from broker.core.router import Router
from broker.httpapi.service import HttpApiService
from broker.metrics import BrokerMetrics
from broker.reclaim import Reclaimer
from broker.transport.listener import Listener

__all__ = ["AsyncioScheduler", "BrokerServer", "ThreadOffload", "listening_socket"]

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


def _lower_priority() -> None:
    """Nice the calling worker thread (Linux: per thread) so the event loop wins its core."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
    except (OSError, AttributeError):  # not permitted or not supported: run as is
        pass


class ThreadOffload:
    """The core's ``Offload``: ``workers`` threads, at most ``max_pending`` jobs queued or running.

    The threads run at a lower CPU priority (nice 10) than the event loop. Results
    come back on the event loop that submitted the work. When the pool is
    full, ``submit`` refuses at once (the router then fails the attempt), so a flood
    of logins cannot queue unbounded work or memory.
    """

    def __init__(self, workers: int = 1, max_pending: int = 64) -> None:
        self.max_pending = max_pending
        self.pending = 0
        self._pool = ThreadPoolExecutor(
            workers, thread_name_prefix="auth-derive", initializer=_lower_priority
        )

    def submit(self, work: Callable[[], Any], done: Callable[[Any], None]) -> bool:
        """Queue ``work``; ``done`` gets its result (or exception) on the loop."""
        if self.pending >= self.max_pending:
            return False
        loop = asyncio.get_running_loop()
        self.pending += 1

        def finish(future: Future[Any]) -> None:
            self.pending -= 1
            if future.cancelled():
                return  # shutting down
            error = future.exception()
            try:
                done(error if error is not None else future.result())
            except Exception:
                log.exception("internal error while finishing an authentication check")

        def hand_back(future: Future[Any]) -> None:  # on the worker thread
            try:
                loop.call_soon_threadsafe(finish, future)
            except RuntimeError:  # the loop is closed: the server is gone
                pass

        self._pool.submit(work).add_done_callback(hand_back)
        return True

    def close(self) -> None:
        """Drop queued work; running derivations finish in the background."""
        self._pool.shutdown(wait=False, cancel_futures=True)


LISTEN_FD_ENV = "BROKER_LISTEN_FD"
"""Set by the supervisor: the number of an inherited, already listening socket."""
REUSEPORT_ENV = "BROKER_REUSEPORT"
"""Set by the supervisor ("1"): bind host:port with SO_REUSEPORT beside the other workers."""


def listening_socket(
    settings: TransportSettings, environ: Mapping[str, str] | None = None
) -> socket.socket | None:
    """The socket a worker serves on, when its supervisor decided it; None: bind as usual.

    Two handoffs (``broker.supervisor`` picks one): an inherited listening socket whose
    descriptor is in ``BROKER_LISTEN_FD`` (every worker accepts from one queue), or
    ``BROKER_REUSEPORT=1``: each worker binds its own ``SO_REUSEPORT`` socket on the
    same host:port and the kernel spreads new connections over them.
    """
    env = os.environ if environ is None else environ
    fd = env.get(LISTEN_FD_ENV)
    if fd:
        sock = socket.socket(fileno=int(fd))
        sock.setblocking(False)
        return sock
    if env.get(REUSEPORT_ENV) != "1":
        return None
    info = socket.getaddrinfo(
        settings.host, settings.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(info[4])
        sock.listen(1024)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class BrokerServer:
    """One broker process: router + listeners (WebSocket, RawSocket, long-poll)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.offload = ThreadOffload()
        self.router = Router(settings.realms, AsyncioScheduler(), offload=self.offload)
        self.transport = Listener(self.router, settings.transport)
        self.transport.http_routes["/readyz"] = self.readiness
        self.cluster: RedisCluster | None = None
        if settings.redis_url:
            timing = ClusterTiming(**settings.cluster_timing)
            self.cluster = RedisCluster(
                settings.redis_url,
                settings.node_id,
                self.router,
                timing,
                peer=settings.peer,
                peer_advertise=settings.peer_advertise,
                peer_tls=settings.peer_tls,
            )
            for realm in self.router.realms.values():
                realm.cluster = self.cluster
        node = settings.node_id or ""
        self.metrics = BrokerMetrics(__version__, node, self.router, self.transport, self.cluster)
        self.transport.http_routes["/metrics"] = self.metrics.http_response
        if self.cluster is not None:  # history gaps the cluster could not fill
            self.cluster.repair.gaps = self.metrics.counter(
                "wamp_history_gaps", "History gaps not repaired, by reason", ("realm", "reason")
            )
        self._count_auth_in_metrics()
        self.http_api = HttpApiService(
            self.router, settings, self.transport, self.metrics, self.offload
        )
        console = settings.console
        self.node_status = NodeStatus(
            node,
            __version__,
            self.router,
            self.transport,
            self.cluster,
            console.realm if console else None,
        )
        if console is not None:
            page = {"realm": console.realm, "role": console.role, "url": settings.transport.path}
            config = json.dumps(page).encode()
            self.transport.http_apps[console.path + "/"] = ConsoleApp(console.path, config)
        self._closed: asyncio.Event | None = None
        self._closing = False
        self.reclaimer = Reclaimer()
        self._slow_seen = 0
        self._reclaim_timer: asyncio.TimerHandle | None = None

    def _count_auth_in_metrics(self) -> None:
        """Make the router's ``AuthGuard`` count straight into this server's metric families.

        ``wamp_auth_failures_total`` (checked and failed), ``wamp_auth_throttled_total``
        (refused unchecked) and ``wamp_auth_overloaded_total`` (auth work queue full),
        all by ``(realm, authmethod)``: configured values, so the label sets are bounded.
        """
        guard, metrics = self.router.guard, self.metrics
        labels = ("realm", "authmethod")
        guard.failures = metrics.auth_failures.counts
        guard.throttled = metrics.counter(
            "wamp_auth_throttled", "Authentication attempts refused unchecked: throttled.", labels
        ).counts
        guard.overloaded = metrics.counter(
            "wamp_auth_overloaded", "Authentication attempts refused: work queue full.", labels
        ).counts

    @property
    def url(self) -> str:
        """The WebSocket URL clients connect to."""
        t = self.settings.transport
        return f"{t.scheme}://{t.host}:{self.transport.bound_port}{t.path}"

    def _reclaim_tick(self) -> None:
        """Once a second: let the reclaimer return memory after a burst (broker.reclaim)."""
        hub = self.transport.hub
        now = time.monotonic()
        dropped = hub.slow_consumers - self._slow_seen
        if dropped > 0:
            self._slow_seen = hub.slow_consumers
            self.reclaimer.released(dropped * self.settings.transport.max_write_buffer, now)
        self.reclaimer.observe(len(hub.peers), now)
        if not self._closing:
            self._reclaim_timer = asyncio.get_running_loop().call_later(1.0, self._reclaim_tick)

    def reload_tls(self) -> None:
        """SIGHUP: load the TLS certificate files again, for the listeners and the direct
        links; log what was reloaded, or why not (the old certificates then stay)."""
        parts = [("listeners", self.transport.reload_tls)]
        if self.cluster is not None:
            parts.append(("direct links", self.cluster.peers.reload_tls))
        reloaded = False
        for what, reload in parts:
            try:
                if reload():
                    reloaded = True
                    log.info("reloaded the TLS certificate files of the %s", what)
            except OSError as exc:  # ssl.SSLError is an OSError
                log.error(
                    "cannot reload the TLS files of the %s (the old ones stay): %s", what, exc
                )
        if not reloaded:
            log.info("SIGHUP: nothing reloaded (no TLS files loaded, or they failed)")

    async def start(self) -> None:
        """Start listening; log the URL (tests read it back with port 0)."""
        self._closed = asyncio.Event()
        self._reclaim_timer = asyncio.get_running_loop().call_later(1.0, self._reclaim_tick)
        if self.cluster is not None:
            await self.cluster.start()
        self.http_api.start(self.cluster.node if self.cluster else "local")
        await self.transport.start(listening_socket(self.settings.transport))
        self.node_status.install()
        if self.settings.console is not None:
            t = self.settings.transport
            scheme = "https" if t.tls_cert else "http"
            port = self.transport.bound_port
            log.info("console at %s://%s:%d%s/", scheme, t.host, port, self.settings.console.path)
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

    def readiness(self) -> tuple[int, str, str]:
        """``/readyz``: (status, content type, body); 503 while closing or the cluster is not up."""
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
        if self._reclaim_timer is not None:
            self._reclaim_timer.cancel()
        self.node_status.close()
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
        self.offload.close()
        log.info("stopped")
        if self._closed is not None:
            self._closed.set()
