"""The event-history chaos scenario (issue 11), shared by bench/history_chaos.py and a test.

Three broker nodes on one redis-server (``appendonly yes``, ``appendfsync always``)
behind a real HAProxy. Subscribers connect through HAProxy, to one topic with history:
half are SDK ``Client``s subscribed with ``resume=True`` (they reconnect through HAProxy
and recover through ``wamp.subscription.get_events``), half are plain Autobahn|Python
sessions (no resume, no reconnect). Every subscriber also subscribes to the router's
``wamp.subscription.on_history_gap``. One publisher per node (an SDK ``Client`` on that
node's own address) publishes numbered events ``[publisher, n]`` with ``acknowledge`` at
a steady rate. While they run, in sequence, each after ``Plan.between`` more acknowledged
events per publisher: SIGKILL node c1 (its SDK subscribers resume on c0/c2) and start it
again on the same port, SIGKILL Redis and restart it from its AOF, SIGSTOP Redis for
``Plan.stop_seconds`` then SIGCONT, and CLIENT KILL node c2's pub/sub connection.

HAProxy (``Plan.haproxy``): ``healthz`` (default) checks /healthz, so a session lives as
long as its node: Autobahn sessions on c0/c2 *stay* through every Redis fault and test
the router-side repair. ``docker`` runs docker/haproxy.cfg as shipped: it checks /readyz
and cuts the sessions of a node marked down, so every fault that outlasts two checks
(the SIGSTOP) cuts every session: SDK clients resume (often on a node still
reconnecting to Redis), every Autobahn session dies.

What is promised, and checked at the end (``Result.broken``):

- every subscriber, whatever happened to it: no publication twice, and per publisher
  the numbers in increasing order;
- a subscriber that *stayed* (its session never ended) or *resumed* (an SDK client, its
  subscription re-made after every reconnect): every event acknowledged to its publisher
  (PUBLISHED) was received, or a gap was reported to it (the router's
  ``on_history_gap`` or the SDK's ``on_gap``);
- a subscriber whose session died and did not resume (an Autobahn session on the killed
  node) is only checked for duplicates and order: all it got arrived before its death;
- events whose publish failed (ERROR ``wamp.error.unavailable``, or the publisher's
  connection lost before PUBLISHED) are not required anywhere (they may or may not have
  been stored), but when they arrive they count for duplicates and order;
- every SDK client is joined again and its recovery finished at the end (no hang).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

import client_sdk
from client_sdk import ApplicationError, Backoff, ClientError, Gap, PublishOptions
from protocol_spec.meta import SUBSCRIPTION_ON_HISTORY_GAP as HISTORY_GAP
from tests.docker.topology import native_haproxy_cfg
from tests.support.haproxy import haproxy_cfg
from tests.support.processes import (
    CLUSTER_TIMING,
    ROOT,
    BrokerProcess,
    RedisProcess,
    free_port,
    local_ports,
    start_broker,
    start_redis,
)

SHIPPED_HAPROXY = ROOT / "docker" / "haproxy.cfg"
TOPIC = "com.chaos.numbers"
ACK = PublishOptions(acknowledge=True)
FAST = Backoff(initial=0.05, maximum=0.5, jitter=0.5)
WARMUP = -1  # the number of the events sent until every subscriber hears every publisher

CONFIG = (
    CLUSTER_TIMING
    + """
[[realm]]
name = "realm1"

