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
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from broker import __version__
from broker.cluster.redis import ClusterTiming, RedisCluster
from broker.config import Settings
from broker.core.interfaces import TimerHandle
from broker.core.router import Router
from broker.metrics import BrokerMetrics
from broker.transport.websocket import WebSocketTransport

__all__ = ["AsyncioScheduler", "BrokerServer", "ThreadOffload"]

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


class BrokerServer:
    """One broker process: router + WebSocket listener."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.offload = ThreadOffload()
        self.router = Router(settings.realms, AsyncioScheduler(), offload=self.offload)
        self.transport = WebSocketTransport(self.router, settings.transport)
        self.transport.http_routes["/readyz"] = self._readiness
        self.cluster: RedisCluster | None = None
        if settings.redis_url:
            timing = ClusterTiming(**settings.cluster_timing)
            self.cluster = RedisCluster(settings.redis_url, settings.node_id, self.router, timing)
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
        self._closed: asyncio.Event | None = None
        self._closing = False

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

    async def start(self) -> None:
        """Start listening; log the URL (tests read it back with port 0)."""
        self._closed = asyncio.Event()
        if self.cluster is not None:
            await self.cluster.start()
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
