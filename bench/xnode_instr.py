"""Router instructions per call and per event (callgrind): local against cross-node.

CPU seconds on this 2-core machine mix the work with where the scheduler puts it: with
both nodes and Redis sharing one core, every hop is a context switch and a cold cache.
Instructions are the work alone, repeatable whatever else runs. Each broker runs under
``valgrind --tool=callgrind --instr-atstart=no``; after ``--warmup`` calls instrumentation
is switched on (``callgrind_control -i on``) for ``--count`` calls by the load generator
(50 closed-loop callers, one callee), then dumped. Per tree: the single node (``local``),
then two nodes on one redis-server, callee on A and callers on B (``cross``); with
``--redis-path`` also the same two nodes with ``--peer off`` (calls through Redis). Only
user-space instructions are counted (no kernel). Prints one JSON line per tree.

``--fanout`` measures events instead: ``--subscribers`` sessions (100) on the single
node, or on node B with the publisher on node A; the publisher sends bursts of
``--burst`` unacknowledged PUBLISHes (10) and waits until every subscriber has them
all (a driver of its own here: ``bench.wamp`` sessions, no load generator); sessions
join and subscribe before instrumentation is switched on and leave after it is off. The
figure is instructions per delivered event (both nodes' together for ``cross``).

    python -m bench.xnode_instr --tree before=/work/wt/before --tree after=. --count 3000
    python -m bench.xnode_instr --tree after=. --fanout --count 1000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import wamp
from bench.compare import ROOT, Server, _drain, _wait_listening, free_port
from bench.xnode import start_redis

# under valgrind a node runs ~50x slower: liveness timings far beyond the run
SLOW_CLUSTER = """[cluster]
node_timeout = 120.0
heartbeat_interval = 10.0
probe_interval = 60.0
probe_timeout = 60.0
command_timeout = 60.0
"""


def _node(tree: Path, out: Path, extra: list[str]) -> Server:
    config = out.with_suffix(".toml")
    config.write_text(SLOW_CLUSTER)
    args = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    args += [sys.executable, "-m", "broker", "--host", "127.0.0.1", "--port", "0"]
    args += ["--config", str(config), *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(tree))
    proc = subprocess.Popen(
        args, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )
    server = Server(out.stem, proc)
    server.url = _wait_listening(server, 600)
    _drain(server)
    return server


def _load(argv: list[str], count: int) -> None:
    cmd = [sys.executable, "-m", "bench.loadgen", *argv, "--callers", "50"]
    cmd += ["--count", str(count), "--duration", "900", "--warmup", "0", "--timeout", "300"]
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")


TOPIC = "bench.instr.fanout"


async def _fanout(pub_url: str, sub_url: str, servers: list[Server], p: argparse.Namespace) -> None:
    """``p.warmup`` then ``p.count`` events (instrumented) to every subscriber, in bursts.

    Sessions join and subscribe before, and leave after, the instrumented window: the
    figure is the events' work only.
    """
    subs = [await wamp.join(sub_url, open_timeout=120) for _ in range(p.subscribers)]
    for sub in subs:
        await sub.subscribe(TOPIC)
    pub = await wamp.join(pub_url, open_timeout=120)
    sent = 0

    async def drain(sub: wamp.Session, n: int) -> None:
        seen = 0
        while seen < n:
            msg = await sub.recv()
            seen += msg[0] == wamp.EVENT

    async def publish(count: int) -> None:
        nonlocal sent
        end = sent + count
        while sent < end:
            burst = min(p.burst, end - sent)
            for i in range(burst):
                await pub.send([wamp.PUBLISH, sent + i + 1, {}, TOPIC, [sent + i]])
            sent += burst
            await asyncio.gather(*(drain(sub, burst) for sub in subs))

    try:
        async with asyncio.timeout(max(600, p.count + p.warmup)):
            await publish(p.warmup)
            _control(servers, "-i", "on")
            await publish(p.count)
            _control(servers, "-i", "off")
    finally:
        await asyncio.gather(*(s.close() for s in [pub, *subs]))


def _control(servers: list[Server], *args: str) -> None:
    for server in servers:
        subprocess.run(["callgrind_control", *args, str(server.proc.pid)], capture_output=True)


def _instructions(out: Path) -> int:
    """The ``totals`` of every dump callgrind wrote for one process."""
    total = 0
    for path in out.parent.glob(out.name + "*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:"):
                total += int(line.split()[1])
    return total


def _measure(servers: list[Server], argv: list[str], p: argparse.Namespace) -> int:
    """Instructions of ``servers`` over ``p.count`` calls or events (after a warm-up).

    ``argv``: the load generator's (calls), or [publisher URL, subscribers' URL] (events).
    """
    try:
        if p.fanout:
            asyncio.run(_fanout(argv[0], argv[1], servers, p))
        else:
            _load(argv, p.warmup)
            _control(servers, "-i", "on")
            _load(argv, p.count)
            _control(servers, "-i", "off")
        _control(servers, "-d")
    finally:
        for server in servers:
            server.stop()
    return sum(_instructions(Path(server.name)) for server in servers)


def one_tree(name: str, tree: Path, p: argparse.Namespace) -> dict[str, Any]:
    record: dict[str, Any] = {"tree": name, "count": p.count}
    with tempfile.TemporaryDirectory() as tmp:
        work = tmp if p.keep is None else str(Path(p.keep, name).resolve())
        os.makedirs(work, exist_ok=True)
        single = _node(tree, Path(work, "local.cg"), [])
        single.name = str(Path(work, "local.cg"))
        argv = [single.url, single.url] if p.fanout else ["rpc", "--url", single.url]
        local = _measure([single], argv, p)
        per = p.count * (p.subscribers if p.fanout else 1)
        record["per"] = "event" if p.fanout else "call"
        record["local"] = local // per
        port = free_port()
        redis = start_redis(port, [0, 1], work)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            modes = [("cross", [])] + ([("cross_redis", ["--peer", "off"])] if p.redis_path else [])
            for mode, extra in modes:
                nodes = []
                for node in ("a", "b"):
                    out = Path(work, f"{mode}-{node}.cg")
                    server = _node(tree, out, ["--redis", url, "--node-id", node, *extra])
                    server.name = str(out)
                    nodes.append(server)
                a_url, b_url = nodes[0].url, nodes[1].url
                argv = (
                    [a_url, b_url] if p.fanout else ["rpc", "--url", b_url, "--callee-url", a_url]
                )
                cross = _measure(nodes, argv, p)
                record[mode] = cross // per
                record[f"{mode}_over_local"] = round(cross / max(local, 1), 3)
        finally:
            redis.terminate()
            redis.wait(10)
    return record


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=[], help="NAME=PATH (repeat)")
    ap.add_argument("--count", type=int, default=3000, help="measured calls (or events)")
    ap.add_argument("--warmup", type=int, default=1000, help="unmeasured calls (events) first")
    ap.add_argument("--redis-path", action="store_true", help="also: both nodes --peer off")
    ap.add_argument("--keep", help="write the callgrind files under KEEP/<tree> (kept)")
    ap.add_argument("--fanout", action="store_true", help="events instead of calls")
    ap.add_argument("--subscribers", type=int, default=100, help="--fanout: subscribers")
    ap.add_argument("--burst", type=int, default=10, help="--fanout: events per burst")
    p = ap.parse_args()
    trees = [t.split("=", 1) for t in p.tree] or [["this", str(ROOT)]]
    for name, path in trees:
        print(json.dumps(one_tree(name, Path(path).resolve(), p)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
