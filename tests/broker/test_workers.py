"""``broker --workers 2``: one port, two worker processes sharing the realms through Redis.

Clients are spread by the kernel (SO_REUSEPORT). Which worker a client landed on is
read from the supervisor's merged ``/metrics`` (``wamp_sessions{worker}``) right after
it joined, so the tests can put publisher and subscriber, caller and callee on
different workers on purpose.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

import client_sdk
from broker.config import ConfigError, load_settings
from client_sdk import ApplicationError, Event, PublishOptions
from protocol_spec.backoff import Backoff
from tests.support.processes import ROOT, BrokerProcess, RedisProcess, start_broker, start_redis

if shutil.which("redis-server") is None:  # pragma: no cover - the test command installs it
    pytest.skip("redis-server is not installed", allow_module_level=True)

TIMING = """
[cluster]
heartbeat_interval = 0.25
node_timeout = 2.0
probe_interval = 0.5
probe_timeout = 1.0
"""
DEATH_TIMEOUT = 10.0
Session = client_sdk.Session
_SUPERVISOR = re.compile(r"supervisor /metrics and /readyz on (http://[^\s]+)")

ACK = PublishOptions(acknowledge=True)


class Workers:
    """A supervisor process with its workers, and the supervisor's HTTP base."""

    def __init__(self, broker: BrokerProcess) -> None:
        self.broker = broker
        text = broker.wait_for_output(_SUPERVISOR.pattern, timeout=15)
        match = _SUPERVISOR.search(text)
        assert match is not None
        self.http = match.group(1)
        broker.wait_for_output(r"all 2 workers ready", timeout=30)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.http + path, timeout=5) as response:
                return int(response.status), response.read().decode()
        except urllib.error.HTTPError as exc:
            return int(exc.code), exc.read().decode()

    def sessions(self) -> dict[str, float]:
        """Joined sessions per worker index, from the merged /metrics."""
        status, text = self.get("/metrics")
        assert status == 200
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            if family.name == "wamp_sessions":
                for sample in family.samples:
                    counts[sample.labels["worker"]] = sample.value
        return counts

    def pid(self, index: int) -> int:
        """The PID of worker ``index``'s latest incarnation, from the supervisor's log."""
        found = re.findall(rf"worker {index} started \(pid (\d+)", self.broker.output)
        return int(found[-1])


@pytest.fixture(scope="module")
def redis() -> Iterator[RedisProcess]:
    server = start_redis()
    yield server
    server.kill()


def _start(redis: RedisProcess, config: Path, env: dict[str, str] | None = None) -> Workers:
    broker = start_broker(
        "--workers",
        "2",
        "--redis",
        redis.url,
        "--config",
        str(config),
        "--supervisor-port",
        "0",
        env=env,
    )
    try:
        return Workers(broker)
    except BaseException:
        broker.kill()
        raise


@pytest.fixture(params=["reuseport", "inherit"])
def sockets(request: pytest.FixtureRequest) -> str:
    """How the workers share the port (``BROKER_WORKER_SOCKETS``)."""
    return str(request.param)


@pytest.fixture
def workers(redis: RedisProcess, tmp_path: Path) -> Iterator[Workers]:
    config = tmp_path / "broker.toml"
    config.write_text(TIMING, encoding="utf-8")
    started = _start(redis, config)
    yield started
    started.broker.stop(30)


PEER_PATHS = {
    # the workers link directly (peers.py): the dead worker's link breaks with it
    "direct": ({}, "wamp.error.unavailable"),
    # call traffic through Redis: the supervisor's obituary (``gone``) ends the call
    "redis": ({"BROKER_PEER": "off"}, "wamp.error.canceled"),
}
"""How calls cross workers → (the supervisor's environment, how a call to a dead one fails)."""


@pytest.fixture(params=sorted(PEER_PATHS))
def slow_death_workers(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[Workers, str]]:
    """Workers whose heartbeats expire only after the default 5 s ``node_timeout``, and
    the error a call pending on a killed one gets (per ``PEER_PATHS``).

    Each gets a Redis of its own: the killed worker's claims stay in Redis until a
    heartbeat check reaps them, which may come after the workers stopped.
    """
    env, uri = PEER_PATHS[request.param]
    config = tmp_path / "broker.toml"
    config.write_text(TIMING.replace("node_timeout = 2.0", "node_timeout = 5.0"), "utf-8")
    redis = start_redis()
    try:
        started = _start(redis, config, env)
        yield started, uri
        started.broker.stop(30)
    finally:
        redis.kill()


