"""WAMP load generator: rpc, fanout, fanout-rate, connections, cluster and publish-ack.

Usage (from the repository root)::

    python -m bench.loadgen rpc --url ws://127.0.0.1:8080/ws --pid 1234 --cpu 1
    python -m bench.loadgen rpc --callee-url ws://127.0.0.1:8081/ws --url ws://127.0.0.1:8082/ws
    python -m bench.loadgen fanout --url ws://127.0.0.1:8080/ws --subscribers 100
    python -m bench.loadgen cluster --pub-url ws://127.0.0.1:8081/ws --url ws://127.0.0.1:8082/ws
    python -m bench.loadgen publish-ack --pub-url ws://127.0.0.1:8081/ws --url ws://127.0.0.1:8082/ws

Each run prints ONE JSON line. The client side runs in ``--procs`` worker processes
(pinned to ``--cpu`` when given); a coordinator in the main process hands out the start
time, samples the broker's CPU and RSS from ``/proc`` (``--pid``) at the start and the end
of the measured window, and merges the workers' counts and latencies.

Every loop is bounded by time (``--duration``, plus ``--warmup`` that is not counted) and
optionally by count (``--count``); the drain after the end is bounded by ``--timeout``.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import ctypes
import json
import math
import multiprocessing as mp
import os
import resource
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from bench import procstat
from bench.fastws import FastConnection
from bench.wamp import (
    CALL,
    CLIENTS,
    ERROR,
    EVENT,
    PUBLISH,
    PUBLISHED,
    RESULT,
    YIELD,
    Session,
    check_local,
    join,
    packb,
    unpackb,
)

SCENARIOS = ("rpc", "fanout", "fanout-rate", "connections", "cluster", "publish-ack")
PROCEDURE = "bench.echo"
TOPIC = "bench.topic"
# SO_RCVBUF of a --stalled subscriber's socket, set before connecting (Linux doubles it
# and keeps a minimum), so once it stops reading TCP pushes back on the router quickly.
STALLED_RCVBUF = 4096
STALLED_IDLE_S = 0.5  # at the end: no byte for this long after resuming = not dropped

# All processes on one machine share CLOCK_MONOTONIC (perf_counter); the payload carries
# nanoseconds since this base so the integer stays small whatever the uptime.
_BASE_NS = time.perf_counter_ns()


def now_ns() -> int:
    return time.perf_counter_ns() - _BASE_NS


# ----------------------------------------------------------------------------- results


def percentiles(samples_ns: Sequence[int]) -> dict[str, float] | None:
    """p50/p90/p99/max/mean in milliseconds (nearest-rank), None without samples."""
    if not samples_ns:
        return None
    data = sorted(samples_ns)
    n = len(data)

    def rank(q: float) -> float:
        return data[min(n - 1, max(0, math.ceil(q * n) - 1))] / 1e6

    return {
        "p50": round(rank(0.50), 3),
        "p90": round(rank(0.90), 3),
        "p99": round(rank(0.99), 3),
        "max": round(data[-1] / 1e6, 3),
        "mean": round(sum(data) / n / 1e6, 3),
        "samples": n,
    }


@dataclass
class WorkerReport:
    """What one worker process sends back at the end of its measured window."""

    sent: int = 0  # calls made / events published / sessions attempted
    received: int = 0  # results / events delivered / sessions joined
    measured: int = 0  # the part of ``received`` inside the measured window
    errors: int = 0
    t_first: float = math.inf  # perf_counter seconds
    t_last: float = 0.0
    latencies: bytes = b""  # array('q') of nanoseconds
    extra: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- worker plumbing


@dataclass
class Window:
    """Start and end of the measured window, in perf_counter seconds."""

    t_go: float
    t_mark: float
    t_end: float

    @property
    def mark_ns(self) -> int:
        return int(self.t_mark * 1e9) - _BASE_NS

    @property
    def end_ns(self) -> int:
        return int(self.t_end * 1e9) - _BASE_NS


class Control:
    """The worker's end of the pipe to the coordinator, awaitable without threads."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def send(self, kind: str, payload: Any = None) -> None:
        self.conn.send((kind, payload))

    async def recv(self) -> tuple[str, Any]:
        loop = asyncio.get_running_loop()
        while not self.conn.poll():
            fut: asyncio.Future[None] = loop.create_future()

            def readable(f: asyncio.Future[None] = fut) -> None:
                if not f.done():
                    f.set_result(None)

            loop.add_reader(self.conn.fileno(), readable)
            try:
                await fut
            finally:
                loop.remove_reader(self.conn.fileno())
        kind, payload = self.conn.recv()
        return str(kind), payload


