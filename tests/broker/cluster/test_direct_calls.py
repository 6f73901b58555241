"""Calls between nodes take the direct link, not Redis; a broken link fails them at once.

Real redis-server, real broker nodes. What Redis carried is read from its own counters
(``INFO commandstats``); a broken link is a TCP proxy of the test's, cut in the middle.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis

import client_sdk
from broker.cluster import keys
from client_sdk import ApplicationError
from protocol_spec.cluster import PeerRecord
from tests.support.certs import Authority, NodeCert
from tests.support.processes import (
    CLUSTER_TIMING,
    BrokerProcess,
    RedisProcess,
    free_port,
    start_broker,
)

from .conftest import eventually

Connect = Callable[..., Awaitable[client_sdk.Session]]
CALLS = 200
_PEER_PORT = re.compile(r"takes direct links on 127\.0\.0\.1:(\d+)")


@pytest.fixture
def started() -> Iterator[list[BrokerProcess]]:
    """Nodes a test starts (``start``), stopped at teardown."""
    nodes: list[BrokerProcess] = []
    yield nodes
    for node in nodes:
        node.stop()


def start(
    started: list[BrokerProcess],
    redis_server: RedisProcess,
    config: Path,
    name: str,
    *extra: str,
    env: dict[str, str] | None = None,
) -> BrokerProcess:
    node = start_broker(
        "--redis", redis_server.url, "--node-id", name, "--config", str(config), *extra, env=env
    )
    started.append(node)
    return node


def publishes(server: RedisProcess) -> int:
    """PUBLISH commands Redis has run so far."""
    client = redis.Redis.from_url(server.url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_publish", {}).get("calls", 0))


def peer_record(server: RedisProcess, node: str) -> PeerRecord | None:
    client = redis.Redis.from_url(server.url)
    try:
        raw = client.get(keys.peer_key(node))
    finally:
        client.close()
    return None if raw is None else PeerRecord.unpack(raw)


async def advertised(server: RedisProcess, node: str) -> PeerRecord:
    """``node``'s ``PeerRecord``, once it wrote it (the node writes it after it started)."""
    found: list[PeerRecord] = []

    async def written() -> bool:
        record = peer_record(server, node)
        found[:] = [] if record is None else [record]
        return bool(found)

    await eventually(written, what=f"node {node}'s peer record")
    return found[0]


async def _registered(session: client_sdk.Session, procedure: str) -> bool:
    return (await session.call("wamp.registration.match", procedure)).args[0] is not None


async def _calls_across(nodes: list[BrokerProcess], server: RedisProcess, connect: Connect) -> int:
    """PUBLISHes Redis ran during ``CALLS`` calls, one after the other, from node 0 to node 1."""
    caller = await connect(nodes[0].url)
    callee = await connect(nodes[1].url)
    await callee.register("direct.echo", lambda n: n)
    await eventually(lambda: _registered(caller, "direct.echo"), what="registration propagated")
    assert (await caller.call("direct.echo", -1)).args == [-1]  # warm: links dialed
    before = publishes(server)
    for n in range(CALLS):
        assert (await caller.call("direct.echo", n)).args == [n]
    return publishes(server) - before


async def test_calls_between_nodes_go_on_the_direct_link_not_through_redis(
    redis_own: RedisProcess, cluster_config: Path, started: list[BrokerProcess], connect: Connect
) -> None:
    nodes = [start(started, redis_own, cluster_config, f"d{i}") for i in range(2)]
    for name in ("d0", "d1"):
        record = await advertised(redis_own, name)
        assert record.host == "127.0.0.1" and record.port > 0
    published = await _calls_across(nodes, redis_own, connect)
    print(f"{CALLS} calls over the direct link: {published} PUBLISHes")
    # heartbeats and probes still publish (a few per second per node); the calls do not
    assert published < CALLS // 4


async def test_with_peer_off_calls_go_through_redis(
    redis_own: RedisProcess, cluster_config: Path, started: list[BrokerProcess], connect: Connect
) -> None:
    nodes = [
        start(started, redis_own, cluster_config, "o0", "--peer", "off"),
        start(started, redis_own, cluster_config, "o1", env={"BROKER_PEER": "off"}),
    ]
    published = await _calls_across(nodes, redis_own, connect)
    # both have joined (and written whatever they advertise) long before now
    assert peer_record(redis_own, "o0") is None and peer_record(redis_own, "o1") is None
    assert all("takes direct links" not in node.output for node in nodes)
    print(f"{CALLS} calls through Redis: {published} PUBLISHes")
    # an invocation and a result per call, one call after the other: nothing to batch
    assert published >= 2 * CALLS