[[realm.history]]
uri = "com.chaos."
match = "prefix"
limit = 100000
"""
)


@dataclass
class Plan:
    """The sizes and durations of one run (the defaults are the issue's full scenario)."""

    sdk: int = 15
    autobahn: int = 15
    rate: float = 40.0
    """Events per second, per publisher."""
    between: int = 200
    """Events every publisher gets acknowledged between two faults (and before the first)."""
    stop_seconds: float = 10.0
    """How long Redis stays SIGSTOPped."""
    converge: float = 20.0
    """Seconds the subscribers get, after the last publication, to receive what they miss."""
    step_timeout: float = 20.0
    """Seconds one step (a restart, the nodes ready again, ``between`` events) may take."""
    max_events: int = 4000
    """At most this many publications per publisher."""
    haproxy: str = "healthz"
    """``healthz``: HAProxy checks /healthz, a node's sessions live as long as it does.
    ``docker``: docker/haproxy.cfg as shipped (checks /readyz and cuts the sessions of a
    node marked down, e.g. cut off from Redis; /healthz nodes when none is ready)."""


# --- subscribers --------------------------------------------------------------------------


@dataclass
class Tally:
    """What one subscriber received: (publisher, n) in arrival order, and the gaps told."""

    name: str
    kind: str  # "sdk" (resume) or "autobahn"
    got: list[tuple[int, int]] = field(default_factory=list)
    gaps: list[str] = field(default_factory=list)
    session_ids: list[int] = field(default_factory=list)
    died: bool = False
    warm: set[int] = field(default_factory=set)  # publishers whose WARMUP events arrived
    joined_at: list[int] = field(default_factory=list)  # len(got) at each join (SDK)
    replayed: list[int] = field(default_factory=list)  # indexes in got of replayed events
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def event(self, publisher: int, n: int) -> None:
        if n >= 0:
            self.got.append((publisher, n))
        else:
            self.warm.add(publisher)
        self.changed.set()

    def gap(self, what: str) -> None:
        self.gaps.append(what)
        self.changed.set()

    async def until(self, check: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``check()`` (re-checked on every event); False after ``timeout`` s."""
        try:
            async with asyncio.timeout(timeout):
                while not check():
                    self.changed.clear()
                    await self.changed.wait()
        except TimeoutError:
            return False
        return True


class SdkSubscriber:
    """An SDK ``Client`` through HAProxy, resuming its subscription after each reconnect."""

    def __init__(self, url: str, tally: Tally) -> None:
        self.tally = tally
        self.client = client_sdk.Client(url, "realm1", backoff=FAST)
        self.client.on_join(self._joined)
        self.sub: client_sdk.ClientSubscription | None = None

    async def start(self) -> None:
        await self.client.start()
        await self.client.wait_joined()
        self.sub = await self.client.subscribe(
            TOPIC,
            self._event,
            resume=True,
            on_gap=self._on_gap,
        )
        await self.client.subscribe(HISTORY_GAP, lambda e: self.tally.gap(f"router {e.kwargs}"))

    def _event(self, event: client_sdk.Event) -> None:
        if event.replayed:
            self.tally.replayed.append(len(self.tally.got))
        self.tally.event(*event.args)

    def _joined(self, session: client_sdk.Session) -> None:
        self.tally.session_ids.append(session.id)
        self.tally.joined_at.append(len(self.tally.got))
        self.tally.changed.set()

    async def settled(self, joins: int, timeout: float) -> bool:
        """Wait until joined more than ``joins`` times and the recovery is over."""
        if not await self.tally.until(lambda: self.client.joins > joins, timeout):
            return False
        assert self.sub is not None
        try:
            async with asyncio.timeout(timeout):
                await self.sub.recovered()
        except TimeoutError:
            return False
        return self.live

    def _on_gap(self, gap: Gap) -> None:
        self.tally.gap(f"sdk {gap.reason}")

    @property
    def live(self) -> bool:
        joined = self.client.state is client_sdk.ClientState.JOINED
        return joined and self.sub is not None and not self.sub.recovering

    async def stop(self) -> None:
        await self.client.stop()


class AutobahnSubscriber:
    """A plain Autobahn|Python session through HAProxy: no resume, no reconnect."""

    def __init__(self, url: str, tally: Tally) -> None:
        self.url = url
        self.tally = tally
        self.session: Any = None

    async def start(self) -> None:
        from autobahn.asyncio.wamp import ApplicationSession
        from autobahn.asyncio.websocket import WampWebSocketClientFactory
        from autobahn.wamp import types
        from autobahn.wamp.serializer import MsgPackSerializer

        loop = asyncio.get_running_loop()
        joined: asyncio.Future[Any] = loop.create_future()
        tally = self.tally

        class Peer(ApplicationSession):  # type: ignore[misc]
            def onJoin(self, details: Any) -> None:
                tally.session_ids.append(details.session)
                if not joined.done():
                    joined.set_result(self)

            def onDisconnect(self) -> None:
                tally.died = True
                tally.changed.set()
                if not joined.done():
                    joined.set_exception(ConnectionError("autobahn session disconnected"))

        factory = WampWebSocketClientFactory(
            lambda: Peer(types.ComponentConfig(realm="realm1")),
            url=self.url,
            serializers=[MsgPackSerializer()],
        )
        port = int(self.url.rsplit(":", 1)[1].split("/", 1)[0])
        await loop.create_connection(factory, "127.0.0.1", port)
        self.session = await asyncio.wait_for(joined, 10)
        await self.session.subscribe(tally.event, TOPIC)
        await self.session.subscribe(lambda *a, **kw: tally.gap(f"router {kw}"), HISTORY_GAP)

    @property
    def live(self) -> bool:
        return not self.tally.died

    async def stop(self) -> None:
        if self.session is not None and self.session.is_attached():
            self.session.leave()


Subscriber = SdkSubscriber | AutobahnSubscriber


# --- publishers ---------------------------------------------------------------------------


@dataclass
class Publisher:
    """One node's publisher: what it tried, what was acknowledged, what failed and how."""

    index: int
    client: client_sdk.Client
    attempted: int = 0
    acked: list[int] = field(default_factory=list)
    unavailable: int = 0
    lost: int = 0
    other: list[str] = field(default_factory=list)
    progress: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish(self, n: int) -> None:
        self.attempted += n >= 0
        try:
            await self.client.publish(TOPIC, self.index, n, options=ACK)
        except ApplicationError as exc:
            if exc.uri != "wamp.error.unavailable":
                self.other.append(f"{n}: {exc.uri}")
            self.unavailable += n >= 0
            return
        except ClientError:  # not joined, or the connection died before PUBLISHED
            self.lost += n >= 0
            return
        if n >= 0:
            self.acked.append(n)
            self.progress.set()

    async def run(self, rate: float, stop: asyncio.Event, limit: int) -> None:
        """Publish 0, 1, 2 … at ``rate`` per second (no bursts after a slow one) until ``stop``."""
        interval = 1.0 / rate
        slot = time.monotonic()
        for n in range(limit):
            if stop.is_set():
                return
            await self.publish(n)
            slot = max(slot + interval, time.monotonic())
            await asyncio.sleep(slot - time.monotonic())


# --- processes ----------------------------------------------------------------------------


class Cluster:
    """Redis (with its AOF), three nodes on fixed ports, and HAProxy in front of them."""

    def __init__(self, workdir: Path, haproxy: str = "healthz") -> None:
        self.workdir = workdir
        self.haproxy_mode = haproxy
        (workdir / "redis").mkdir()
        self.config = workdir / "broker.toml"
        self.config.write_text(CONFIG, encoding="utf-8")
        self.persist = ["--appendonly", "yes", "--appendfsync", "always"]
        self.persist += ["--dir", str(workdir / "redis")]
        self.redis: RedisProcess | None = None
        self.nodes: list[BrokerProcess] = []
        self.gone: list[BrokerProcess] = []  # killed node processes (their logs)
        self.haproxy: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, count: int = 3) -> None:
        self.redis = start_redis(extra=self.persist)
        self.nodes = [self._node(f"c{i}", 0) for i in range(count)]
        self.url = self._haproxy()

    def _node(self, name: str, port: int) -> BrokerProcess:
        assert self.redis is not None
        args = ["--redis", self.redis.url, "--node-id", name, "--config", str(self.config)]
        return start_broker(*args, port=port)

    def _haproxy(self) -> str:
        exe = shutil.which("haproxy")
        if exe is None:
            raise RuntimeError("haproxy is not installed")
        port = free_port()
        if self.haproxy_mode == "docker":
            ports = {f"node{i + 1}": node.port for i, node in enumerate(self.nodes)}
            text = native_haproxy_cfg(SHIPPED_HAPROXY.read_text(encoding="utf-8"), port, ports)
        else:
            node_ports = [node.port for node in self.nodes]
            text = haproxy_cfg(port, node_ports, "inter 300 fall 2 rise 1")
        path = self.workdir / "haproxy.cfg"
        path.write_text(text, encoding="utf-8")
        self.haproxy = subprocess.Popen(
            [exe, "-f", str(path), "-db"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _wait_ready(f"http://127.0.0.1:{port}/healthz", 10)
        return f"ws://127.0.0.1:{port}/ws"

    def kill_node(self, index: int) -> None:
        """SIGKILL node ``index`` (``start_node`` starts it again on the same port)."""
        node = self.nodes[index]
        node.kill()
        self.gone.append(node)

    def start_node(self, index: int) -> None:
        node = self.nodes[index]
        name = node.args[node.args.index("--node-id") + 1]
        self.nodes[index] = self._node(name, node.port)

    def restart_redis(self) -> None:
        """SIGKILL Redis and start it again on the same port from its AOF (blocking)."""
        assert self.redis is not None
        self.redis.kill()
        self.redis = start_redis(self.redis.port, self.persist)

    def signal_redis(self, sig: int) -> None:
        assert self.redis is not None
        os.kill(self.redis.proc.pid, sig)

    def cut_pubsub(self, index: int) -> int:
        """CLIENT KILL the pub/sub connection(s) of node ``index``; how many were killed."""
        assert self.redis is not None
        ports = local_ports(self.nodes[index].proc.pid)
        client = redis.Redis.from_url(self.redis.url)
        killed = 0
        try:
            for info in client.client_list():
                mine = int(info["addr"].rsplit(":", 1)[1]) in ports
                subscribed = int(info.get("sub", 0)) + int(info.get("psub", 0)) > 0
                if mine and (subscribed or "P" in info.get("flags", "")):
                    killed += int(client.execute_command("CLIENT", "KILL", "ID", info["id"]))
        finally:
            client.close()
        return killed

    def all_ready(self, timeout: float) -> None:
        for node in self.nodes:
            _wait_ready(node.http_base + "/readyz", timeout)

    def node_of(self, session_id: int) -> str:
        for node in self.gone + self.nodes:
            if f"session {session_id} opened" in node.output:
                return node.args[node.args.index("--node-id") + 1]
        return "?"

    def save_stream(self, where: Path) -> None:
        """Write the topic's history stream as lines ``offset publisher n`` to ``where``."""
        from broker.cluster.history import history_stream_key, parse_entries

        assert self.redis is not None
        where.mkdir(parents=True, exist_ok=True)
        client = redis.Redis.from_url(self.redis.url)
        try:
            entries = parse_entries(client.xrange(history_stream_key("realm1", TOPIC)))
        finally:
            client.close()
        lines = [
            f"{offset} {env.args[0]} {env.args[1]}" for offset, _us, env in entries if env.args
        ]
        (where / "stream.txt").write_text("\n".join(lines), encoding="utf-8")

    def save_logs(self, where: Path) -> None:
        """Write every node process's output (killed ones too) to ``where``."""
        where.mkdir(parents=True, exist_ok=True)
        for index, node in enumerate(self.gone + self.nodes):
            name = node.args[node.args.index("--node-id") + 1]
            (where / f"{index}-{name}.log").write_text(node.output, encoding="utf-8")

    def stop(self) -> None:
        if self.redis is not None and self.redis.proc.poll() is None:
            os.kill(self.redis.proc.pid, signal.SIGCONT)  # in case a failure left it stopped
        for node in self.nodes:
            node.stop()
        if self.haproxy is not None and self.haproxy.poll() is None:
            self.haproxy.terminate()
            self.haproxy.wait(5)
        if self.redis is not None:
            self.redis.kill()


def _wait_ready(url: str, timeout: float) -> None:
    """GET ``url`` until it answers 200 (a starting or reconnecting process); else raise."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{url} not 200 within {timeout} s")
        time.sleep(0.05)  # polling a process's readiness, not synchronising events


# --- the run ------------------------------------------------------------------------------


@dataclass
class Result:
    """Counts per subscriber and per publisher; ``broken`` lists every broken promise."""

    subscribers: list[dict[str, Any]]
    publishers: list[dict[str, Any]]
    faults: list[str]
    seconds: float
    broken: list[str]
    arrivals: dict[str, list[tuple[int, int]]] = field(default_factory=dict, repr=False)
    """Every subscriber's (publisher, n) in arrival order (for a closer look)."""
    acked: dict[int, list[int]] = field(default_factory=dict, repr=False)
    joins: dict[str, list[tuple[int, int]]] = field(default_factory=dict, repr=False)
    """Per SDK subscriber: (arrivals so far, session ID) at each join."""
    replayed: dict[str, list[int]] = field(default_factory=dict, repr=False)
    """Per SDK subscriber: the indexes of its arrivals that came from the history."""

    def lines(self) -> list[str]:
        out = [f"faults: {'; '.join(self.faults)}", f"run: {self.seconds:.1f} s"]
        for p in self.publishers:
            out.append(
                f"publisher {p['publisher']} (node {p['node']}): attempted {p['attempted']}, "
                f"acked {p['acked']}, unavailable {p['unavailable']}, lost {p['lost']}, "
                f"duplicates {p['duplicates']}, out-of-order {p['out_of_order']}, "
                f"acked missing {p['acked_missing']} (unreported {p['unreported']})"
            )
        for s in self.subscribers:
            out.append(
                f"{s['name']:>5} {s['kind']:<8} node {s['nodes']:<8} {s['fate']:<7} "
                f"received {s['received']:>5}, duplicates {s['duplicates']}, "
                f"out-of-order {s['out_of_order']}, acked missing {s['acked_missing']}, "
                f"gaps reported {s['gaps']}"
            )
        out.append("OK: every promise kept" if not self.broken else "BROKEN:")
        out += [f"  {b}" for b in self.broken]
        return out


class Run:
    """One chaos run: start everything, publish, inject the faults, check the counts."""

    def __init__(
        self,
        plan: Plan,
        workdir: Path,
        log: Callable[[str], None] = print,
        logs: Path | None = None,
    ) -> None:
        self.plan = plan
        self.logs = logs
        self.cluster = Cluster(workdir, plan.haproxy)
        self.log = log
        self.subscribers: list[Subscriber] = []
        self.publishers: list[Publisher] = []
        self.faults: list[str] = []
        self.started = time.monotonic()

    def note(self, what: str) -> None:
        self.faults.append(what)
        self.log(f"[{time.monotonic() - self.started:5.1f} s] {what}")

    async def setup(self) -> None:
        await asyncio.to_thread(self.cluster.start)
        url = self.cluster.url
        for i in range(self.plan.sdk):
            self.subscribers.append(SdkSubscriber(url, Tally(f"s{i}", "sdk")))
        for i in range(self.plan.autobahn):
            self.subscribers.append(AutobahnSubscriber(url, Tally(f"a{i}", "autobahn")))
        for sub in self.subscribers:  # one at a time: HAProxy's leastconn spreads them
            await sub.start()
        for index, node in enumerate(self.cluster.nodes):
            client = client_sdk.Client(node.url, "realm1", backoff=FAST)
            await client.start()
            await client.wait_joined()
            self.publishers.append(Publisher(index, client))
        await self._warm_up()
        self.note("setup done")

    async def _warm_up(self) -> None:
        """Publish WARMUP events until every subscriber got one from every publisher."""
        everyone = {p.index for p in self.publishers}
        deadline = time.monotonic() + self.plan.step_timeout
        tallies = [s.tally for s in self.subscribers]
        while any(t.warm != everyone for t in tallies):
            if time.monotonic() > deadline:
                raise RuntimeError("subscriptions did not reach every node")
            await asyncio.gather(*(p.publish(WARMUP) for p in self.publishers))
            await asyncio.sleep(0.05)  # between round trips, not as synchronisation

    async def _traffic(self, count: int) -> None:
        """Wait until every publisher got ``count`` more events acknowledged."""
        targets = [len(p.acked) + count for p in self.publishers]
        async with asyncio.timeout(self.plan.step_timeout):
            for publisher, target in zip(self.publishers, targets, strict=True):
                while len(publisher.acked) < target:
                    publisher.progress.clear()
                    await publisher.progress.wait()

    def _sdk(self) -> list[SdkSubscriber]:
        return [s for s in self.subscribers if isinstance(s, SdkSubscriber)]

    async def _ready(self) -> None:
        await asyncio.to_thread(self.cluster.all_ready, self.plan.step_timeout)

    async def faults_in_sequence(self) -> None:
        between = self.plan.between
        await self._traffic(between)
        on_node = [s for s in self._sdk() if self.cluster.node_of(s.tally.session_ids[-1]) == "c1"]
        joins = [s.client.joins for s in on_node]
        self.note(f"SIGKILL node c1 ({len(on_node)} SDK subscribers on it)")
        self.cluster.kill_node(1)
        for sub, before in zip(on_node, joins, strict=True):  # they resume on c0 or c2
            if not await sub.settled(before, self.plan.step_timeout):
                raise RuntimeError(f"{sub.tally.name} did not resume after the node died")
        self.note("its SDK subscribers resumed on other nodes")
        await asyncio.to_thread(self.cluster.start_node, 1)
        self.note("node c1 restarted")
        await self._ready()
        await self._traffic(between)
        self.note("SIGKILL redis")
        await asyncio.to_thread(self.cluster.restart_redis)
        self.note("redis restarted from its AOF")
        await self._ready()
        await self._traffic(between)
        self.note(f"SIGSTOP redis for {self.plan.stop_seconds:g} s")
        self.cluster.signal_redis(signal.SIGSTOP)
        try:
            await asyncio.sleep(self.plan.stop_seconds)  # the fault's length, not a sync
        finally:
            self.cluster.signal_redis(signal.SIGCONT)
        self.note("SIGCONT redis")
        await self._ready()
        await self._traffic(between)
        killed = await asyncio.to_thread(self.cluster.cut_pubsub, 2)
        self.note(f"pub/sub link of node c2 cut ({killed} connection(s) killed)")
        if killed == 0:
            raise RuntimeError("no pub/sub connection of node c2 found")
        await self._ready()
        await self._traffic(between)

    async def run(self) -> Result:
        try:
            await self.setup()
            stop = asyncio.Event()
            tasks = [
                asyncio.create_task(p.run(self.plan.rate, stop, self.plan.max_events))
                for p in self.publishers
            ]
            try:
                await self.faults_in_sequence()
            finally:
                stop.set()
                await asyncio.gather(*tasks)
            self.note("publishing stopped")
            await self._converge()
            return self.result()
        finally:
            await self.close()

    def _expected(self) -> dict[int, set[int]]:
        return {p.index: set(p.acked) for p in self.publishers}

    async def _converge(self) -> None:
        """Wait (bounded) until every subscriber that is still there has all it must have."""
        acked = self._expected()
        last = {(p.index, max(p.acked)) for p in self.publishers if p.acked}
        deadline = time.monotonic() + self.plan.converge

        def done(sub: Subscriber) -> bool:
            if not sub.live:
                return isinstance(sub, AutobahnSubscriber)  # dead: nothing more to wait for
            tally = sub.tally
            seen = set(tally.got)
            return last <= seen and (bool(tally.gaps) or count(tally.got, acked)[2] == 0)

        for sub in self.subscribers:
            remaining = max(0.0, deadline - time.monotonic())
            if isinstance(sub, SdkSubscriber):  # joined and recovered: then events only
                await sub.settled(0, remaining)
                remaining = max(0.0, deadline - time.monotonic())
            await sub.tally.until(lambda s=sub: done(s), remaining)
        self.note("converged" if all(done(s) for s in self.subscribers) else "did not converge")

    def result(self) -> Result:
        acked = self._expected()
        broken: list[str] = []
        subs: list[dict[str, Any]] = []
        per_pub = {
            p.index: {"duplicates": 0, "out_of_order": 0, "missing": 0, "unreported": 0}
            for p in self.publishers
        }
        for sub in self.subscribers:
            tally = sub.tally
            checked = isinstance(sub, SdkSubscriber) or not tally.died
            fate = (
                "resumed"
                if isinstance(sub, SdkSubscriber)
                else ("died" if tally.died else "stayed")
            )
            dup, disorder, missing = count(tally.got, acked)
            if not checked:
                missing = 0
            for pub in per_pub:
                d, o, m = count([g for g in tally.got if g[0] == pub], {pub: acked[pub]})
                per_pub[pub]["duplicates"] += d
                per_pub[pub]["out_of_order"] += o
                if checked:
                    per_pub[pub]["missing"] += m
                    per_pub[pub]["unreported"] += 0 if tally.gaps else m
            subs.append(
                {
                    "name": tally.name,
                    "kind": tally.kind,
                    "nodes": ",".join(self.cluster.node_of(i) for i in tally.session_ids),
                    "fate": fate,
                    "received": len(tally.got),
                    "duplicates": dup,
                    "out_of_order": disorder,
                    "acked_missing": missing,
                    "gaps": len(tally.gaps),
                    "gap_reasons": tally.gaps[:5],
                    "disorder": disorder_samples(tally.got, acked),
                }
            )
            if dup or disorder:
                broken.append(f"{tally.name}: {dup} duplicates, {disorder} out of order")
                broken += [f"  {sample}" for sample in subs[-1]["disorder"]]
            if missing and not tally.gaps:
                broken.append(f"{tally.name}: {missing} acknowledged events missing, no gap told")
            if isinstance(sub, SdkSubscriber) and not sub.live:
                broken.append(f"{tally.name}: not joined and live again at the end")
        pubs = []
        for p in self.publishers:
            pubs.append(
                {
                    "publisher": p.index,
                    "node": f"c{p.index}",
                    "attempted": p.attempted,
                    "acked": len(p.acked),
                    "unavailable": p.unavailable,
                    "lost": p.lost,
                    "acked_missing": per_pub[p.index]["missing"],
                    **{
                        k: per_pub[p.index][k] for k in ("duplicates", "out_of_order", "unreported")
                    },
                }
            )
            if p.other:
                broken.append(f"publisher {p.index}: unexpected errors {p.other[:3]}")
        if not any(t.died for t in (s.tally for s in self.subscribers) if t.kind == "autobahn"):
            broken.append("no Autobahn session died with the killed node: the fault missed")
        result = Result(subs, pubs, self.faults, time.monotonic() - self.started, broken)
        result.arrivals = {s.tally.name: list(s.tally.got) for s in self.subscribers}
        result.joins = {
            s.tally.name: list(zip(s.tally.joined_at, s.tally.session_ids, strict=False))
            for s in self.subscribers
        }
        result.replayed = {s.tally.name: s.tally.replayed for s in self.subscribers}
        result.acked = {p.index: list(p.acked) for p in self.publishers}
        return result

    async def close(self) -> None:
        for pub in self.publishers:
            await pub.client.stop()
        for sub in self.subscribers:
            try:
                await asyncio.wait_for(sub.stop(), 5)
            except Exception:  # the node may be gone already
                pass
        if self.logs is not None:
            await asyncio.to_thread(self.cluster.save_stream, self.logs)
        await asyncio.to_thread(self.cluster.stop)
        if self.logs is not None:
            self.cluster.save_logs(self.logs)


def count(got: list[tuple[int, int]], acked: dict[int, set[int]]) -> tuple[int, int, int]:
    """(duplicates, out of order, acknowledged events missing) of one arrival sequence."""
    dup = len(got) - len(set(got))
    last: dict[int, int] = {}
    disorder = 0
    for pub, n in got:
        if n < last.get(pub, -1):
            disorder += 1
        last[pub] = max(n, last.get(pub, -1))
    seen = set(got)
    missing = sum(1 for pub, ns in acked.items() for n in ns if (pub, n) not in seen)
    return dup, disorder, missing


def disorder_samples(
    got: list[tuple[int, int]], acked: dict[int, set[int]], limit: int = 5
) -> list[str]:
    """The first out-of-order arrivals: what came, after which number, acknowledged or not."""
    last: dict[int, int] = {}
    out = []
    for index, (pub, n) in enumerate(got):
        if n < last.get(pub, -1) and len(out) < limit:
            state = "acked" if n in acked.get(pub, ()) else "not acked"
            around = got[max(0, index - 3) : index + 2]
            out.append(f"#{index} {pub}:{n} ({state}) after {pub}:{last[pub]}, around {around}")
        last[pub] = max(n, last.get(pub, -1))
    return out


async def run(plan: Plan, log: Callable[[str], None] = print, logs: Path | None = None) -> Result:
    """One whole run in a fresh temporary directory (the nodes' output saved in ``logs``)."""
    with tempfile.TemporaryDirectory(prefix="history-chaos-") as tmp:
        return await Run(plan, Path(tmp), log, logs).run()
