"""The cluster behind a real HAProxy: clients connect to one address, land on any node."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

import client_sdk
from client_sdk import Event, PublishOptions
from tests.support.haproxy import haproxy_cfg
from tests.support.processes import BrokerProcess, free_port

from .conftest import call_until

HAPROXY = shutil.which("haproxy")
pytestmark = pytest.mark.skipif(HAPROXY is None, reason="haproxy is not installed")


@pytest.fixture(scope="module")
def haproxy(nodes: list[BrokerProcess], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """HAProxy in front of the three nodes; yields the WebSocket URL clients use."""
    assert HAPROXY is not None
    port = free_port()
    path = tmp_path_factory.mktemp("haproxy") / "haproxy.cfg"
    text = haproxy_cfg(port, [node.port for node in nodes], "inter 500")
    path.write_text(text, encoding="utf-8")
    proc = subprocess.Popen(
        [HAPROXY, "-f", str(path), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        _wait_listening(port, proc)
        yield f"ws://127.0.0.1:{port}/ws"
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(5)


def _wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("haproxy exited")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)  # polling a starting process, not synchronising test logic
    raise RuntimeError("haproxy did not start listening")


def _nodes_serving(nodes: list[BrokerProcess], session_ids: list[int]) -> set[int]:
    return {
        index
        for index, node in enumerate(nodes)
        for sid in session_ids
        if f"session {sid} opened" in node.output
    }


async def test_clients_through_haproxy_exchange_events_and_calls(
    haproxy: str, nodes: list[BrokerProcess]
) -> None:
    sessions = [await client_sdk.connect(haproxy, "realm1") for _ in range(3)]
    try:
        # leastconn spreads concurrent sessions: they are not all on one node
        assert len(_nodes_serving(nodes, [s.id for s in sessions])) >= 2
        subscriber, publisher, callee = sessions
        got: asyncio.Queue[Event] = asyncio.Queue()
        await subscriber.subscribe("lb.topic", got.put_nowait)
        await publisher.publish("lb.topic", "via haproxy", options=PublishOptions(acknowledge=True))
        assert (await asyncio.wait_for(got.get(), 5)).args == ["via haproxy"]
        await callee.register("lb.add", lambda a, b: a + b)
        assert (await call_until(subscriber, "lb.add", 20, 22)).args == [42]
    finally:
        for session in sessions:
            await session.leave()