def _tls_env(node: NodeCert) -> dict[str, str]:
    return {
        "BROKER_PEER_TLS_CERT": str(node.cert),
        "BROKER_PEER_TLS_KEY": str(node.key),
        "BROKER_PEER_TLS_CA": str(node.ca),
    }


def _gauge(node: BrokerProcess, name: str) -> float:
    with urllib.request.urlopen(node.http_base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    found = re.search(rf"^{name} (\S+)$", text, re.MULTILINE)
    assert found is not None, f"{name} not in /metrics"
    return float(found.group(1))


async def test_calls_between_nodes_with_tls_take_the_encrypted_link(
    redis_own: RedisProcess,
    cluster_config: Path,
    started: list[BrokerProcess],
    connect: Connect,
    tmp_path: Path,
) -> None:
    authority = Authority(tmp_path)
    nodes = [
        start(started, redis_own, cluster_config, name, env=_tls_env(authority.issue(name)))
        for name in ("t0", "t1")
    ]
    for name in ("t0", "t1"):
        assert (await advertised(redis_own, name)).tls
    published = await _calls_across(nodes, redis_own, connect)
    print(f"{CALLS} calls over a TLS link: {published} PUBLISHes")
    assert published < CALLS // 4
    assert "takes direct links on 127.0.0.1" in nodes[0].output and "(TLS)" in nodes[0].output
    assert _gauge(nodes[0], "wamp_cluster_peer_links") == 1
    assert _gauge(nodes[0], "wamp_cluster_peer_fallbacks") == 0


@pytest.mark.parametrize("fault", ["unreachable-address", "tls-on-one-side"])
async def test_a_node_whose_link_cannot_be_used_is_called_through_redis(
    redis_own: RedisProcess,
    cluster_config: Path,
    started: list[BrokerProcess],
    connect: Connect,
    tmp_path: Path,
    fault: str,
) -> None:
    """Every call succeeds, the first one too: it waited for the dial and takes Redis."""
    if fault == "unreachable-address":
        callee_env = {"BROKER_PEER_ADVERTISE": f"127.0.0.1:{free_port()}"}  # nobody there
    else:
        callee_env = _tls_env(Authority(tmp_path).issue("f1"))
    nodes = [
        start(started, redis_own, cluster_config, "f0"),
        start(started, redis_own, cluster_config, "f1", env=callee_env),
    ]
    await advertised(redis_own, "f1")
    published = await _calls_across(nodes, redis_own, connect)
    print(f"{fault}: {CALLS} calls through Redis: {published} PUBLISHes")
    assert published >= CALLS  # the invocations at least (the results may take f1's link)
    assert _gauge(nodes[0], "wamp_cluster_peer_fallbacks") == 1
    assert _gauge(nodes[0], "wamp_cluster_peer_failures_total") == 0  # no call failed
    nodes[0].wait_for_output("its call traffic goes through Redis")


class Proxy:
    """A TCP proxy on 127.0.0.1 to ``target``; ``cut`` resets every connection through it."""

    def __init__(self) -> None:
        self.target: tuple[str, int] | None = None
        self.server: asyncio.Server | None = None
        self.accepted = 0
        self._pairs: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.changed = asyncio.Event()
        self.stalled = False
        self._swallowing: set[asyncio.StreamWriter] = set()

    async def start(self, port: int = 0) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        return int(self.server.sockets[0].getsockname()[1])

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert self.target is not None
        if self.stalled:  # a way that swallows everything: read and drop, never answer
            self._swallowing.add(writer)
            while await reader.read(65536):
                pass
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self._pairs.append((writer, up_writer))
        self.accepted += 1
        self.changed.set()
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            while data := await reader.read(65536):
                if not self.stalled:
                    writer.write(data)
                    await writer.drain()
        writer.close()

    def stall(self) -> None:
        """From now on the proxy forwards nothing, either way, and closes nothing: a network
        path that went silent (no reset, no FIN), for the connections open and new ones."""
        self.stalled = True

    def cut(self) -> None:
        for down, up in self._pairs:
            down.transport.abort()
            up.transport.abort()
        self._pairs.clear()
        for writer in self._swallowing:
            writer.transport.abort()
        self._swallowing.clear()

    async def close(self) -> None:
        self.cut()
        if self.server is not None:
            self.server.close()


@pytest.fixture
async def proxy() -> AsyncIterator[Proxy]:
    made = Proxy()
    yield made
    await made.close()


async def _wait_accepted(proxy: Proxy, count: int, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while proxy.accepted < count:
            proxy.changed.clear()
            await proxy.changed.wait()


async def _proxied_pair(
    redis_server: RedisProcess, config: Path, started: list[BrokerProcess], proxy: Proxy
) -> tuple[BrokerProcess, BrokerProcess]:
    """(caller node, callee node): the callee advertises ``proxy``, which forwards to it."""
    proxy_port = await proxy.start()
    caller_node = start(started, redis_server, config, "p0")
    env = {"BROKER_PEER_ADVERTISE": f"127.0.0.1:{proxy_port}"}
    callee_node = start(started, redis_server, config, "p1", env=env)
    match = _PEER_PORT.search(callee_node.wait_for_output(_PEER_PORT.pattern))
    assert match is not None
    proxy.target = ("127.0.0.1", int(match.group(1)))
    record = await advertised(redis_server, "p1")
    assert (record.host, record.port) == ("127.0.0.1", proxy_port)  # what the others dial
    return caller_node, callee_node


async def test_a_broken_link_fails_the_pending_call_at_once_and_the_next_call_redials(
    redis_own: RedisProcess,
    cluster_config: Path,
    started: list[BrokerProcess],
    connect: Connect,
    proxy: Proxy,
) -> None:
    caller_node, callee_node = await _proxied_pair(redis_own, cluster_config, started, proxy)
    caller = await connect(caller_node.url)
    callee = await connect(callee_node.url)
    started_call = asyncio.Event()

    async def hang() -> str:
        started_call.set()
        await asyncio.sleep(60)
        return "too late"

    await callee.register("direct.hang", hang)
    await callee.register("direct.echo", lambda n: n)
    await eventually(lambda: _registered(caller, "direct.hang"), what="registration propagated")
    pending = asyncio.create_task(caller.call("direct.hang"))
    await asyncio.wait_for(started_call.wait(), 5)
    assert proxy.accepted == 1  # the invocation took the link through the proxy

    proxy.cut()
    cut_at = time.monotonic()
    with pytest.raises(ApplicationError) as info:
        await asyncio.wait_for(pending, 5)
    failed_after = time.monotonic() - cut_at
    assert info.value.uri == "wamp.error.unavailable"
    assert failed_after < 1.0, f"the pending call failed only {failed_after:.2f} s after the cut"

    # a link that was up and broke is dialed again by the very next call (only a dial
    # that failed holds sends back for RETRY_AFTER)
    result = await asyncio.wait_for(caller.call("direct.echo", 7), 5)
    assert result.args == [7]
    await _wait_accepted(proxy, 2)
    assert proxy.accepted == 2


async def test_a_link_cut_under_load_answers_every_call_exactly_once(
    redis_own: RedisProcess,
    cluster_config: Path,
    started: list[BrokerProcess],
    connect: Connect,
    proxy: Proxy,
) -> None:
    """50 callers, 8 calls each, the link cut after the first 100 results: every call
    ends in its own result or ``unavailable``, none hangs, none is answered wrongly, and
    calls after the cut go through a new link."""
    caller_node, callee_node = await _proxied_pair(redis_own, cluster_config, started, proxy)
    caller = await connect(caller_node.url)
    callee = await connect(callee_node.url)

    async def slow_echo(n: int) -> int:
        await asyncio.sleep(0.001 * (n % 20))
        return n

    await callee.register("direct.slow", slow_echo)
    await eventually(lambda: _registered(caller, "direct.slow"), what="registration propagated")
    outcomes: dict[int, str] = {}
    hundred = asyncio.Event()
    cut_at: list[int] = []

    async def one_caller(first: int) -> None:
        for n in range(first, first + 8):
            try:
                result = await asyncio.wait_for(caller.call("direct.slow", n), 10)
                outcomes[n] = "ok" if result.args == [n] else f"wrong {result.args}"
            except ApplicationError as exc:
                outcomes[n] = exc.uri
            if len(outcomes) >= 100:
                hundred.set()

    callers = [asyncio.create_task(one_caller(i * 8)) for i in range(50)]
    await asyncio.wait_for(hundred.wait(), 10)
    proxy.cut()
    cut_at.append(len(outcomes))
    await asyncio.wait_for(asyncio.gather(*callers), 30)  # none hangs
    assert sorted(outcomes) == list(range(400))
    kinds = {kind for kind in outcomes.values()}
    assert kinds <= {"ok", "wamp.error.unavailable"}, kinds
    failed = sum(1 for kind in outcomes.values() if kind != "ok")
    print(f"\ncut after {cut_at[0]} answers: {400 - failed} ok, {failed} unavailable")
    assert failed >= 1  # calls were in flight on the link when it was cut
    assert 400 - failed > cut_at[0]  # and calls after the cut took a new link
    assert proxy.accepted >= 2


async def test_a_node_reached_through_redis_moves_back_to_its_link_losing_no_call(
    redis_own: RedisProcess,
    tmp_path: Path,
    started: list[BrokerProcess],
    connect: Connect,
    proxy: Proxy,
) -> None:
    """The callee's advertised address answers nothing at first: calls take Redis. Then it
    does (the proxy starts there): the caller's node dials again after ``peer_retry``, and
    its traffic moves to the link behind the marker, while 20 callers keep calling. Every
    call is answered once with its own result; none fails."""
    config = tmp_path / "broker.toml"
    config.write_text(CLUSTER_TIMING + "peer_retry = 0.3\n", encoding="utf-8")
    port = free_port()
    caller_node = start(started, redis_own, config, "m0")
    env = {"BROKER_PEER_ADVERTISE": f"127.0.0.1:{port}"}
    callee_node = start(started, redis_own, config, "m1", env=env)
    match = _PEER_PORT.search(callee_node.wait_for_output(_PEER_PORT.pattern))
    assert match is not None
    proxy.target = ("127.0.0.1", int(match.group(1)))
    caller = await connect(caller_node.url)
    callee = await connect(callee_node.url)

    async def slow_echo(n: int) -> int:
        await asyncio.sleep(0.001 * (n % 7))
        return n

    await callee.register("direct.back", slow_echo)
    await eventually(lambda: _registered(caller, "direct.back"), what="registration propagated")
    assert (await caller.call("direct.back", -1)).args == [-1]  # the dial fails: via Redis
    await asyncio.to_thread(caller_node.wait_for_output, "its call traffic goes through Redis")
    outcomes: dict[int, list[object]] = {}
    moved = asyncio.Event()

    async def one_caller(first: int) -> None:
        n = first
        while not moved.is_set() or n < first + 40:  # keep calling through the switch
            result = await asyncio.wait_for(caller.call("direct.back", n), 10)
            outcomes.setdefault(n, []).append(result.args)
            n += 1
            if n - first > 5000:
                raise AssertionError("the link never took over")

    callers = [asyncio.create_task(one_caller(i * 10_000)) for i in range(20)]
    await asyncio.sleep(0)
    await proxy.start(port)  # the advertised address answers now
    await asyncio.to_thread(caller_node.wait_for_output, "its call traffic leaves Redis")
    moved.set()
    await asyncio.wait_for(asyncio.gather(*callers), 60)
    assert proxy.accepted >= 1
    assert all(answers == [[n]] for n, answers in outcomes.items()), "a call answered twice"
    published = await _on_the_link(caller, "direct.back", caller_node, redis_own)
    print(
        f"\n{len(outcomes)} calls through the switch, all answered once; after it, "
        f"50 calls made {published} PUBLISHes"
    )
    assert _gauge(caller_node, "wamp_cluster_peer_failures_total") == 0


async def _on_the_link(
    caller: client_sdk.Session, procedure: str, caller_node: BrokerProcess, server: RedisProcess
) -> int:
    """50 calls take the link again (not Redis), and no node is reached through Redis; the
    PUBLISHes Redis ran meanwhile."""
    before = publishes(server)
    for n in range(50):
        assert (await caller.call(procedure, n)).args == [n]
    published = publishes(server) - before
    assert published < 25  # the invocations take the link
    assert _gauge(caller_node, "wamp_cluster_peer_fallbacks") == 0
    return published


async def test_a_node_that_stops_taking_links_is_called_through_redis_then_linked_again(
    redis_own: RedisProcess,
    tmp_path: Path,
    started: list[BrokerProcess],
    connect: Connect,
    proxy: Proxy,
) -> None:
    """The callee's advertised address stops answering after its link worked (the proxy
    closes), while the callee lives and its own link to the caller's node stays up: the
    caller's node asks it on that link and calls take Redis, none fails. When the address
    answers again, the link takes the calls back."""
    config = tmp_path / "broker.toml"
    config.write_text(CLUSTER_TIMING + "peer_retry = 0.3\n", encoding="utf-8")
    caller_node, callee_node = await _proxied_pair(redis_own, config, started, proxy)
    caller = await connect(caller_node.url)
    callee = await connect(callee_node.url)
    await callee.register("direct.on", lambda n: n)
    await eventually(lambda: _registered(caller, "direct.on"), what="registration propagated")
    assert (await caller.call("direct.on", -1)).args == [-1]  # both links up
    assert proxy.server is not None
    port = int(proxy.server.sockets[0].getsockname()[1])
    await proxy.close()  # the link breaks and the address refuses connections
    await asyncio.to_thread(caller_node.wait_for_output, "direct link with node p1 broke")
    before = publishes(redis_own)
    for n in range(CALLS):
        assert (await asyncio.wait_for(caller.call("direct.on", n), 10)).args == [n]
    published = publishes(redis_own) - before
    caller_node.wait_for_output("it answers on its own link to this node")
    print(f"\n{CALLS} calls after the address stopped answering: {published} PUBLISHes")
    assert published >= CALLS  # the invocations went through the callee's inbox
    assert _gauge(caller_node, "wamp_cluster_peer_fallbacks") == 1
    assert _gauge(caller_node, "wamp_cluster_peer_failures_total") == 1  # the break only

    await proxy.start(port)  # the address answers again: the next retry takes the link
    n = 0
    while "its call traffic leaves Redis" not in caller_node.output:
        assert (await asyncio.wait_for(caller.call("direct.on", n), 10)).args == [n]
        n += 1
        assert n < 5000, "the link never took the calls back"
    await _on_the_link(caller, "direct.on", caller_node, redis_own)
    assert _gauge(caller_node, "wamp_cluster_peer_failures_total") == 1


@pytest.mark.parametrize("way", ["closed", "stalled"])
async def test_nodes_cut_apart_both_ways_call_each_other_through_redis(
    redis_own: RedisProcess,
    tmp_path: Path,
    started: list[BrokerProcess],
    connect: Connect,
    proxy: Proxy,
    way: str,
) -> None:
    """A partition between the nodes, both still on Redis: neither node's address answers
    any more (``closed``: connections reset, dials refused), or the way between them
    swallows everything without a word (``stalled``: links go silent, dials hang). Calls
    fail while the other node may be going away (a silent link is found by asking on it),
    then take Redis once it is still in the cluster after its timeout; none hangs."""
    config = tmp_path / "broker.toml"
    config.write_text(CLUSTER_TIMING + "peer_retry = 60\n", encoding="utf-8")
    other = Proxy()
    try:
        nodes = []
        for name, through in (("q0", proxy), ("q1", other)):
            port = await through.start()
            env = {"BROKER_PEER_ADVERTISE": f"127.0.0.1:{port}"}
            node = start(started, redis_own, config, name, env=env)
            match = _PEER_PORT.search(node.wait_for_output(_PEER_PORT.pattern))
            assert match is not None
            through.target = ("127.0.0.1", int(match.group(1)))
            nodes.append(node)
        caller = await connect(nodes[0].url)
        callee = await connect(nodes[1].url)
        await callee.register("part.echo", lambda n: n)
        await eventually(lambda: _registered(caller, "part.echo"), what="registration propagated")
        assert (await caller.call("part.echo", -1)).args == [-1]
        assert proxy.accepted == 1 and other.accepted == 1  # a link each way
        for through in (proxy, other):
            if way == "closed":
                await through.close()
            else:
                through.stall()
        cut = time.monotonic()
        failed, n, in_a_row = 0, 0, 0
        while in_a_row < 50:
            n += 1
            assert time.monotonic() - cut < 30 and n < 5000, "calls never took Redis"
            try:
                assert (await asyncio.wait_for(caller.call("part.echo", n), 10)).args == [n]
                in_a_row += 1
            except ApplicationError as exc:
                assert exc.uri == "wamp.error.unavailable" and in_a_row == 0, exc
                failed += 1
                await asyncio.sleep(0.02)  # a paced caller while the link is down
        took = time.monotonic() - cut
        print(f"\n{way}: calls took Redis {took:.1f} s after the cut; {failed} failed before")
        for node in nodes:
            node.wait_for_output("its call traffic goes through Redis")
            assert _gauge(node, "wamp_cluster_peer_fallbacks") == 1
        assert failed >= 1  # within the grace either node might have been going away
    finally:
        await other.close()