@dataclass
class Shared:
    """State shared between worker processes (created before fork)."""

    delivered: Any  # RawArray('q', procs): events delivered per worker
    synced: Any  # RawArray('q', procs): subscribers that saw a sync marker, per worker
    final: Any  # RawValue('q'): number of events published in total, -1 while publishing


def share(procs: int) -> Shared:
    ctx = mp.get_context("fork")
    return Shared(
        delivered=ctx.RawArray(ctypes.c_int64, procs),
        synced=ctx.RawArray(ctypes.c_int64, procs),
        final=ctx.RawValue(ctypes.c_int64, -1),
    )


async def sleep_until(t: float) -> None:
    delay = t - time.perf_counter()
    if delay > 0:
        await asyncio.sleep(delay)


async def gather_bounded(coros: Sequence[Awaitable[Any]], limit: int) -> list[Any]:
    sem = asyncio.Semaphore(limit)

    async def one(c: Awaitable[Any]) -> Any:
        async with sem:
            return await c

    return await asyncio.gather(*(one(c) for c in coros))


async def close_all(sessions: Sequence[Session], goodbye: bool = True) -> None:
    async def one(s: Session) -> None:
        with contextlib.suppress(Exception):
            if goodbye:
                await s.close()
            else:
                await s.ws.close()

    await gather_bounded([one(s) for s in sessions], 200)


def shard(total: int, index: int, procs: int) -> range:
    """The indices (of ``total``) that worker ``index`` of ``procs`` owns."""
    return range(index, total, procs)


# ----------------------------------------------------------------------------- rpc


