"""Redis URLs and the clients a cluster session opens: single server or Sentinel.

Accepted ``--redis`` URLs::

    redis://[[user]:password@]host[:port][/db]        one server (plain TCP)
    rediss://[[user]:password@]host[:port][/db]       one server over TLS
    unix:///path/to/redis.sock[?db=N]                 one server on a Unix socket
    redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]

With Sentinel, the password (if any) is the data nodes' password; the sentinels
themselves are reached without one. Each cluster session (``RedisCluster._session``)
asks the sentinels for the current master of ``service_name`` once
(``redis.asyncio.sentinel.Sentinel.discover_master``), checks with ``ROLE`` that the
server really is a master, and opens both of its clients (commands, pub/sub) to that
one address, so the two connections can never sit on different servers. While the
session runs, ``watch_master`` asks the sentinels every ``interval`` seconds; when they
name another master the session ends and the node reconnects to the new one (it
re-subscribes everything and proves the link with a probe before it is ``up``). No
master known: the session cannot start, the node stays degraded (``/readyz`` 503).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "SENTINEL_SCHEME",
    "Endpoint",
    "MasterMoved",
    "RedisTarget",
    "connect_clients",
    "parse_redis_url",
    "watch_master",
]

SENTINEL_SCHEME = "redis+sentinel"
_SINGLE_SCHEMES = ("redis", "rediss", "unix")


class MasterMoved(RedisConnectionError):
    """The sentinels promoted another server: this session's master is no longer it."""


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One ``host:port``."""

    host: str
    port: int


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """Where the cluster's Redis is: a single server URL, or sentinels and a service name."""

    url: str
    """The URL as given (single server: passed to ``Redis.from_url`` as is)."""
    sentinels: tuple[Endpoint, ...] = ()
    service: str = ""
    db: int = 0
    password: str | None = None

    @property
    def sentinel(self) -> bool:
        """Whether the master is found through Sentinel."""
        return bool(self.sentinels)

    @property
    def display(self) -> str:
        """The target for logs, without the password."""
        if not self.sentinel:
            parts = urlsplit(self.url)
            host = parts.hostname or ""
            where = f"{host}:{parts.port}" if parts.port else host or parts.path
            return f"{parts.scheme}://{where}"
        hosts = ",".join(f"{e.host}:{e.port}" for e in self.sentinels)
        return f"{SENTINEL_SCHEME}://{hosts}/{self.service}/{self.db}"


def _endpoint(text: str, url: str) -> Endpoint:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{url!r}: sentinel address {text!r} is not host:port")
    return Endpoint(host.strip("[]"), int(port))


def parse_redis_url(url: str) -> RedisTarget:
    """Parse a ``--redis`` URL; ``ValueError`` says what is wrong with it."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise ValueError(
            f"{url!r} is not a URL (expected redis://, rediss:// or {SENTINEL_SCHEME}://)"
        )
    scheme = scheme.lower()
    if scheme in _SINGLE_SCHEMES:
        return RedisTarget(url)
    if scheme != SENTINEL_SCHEME:
        raise ValueError(
            f"{url!r}: unsupported scheme {scheme!r} (redis, rediss, unix or {SENTINEL_SCHEME})"
        )
    netloc, _, path = rest.partition("/")
    password: str | None = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        password = unquote(auth.partition(":")[2] if ":" in auth else auth) or None
    sentinels = tuple(_endpoint(part, url) for part in netloc.split(",") if part.strip())
    if not sentinels:
        raise ValueError(f"{url!r}: no sentinel host:port given")
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError(f"{url!r}: expected /service_name or /service_name/db after the hosts")
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError(f"{url!r}: database {segments[1]!r} is not a number")
        db = int(segments[1])
    return RedisTarget(url, sentinels, unquote(segments[0]), db, password)


def _sentinel(target: RedisTarget, timeout: float) -> Sentinel:
    sentinels = [(e.host, e.port) for e in target.sentinels]
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    return Sentinel(sentinels, sentinel_kwargs=options)  # type: ignore[no-untyped-call]


async def discover_master(target: RedisTarget, timeout: float) -> Endpoint:
    """The address the sentinels give for the master (``MasterNotFoundError`` if none)."""
    sentinel = _sentinel(target, timeout)
    try:
        host, port = await sentinel.discover_master(target.service)
    finally:
        await sentinel.aclose()
    return Endpoint(str(host), int(port))


async def connect_clients(
    target: RedisTarget, timeout: float
) -> tuple[Redis, Redis, Endpoint | None]:
    """The session's command client and pub/sub client (not yet connected) and the master.

    The clients never retry on their own: a failure ends the cluster session, whose
    supervisor reconnects with backoff and re-subscribes everything. Only the command client has a read timeout (the pub/sub one waits for messages).
    For Sentinel, the master is discovered and checked with ``ROLE`` here (an error
    if none is ready); for a single server the third value is ``None``.
    """
    retry = Retry(NoBackoff(), 0)
    if not target.sentinel:
        cmd = Redis.from_url(
            target.url, socket_timeout=timeout, socket_connect_timeout=timeout, retry=retry
        )
        return cmd, Redis.from_url(target.url, socket_connect_timeout=timeout, retry=retry), None
    master = await discover_master(target, timeout)

    def client(read_timeout: float | None) -> Redis:
        return Redis(
            host=master.host,
            port=master.port,
            db=target.db,
            password=target.password,
            socket_timeout=read_timeout,
            socket_connect_timeout=timeout,
            retry=retry,
        )

    cmd = client(timeout)
    try:
        role = await cmd.execute_command("ROLE")  # type: ignore[no-untyped-call]
        if not role or role[0] not in (b"master", "master"):
            raise MasterMoved(f"{master.host}:{master.port} is not a master (yet)")
    except BaseException:
        await cmd.aclose()
        raise
    return cmd, client(None), master


_NO_ANSWER: Final = Endpoint("", 0)


async def _sentinels_say(sentinel: Sentinel, service: str) -> Endpoint | None:
    """The master the first sentinel with a usable answer names.

    None: a sentinel answered but knows no master in good state (failover under way);
    ``_NO_ANSWER``: no sentinel could be reached.
    """
    answered = False
    for client in sentinel.sentinels:
        try:
            masters: dict[str, dict[str, Any]] = await client.sentinel_masters()  # type: ignore[assignment]
        except (RedisConnectionError, RedisTimeoutError):
            continue
        answered = True
        state = masters.get(service)
        if state and sentinel.check_master_state(state, service):
            return Endpoint(str(state["ip"]), int(state["port"]))
    return None if answered else _NO_ANSWER


async def watch_master(target: RedisTarget, master: Endpoint, interval: float) -> None:
    """Return never while the sentinels name ``master``; raise ``MasterMoved`` when they don't.

    Sentinels that cannot be reached are no proof of a move (the other links notice a
    dead master themselves); a sentinel naming another address, or reporting the
    master down with no successor yet, ends the session.
    """
    sentinel = _sentinel(target, max(interval, 0.5))
    try:
        while True:
            await asyncio.sleep(interval)
            now = await _sentinels_say(sentinel, target.service)
            if now is _NO_ANSWER:
                continue
            if now is None:
                raise MasterMoved(f"the sentinels report no master for {target.service!r}")
            if now != master:
                raise MasterMoved(f"master moved to {now.host}:{now.port}")
    finally:
        await sentinel.aclose()
