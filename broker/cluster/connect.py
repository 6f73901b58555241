"""Redis URLs and the clients a cluster session opens: single server or Sentinel.

Accepted ``--redis`` URLs::

    redis://[[user]:password@]host[:port][/db]        one server (plain TCP)
    rediss://[[user]:password@]host[:port][/db]       one server over TLS
    unix:///path/to/redis.sock[?db=N]                 one server on a Unix socket
    redis+sentinel://[:password@]host:port[,host:port...]/service_name[/db]
    redis+cluster://[:password@]host:port[,host:port...]     Redis Cluster seed nodes

A Redis Cluster (``redis+cluster://``) is reached through ``broker.cluster.shards``.

With Sentinel, the password (if any) is the data nodes' password; the sentinels
themselves are reached without one. Each cluster session (``RedisCluster._session``)
asks every sentinel at once for the master of ``service_name`` (redis-py's asyncio
``Sentinel``: ``SENTINEL MASTERS``, parsed) and takes the answer with the newest
``config-epoch``, so a sentinel that has not heard of a failover yet cannot send the
node back to the old master (which may still be up for a few seconds, not yet
demoted). It checks with ``ROLE`` that the server really is a master and opens both
of its clients (commands, pub/sub) to that one address: the two connections never sit
on different servers. While the session runs, ``watch_master`` asks again every
``probe_interval``; when the newest epoch names another master, or the sentinels
report the master down, the session ends and the node reconnects with backoff (it
re-subscribes everything and proves the pub/sub link with a probe before it is
``up``). While no master is known the session cannot start: the node stays
``degraded`` and ``/readyz`` answers 503, and instead of sleeping its backoff step it
polls the sentinels every 0.1 s (``wait_for_new_master``), so every node reaches a
newly promoted master within about 0.1 s of the others.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "CLUSTER_SCHEME",
    "PUBSUB_PROTOCOL",
    "SENTINEL_SCHEME",
    "Client",
    "Endpoint",
    "MasterMoved",
    "RedisTarget",
    "cluster_client",
    "connect_clients",
    "parse_redis_url",
    "shared_client",
    "wait_for_new_master",
    "watch_master",
]

SENTINEL_SCHEME = "redis+sentinel"
CLUSTER_SCHEME = "redis+cluster"
_SINGLE_SCHEMES = ("redis", "rediss", "unix")

PUBSUB_PROTOCOL: Final = 2
"""The RESP version of every pub/sub connection (``link``).

