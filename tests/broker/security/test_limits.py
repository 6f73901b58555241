"""TLS (wss), Origins, and the limits: HELLO timeout, message rate, per-session counts,
message size and sessions per node. Each limit ends with a clear reason, never a hang."""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidMessage, InvalidStatus

from tests.broker.security._wire import (
    ABORT,
    CALL,
    ERROR,
    INVOCATION,
    PUBLISH,
    REGISTER,
    REGISTERED,
    RESULT,
    SUBSCRIBE,
    SUBSCRIBED,
    RawClient,
    autobahn_join,
)
from tests.support.certs import self_signed
from tests.support.processes import BrokerProcess, start_broker

LIMIT_EXCEEDED = "broker.error.limit_exceeded"


def broker_with(tmp: Path, text: str) -> BrokerProcess:
    config = tmp / "broker.toml"
    config.write_text(text)
    return start_broker("--config", str(config))


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, ssl.SSLContext]]:
    tmp = tmp_path_factory.mktemp("tls")
    cert, key = self_signed(tmp)
    proc = broker_with(
        tmp, f'[tls]\ncert = "{cert}"\nkey = "{key}"\n\n[[realm]]\nname = "realm1"\n'
    )
    context = ssl.create_default_context(cafile=str(cert))
    yield proc, context
    proc.stop()


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    proc = broker_with(
        tmp_path_factory.mktemp("limits"),
        """
[server]
allowed_origins = ["https://good.example"]

[limits]
hello_timeout = 0.5
message_rate = 50
message_burst = 40
max_subscriptions = 3
max_registrations = 2
max_pending_calls = 2
max_message_size = 65536

[[realm]]
name = "realm1"
""",
    )
    yield proc
    proc.stop()


async def test_tls_serves_wss_to_autobahn(tls: tuple[BrokerProcess, ssl.SSLContext]) -> None:
    proc, context = tls
    assert proc.url.startswith("wss://")
    session = await autobahn_join(
        proc.url, "realm1", authmethods=["anonymous"], ssl_context=context
    )
    assert session.details.authmethod == "anonymous"
    session.leave()
    raw = await RawClient.connect(proc.url, ssl=context)
    await raw.join("realm1")
    await raw.close()


async def test_tls_port_refuses_plain_websocket(tls: tuple[BrokerProcess, ssl.SSLContext]) -> None:
    proc, _ = tls
    with pytest.raises((OSError, InvalidMessage, InvalidStatus, ConnectionClosed, TimeoutError)):
        async with asyncio.timeout(5):
            await RawClient.connect(proc.url.replace("wss://", "ws://"))


async def test_silent_client_is_aborted_after_the_hello_timeout(limited: BrokerProcess) -> None:
    client = await RawClient.connect(limited.url)
    abort, code = await client.close_reason()
    assert abort is not None and abort[0] == ABORT and abort[2] == "wamp.error.timeout"
    assert "WELCOME" in abort[1]["message"]
    assert code == 1008


async def test_flooding_session_is_aborted_and_others_keep_working(limited: BrokerProcess) -> None:
    bystander = await RawClient.connect(limited.url)
    await bystander.join("realm1")
    flooder = await RawClient.connect(limited.url)
    await flooder.join("realm1")
    try:
        for n in range(400):
            await flooder.send([PUBLISH, n + 1, {}, "com.flood", [n]])
    except ConnectionClosed:
        pass
    abort, code = await flooder.close_reason()
    assert abort is not None and abort[2] == "broker.error.rate_limit_exceeded"
    assert code == 1008
    reply = await bystander.request([SUBSCRIBE, {}, "com.still.alive"], SUBSCRIBED)
    assert reply[0] == SUBSCRIBED
    await bystander.close()


async def test_subscription_and_registration_counts_are_limited(limited: BrokerProcess) -> None:
    client = await RawClient.connect(limited.url)
    await client.join("realm1")
    for n in range(3):
        assert (await client.request([SUBSCRIBE, {}, f"com.t{n}"], SUBSCRIBED))[0] == SUBSCRIBED
    over = await client.request([SUBSCRIBE, {}, "com.t9"], SUBSCRIBED)
    assert over[0] == ERROR and over[4] == LIMIT_EXCEEDED and "limit 3" in over[5][0]
    for n in range(2):
        assert (await client.request([REGISTER, {}, f"com.p{n}"], REGISTERED))[0] == REGISTERED
    over = await client.request([REGISTER, {}, "com.p9"], REGISTERED)
    assert over[0] == ERROR and over[4] == LIMIT_EXCEEDED
    await client.close()


async def test_pending_calls_are_limited(limited: BrokerProcess) -> None:
    callee = await RawClient.connect(limited.url)
    await callee.join("realm1")
    assert (await callee.request([REGISTER, {}, "com.slow"], REGISTERED))[0] == REGISTERED
    caller = await RawClient.connect(limited.url)
    await caller.join("realm1")
    await caller.send([CALL, 1, {}, "com.slow"])
    await caller.send([CALL, 2, {}, "com.slow"])
    for _ in range(2):
        await callee.recv_type(INVOCATION)
    await caller.send([CALL, 3, {}, "com.slow"])
    error = await caller.recv_type(ERROR)
    assert error[2] == 3 and error[4] == LIMIT_EXCEEDED and "pending calls" in error[5][0]
    await callee.close()  # the two pending calls fail at once
    failures = [await caller.recv_type(ERROR) for _ in range(2)]
    assert sorted(f[2] for f in failures) == [1, 2]
    await caller.close()
    _ = RESULT


async def test_oversized_message_closes_with_1009(limited: BrokerProcess) -> None:
    client = await RawClient.connect(limited.url)
    await client.join("realm1")
    await client.send([PUBLISH, 1, {}, "com.big", ["x" * 70_000]])
    _, code = await client.close_reason()
    assert code == 1009


async def test_only_allowed_browser_origins_connect(limited: BrokerProcess) -> None:
    with pytest.raises(InvalidStatus) as info:
        await RawClient.connect(limited.url, origin="https://evil.example")
    assert info.value.response.status_code == 403
    good = await RawClient.connect(limited.url, origin="https://good.example")
    await good.join("realm1")
    await good.close()
    no_origin = await RawClient.connect(limited.url)  # not a browser: no Origin header
    await no_origin.join("realm1")
    await no_origin.close()


async def test_sessions_per_node_are_limited(tmp_path: Path) -> None:
    proc = broker_with(tmp_path, '[limits]\nmax_sessions = 2\n\n[[realm]]\nname = "realm1"\n')
    try:
        first, second = await RawClient.connect(proc.url), await RawClient.connect(proc.url)
        await first.join("realm1")
        await second.join("realm1")
        with pytest.raises(InvalidStatus) as info:
            await ws_connect(proc.url, subprotocols=["wamp.2.json"])  # type: ignore[list-item]
        assert info.value.response.status_code == 503
        await first.close()
        await second.close()
    finally:
        proc.stop()


def _unused(*_: Any) -> str:
    return json.dumps(_)
