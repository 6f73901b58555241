"""``broker --workers N``: one supervisor process, N worker processes, one port.

Each worker is an ordinary broker process and a cluster node (its own node ID,
``<node-id>-w<i>``, ``-r<k>`` appended after its k-th restart) sharing the realms
through the configured Redis, so a client on any worker sees one broker.

Sockets (``broker.server.listening_socket``): on Linux every worker binds its own
``SO_REUSEPORT`` socket on the same host:port and the kernel spreads new connections
over them by a hash of the client's address; the supervisor binds one more socket
with the option but never listens on it, which holds the port (``--port 0`` picks it
once) while workers come and go. Where ``SO_REUSEPORT`` is missing, or with
``BROKER_WORKER_SOCKETS=inherit``, the supervisor listens itself and the workers
inherit that socket and accept from its single queue.

Life: a worker that exits unasked is started again after a backoff (0.25 s doubling
to 10 s, reset once it ran 30 s) under a new node ID. Before that the supervisor
announces the dead worker's node gone (``broker.cluster.obituary``: its heartbeat key
deleted, ``gone`` on the control channel), so the other nodes drop it at once and fail
the calls pending on it instead of waiting for its heartbeat to expire
(``node_timeout``); they reap its state at their next heartbeat check.
SIGTERM/SIGINT go to every worker, which drain as
one broker does (GOODBYE, leave the cluster, wait ``drain_timeout``); the
supervisor waits for them (SIGKILL after ``drain_timeout`` + 5 s) and exits.

Observability: each worker answers ``/metrics`` and ``/readyz`` on a private Unix
socket; the supervisor serves on ``[server] supervisor_port`` (``--supervisor-port``):

- ``/metrics``: every worker's families with a ``worker`` label added, plus
  ``wamp_workers`` (configured), ``wamp_worker_up{worker}`` and
  ``wamp_worker_restarts_total{worker}``;
- ``/readyz``: 200 when every worker runs and answers 200 on its own ``/readyz``;
- ``/healthz``: 200 while the supervisor runs.

A worker's public ``/metrics`` and ``/readyz`` (on the shared port) describe that
worker alone: the kernel picks which one answers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    Metric,
)
from prometheus_client.parser import text_string_to_metric_families

from broker.cluster.obituary import announce_gone
from broker.config import Settings
from broker.metrics import CONTENT_TYPE
from broker.server import LISTEN_FD_ENV, REUSEPORT_ENV
from protocol_spec.backoff import Backoff

__all__ = [
    "CONTROL_ENV",
    "INDEX_ENV",
    "Supervisor",
    "WorkerEndpoint",
    "serve_worker_endpoint",
]

log = logging.getLogger("broker.supervisor")

CONTROL_ENV = "BROKER_WORKER_CONTROL"
"""Set for a worker: the Unix socket path where it answers /metrics and /readyz."""
INDEX_ENV = "BROKER_WORKER_INDEX"
"""Set for a worker: its index (0 … N-1); its presence makes a process a worker."""
SOCKETS_ENV = "BROKER_WORKER_SOCKETS"
"""``reuseport`` (default where available) or ``inherit``: how workers share the port."""

HEALTHY_AFTER = 30.0
"""Seconds a worker must run before its restart backoff starts over."""

Route = Callable[[], tuple[int, str, str]]
AsyncRoute = Callable[[], Awaitable[tuple[int, str, str]]]
TEXT = "text/plain; charset=utf-8"


# --- a minimal HTTP/1.0 endpoint (GET only, one request per connection) -------------------
def _http_handler(
    routes: Mapping[str, AsyncRoute],
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            parts = head.split(b"\r\n", 1)[0].split()
            path = parts[1].decode("latin-1").split("?", 1)[0] if len(parts) >= 2 else ""
            route = routes.get(path)
            if route is None:
                status, ctype, body = 404, TEXT, "not found\n"
            else:
                status, ctype, body = await route()
            data = body.encode()
            writer.write(
                f"HTTP/1.0 {status} {'OK' if status == 200 else 'Error'}\r\n"
                f"Content-Type: {ctype}\r\nContent-Length: {len(data)}\r\n"
                "Connection: close\r\n\r\n".encode("latin-1")
                + data
            )
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        except Exception:
            log.exception("internal error answering an HTTP request")
        finally:
            writer.close()

    return handle


def _sync(route: Route) -> AsyncRoute:
    async def call() -> tuple[int, str, str]:
        return route()

    return call


async def _get(path: str, route: str, timeout: float = 2.0) -> tuple[int, str]:
    """GET ``route`` from a worker's Unix socket: (status, body)."""

    async def fetch() -> tuple[int, str]:
        reader, writer = await asyncio.open_unix_connection(path)
        try:
            writer.write(f"GET {route} HTTP/1.0\r\n\r\n".encode())
            raw = await reader.read()
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        return int(head.split()[1]), body.decode()

    return await asyncio.wait_for(fetch(), timeout)