async def _on_worker(workers: Workers, target: str, opened: list[client_sdk.Session]) -> Session:
    """Connect new sessions until one lands on worker ``target`` (at most 64 tries)."""
    for _ in range(64):
        before = await asyncio.to_thread(workers.sessions)
        session = await client_sdk.connect(workers.broker.url, "realm1")
        opened.append(session)
        after = await asyncio.to_thread(workers.sessions)
        if after.get(target, 0) > before.get(target, 0):
            return session
    raise AssertionError(f"the kernel never picked worker {target} in 64 connections")


@pytest.fixture
async def opened() -> AsyncIterator[list[Session]]:
    sessions: list[Session] = []
    yield sessions
    for session in sessions:
        if session.is_open:
            try:
                await asyncio.wait_for(session.leave(), 5)
            except Exception:  # the worker may be gone
                pass


async def _until_registered(session: Session, procedure: str) -> None:
    """Wait (round trips, 5 s at most) until ``session``'s worker knows the registration."""
    deadline = time.monotonic() + 5
    while (await session.call("wamp.registration.match", procedure)).args[0] is None:
        assert time.monotonic() < deadline, f"{procedure} did not reach the other worker"
        await asyncio.sleep(0.05)  # between round trips


def test_worker_counts_from_flag_environment_and_file(tmp_path: Path) -> None:
    redis = {"BROKER_REDIS": "redis://127.0.0.1:6379/0"}
    assert load_settings(environ={}).workers == 1
    assert load_settings(workers="3", environ=redis).workers == 3
    assert load_settings(environ={**redis, "BROKER_WORKERS": "auto"}).workers == (
        os.cpu_count() or 1
    )
    config = tmp_path / "broker.toml"
    config.write_text("[server]\nworkers = 2\nsupervisor_port = 9091\n", encoding="utf-8")
    settings = load_settings(str(config), environ=redis)
    assert (settings.workers, settings.supervisor_port) == (2, 9091)
    for bad in ("0", "-1", "many"):
        with pytest.raises(ConfigError, match="positive integer"):
            load_settings(workers=bad, environ=redis)
    with pytest.raises(ConfigError, match="need a Redis URL"):
        load_settings(str(config), environ={})


