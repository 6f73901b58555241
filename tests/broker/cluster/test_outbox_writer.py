"""The writer's own command path (``outbox._Wire``) against a real redis-server.

A plain ``Redis`` client lends the writer one connection and the writer packs the
commands itself: the bytes must be what redis-py would send, and every reply (an
error reply included) must reach its command's ``Reply`` in order.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection
from redis.exceptions import ResponseError

from broker.cluster.outbox import Command, Outbox, pack_commands
from tests.support.processes import RedisProcess, start_redis


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisProcess]:
    server = start_redis()
    yield server
    server.kill()


COMMANDS: list[Command] = [
    ("PUBLISH", b"wamp:inbox:b", b"\x81\xa1v\x01"),
    ("SET", "wamp:node:\u00e9", "inc-1", "PX", 5000),
    ("EVAL", "return ARGV[1]", 0, 1.5),
    ("HSET", "h", "f\x1f2", b""),
]


def test_commands_are_packed_as_redis_py_packs_them() -> None:
    conn = Connection()
    expected = b"".join(b"".join(conn.pack_command(*command)) for command in COMMANDS)
    assert pack_commands(COMMANDS) == expected


def test_an_argument_redis_cannot_take_is_refused() -> None:
    with pytest.raises(TypeError):
        pack_commands([("SET", "k", None)])


async def test_each_reply_reaches_its_command_in_order_errors_included(
    own_redis: RedisProcess,
) -> None:
    outbox = Outbox()
    replies: list[tuple[int, Any]] = []
    commands: list[Command] = [
        ("SET", "k", "v"),
        ("INCR", "k"),  # an error reply: not an integer
        ("HSET", "h", "a", b"1"),
        ("GET", "k"),
        ("PUBLISH", "nobody", b"x"),
    ]
    answered = asyncio.Event()

    def reply(index: int, result: Any) -> None:
        replies.append((index, result))
        if len(replies) == len(commands):
            answered.set()

    for index, command in enumerate(commands):
        outbox.push(command, lambda result, i=index: reply(i, result))
    cmd = Redis.from_url(own_redis.url)
    writer = asyncio.create_task(outbox.write(cmd))
    try:
        await asyncio.wait_for(answered.wait(), 10)
    finally:
        writer.cancel()
        await asyncio.gather(writer, return_exceptions=True)
        await cmd.aclose()
    assert [i for i, _ in replies] == [0, 1, 2, 3, 4]
    values = dict(replies)
    assert values[0] == b"OK"
    assert isinstance(values[1], ResponseError)
    assert (values[2], values[3], values[4]) == (1, b"v", 0)