RESP2 delivers a message as a plain array, which ``PubSubLink.read`` takes straight
from the reply. Under RESP3 (redis-py 8's default) it is a push frame, and redis-py
first passes each one through its push handler, which formats the whole message,
payload included, for a debug line: that doubled the cost of receiving an event
(bench/README.md, "Fifth pass"). Command connections keep redis-py's default.
"""

Client = Redis | RedisCluster
"""A command client: one server (or Sentinel's master), or a Redis Cluster."""


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
    seeds: tuple[Endpoint, ...] = ()
    """Redis Cluster: the seed nodes (``redis+cluster://``)."""

    @property
    def cluster(self) -> bool:
        """Whether this is a Redis Cluster (sharded pub/sub, hash slots)."""
        return bool(self.seeds)

    @property
    def publish_command(self) -> str:
        """``SPUBLISH`` on a Redis Cluster (sharded channels), else ``PUBLISH``."""
        return "SPUBLISH" if self.cluster else "PUBLISH"

    @property
    def sentinel(self) -> bool:
        """Whether the master is found through Sentinel."""
        return bool(self.sentinels)

    @property
    def display(self) -> str:
        """The target for logs, without the password."""
        if self.cluster:
            return f"{CLUSTER_SCHEME}://" + ",".join(f"{e.host}:{e.port}" for e in self.seeds)
        if not self.sentinel:
            parts = urlsplit(self.url)
            host = parts.hostname or ""
            where = f"{host}:{parts.port}" if parts.port else host or parts.path
            return f"{parts.scheme}://{where}"
        hosts = ",".join(f"{e.host}:{e.port}" for e in self.sentinels)
        return f"{SENTINEL_SCHEME}://{hosts}/{self.service}/{self.db}"


def _endpoint(text: str, url: str, what: str = "sentinel") -> Endpoint:
    host, sep, port = text.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"{url!r}: {what} address {text!r} is not host:port")
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
    if scheme not in (SENTINEL_SCHEME, CLUSTER_SCHEME):
        raise ValueError(
            f"{url!r}: unsupported scheme {scheme!r} "
            f"(redis, rediss, unix, {SENTINEL_SCHEME} or {CLUSTER_SCHEME})"
        )
    netloc, _, path = rest.partition("/")
    password: str | None = None
    if "@" in netloc:
        auth, _, netloc = netloc.rpartition("@")
        password = unquote(auth.partition(":")[2] if ":" in auth else auth) or None
    if scheme == CLUSTER_SCHEME:
        return _cluster_target(url, netloc, path, password)
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


def _cluster_target(url: str, netloc: str, path: str, password: str | None) -> RedisTarget:
    seeds = tuple(_endpoint(part, url, "seed node") for part in netloc.split(",") if part.strip())
    if not seeds:
        raise ValueError(f"{url!r}: no seed node host:port given")
    if path.split("?", 1)[0].strip("/"):
        raise ValueError(f"{url!r}: a Redis Cluster has no database number or service name")
    return RedisTarget(url, password=password, seeds=seeds)


def _sentinel(target: RedisTarget, timeout: float) -> Sentinel:
    sentinels = [(e.host, e.port) for e in target.sentinels]
    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
    return Sentinel(sentinels, sentinel_kwargs=options)  # type: ignore[no-untyped-call]


def cluster_client(
    target: RedisTarget, timeout: float, known: tuple[Endpoint, ...] = ()
) -> RedisCluster:
    """redis-py's Redis Cluster client from the seed nodes (not yet connected).

    ``known``: servers seen in the cluster before, tried after the seeds (so a node
    finds the cluster again when the seeds it was given are gone). It routes each
    command, and each command of a pipeline, to the master serving its key's (or
    sharded channel's) slot and follows MOVED/ASK redirections; one retry on a
    connection error, so a dead master ends the caller's attempt quickly.
    """
    nodes = dict.fromkeys((*target.seeds, *known))
    return RedisCluster(
        startup_nodes=[ClusterNode(e.host, e.port) for e in nodes],
        password=target.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), 1),
    )


def shared_client(url: str, timeout: float = 2.0) -> Client:
    """A plain command client (with its own pool) for occasional writes outside the link.

    For ``redis+sentinel://`` it is redis-py's Sentinel-managed master client, which finds
    the master again after a failover; for ``redis+cluster://`` redis-py's cluster client;
    for a single server, ``Redis.from_url``. Used by the HTTP API for its nonce and
    webhook claims.
    """
    target = parse_redis_url(url)
    if target.cluster:
        return cluster_client(target, timeout)
    if not target.sentinel:
        return Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    master: Redis = _sentinel(target, timeout).master_for(
        target.service,
        db=target.db,
        password=target.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
    )
    return master


