"""The single writer: every PUBLISH, state write and claim script, pipelined in order.

Commands are queued without awaiting (the core never waits on the cluster) and sent
in batches on the command connection, one batch in flight at a time, so Redis sees
this node's writes in the order they were made (protocol_spec/cluster.md,
"Guarantees"). A batch goes at the end of the loop pass that queued its first command,
or as soon as the previous batch's last reply arrives.
Writes that only the latest state matters for (a subscription's subscribers, a
session's testaments) are *deferred* under a key and built when the next batch goes.

Every batch must come back within ``command_timeout`` (checked every eighth of it): a
Redis that hangs (stopped, forking, on a stalled disk) makes ``write`` raise
``LinkLost`` instead of waiting, and
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
import time
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


Done = Callable[[Any, "list[Any] | Exception"], None]
"""Called by a sender (itself, then the batch's results or why it failed) when a batch ends."""


class _Sender(Protocol):
    def start(self, commands: list[Command], done: Done) -> None:
        """Send ``commands`` in order; ``done`` gets each one's result or the error Redis
        answered, or the exception that ended the batch."""

    def close(self) -> None:
        """Stop: no batch will be answered any more."""


class _Piped:
    """Batches through a redis-py pipeline (any client), one task per batch."""

    def __init__(self, cmd: Client) -> None:
        self.cmd = cmd
        self.task: asyncio.Task[list[Any]] | None = None

    def start(self, commands: list[Command], done: Done) -> None:
        self.task = task = asyncio.ensure_future(self._send(commands))

        def finished(task: asyncio.Task[list[Any]]) -> None:
            if task.cancelled():
                return
            error = task.exception()
            done(self, error if isinstance(error, Exception) else task.result())

        task.add_done_callback(finished)

    async def _send(self, commands: list[Command]) -> list[Any]:
        pipe = self.cmd.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        results: list[Any] = await pipe.execute(raise_on_error=False)
        return results

    def close(self) -> None:
        if self.task is not None:
            self.task.cancel()


class _Wire(RespProtocol):
    """Batches written as one buffer on a connection of the writer's own (``resp``).

    Each batch goes out as one buffer of commands this module packs itself; the
    replies are collected as they arrive and the last one ends the batch, in the loop
    pass that received it. No task, future or parser call per reply or per batch: the
    writer's watchdog bounds the batch with ``command_timeout``. Replies are Redis's
    raw values (an error reply is a ``ResponseError`` in its place), which is what
    every ``Reply`` here expects. A connection lost while idle ends the writer at once.
    """

    def __init__(self, conn: AbstractConnection, done: Done) -> None:
        super().__init__(conn)
        self.done = done
        self.results: list[Any] = []
        self.expected = 0

    def start(self, commands: list[Command], done: Done) -> None:
        self.done = done
        self.results = []
        self.expected = len(commands)
        self.transport.write(pack_commands(commands))

    def reply(self, value: Any) -> None:
        results = self.results
        results.append(value)
        if len(results) == self.expected:
            self.expected = 0
            self.done(self, results)

    def lost(self, exc: Exception) -> None:
        self.done(self, exc)

    def close(self) -> None:
        self.done = _ignore


def _ignore(_sender: Any, _result: Any) -> None:
    """Where a closed sender's late answers go."""


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
    """The queue of commands for Redis, and the writer that sends it in batches."""

    def __init__(self, command_timeout: float = 1.0, pub: str = "PUBLISH") -> None:
        self.command_timeout = command_timeout
        """Seconds a batch may take before Redis counts as hung."""
        self.pub = pub
        """The publish command: ``PUBLISH``, or ``SPUBLISH`` (sharded) on a Redis Cluster."""
        self._queue: deque[tuple[Command | _Post, Reply | None]] = deque()
        self._inflight: list[tuple[Command | _Post, Reply | None]] = []
        self._deferred: dict[Hashable, Build] = {}
        self._sender: _Sender | None = None
        """The connection batches go to (None: no writer is running)."""
        self._scheduled = False
        """A send is scheduled for the end of this loop pass."""
        self._sent_at = 0.0
        self._ended: asyncio.Future[str] | None = None
        """Resolved with why the writer must stop (a failed or unanswered batch)."""
        self._watchdog: asyncio.TimerHandle | None = None
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
        if not self._scheduled:
            self._kick()
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
        self._kick()

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
            self._kick()
            await asyncio.sleep(0.01)  # polling the writer's queue during shutdown only

    async def write(self, cmd: Client) -> None:
        """Send batches on ``cmd`` for the connection's life; raise ``LinkLost`` on failure.

        A plain ``Redis`` client lends the writer one connection for its life, taken over
        by ``_Wire``; any other client (a Redis Cluster's) gets a redis-py pipeline.
        """
        if type(cmd) is not Redis:
            await self._run(_Piped(cmd))
            return
        pool = cmd.connection_pool
        conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            await self._run(_Wire(conn, self._answered))
        finally:
            await conn.disconnect()  # redis-py no longer reads it: never back to the pool
            await pool.release(conn)

    async def _run(self, sender: _Sender) -> None:
        """Batches go to ``sender`` until one fails or goes unanswered; then ``LinkLost``.

        Sending is driven by the loop, not by a task: a command queued schedules a send
        for the end of the loop pass (``_kick``), and the reply that ends a batch sends
        what queued meanwhile. A watchdog checks the batch in flight every eighth of
        ``command_timeout``.
        """
        loop = asyncio.get_running_loop()
        self._ended = ended = loop.create_future()
        self._sender = sender
        tick = self.command_timeout / 8
        self._watchdog = loop.call_later(tick, self._watch, loop, tick)
        self._kick()
        try:
            why = await ended
        finally:
            self._sender = None
            self._scheduled = False
            sender.close()
            if self._watchdog is not None:
                self._watchdog.cancel()
        raise LinkLost(why)

    def _kick(self) -> None:
        """Send at the end of this loop pass, unless a batch is in flight (its reply sends)."""
        if self._sender is None or self._inflight or self._scheduled:
            return
        self._scheduled = True
        asyncio.get_running_loop().call_soon(self._send)

    def _send(self) -> None:
        self._scheduled = False
        sender = self._sender
        if sender is None or self._inflight:
            return
        self._build_deferred()
        queue = self._queue
        if not queue:
            return
        batch = [queue.popleft() for _ in range(min(len(queue), BATCH))]
        if not queue:
            self._post = None
        self._inflight = batch
        self._sent_at = time.monotonic()
        commands = [c.command() if isinstance(c, _Post) else c for c, _reply in batch]
        try:
            sender.start(commands, self._answered)
        except Exception as exc:
            self._end(f"write failed: {exc}")

    def _answered(self, sender: Any, results: list[Any] | Exception) -> None:
        if sender is not self._sender:
            return  # a writer that ended already
        if isinstance(results, Exception):
            # the batch stays in flight: ``fail`` answers it once the link is degraded
            self._end(f"write failed: {results}")
            return
        batch, self._inflight = self._inflight, []
        for (_command, reply), result in zip(batch, results, strict=False):
            if reply is not None:
                reply(result)
            elif isinstance(result, Exception):
                log.warning("cluster: Redis refused a command: %s", result)
        if self._queue or self._deferred:
            self._send()

    def _watch(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        if self._inflight and time.monotonic() - self._sent_at > self.command_timeout:
            # the batch stays in flight: ``fail`` answers it once the link is degraded
            self._end(f"Redis did not answer within {self.command_timeout:g} s")
            return
        if self._sender is not None:
            self._watchdog = loop.call_later(tick, self._watch, loop, tick)

    def _end(self, why: str) -> None:
        if self._ended is not None and not self._ended.done():
            self._ended.set_result(why)

    def _build_deferred(self) -> None:
        deferred, self._deferred = self._deferred, {}
        for build in deferred.values():
            self._queue.extend((command, None) for command in build())
            self._post = None
