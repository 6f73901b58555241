"""The single writer: every PUBLISH, state write and claim script, pipelined in order.

Commands are queued without awaiting (the core never waits on the cluster) and one
task sends them in batches on the command connection, so Redis sees this node's
writes in the order they were made (protocol_spec/cluster.md, "Guarantees").
Writes that only the latest state matters for (a subscription's subscribers, a
session's testaments) are *deferred* under a key and built when the next batch goes.

Every batch must come back within ``command_timeout``: a Redis that hangs (stopped,
forking, on a stalled disk) makes ``write`` raise ``LinkLost`` instead of waiting, and
``fail`` then answers the batch in flight and everything queued behind it. A reply
gets each command's result only once Redis executed it, which is what an acknowledged
PUBLISH waits for (protocol_spec/cluster.md, "Guarantees").

Inbox envelopes (``post``) queued one after the other for the same channel travel in
one PUBLISH, concatenated (protocol_spec/cluster.md, "Envelopes"): a busy cross-node
call path costs Redis and both nodes one pub/sub message per batch, not per call.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from typing import Any, Protocol

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection

from .connect import Client
from .link import LinkLost
from .resp import RespProtocol

__all__ = ["MAX_OUTBOX", "Build", "Command", "Outbox", "Reply", "Tally"]


def _arg(value: Any) -> bytes:
    """One command argument as Redis takes it (redis-py's encoding of these types)."""
    kind = type(value)
    if kind is bytes:
        data: bytes = value
        return data
    if kind is str:
        return str(value).encode()
    if kind is int or kind is float:
        return repr(value).encode()
    raise TypeError(f"cannot send a {kind.__name__} to Redis")


def pack_commands(commands: list[Command]) -> bytes:
    """Commands in the Redis protocol (RESP arrays of bulk strings), back to back."""
    out = bytearray()
    for command in commands:
        out += b"*%d\r\n" % len(command)
        for value in command:
            arg = value if type(value) is bytes else _arg(value)
            out += b"$%d\r\n" % len(arg)
            out += arg
            out += b"\r\n"
    return bytes(out)


class _Sender(Protocol):
    async def send(self, commands: list[Command]) -> list[Any]:
        """Run ``commands`` in order; each one's result, or the error Redis answered."""


class _Piped:
    """Batches through a redis-py pipeline (any client)."""

    def __init__(self, cmd: Client) -> None:
        self.cmd = cmd

    async def send(self, commands: list[Command]) -> list[Any]:
        pipe = self.cmd.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results


class _Wire(RespProtocol):
    """Batches written as one buffer on a connection of the writer's own (``resp``).

    Each batch goes out as one buffer of commands this module packs itself; the
    replies are collected as they arrive and the last one resolves the batch's one
    future. No coroutine, read timeout or parser call per reply: the writer bounds the
    batch with ``command_timeout``. Replies are Redis's raw values (an error reply is
    a ``ResponseError`` in its place), which is what every ``Reply`` here expects.
    """

    def __init__(self, conn: AbstractConnection) -> None:
        super().__init__(conn)
        self.results: list[Any] = []
        self.expected = 0
        self.answered: asyncio.Future[list[Any]] | None = None
        self.gone: Exception | None = None

    async def send(self, commands: list[Command]) -> list[Any]:
        if self.gone is not None:
            raise self.gone
        self.results = []
        self.expected = len(commands)
        answered: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self.answered = answered
        self.transport.write(pack_commands(commands))
        return await answered

    def reply(self, value: Any) -> None:
        results = self.results
        results.append(value)
        answered = self.answered
        if len(results) == self.expected and answered is not None and not answered.done():
            answered.set_result(results)

    def lost(self, exc: Exception) -> None:
        self.gone = exc
        if self.answered is not None and not self.answered.done():
            self.answered.set_exception(exc)


class _Post:
    """Queued inbox envelopes for one channel, sent as one PUBLISH of their concatenation."""

    __slots__ = ("channel", "parts", "pub", "size")

    def __init__(self, pub: str, channel: bytes, data: bytes) -> None:
        self.pub = pub
        self.channel = channel
        self.parts = [data]
        self.size = len(data)

    def command(self) -> Command:
        parts = self.parts
        return (self.pub, self.channel, parts[0] if len(parts) == 1 else b"".join(parts))


log = logging.getLogger(__name__)

Command = tuple[Any, ...]
"""A Redis command and its arguments, as ``execute_command`` takes them."""

Reply = Callable[[Any], None]
"""Gets the command's result, or the exception that replaced it."""

Build = Callable[[], Iterable[Command]]
"""Builds a deferred write from the state at the time it is sent."""

MAX_OUTBOX = 200_000
BATCH = 2000
POST_BYTES = 65536
"""Inbox envelopes are coalesced into one PUBLISH up to about this many bytes."""
DROP_LOG_EVERY = 10_000
"""A full outbox logs its first drop, then every this many."""


class Tally:
    """Counts occurrences of something worth a rate-limited log line."""

    __slots__ = ("count", "every")

    def __init__(self, every: int) -> None:
        self.every = every
        self.count = 0

    def add(self) -> int:
        """Count one; return the count when it is worth logging (the first, every Nth), else 0."""
        self.count += 1
        return self.count if self.count == 1 or self.count % self.every == 0 else 0


class Outbox:
    """The queue of commands for Redis, and the task that writes it."""

    def __init__(self, command_timeout: float = 1.0, pub: str = "PUBLISH") -> None:
        self.command_timeout = command_timeout
        """Seconds a batch may take before Redis counts as hung."""
        self.pub = pub
        """The publish command: ``PUBLISH``, or ``SPUBLISH`` (sharded) on a Redis Cluster."""
        self._queue: deque[tuple[Command | _Post, Reply | None]] = deque()
        self._inflight: list[tuple[Command | _Post, Reply | None]] = []
        self._deferred: dict[Hashable, Build] = {}
        self._wake = asyncio.Event()
        self._drops = Tally(DROP_LOG_EVERY)
        self._post: _Post | None = None
        """The post at the tail of the queue, which later envelopes may join."""

    @property
    def dropped(self) -> int:
        """Commands refused so far because the outbox was full."""
        return self._drops.count

    @property
    def pending(self) -> bool:
        """Whether anything waits to be written or to be answered by Redis."""
        return bool(self._queue or self._deferred or self._inflight)

    def push(self, command: Command, reply: Reply | None = None) -> None:
        """Queue ``command``; ``reply`` gets its result (``LinkLost`` when it is dropped)."""
        if self._enqueue(command, reply):
            self._post = None

    def _enqueue(self, item: Command | _Post, reply: Reply | None) -> bool:
        if len(self._queue) >= MAX_OUTBOX:
            count = self._drops.add()
            if count:
                log.warning(
                    "cluster: outbox full (%d commands): %d dropped so far", MAX_OUTBOX, count
                )
            if reply is not None:
                reply(LinkLost("cluster outbox full"))
            return False
        self._queue.append((item, reply))
        self._wake.set()
        return True

    def post(self, channel: bytes, data: bytes) -> None:
        """Queue an inbox envelope for ``channel``, joining the post at the tail if it is one.

        Only the tail joins, so the commands keep their order; a post that a batch took
        is no longer the tail.
        """
        tail = self._post
        if tail is not None and tail.channel == channel and tail.size < POST_BYTES:
            tail.parts.append(data)
            tail.size += len(data)
            return
        post = _Post(self.pub, channel, data)
        if self._enqueue(post, None):
            self._post = post

    def defer(self, key: Hashable, build: Build) -> None:
        """Write what ``build`` gives with the next batch (a later call for ``key`` wins)."""
        self._deferred[key] = build
        self._wake.set()

    def cancel(self, key: Hashable) -> None:
        """Forget the deferred write of ``key``."""
        self._deferred.pop(key, None)

    def cancel_all(self) -> None:
        """Forget every deferred write (a full snapshot is being queued)."""
        self._deferred.clear()

    def fail(self, why: str) -> None:
        """Drop the batch in flight and every queued command; their replies get ``LinkLost(why)``.

        The batch in flight is answered first, so replies keep the order of the commands.
        Redis may still run a batch that was sent before it hung (see ``write``).
        """
        failed = [*self._inflight, *self._queue]
        self._inflight = []
        self._queue.clear()
        self._post = None
        lost = LinkLost(why)
        for _command, reply in failed:
            if reply is not None:
                reply(lost)

    async def drain(self) -> None:
        """Wait until the writer has sent everything (shutdown only)."""
        while self.pending:
            self._wake.set()
            await asyncio.sleep(0.01)  # polling the writer's queue during shutdown only

    async def write(self, cmd: Client) -> None:
        """Send batches on ``cmd`` for the connection's life; raise ``LinkLost`` on failure.

        A plain ``Redis`` client lends the writer one connection for its life, taken over
        by ``_Wire``; any other client (a Redis Cluster's) gets a redis-py pipeline.
        """
        if type(cmd) is not Redis:
            await self._write_batches(_Piped(cmd))
            return
        pool = cmd.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await self._write_batches(_Wire(conn))
        finally:
            await conn.disconnect()  # redis-py no longer reads it: never back to the pool
            await pool.release(conn)

    async def _write_batches(self, sender: _Sender) -> None:
        queue = self._queue
        while True:
            if not queue and not self._deferred:
                self._wake.clear()
                await self._wake.wait()
            self._build_deferred()
            batch = [queue.popleft() for _ in range(min(len(queue), BATCH))]
            if not queue:
                self._post = None
            self._inflight = batch
            commands = [c.command() if isinstance(c, _Post) else c for c, _reply in batch]
            try:
                async with asyncio.timeout(self.command_timeout):
                    results = await sender.send(commands)
            except TimeoutError:
                # the batch stays in flight: ``fail`` answers it once the link is degraded
                raise LinkLost(f"Redis did not answer within {self.command_timeout:g} s") from None
            except Exception as exc:
                raise LinkLost(f"write failed: {exc}") from exc
            self._inflight = []
            for (_command, reply), result in zip(batch, results, strict=False):
                if reply is not None:
                    reply(result)
                elif isinstance(result, Exception):
                    log.warning("cluster: Redis refused a command: %s", result)

    def _build_deferred(self) -> None:
        deferred, self._deferred = self._deferred, {}
        for build in deferred.values():
            self._queue.extend((command, None) for command in build())
            self._post = None
