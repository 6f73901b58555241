"""The ``broker`` command: ``broker [--host H] [--port P] [--config FILE] [--redis URL]``.

With ``--redis redis://HOST:PORT/DB`` (or ``redis+sentinel://…`` or
``redis+cluster://…``, see ``broker.cluster.connect``; optionally ``--node-id NAME``)
the process joins a cluster of nodes sharing its realms (protocol_spec/cluster.md). ``--workers N`` (N > 1, or
``auto``) makes this process the supervisor of N worker processes on one port
(``broker.supervisor``); a worker is started by the supervisor with the same flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence

from broker import __version__
from broker.cluster.peers import PeerListenError
from broker.config import ConfigError, Settings, load_settings
from broker.server import BrokerServer
from broker.supervisor import INDEX_ENV, Supervisor, WorkerEndpoint, serve_worker_endpoint

__all__ = ["build_parser", "main"]

log = logging.getLogger("broker")


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface (flags override BROKER_* variables and the file)."""
    parser = argparse.ArgumentParser(
        prog="broker",
        description="A WAMP v2 router: pub/sub and routed RPC over WebSockets.",
    )
    parser.add_argument("--host", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="TCP port (default 8080; 0 picks a free one)")
    parser.add_argument("--config", help="TOML configuration file")
    parser.add_argument("--log-level", choices=["debug", "info", "warning", "error", "critical"])
    parser.add_argument("--log-format", choices=["text", "json"])
    parser.add_argument(
        "--redis",
        help="redis://HOST:PORT/DB or redis+sentinel://[:PASSWORD@]HOST:PORT[,HOST:PORT...]"
        "/SERVICE[/DB] or redis+cluster://[:PASSWORD@]HOST:PORT[,HOST:PORT...] to join a cluster",
    )
    parser.add_argument(
        "--workers",
        help="worker processes on this port, or 'auto' (one per CPU); > 1 needs --redis",
    )
    parser.add_argument(
        "--supervisor-port", type=int, help="with --workers: port of the merged /metrics, /readyz"
    )
    parser.add_argument("--node-id", help="this node's name in a cluster")
    parser.add_argument(
        "--peer",
        help="HOST:PORT for direct links between nodes (call traffic), or 'off' to send it "
        "through Redis (default 127.0.0.1:0: a free loopback port)",
    )
    parser.add_argument(
        "--uvloop",
        action="store_true",
        help="run on uvloop (pip install 'wamp-broker[fast]'); also BROKER_UVLOOP=1",
    )
    parser.add_argument("--version", action="version", version=f"broker {__version__}")
    return parser


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        node = getattr(record, "node", None)
        if node:
            entry["node"] = node
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class _NodeFilter(logging.Filter):
    """Stamps every record with the process's place among workers (``record.node``)."""

    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


def _configure_logging(settings: Settings, node: str | None = None) -> None:
    """Log to stdout; ``node`` (a worker's node ID, or "supervisor") tags every line."""
    handler = logging.StreamHandler(sys.stdout)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        tag = " [%(node)s]" if node else ""
        handler.setFormatter(
            logging.Formatter(f"%(asctime)s %(levelname)s{tag} %(name)s: %(message)s")
        )
    if node:
        handler.addFilter(_NodeFilter(node))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))


async def _orphaned(stop: asyncio.Event) -> None:
    """In a worker: stop when the supervisor is gone (this process was re-parented)."""
    parent = os.getppid()
    while not stop.is_set():
        await asyncio.sleep(1.0)
        if os.getppid() != parent:
            log.warning("supervisor gone: shutting down")
            stop.set()


async def _run(settings: Settings, worker: bool = False) -> None:
    server = BrokerServer(settings)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGHUP, server.reload_tls)
    await server.start()
    endpoint = await serve_worker_endpoint(
        WorkerEndpoint(server.metrics.http_response, server.readiness)
    )
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    watch = asyncio.create_task(_orphaned(stop)) if worker else None
    await stop.wait()
    log.info("signal received, shutting down")
    await server.close()
    if watch is not None:
        watch.cancel()
    if endpoint is not None:
        endpoint.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the broker until SIGINT/SIGTERM; return the exit status."""
    # SIGHUP reloads the TLS files once serving (``BrokerServer.reload_tls``); until then,
    # and in workers still starting (they inherit this), it is ignored rather than fatal
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(
            args.config,
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            log_format=args.log_format,
            redis_url=args.redis,
            node_id=args.node_id,
            workers=args.workers,
            supervisor_port=args.supervisor_port,
            peer=args.peer,
        )
    except ConfigError as exc:
        print(f"broker: configuration error: {exc}", file=sys.stderr)
        return 2
    worker = INDEX_ENV in os.environ
    if settings.workers > 1 and not worker:
        _configure_logging(settings, "supervisor")
        argv = sys.argv[1:] if argv is None else list(argv)
        try:
            return asyncio.run(Supervisor(settings, argv).run())
        except OSError as exc:
            t = settings.transport
            log.error("cannot listen on %s:%s: %s", t.host, t.port, exc.strerror)
            return 1
    _configure_logging(settings, settings.node_id if worker else None)
    loop_factory = None
    if args.uvloop or os.environ.get("BROKER_UVLOOP", "") in ("1", "true", "yes"):
        try:
            import uvloop
        except ImportError:
            log.error("--uvloop: uvloop is not installed (pip install 'wamp-broker[fast]')")
            return 2
        loop_factory = uvloop.new_event_loop
        log.info("running on uvloop")
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(_run(settings, worker))
    except PeerListenError as exc:
        log.error("cannot listen for direct links on %s ([cluster] peer): %s", exc.where, exc)
        return 1
    except OSError as exc:
        log.error(
            "cannot listen on %s:%s: %s",
            settings.transport.host,
            settings.transport.port,
            exc.strerror,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
