"""The ``wampc`` command-line client, run as a real subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from typing import Any

import pytest

from client_sdk import Event, PublishOptions, connect
from client_sdk.cli import parse_value
from tests.client_sdk.conftest import RouterProcess
from tests.support.processes import ROOT


async def wampc(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "client_sdk.cli",
        *args,
        cwd=ROOT,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
    )


async def finish(proc: asyncio.subprocess.Process) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def wait_ready(proc: asyncio.subprocess.Process, text: str) -> None:
    assert proc.stderr is not None
    async with asyncio.timeout(15):
        while True:
            line = (await proc.stderr.readline()).decode()
            if not line:
                raise AssertionError(f"wampc exited before printing {text!r}")
            if text in line:
                return


def test_arguments_are_json_or_plain_strings() -> None:
    assert parse_value("42") == 42
    assert parse_value('{"a": [1]}') == {"a": [1]}
    assert parse_value("hello world") == "hello world"


async def test_sub_prints_one_json_line_per_event(broker: RouterProcess) -> None:
    proc = await wampc("sub", "com.sdk.cli.news", "--url", broker.url, "--count", "2")
    await wait_ready(proc, "subscribed to com.sdk.cli.news")
    async with connect(broker.url, "realm1") as session:
        await session.publish(
            "com.sdk.cli.news", 1, "x", options=PublishOptions(acknowledge=True), k=True
        )
        await session.publish("com.sdk.cli.news", 2, options=PublishOptions(acknowledge=True))
    code, out, _ = await finish(proc)
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0
    assert lines == [
        {"topic": "com.sdk.cli.news", "args": [1, "x"], "kwargs": {"k": True}},
        {"topic": "com.sdk.cli.news", "args": [2], "kwargs": {}},
    ]


async def test_pub_sends_json_args_and_kwargs(broker: RouterProcess) -> None:
    async with connect(broker.url, "realm1") as session:
        got: asyncio.Queue[Event] = asyncio.Queue()
        await session.subscribe("com.sdk.cli.pub", got.put_nowait)
        proc = await wampc(
            "--url",
            broker.url,
            "--serializer",
            "cbor",
            "pub",
            "com.sdk.cli.pub",
            "1",
            '{"a": 2}',
            "word",
            "--kw",
            "flag=true",
            "--acknowledge",
        )
        code, _, err = await finish(proc)
        assert code == 0, err
        event = await asyncio.wait_for(got.get(), 5)
        assert (event.args, event.kwargs) == ([1, {"a": 2}, "word"], {"flag": True})


async def test_call_prints_the_result_and_register_echoes(broker: RouterProcess) -> None:
    server = await wampc("register", "com.sdk.cli.echo", "--url", broker.url, "--count", "1")
    await wait_ready(server, "registered com.sdk.cli.echo")
    client = await wampc(
        "call", "com.sdk.cli.echo", "5", '"five"', "--kw", "x=[1]", "--url", broker.url
    )
    code, out, err = await finish(client)
    assert code == 0, err
    assert json.loads(out) == {"args": [5, "five"], "kwargs": {"x": [1]}}
    server_code, server_out, _ = await finish(server)
    assert server_code == 0
    assert json.loads(server_out) == {
        "procedure": "com.sdk.cli.echo",
        "args": [5, "five"],
        "kwargs": {"x": [1]},
    }


async def test_call_error_exits_1_with_the_error_as_json(broker: RouterProcess) -> None:
    code, out, err = await finish(await wampc("call", "com.sdk.cli.nobody", "--url", broker.url))
    assert code == 1 and out == ""
    error: dict[str, Any] = json.loads(err.strip().splitlines()[-1])
    assert error["error"] == "wamp.error.no_such_procedure"


async def test_call_progress_prints_each_result(broker: RouterProcess) -> None:
    async with connect(broker.url, "realm1") as session:

        async def steps():  # type: ignore[no-untyped-def]
            yield "a"
            yield "b"

        await session.register("com.sdk.cli.steps", steps)
        code, out, err = await finish(
            await wampc("call", "com.sdk.cli.steps", "--progress", "--url", broker.url)
        )
    assert code == 0, err
    assert [json.loads(line) for line in out.splitlines()] == [
        {"args": ["a"], "kwargs": {}, "progress": True},
        {"args": ["b"], "kwargs": {}, "progress": True},
        {"args": [], "kwargs": {}},
    ]


@pytest.mark.parametrize("argv", [["call"], ["nonsense", "x"]])
async def test_usage_errors_exit_2(argv: list[str]) -> None:
    code, _, _ = await finish(await wampc(*argv))
    assert code == 2


async def test_unreachable_router_exits_3() -> None:
    from tests.support.processes import free_port

    code, _, err = await finish(
        await wampc("call", "x.y", "--url", f"ws://127.0.0.1:{free_port()}/ws")
    )
    assert code == 3 and "cannot connect" in err