async def discover_master(target: RedisTarget, timeout: float) -> Endpoint:
    """The master the sentinels name with the newest configuration epoch.

    Raises ``MasterNotFoundError`` when no sentinel answers or none knows a master in
    good state. After a failover, sentinels that have not heard of it yet still name
    the old master (which may even still be up for a while): the highest
    ``config-epoch`` is the newest decision, so it wins over order and over majority.
    """
    sentinel = _sentinel(target, timeout)
    try:
        found = await _newest_master(sentinel, target.service)
    finally:
        await sentinel.aclose()
    if found is None or found is _NO_ANSWER:
        why = "no sentinel answered" if found is _NO_ANSWER else "no master in good state"
        raise MasterNotFoundError(f"no master for {target.service!r}: {why}")
    return found


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
        sub = Redis.from_url(
            target.url, socket_connect_timeout=timeout, retry=retry, protocol=PUBSUB_PROTOCOL
        )
        return cmd, sub, None
    master = await discover_master(target, timeout)

    def client(read_timeout: float | None, protocol: int | None = None) -> Redis:
        return Redis(
            host=master.host,
            port=master.port,
            db=target.db,
            password=target.password,
            socket_timeout=read_timeout,
            socket_connect_timeout=timeout,
            retry=retry,
            protocol=protocol,
        )

    cmd = client(timeout)
    try:
        role = await cmd.execute_command("ROLE")  # type: ignore[no-untyped-call]
        if not role or role[0] not in (b"master", "master"):
            raise MasterMoved(f"{master.host}:{master.port} is not a master (yet)")
    except BaseException:
        await cmd.aclose()
        raise
    return cmd, client(None, PUBSUB_PROTOCOL), master


_NO_ANSWER: Final = Endpoint("", 0)


async def _ask(client: Redis, service: str) -> tuple[int, Endpoint] | bool:
    """One sentinel's view: (config epoch, master) if in good state; True: answered, no master."""
    try:
        masters: dict[str, dict[str, Any]] = await client.sentinel_masters()  # type: ignore[assignment]
    except (RedisConnectionError, RedisTimeoutError):
        return False
    state = masters.get(service)
    if not state or not state["is_master"] or state["is_sdown"] or state["is_odown"]:
        return True
    return int(state.get("config-epoch", 0)), Endpoint(str(state["ip"]), int(state["port"]))


async def _newest_master(sentinel: Sentinel, service: str) -> Endpoint | None:
    """Ask every sentinel at once; the master of the newest epoch.

    None: sentinels answered but none names a master in good state (a failover is
    under way); ``_NO_ANSWER``: no sentinel could be reached.
    """
    answers = await asyncio.gather(*(_ask(c, service) for c in sentinel.sentinels))
    views = [a for a in answers if isinstance(a, tuple)]
    if views:
        return max(views, key=lambda view: view[0])[1]
    return None if any(a is True for a in answers) else _NO_ANSWER


async def watch_master(target: RedisTarget, master: Endpoint, interval: float) -> None:
    """Return never while the sentinels name ``master``; raise ``MasterMoved`` when they don't.

    Sentinels that cannot be reached are no proof of a move (the other links notice a
    dead master themselves); the newest epoch naming another address, or sentinels
    reporting the master down with no successor yet, end the session.
    """
    sentinel = _sentinel(target, max(interval, 0.5))
    try:
        while True:
            await asyncio.sleep(interval)
            now = await _newest_master(sentinel, target.service)
            if now is _NO_ANSWER:
                continue
            if now is None:
                raise MasterMoved(f"the sentinels report no master for {target.service!r}")
            if now != master:
                raise MasterMoved(f"master moved to {now.host}:{now.port}")
    finally:
        await sentinel.aclose()


async def wait_for_new_master(
    target: RedisTarget, previous: Endpoint | None, limit: float, poll: float = 0.1
) -> None:
    """Sleep ``limit`` seconds, or less: until the sentinels name a master other than ``previous``.

    The reconnection pause of a Sentinel node. Every node polls (every ``poll``
    seconds) instead of sleeping its backoff step, so all nodes reach a newly promoted
    master within about ``poll`` of each other; while the sentinels still name the
    master that failed, the full backoff applies, so a dead master is not hammered.
    """
    deadline = asyncio.get_running_loop().time() + limit
    sentinel = _sentinel(target, max(poll, 0.5))
    try:
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            await asyncio.sleep(min(poll, left))
            now = await _newest_master(sentinel, target.service)
            if now is not None and now is not _NO_ANSWER and now != previous:
                return
    finally:
        await sentinel.aclose()