@dataclass(frozen=True, slots=True)
class WorkerEndpoint:
    """What a worker shows its supervisor: its metrics and its readiness."""

    metrics: Route
    readiness: Route


async def serve_worker_endpoint(
    endpoint: WorkerEndpoint, environ: Mapping[str, str] | None = None
) -> asyncio.Server | None:
    """In a worker: answer /metrics and /readyz on the supervisor's Unix socket (else None)."""
    path = (os.environ if environ is None else environ).get(CONTROL_ENV)
    if not path:
        return None
    routes = {"/metrics": _sync(endpoint.metrics), "/readyz": _sync(endpoint.readiness)}
    return await asyncio.start_unix_server(_http_handler(routes), path)


# --- the supervisor -------------------------------------------------------------------------
@dataclass
class _Worker:
    index: int
    node: str
    control: str
    process: asyncio.subprocess.Process | None = None
    started: float = 0.0
    restarts: int = 0
    failures: int = 0
    ready: bool = False
    watcher: asyncio.Task[None] | None = field(default=None, repr=False)


def _hold_port(host: str, port: int, listen: bool) -> socket.socket:
    """Bind host:port with SO_REUSEPORT (placeholder) or as the shared listening socket."""
    info = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(info[0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if not listen:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(info[4])
    if listen:
        sock.listen(1024)
        sock.set_inheritable(True)
    return sock


class Supervisor:
    """Runs ``settings.workers`` broker processes on one port; restarts, drains, reports."""

    def __init__(self, settings: Settings, argv: Sequence[str]) -> None:
        self.settings = settings
        self.argv = list(argv)
        self.count = settings.workers
        mode = os.environ.get(SOCKETS_ENV, "reuseport")
        self.reuseport = mode != "inherit" and hasattr(socket, "SO_REUSEPORT")
        t = settings.transport
        self.port_socket = _hold_port(t.host, t.port, listen=not self.reuseport)
        self.port = int(self.port_socket.getsockname()[1])
        base = settings.node_id or f"{socket.gethostname()}-{os.getpid()}"
        self._dir = tempfile.mkdtemp(prefix="broker-workers-")
        self.workers = [
            _Worker(i, f"{base}-w{i}", os.path.join(self._dir, f"w{i}.sock"))
            for i in range(self.count)
        ]
        self.backoff = Backoff(initial=0.25, maximum=10.0, jitter=0.2)
        self._stopping = False
        self._all_ready = False
        self._http: asyncio.Server | None = None

    # --- workers -------------------------------------------------------------------------
    @staticmethod
    def _node_id(worker: _Worker) -> str:
        return worker.node if not worker.restarts else f"{worker.node}-r{worker.restarts}"

    def _command(self, worker: _Worker) -> list[str]:
        extra = ["--port", str(self.port), "--node-id", self._node_id(worker), "--workers", "1"]
        return [sys.executable, "-m", "broker", *self.argv, *extra]

    def _environment(self, worker: _Worker) -> dict[str, str]:
        env = dict(os.environ)
        env.pop(LISTEN_FD_ENV, None)
        env.pop(REUSEPORT_ENV, None)
        env[CONTROL_ENV] = worker.control
        env[INDEX_ENV] = str(worker.index)
        env.pop("BROKER_WORKERS", None)
        if self.reuseport:
            env[REUSEPORT_ENV] = "1"
        else:
            env[LISTEN_FD_ENV] = str(self.port_socket.fileno())
        return env

    async def _spawn(self, worker: _Worker) -> None:
        fds = () if self.reuseport else (self.port_socket.fileno(),)
        worker.process = await asyncio.create_subprocess_exec(
            *self._command(worker), env=self._environment(worker), pass_fds=fds
        )
        worker.started = time.monotonic()
        worker.ready = False
        log.info(
            "worker %d started (pid %d, node %s)",
            worker.index,
            worker.process.pid,
            self._node_id(worker),
        )

    async def _watch(self, worker: _Worker) -> None:
        """Wait for the worker to exit; start it again (with backoff) unless stopping."""
        while True:
            assert worker.process is not None
            code = await worker.process.wait()
            worker.ready = False
            if self._stopping:
                return
            await self._announce_gone(worker)
            ran = time.monotonic() - worker.started
            if ran >= HEALTHY_AFTER:
                worker.failures = 0
            delay = self.backoff.delay(worker.failures)
            worker.failures += 1
            log.warning(
                "worker %d (pid %d) exited with %s after %.1f s; restarting in %.1f s",
                worker.index,
                worker.process.pid,
                code,
                ran,
                delay,
            )
            await asyncio.sleep(delay)
            if self._stopping:
                return
            worker.restarts += 1
            await self._spawn(worker)

    async def _announce_gone(self, worker: _Worker) -> None:
        """The worker's process ended: tell the other nodes now, not after ``node_timeout``."""
        url = self.settings.redis_url
        if not url:
            return
        node = self._node_id(worker)
        timeout = self.settings.cluster_timing.get("command_timeout", 1.0)
        try:
            await announce_gone(url, node, timeout)
        except Exception as exc:  # the others still drop it when its heartbeat expires
            log.warning("could not announce that node %s is gone: %s", node, exc)
        else:
            log.info("announced node %s gone", node)

    async def _check(self) -> None:
        """Ask every worker for its readiness every 0.5 s (logs when all first are ready)."""
        while not self._stopping:
            results = await asyncio.gather(
                *(self._ready(w) for w in self.workers), return_exceptions=True
            )
            all_ready = all(r is True for r in results)
            if all_ready and not self._all_ready:
                log.info("all %d workers ready", self.count)
            self._all_ready = all_ready
            await asyncio.sleep(0.5)

    async def _ready(self, worker: _Worker) -> bool:
        if worker.process is None or worker.process.returncode is not None:
            worker.ready = False
        else:
            try:
                status, _ = await _get(worker.control, "/readyz")
                worker.ready = status == 200
            except (OSError, TimeoutError, ValueError, IndexError):
                worker.ready = False
        return worker.ready

    # --- HTTP ------------------------------------------------------------------------------
    async def readiness(self) -> tuple[int, str, str]:
        """200 when every worker runs and is ready; the body names each worker's state."""
        if self._stopping:
            return 503, TEXT, "shutting down\n"
        states = await asyncio.gather(*(self._ready(w) for w in self.workers))
        lines = [
            f"worker {w.index}: {'ready' if ok else 'not ready'}"
            for w, ok in zip(self.workers, states, strict=True)
        ]
        return (200 if all(states) else 503), TEXT, "\n".join(lines) + "\n"

    async def metrics(self) -> tuple[int, str, str]:
        """Every worker's families with a ``worker`` label, plus the supervisor's own."""
        texts = await asyncio.gather(
            *(_get(w.control, "/metrics") for w in self.workers), return_exceptions=True
        )
        scraped: list[tuple[int, str]] = []
        for worker, got in zip(self.workers, texts, strict=True):
            if isinstance(got, tuple) and got[0] == 200:
                scraped.append((worker.index, got[1]))
        families = [*merge_families(scraped), *self._own_families(dict(scraped))]
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_Families(families))
        return 200, CONTENT_TYPE, generate_latest(registry).decode()

    def _own_families(self, answered: Mapping[int, str]) -> Iterable[Metric]:
        yield GaugeMetricFamily("wamp_workers", "Worker processes configured.", value=self.count)
        up = GaugeMetricFamily(
            "wamp_worker_up", "1 while the worker runs and answers.", labels=("worker",)
        )
        restarts = CounterMetricFamily(
            "wamp_worker_restarts", "Times the worker was started again.", labels=("worker",)
        )
        for w in self.workers:
            up.add_metric((str(w.index),), 1 if w.index in answered else 0)
            restarts.add_metric((str(w.index),), w.restarts)
        yield up
        yield restarts

    # --- life ------------------------------------------------------------------------------
    async def run(self) -> int:
        """Start the workers, serve /metrics and /readyz, wait for a signal, drain."""
        t = self.settings.transport
        mode = "SO_REUSEPORT" if self.reuseport else "an inherited socket"
        log.info(
            "%d workers on %s://%s:%d%s via %s",
            self.count,
            t.scheme,
            t.host,
            self.port,
            t.path,
            mode,
        )
        routes: dict[str, AsyncRoute] = {
            "/metrics": self.metrics,
            "/readyz": self.readiness,
            "/healthz": _sync(lambda: (200, TEXT, "ok\n")),
        }
        try:
            self._http = await asyncio.start_server(
                _http_handler(routes), t.host, self.settings.supervisor_port
            )
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", t.host, self.settings.supervisor_port, exc)
            self._cleanup()
            return 1
        http_port = self._http.sockets[0].getsockname()[1]
        log.info("supervisor /metrics and /readyz on http://%s:%d", t.host, http_port)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._reload)
        for worker in self.workers:
            await self._spawn(worker)
            worker.watcher = asyncio.create_task(self._watch(worker))
        checker = asyncio.create_task(self._check())
        stop = asyncio.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        checker.cancel()
        await self._stop()
        return 0

    def _reload(self) -> None:
        """SIGHUP: every running worker reloads its TLS files (``BrokerServer.reload_tls``)."""
        log.info("SIGHUP: workers reload their TLS files")
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGHUP)

    async def _stop(self) -> None:
        """SIGTERM every worker, wait for their drain, SIGKILL what is left, clean up."""
        self._stopping = True
        log.info("signal received: draining %d workers", self.count)
        for worker in self.workers:  # no restart from now on
            if worker.watcher is not None:
                worker.watcher.cancel()
        await asyncio.gather(
            *(w.watcher for w in self.workers if w.watcher), return_exceptions=True
        )
        for worker in self.workers:
            if worker.process is not None and worker.process.returncode is None:
                worker.process.send_signal(signal.SIGTERM)
        waits = [w.process.wait() for w in self.workers if w.process is not None]
        try:
            await asyncio.wait_for(asyncio.gather(*waits), self.settings.drain_timeout + 5.0)
        except TimeoutError:
            for worker in self.workers:
                if worker.process is not None and worker.process.returncode is None:
                    log.warning("worker %d did not drain in time: SIGKILL", worker.index)
                    worker.process.kill()
            await asyncio.gather(*(w.process.wait() for w in self.workers if w.process))
        self._cleanup()
        log.info("all workers stopped")

    def _cleanup(self) -> None:
        if self._http is not None:
            self._http.close()
        self.port_socket.close()
        shutil.rmtree(self._dir, ignore_errors=True)


class _Families:
    """A prometheus_client collector yielding a fixed list of families."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return self._families


def merge_families(scraped: Iterable[tuple[int, str]]) -> list[Metric]:
    """Parse each worker's exposition text and merge families, adding ``worker="<i>"``."""
    merged: dict[str, Metric] = {}
    for index, text in scraped:
        for family in text_string_to_metric_families(text):
            into = merged.get(family.name)
            if into is None:
                into = Metric(family.name, family.documentation, family.type, family.unit)
                merged[family.name] = into
            for sample in family.samples:
                labels = {**sample.labels, "worker": str(index)}
                into.add_sample(sample.name, labels, sample.value, sample.timestamp)
    return list(merged.values())