async def rpc_worker(p: dict[str, Any], index: int, procs: int, ctl: Control, sh: Shared) -> None:
    url, realm = p["url"], p["realm"]
    mine = list(shard(p["callers"], index, procs))
    count = p["count"]
    callee: Session | None = None
    if index == 0:
        callee = await join(p.get("callee_url") or url, realm, client=p["client"])
        await callee.register(PROCEDURE)
    callers = [await join(url, realm, client=p["client"]) for _ in mine]
    # --count is split exactly among the callers (caller j gets its share).
    quotas = [
        (count // p["callers"]) + (1 if j < count % p["callers"] else 0) if count else 1 << 62
        for j in mine
    ]
    ctl.send("ready")
    _, win = await ctl.recv()
    window: Window = win
    payload = [b"\x00" * p["payload"]]
    report = WorkerReport()
    lat = array.array("q")

    async def serve(s: Session) -> None:
        recv, send = s.ws.recv, s.ws.send
        while True:
            msg = unpackb(await recv())
            if msg[0] == 68:  # INVOCATION -> YIELD the arguments back
                await send(packb([YIELD, msg[1], {}, msg[4] if len(msg) > 4 else []]))

    async def call_loop(s: Session, quota: int) -> None:
        recv, send = s.ws.recv, s.ws.send
        clock = time.perf_counter_ns
        mark, end = int(window.t_mark * 1e9), int(window.t_end * 1e9)
        req = 0
        await sleep_until(window.t_go)
        while req < quota:
            t0 = clock()
            if t0 >= end:
                break
            req += 1
            await send(packb([CALL, req, {}, PROCEDURE, payload]))
            msg = unpackb(await recv())
            t1 = clock()
            report.sent += 1
            # A router answers RESULT; the floor's echo server echoes the CALL itself.
            if msg[1] != req or (msg[0] != RESULT and msg[0] != CALL):
                report.errors += 1
                break
            report.received += 1
            if t0 >= mark:
                report.measured += 1
                lat.append(t1 - t0)
                report.t_first = min(report.t_first, t0 / 1e9)
                report.t_last = max(report.t_last, t1 / 1e9)

    serving = asyncio.create_task(serve(callee)) if callee else None
    await asyncio.gather(*(call_loop(s, q) for s, q in zip(callers, quotas, strict=True)))
    report.latencies = lat.tobytes()
    report.t_first = window.t_mark
    ctl.send("report", report)
    if serving:
        serving.cancel()
    await close_all(callers + ([callee] if callee else []))


# ----------------------------------------------------------------------------- fanout


class Subscriber:
    """Counts events (``args = [seq, ts_ns, payload]``) and their publish-to-receive latency."""

    __slots__ = ("lat", "measured", "n", "session", "synced", "t_last")

    def __init__(self, session: Session) -> None:
        self.session = session
        self.n = 0
        self.measured = 0
        self.synced = False
        self.t_last = 0.0
        self.lat = array.array("q")


def is_marker(data: bytes) -> bool:
    msg = unpackb(data)
    return (msg[0] == EVENT or msg[0] == PUBLISH) and len(msg) > 4 and msg[4][0] < 0


async def stall(session: Session, synced: Any, index: int) -> None:
    """A ``--stalled`` subscriber: read until the first sync marker (so its subscription is
    known to be live), then stop reading from the socket for good."""
    ws = session.ws
    while not is_marker(await ws.recv()):  # type: ignore[arg-type]
        pass
    ws.transport.pause_reading()  # type: ignore[union-attr]
    synced[index] += 1


async def was_dropped(session: Session, deadline: float) -> bool:
    """Resume reading a stalled subscriber and tell whether the router has closed it: a
    close frame, EOF or reset shows up behind whatever was still buffered. Idle for
    ``STALLED_IDLE_S`` with the connection open means it was not dropped."""
    ws = session.ws
    if isinstance(ws, FastConnection) and ws._closed is not None:
        return True
    transport = ws.transport
    if transport is None or transport.is_closing():
        return True
    transport.resume_reading()
    recv = ws.recv_batch if isinstance(ws, FastConnection) else ws.recv
    while time.perf_counter() < deadline:
        try:
            async with asyncio.timeout(STALLED_IDLE_S):
                await recv()
        except TimeoutError:
            return False
        except Exception:  # ConnectionClosed (close frame, EOF), a reset
            return True
    return False


async def fanout_worker(
    p: dict[str, Any], index: int, procs: int, ctl: Control, sh: Shared
) -> None:
    sub_url, pub_url, realm = p["url"], p.get("pub_url") or p["url"], p["realm"]
    total_subs: int = p["subscribers"]
    mine = list(shard(total_subs, index, procs))
    sessions = await gather_bounded([join(sub_url, realm, client=p["client"]) for _ in mine], 50)
    subs = [Subscriber(s) for s in sessions]
    for sub in subs:
        await sub.session.subscribe(TOPIC)
    # --stalled: more subscribers, on small receive buffers, that stop reading after the
    # sync marker. They are not in the delivered/expected counts nor in the window.
    total_stalled: int = p.get("stalled") or 0
    stalled = await gather_bounded(
        [
            join(sub_url, realm, client=p["client"], rcvbuf=STALLED_RCVBUF)
            for _ in shard(total_stalled, index, procs)
        ],
        50,
    )
    for st in stalled:
        await st.subscribe(TOPIC)
    publisher: Session | None = (
        await join(pub_url, realm, client=p["client"]) if index == 0 else None
    )

    wake = asyncio.Event()  # set by local subscribers for a publisher waiting on the window
    win: Window | None = None
    local_delivered = 0
    delivered, synced, final = sh.delivered, sh.synced, sh.final

    async def sub_loop(sub: Subscriber) -> None:
        nonlocal local_delivered
        ws = sub.session.ws
        if isinstance(ws, FastConnection):
            recv_batch = ws.recv_batch
        else:
            recv = ws.recv

            async def recv_batch() -> list[bytes]:
                return [await recv()]  # type: ignore[list-item]

        clock = now_ns
        lat_append = sub.lat.append
        mark_ns = -1
        while True:
            batch = await recv_batch()
            t = clock()
            got = 0
            for data in batch:
                msg = unpackb(data)
                code = msg[0]
                # A router delivers EVENT; the floor's broadcast server forwards PUBLISH.
                if code != EVENT and code != PUBLISH:
                    continue
                seq, ts = msg[4][0], msg[4][1]
                if seq < 0:  # sync marker
                    if not sub.synced:
                        sub.synced = True
                        synced[index] += 1
                    continue
                if mark_ns < 0 and win is not None:
                    mark_ns = win.mark_ns
                got += 1
                if ts >= mark_ns >= 0:
                    sub.measured += 1
                    sub.t_last = t
                    lat_append(t - ts)
            if got:
                sub.n += got
                local_delivered += got
                delivered[index] = local_delivered
                wake.set()

    tasks = [asyncio.create_task(sub_loop(s)) for s in subs]
    tasks += [asyncio.create_task(stall(st, synced, index)) for st in stalled]

    if publisher is not None:
        # Repeat a marker until every subscriber (in every worker) has seen one, so the
        # subscriptions are known to be live (on a cluster they propagate asynchronously).
        deadline = time.perf_counter() + p["timeout"]
        want = total_subs + total_stalled
        while sum(synced) < want:
            if time.perf_counter() > deadline:
                raise RuntimeError(f"only {sum(synced)}/{want} subscribers got the marker")
            await publisher.send([PUBLISH, publisher.next_id(), {}, TOPIC, [-1, 0]])
            await asyncio.sleep(0.02)

    ctl.send("ready")
    _, win = await ctl.recv()
    assert win is not None
    report = WorkerReport()

    if publisher is not None:
        if p["scenario"] == "fanout-rate":
            report.sent = await publish_rate(publisher, p, win)
        else:
            report.sent = await publish_windowed(publisher, p, win, sh, wake, total_subs, procs)
        final.value = report.sent

    # Drain: wait until every local subscriber has every event, bounded by --timeout.
    await sleep_until(win.t_end)
    deadline = time.perf_counter() + p["timeout"]
    while time.perf_counter() < deadline:
        if final.value >= 0 and all(s.n >= final.value for s in subs):
            break
        await asyncio.sleep(0.005)
    for t in tasks:
        t.cancel()
    lat = array.array("q")
    for s in subs:
        lat.extend(s.lat)
        report.received += s.n
        report.measured += s.measured
        report.t_last = max(report.t_last, (s.t_last + _BASE_NS) / 1e9)
    report.t_first = win.t_mark
    report.latencies = lat.tobytes()
    report.extra["subscribers"] = len(subs)
    report.extra["short_subscribers"] = sum(1 for s in subs if s.n != final.value)
    ctl.send("report", report)
    if total_stalled:
        await ctl.recv()  # "check": the coordinator has read the broker's CPU and RSS
        deadline = time.perf_counter() + p["timeout"]
        dropped = await asyncio.gather(*(was_dropped(st, deadline) for st in stalled))
        ctl.send("stalled", sum(dropped))
    await close_all([*sessions, *stalled, *([publisher] if publisher else [])])


async def publish_windowed(
    pub: Session,
    p: dict[str, Any],
    win: Window,
    sh: Shared,
    wake: asyncio.Event,
    total_subs: int,
    procs: int,
) -> int:
    """Publish as fast as the window allows: at most ``--window`` events per subscriber
    (on average) published but not yet delivered."""
    send = pub.ws.send
    delivered = sh.delivered
    limit = p["window"] * total_subs
    resume = limit // 2
    count = p["count"] or 1 << 62
    payload = b"\x00" * p["payload"]
    clock = time.perf_counter
    seq = 0
    await sleep_until(win.t_go)
    end = win.t_end
    while seq < count and clock() < end:
        outstanding = seq * total_subs - (delivered[0] if procs == 1 else sum(delivered))
        if outstanding > limit:
            # Wait for subscribers to catch up to half the window (local ones wake us;
            # remote ones are polled).
            while seq * total_subs - sum(delivered) > resume and clock() < end + p["timeout"]:
                wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.002):
                        await wake.wait()
            continue
        await send(packb([PUBLISH, seq + 1, {}, TOPIC, [seq, now_ns(), payload]]))
        seq += 1
    return seq