def test_more_than_one_worker_without_redis_is_refused() -> None:
    env = {k: v for k, v in os.environ.items() if k != "BROKER_REDIS"}
    done = subprocess.run(
        [sys.executable, "-m", "broker", "--port", "0", "--workers", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 2
    assert "2 workers need a Redis URL" in done.stderr


async def test_events_and_calls_cross_workers_and_metrics_cover_both(
    sockets: str, redis: RedisProcess, tmp_path: Path, opened: list[Session]
) -> None:
    config = tmp_path / "broker.toml"
    config.write_text(TIMING, encoding="utf-8")
    workers = _start(redis, config, {"BROKER_WORKER_SOCKETS": sockets})
    try:
        await _cross_workers(workers, opened)
        via = "SO_REUSEPORT" if sockets == "reuseport" else "an inherited socket"
        assert f"via {via}" in workers.broker.output
    finally:
        workers.broker.stop(30)


async def _cross_workers(workers: Workers, opened: list[Session]) -> None:
    sub = await _on_worker(workers, "0", opened)
    pub = await _on_worker(workers, "1", opened)
    events: asyncio.Queue[Event] = asyncio.Queue()
    await sub.subscribe("workers.news", events.put_nowait)
    await sub.register("workers.echo", lambda x: ["w0", x])
    await _until_registered(pub, "workers.echo")
    for i in range(3):
        await pub.publish("workers.news", i, options=ACK)
    got = [(await asyncio.wait_for(events.get(), 5)).args[0] for _ in range(3)]
    assert got == [0, 1, 2]
    assert (await pub.call("workers.echo", 7)).args == [["w0", 7]]
    status, body = await asyncio.to_thread(workers.get, "/readyz")
    assert status == 200, body
    status, text = await asyncio.to_thread(workers.get, "/metrics")
    nodes = set(re.findall(r'wamp_broker_info\{node_id="([^"]+)"', text))
    assert len(nodes) == 2 and all(re.search(r"-w[01]$", n) for n in nodes)
    assert re.search(r"\[[^\]]+-w0\] broker\.server: listening on", workers.broker.output)


async def test_killed_worker_restarts_its_clients_reconnect_pending_calls_fail_fast(
    slow_death_workers: tuple[Workers, str], opened: list[Session]
) -> None:
    workers, expected = slow_death_workers
    caller = await _on_worker(workers, "0", opened)
    doomed = await _on_worker(workers, "1", opened)
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(60)

    await doomed.register("workers.hang", hang)
    await _until_registered(caller, "workers.hang")
    pending = asyncio.create_task(caller.call("workers.hang"))
    await asyncio.wait_for(started.wait(), 5)
    client = await _client_on_worker(workers, "1")
    events: asyncio.Queue[Event] = asyncio.Queue()
    await client.subscribe("workers.after", events.put_nowait)
    rejoined = asyncio.Event()
    client.on_join(lambda _session: rejoined.set())
    try:
        mark = len(workers.broker.lines)
        killed = time.monotonic()
        os.kill(workers.pid(1), signal.SIGKILL)
        with pytest.raises(ApplicationError) as info:
            await asyncio.wait_for(pending, DEATH_TIMEOUT)
        failed_after = time.monotonic() - killed
        print(f"pending call failed {failed_after:.3f} s after the SIGKILL")
        # direct link: it broke with the worker, the call fails at once ("unavailable");
        # BROKER_PEER=off: the supervisor's obituary fails it ("canceled") in 0.02-0.1 s
        assert info.value.uri == expected
        # either way far sooner than its 5 s heartbeat TTL
        assert failed_after < 2.0, f"the pending call failed only after {failed_after:.2f} s"

        await asyncio.wait_for(rejoined.wait(), 15)
        # its subscription is restored on whichever worker it reached: events flow again
        deadline = time.monotonic() + 10
        while True:
            await caller.publish("workers.after", "again", options=ACK)
            try:
                event = await asyncio.wait_for(events.get(), 0.5)
                break
            except TimeoutError:
                assert time.monotonic() < deadline, "no event after the client reconnected"
        assert event.args == ["again"]
        await asyncio.to_thread(
            workers.broker.wait_for_output,
            r"worker 1 started \(pid \d+, node \S+-w1-r1\)",
            15,
            mark,
        )
        await asyncio.to_thread(
            workers.broker.wait_for_output, r"-w1-r1\] broker\.server: listening", 30, mark
        )
        deadline = time.monotonic() + 15
        while (await asyncio.to_thread(workers.get, "/readyz"))[0] != 200:
            assert time.monotonic() < deadline, "supervisor /readyz did not come back to 200"
            await asyncio.sleep(0.2)  # polling an HTTP endpoint between round trips
        _status, text = await asyncio.to_thread(workers.get, "/metrics")
        assert 'wamp_worker_restarts_total{worker="1"} 1.0' in text
    finally:
        await client.stop()


async def _client_on_worker(workers: Workers, target: str) -> client_sdk.Client:
    """A reconnecting ``Client`` whose first session landed on worker ``target``."""
    for _ in range(64):
        before = await asyncio.to_thread(workers.sessions)
        client = client_sdk.Client(
            workers.broker.url, "realm1", backoff=Backoff(initial=0.1, maximum=0.5)
        )
        await client.start()
        await asyncio.wait_for(client.wait_joined(), 10)
        after = await asyncio.to_thread(workers.sessions)
        if after.get(target, 0) > before.get(target, 0):
            return client
        await client.stop()
    raise AssertionError(f"the kernel never picked worker {target} in 64 connections")


async def test_sigterm_drains_every_worker(redis: RedisProcess, tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text(TIMING, encoding="utf-8")
    workers = _start(redis, config)
    opened: list[Session] = []
    try:
        on_0 = await _on_worker(workers, "0", opened)
        on_1 = await _on_worker(workers, "1", opened)
        pids = [workers.pid(0), workers.pid(1)]
        workers.broker.signal(signal.SIGTERM)
        for session in (on_0, on_1):
            closed = await asyncio.wait_for(session.wait_closed(), 15)
            assert "system_shutdown" in str(closed)
        code = await asyncio.to_thread(workers.broker.proc.wait, 30)
        assert code == 0
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
        assert "all workers stopped" in workers.broker.output
    finally:
        workers.broker.kill()
