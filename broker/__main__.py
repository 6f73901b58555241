"""The ``broker`` command: ``broker [--host H] [--port P] [--config FILE] [--redis URL]``.

With ``--redis redis://HOST:PORT/DB`` (and optionally ``--node-id NAME``) the process
joins a cluster of nodes sharing its realms (protocol_spec/cluster.md).
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
from broker.config import ConfigError, Settings, load_settings
from broker.server import BrokerServer

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
    parser.add_argument("--redis", help="redis://HOST:PORT/DB to join a cluster")
    parser.add_argument("--node-id", help="this node's name in a cluster")
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
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def _configure_logging(settings: Settings) -> None:
    handler = logging.StreamHandler(sys.stdout)
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    logging.getLogger("websockets").setLevel(max(logging.WARNING, root.level))


async def _run(settings: Settings) -> None:
    server = BrokerServer(settings)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("signal received, shutting down")
    await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the broker until SIGINT/SIGTERM; return the exit status."""
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
        )
    except ConfigError as exc:
        print(f"broker: configuration error: {exc}", file=sys.stderr)
        return 2
    _configure_logging(settings)
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
            runner.run(_run(settings))
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