async def publish_rate(pub: Session, p: dict[str, Any], win: Window) -> int:
    """Publish ``--rate`` events per second on a fixed schedule (no catching up in bursts
    beyond what the schedule says)."""
    interval = 1.0 / p["rate"]
    count = p["count"] or 1 << 62
    payload = b"\x00" * p["payload"]
    seq = 0
    t_next = win.t_go
    while seq < count and t_next < win.t_end:
        await sleep_until(t_next)
        await pub.ws.send(packb([PUBLISH, seq + 1, {}, TOPIC, [seq, now_ns(), payload]]))
        seq += 1
        t_next = win.t_go + seq * interval
    return seq


# ----------------------------------------------------------------------------- publish-ack


async def ack_worker(p: dict[str, Any], index: int, procs: int, ctl: Control, sh: Shared) -> None:
    """Acknowledged publishes: each publisher keeps ``--inflight`` PUBLISHes unanswered
    (1: closed loop); latency is PUBLISH sent → PUBLISHED received. One subscriber on
    ``--url`` (node B) drains the events so they really cross nodes."""
    realm, pub_url = p["realm"], p.get("pub_url") or p["url"]
    mine = list(shard(p["publishers"], index, procs))
    subscriber: Session | None = None
    if index == 0:
        subscriber = await join(p["url"], realm, client=p["client"])
        await subscriber.subscribe(TOPIC)
    publishers = [await join(pub_url, realm, client=p["client"]) for _ in mine]
    count = p["count"]
    quotas = [
        (count // p["publishers"]) + (1 if j < count % p["publishers"] else 0) if count else 1 << 62
        for j in mine
    ]
    ctl.send("ready")
    _, win = await ctl.recv()
    window: Window = win
    report = WorkerReport()
    lat = array.array("q")
    delivered = 0

    async def drain(s: Session) -> None:
        nonlocal delivered
        ws = s.ws
        while True:
            if isinstance(ws, FastConnection):
                delivered += len(await ws.recv_batch())
            else:
                await ws.recv()
                delivered += 1

    draining = asyncio.create_task(drain(subscriber)) if subscriber else None
    await asyncio.gather(
        *(ack_loop(s, q, p, window, report, lat) for s, q in zip(publishers, quotas, strict=True))
    )
    report.latencies = lat.tobytes()
    report.t_first = window.t_mark
    report.extra["delivered"] = delivered
    ctl.send("report", report)
    if draining:
        draining.cancel()
    await close_all(publishers + ([subscriber] if subscriber else []))


async def ack_loop(
    s: Session,
    quota: int,
    p: dict[str, Any],
    window: Window,
    report: WorkerReport,
    lat: array.array[int],
) -> None:
    """One publisher: send while fewer than ``--inflight`` are unanswered; time each answer."""
    recv, send = s.ws.recv, s.ws.send
    clock = time.perf_counter_ns
    mark, end = int(window.t_mark * 1e9), int(window.t_end * 1e9)
    stop = end + int(p["timeout"] * 1e9)
    payload = [b"\x00" * p["payload"]]
    sent_at: dict[int, int] = {}
    room = asyncio.Semaphore(p["inflight"])
    finished = False

    async def answers() -> None:
        while (sent_at or not finished) and clock() < stop:
            msg = unpackb(await recv())
            t1 = clock()
            code = msg[0]
            if code != PUBLISHED and code != ERROR:
                continue
            t0 = sent_at.pop(msg[1] if code == PUBLISHED else msg[2], None)
            if t0 is None:
                continue
            room.release()
            report.sent += 1
            if code == ERROR:
                report.errors += 1
                continue
            report.received += 1
            if t0 >= mark:
                report.measured += 1
                lat.append(t1 - t0)
                report.t_last = max(report.t_last, t1 / 1e9)

    reader = asyncio.create_task(answers())
    await sleep_until(window.t_go)
    req = 0
    while req < quota:
        await room.acquire()
        t0 = clock()
        if t0 >= end:
            break
        req += 1
        sent_at[req] = t0
        await send(packb([PUBLISH, req, {"acknowledge": True}, TOPIC, payload]))
    finished = True
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(p["timeout"]):
            await reader
    reader.cancel()


# ----------------------------------------------------------------------------- connections


async def connections_worker(
    p: dict[str, Any], index: int, procs: int, ctl: Control, sh: Shared
) -> None:
    url, realm = p["url"], p["realm"]
    mine = len(shard(p["sessions"], index, procs))
    ctl.send("ready")
    _, win = await ctl.recv()
    await sleep_until(win.t_go)
    report = WorkerReport(sent=mine)
    lat = array.array("q")
    sessions: list[Session] = []
    clock = time.perf_counter_ns

    async def one() -> None:
        t0 = clock()
        try:
            s = await join(url, realm, open_timeout=p["timeout"], client=p["client"])
        except Exception:
            report.errors += 1
            return
        t1 = clock()
        sessions.append(s)
        lat.append(t1 - t0)
        report.t_first = min(report.t_first, t0 / 1e9)
        report.t_last = max(report.t_last, t1 / 1e9)

    # --concurrency is the total in flight, split among the workers (keep it within the
    # server's listen backlog, or dropped SYNs add 1 s retransmits to the set-up times).
    await gather_bounded([one() for _ in range(mine)], max(1, p["concurrency"] // procs))
    report.received = report.measured = len(sessions)
    report.latencies = lat.tobytes()
    ctl.send("report", report)
    await ctl.recv()  # "close": the coordinator has read the broker's RSS
    await close_all(sessions, goodbye=False)


WORKERS: dict[
    str, Callable[[dict[str, Any], int, int, Control, Shared], Coroutine[Any, Any, None]]
] = {
    "rpc": rpc_worker,
    "fanout": fanout_worker,
    "fanout-rate": fanout_worker,
    "cluster": fanout_worker,
    "connections": connections_worker,
    "publish-ack": ack_worker,
}


def _worker_main(
    p: dict[str, Any], index: int, procs: int, conn: Connection, sh: Shared, cpus: list[int]
) -> None:
    if cpus:
        os.sched_setaffinity(0, cpus)
    ctl = Control(conn)
    try:
        coro = WORKERS[p["scenario"]](p, index, procs, ctl, sh)
        if os.environ.get("BENCH_PROFILE"):  # e.g. BENCH_PROFILE=/tmp/w.prof: cProfile a worker
            import cProfile

            cProfile.runctx(
                "asyncio.run(coro)",
                globals(),
                {"coro": coro, "asyncio": asyncio},
                f"{os.environ['BENCH_PROFILE']}.{index}",
            )
        else:
            asyncio.run(coro)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            ctl.send("error", f"worker {index}: {type(exc).__name__}: {exc}")
        raise SystemExit(1) from exc
    ctl.send("done")


# ----------------------------------------------------------------------------- coordinator


class ScenarioError(Exception):
    pass


def _recv(conn: Connection, timeout: float, expect: str) -> Any:
    if not conn.poll(timeout):
        raise ScenarioError(f"a worker did not send {expect!r} within {timeout:.0f}s")
    try:
        kind, payload = conn.recv()
    except EOFError as exc:
        raise ScenarioError("a worker died") from exc
    if kind == "error":
        raise ScenarioError(str(payload))
    if kind != expect:
        raise ScenarioError(f"expected {expect!r} from a worker, got {kind!r}")
    return payload


def run(p: dict[str, Any]) -> dict[str, Any]:
    """Run one scenario with the parameters ``p``; return the result record."""
    scenario = p["scenario"]
    for key in ("url", "pub_url", "callee_url"):
        if p.get(key):
            check_local(p[key])
    if scenario == "cluster" and not p.get("pub_url"):
        raise SystemExit("cluster needs --pub-url (node A) besides --url (node B)")
    raise_nofile()
    procs, pids, cpus = p["procs"], p["pid"], p["cpu"]
    if cpus:
        os.sched_setaffinity(0, cpus)
    ctx = mp.get_context("fork")
    sh = share(procs)
    baseline = procstat.sample(pids) if pids else None
    conns: list[Connection] = []
    workers: list[mp.process.BaseProcess] = []
    for i in range(procs):
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_worker_main, args=(p, i, procs, there, sh, cpus), daemon=True)
        proc.start()
        there.close()
        conns.append(here)
        workers.append(proc)
    try:
        setup_timeout = p["timeout"] + 30.0
        for c in conns:
            _recv(c, setup_timeout, "ready")
        t_go = time.perf_counter() + 0.05
        win = Window(t_go, t_go + p["warmup"], t_go + p["warmup"] + p["duration"])
        if scenario == "connections":
            win = Window(t_go, t_go, t_go)
        for c in conns:
            c.send(("go", win))
        time.sleep(max(0.0, win.t_mark - time.perf_counter()))
        before = procstat.sample(pids) if pids else None
        m_before = procstat.machine()
        limit = win.t_end - time.perf_counter() + p["timeout"] + 30.0
        reports: list[WorkerReport] = [_recv(c, limit, "report") for c in conns]
        after = procstat.sample(pids) if pids else None
        m_after = procstat.machine()
        broker_cpu = after.cpu_s - before.cpu_s if before and after else 0.0
        extra: dict[str, Any] = {"machine": procstat.noise(m_before, m_after, broker_cpu)}
        if p.get("stalled") and scenario != "rpc" and scenario != "connections":
            # Only now (the broker's figures are taken) may the stalled subscribers read
            # again to find out whether the router dropped them.
            for c in conns:
                c.send(("check", None))
            extra["stalled_dropped"] = sum(_recv(c, p["timeout"] + 30.0, "stalled") for c in conns)
        if scenario == "connections":
            # Let the broker settle, read its RSS with every session open, then close them.
            time.sleep(p["settle"])
            loaded = procstat.sample(pids) if pids else None
            if baseline is not None and loaded is not None:
                joined = max(1, sum(r.received for r in reports))
                extra["broker_idle_rss_kib"] = baseline.rss_kib
                extra["broker_loaded_rss_kib"] = loaded.rss_kib
                extra["rss_per_session_kib"] = round(
                    (loaded.rss_kib - baseline.rss_kib) / joined, 2
                )
            for c in conns:
                c.send(("close", None))
        for c in conns:
            _recv(c, p["timeout"] + 30.0, "done")
    finally:
        for w in workers:
            w.join(5)
            if w.is_alive():
                w.kill()
    return assemble(p, reports, procstat.delta(before, after), extra)


def assemble(
    p: dict[str, Any],
    reports: list[WorkerReport],
    broker: dict[str, Any] | None,
    extra: dict[str, Any],
) -> dict[str, Any]:
    scenario = p["scenario"]
    lat = array.array("q")
    for r in reports:
        lat.frombytes(r.latencies)
    sent = sum(r.sent for r in reports)
    received = sum(r.received for r in reports)
    measured = sum(r.measured for r in reports)
    errors = sum(r.errors for r in reports)
    t_first = min(r.t_first for r in reports)
    t_last = max(r.t_last for r in reports)
    elapsed = max(t_last - t_first, 1e-9) if measured else 0.0
    throughput = measured / elapsed if elapsed else 0.0
    params = {
        k: v
        for k, v in p.items()
        if k not in ("scenario", "target", "url", "pub_url", "callee_url", "pid", "json_only")
        and not (k in ("callers",) and scenario != "rpc")
        and not (k in ("publishers", "inflight") and scenario != "publish-ack")
        and not (
            k in ("subscribers", "window", "rate", "stalled")
            and scenario in ("rpc", "connections", "publish-ack")
        )
        and not (k in ("sessions", "concurrency", "settle") and scenario != "connections")
    }
    record: dict[str, Any] = {
        "scenario": scenario,
        "target": p["target"],
        "url": p["url"],
        "params": params,
        "unit": {
            "rpc": "calls/s",
            "connections": "setups/s",
            "publish-ack": "acked publishes/s",
        }.get(scenario, "events/s"),
        "throughput": round(throughput, 1),
        "latency_ms": percentiles(lat),
        "elapsed_s": round(elapsed, 3),
        "sent": sent,
        "errors": errors,
    }
    for key in ("pub_url", "callee_url"):
        if p.get(key):
            record[key] = p[key]
    if scenario in ("fanout", "fanout-rate", "cluster"):
        record["published"] = sent
        record["delivered"] = received
        record["expected"] = sent * p["subscribers"]
        record["short_subscribers"] = sum(r.extra.get("short_subscribers", 0) for r in reports)
        record["stalled"] = p.get("stalled") or 0
        record["stalled_dropped"] = extra.pop("stalled_dropped", 0)
    elif scenario == "rpc":
        record["received"] = received
    elif scenario == "publish-ack":
        record["published"] = sent
        record["acked"] = received
        record["delivered"] = sum(r.extra.get("delivered", 0) for r in reports)
    else:
        record["joined"] = received
    record["broker"] = broker
    if broker and measured and scenario != "connections":
        record["broker"]["cpu_us_per_op"] = round(broker["cpu_s"] / measured * 1e6, 3)
        record["broker"]["sys_us_per_op"] = round(broker["sys_s"] / measured * 1e6, 3)
        for key in ("slept", "preempted"):  # context switches of the broker processes
            record["broker"][f"{key}_per_op"] = round(broker[key] / measured, 4)
    record.update(extra)
    return record


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


# ----------------------------------------------------------------------------- CLI

DEFAULTS: dict[str, dict[str, Any]] = {
    "rpc": {"callers": 50},
    "fanout": {"subscribers": 100},
    "cluster": {"subscribers": 100},
    "fanout-rate": {"subscribers": 1000, "rate": 10.0},
    "connections": {"sessions": 10000},
    "publish-ack": {"publishers": 10},
}


def parse_cpus(text: str | None) -> list[int]:
    if not text:
        return []
    cpus: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    return cpus


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.loadgen", description=__doc__.split("\n")[0])
    ap.add_argument("scenario", choices=SCENARIOS)
    ap.add_argument("--url", required=True, help="router URL (node B for cluster)")
    ap.add_argument("--pub-url", help="cluster: the publisher's router URL (node A)")
    ap.add_argument("--callee-url", help="rpc: the callee's router URL (default: --url)")
    ap.add_argument("--realm", default="realm1")
    ap.add_argument("--target", default="router", help="name for the JSON record")
    ap.add_argument("--pid", type=int, action="append", default=[], help="broker PID (repeat)")
    ap.add_argument("--client", choices=CLIENTS, default="fast", help="client connection")
    ap.add_argument("--procs", type=int, default=1, help="client worker processes")
    ap.add_argument("--cpu", type=parse_cpus, default=[], help="pin the client, e.g. 1 or 2-3")
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds")
    ap.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds first")
    ap.add_argument("--count", type=int, default=0, help="bound: calls / publishes (0: none)")
    ap.add_argument("--timeout", type=float, default=15.0, help="setup/drain bound, seconds")
    ap.add_argument("--payload", type=int, default=16, help="payload bytes")
    ap.add_argument("--callers", type=int, help="rpc: closed-loop callers (50)")
    ap.add_argument("--subscribers", type=int, help="fanout: subscribers (100; 1000 for -rate)")
    ap.add_argument("--window", type=int, default=64, help="fanout: outstanding events/sub")
    ap.add_argument("--rate", type=float, help="fanout-rate: publishes per second (10)")
    ap.add_argument(
        "--stalled",
        type=int,
        default=0,
        help="fanout: extra subscribers that stop reading after subscribing (0)",
    )
    ap.add_argument("--sessions", type=int, help="connections: sessions to open (10000)")
    ap.add_argument(
        "--concurrency", type=int, default=100, help="connections: set-ups in flight (total)"
    )
    ap.add_argument("--settle", type=float, default=1.0, help="connections: wait before RSS")
    ap.add_argument("--publishers", type=int, help="publish-ack: publishers (10)")
    ap.add_argument(
        "--inflight",
        type=int,
        default=1,
        help="publish-ack: unanswered PUBLISHes per publisher (1: closed loop)",
    )
    return ap


def params_from(ns: argparse.Namespace) -> dict[str, Any]:
    p = vars(ns).copy()
    for key, value in DEFAULTS.get(p["scenario"], {}).items():
        if p.get(key) is None:
            p[key] = value
    for key in ("callers", "subscribers", "rate", "sessions", "publishers"):
        if p.get(key) is None:
            p.pop(key, None)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = params_from(build_parser().parse_args(argv))
    try:
        record = run(p)
    except ScenarioError as exc:
        print(json.dumps({"scenario": p["scenario"], "target": p["target"], "error": str(exc)}))
        return 1
    print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
