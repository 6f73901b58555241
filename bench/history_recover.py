"""Recovering missed events from the event history: router-side repair and SDK resume.

Cases (each in a fresh child process, against real broker processes and redis-server
on loopback; ``--tree NAME=PATH`` runs the same cases against another checkout, so a
before/after comparison comes from one run):

- ``repair``: two nodes on one Redis, ``--subscribers`` SDK sessions subscribed on node
  B. B is stopped (SIGSTOP), its Redis connections are killed (so nothing waits in its
  socket buffers: every event is missed), ``--events`` events are published on node A,
  B is resumed (SIGCONT). Figures: ``total_s`` SIGCONT until every subscriber has them
  all (failure seen, reconnect backoff, XRANGE, delivery, the subscribers' decoding);
  ``catchup_s`` / ``read_s`` the node's own log of its catch-up (XRANGE + deliver / read).
- ``sdk-memory`` / ``sdk-redis``: ``--events`` events are kept on a single broker
  (memory history) or on a Redis cluster node; a fresh SDK session subscribes and a
  ``client_sdk.resume.Resumer`` recovers everything after the publication before them
  (``get_events`` pages + handing each event to the application handler):
  ``total_s`` from the start of ``recover`` until the handler has them all.

Usage::

    python -m bench.history_recover                      # this tree, 3 runs per case
    python -m bench.history_recover --tree before=/path/to/old --tree after=. --runs 3

Prints one JSON line per run and a Markdown table of medians.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
CASES = ("repair", "sdk-memory", "sdk-redis")
TOPIC = "bench.hist.recover"
ACK_EVERY = 250

CONFIG = """
[[realm]]
name = "realm1"

[[realm.history]]
uri = "bench.hist."
match = "prefix"
limit = 30000
ttl = 3600
"""

_LOG = re.compile(r"recovered (\d+) events on \d+ topics \(read ([\d.]+) s, total ([\d.]+) s\)")


# --- child side (imports the tree under test) ------------------------------------------------
# Counter and _kill_connections stay in this file (not tests.support): the child imports
# the tree under test, and an older checkout need not have tests.support.processes'
# kill_connections. bench.history_redis imports this Counter.
class Counter:
    """Events received, and a wake-up when a target is reached."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.reached = asyncio.Event()
        self.second_at = 0.0
        """When the second event came (the first missed one, in ``repair``)."""

    def __call__(self, _event: Any) -> None:
        self.count += 1
        if self.count == 2:
            self.second_at = time.perf_counter()
        if self.count >= self.target:
            self.reached.set()

    async def until(self, target: int, timeout: float = 60.0) -> None:
        self.target = target
        if self.count < target:
            self.reached.clear()
            await asyncio.wait_for(self.reached.wait(), timeout)


async def _publish(publisher: Any, count: int) -> int:
    """Publish ``count`` events (every ``ACK_EVERY``-th and the last acknowledged)."""
    import client_sdk

    ack = client_sdk.PublishOptions(acknowledge=True)
    last = 0
    for n in range(count):
        acked = (n + 1) % ACK_EVERY == 0 or n == count - 1
        pub = await publisher.publish(TOPIC, n, {"price": 1.25}, options=ack if acked else None)
        last = pub or last
    return last


def _kill_connections(url: str, pid: int) -> int:
    """CLIENT KILL every Redis connection of process ``pid``."""
    import redis

    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[9] in inodes:
            ports.add(int(parts[1].split(":")[1], 16))
    client = redis.Redis.from_url(url)
    killed = 0
    for info in client.client_list():
        if int(info["addr"].rsplit(":", 1)[1]) in ports:
            killed += int(client.execute_command("CLIENT", "KILL", "ID", info["id"]))
    client.close()
    return killed


async def repair_case(config: Path, events: int, subscribers: int) -> dict[str, Any]:
    """Node B misses ``events`` events entirely; time until its subscribers have them all."""
    import client_sdk
    from bench import procstat
    from tests.support.processes import start_broker, start_redis

    server = start_redis()
    nodes = []
    try:
        for i in range(2):
            args = ("--redis", server.url, "--node-id", f"b{i}", "--config", str(config))
            nodes.append(start_broker(*args))
        counters = [Counter() for _ in range(subscribers)]
        sessions = [await client_sdk.connect(nodes[1].url, "realm1") for _ in counters]
        for session, counter in zip(sessions, counters, strict=True):
            await session.subscribe(TOPIC, counter)
        publisher = await client_sdk.connect(nodes[0].url, "realm1")
        await _publish(publisher, 1)
        for counter in counters:
            await counter.until(1)
        nodes[1].signal(signal.SIGSTOP)
        try:
            killed = _kill_connections(server.url, nodes[1].proc.pid)
            await _publish(publisher, events)
            cpu = procstat.sample([nodes[1].proc.pid]).cpu_s, time.process_time()
        finally:
            nodes[1].signal(signal.SIGCONT)
        started = time.perf_counter()
        for counter in counters:
            await counter.until(events + 1)
        total = time.perf_counter() - started
        node_cpu = procstat.sample([nodes[1].proc.pid]).cpu_s - cpu[0]
        client_cpu = time.process_time() - cpu[1]
        first = min(counter.second_at for counter in counters) - started
        for session in [*sessions, publisher]:
            await session.leave()
        found = _LOG.findall(nodes[1].output)
        recovered, read, catchup = found[-1] if found else ("0", "nan", "nan")
        return {
            "total_s": round(total, 3),
            "first_s": round(first, 3),
            "node_cpu_s": round(node_cpu, 3),
            "client_cpu_s": round(client_cpu, 3),
            "catchup_s": float(catchup),
            "read_s": float(read),
            "recovered": int(recovered),
            "connections_cut": killed,
        }
    finally:
        for node in nodes:
            node.stop()
        server.kill()


async def sdk_case(config: Path, events: int, cluster: bool) -> dict[str, Any]:
    """A fresh session recovers ``events`` kept events through ``Resumer.recover``."""
    import client_sdk
    from bench import procstat
    from client_sdk.resume import Resumer
    from tests.support.processes import start_broker, start_redis

    server = start_redis() if cluster else None
    nodes = []
    try:
        for i in range(2 if cluster else 1):
            args: tuple[str, ...] = ("--config", str(config))
            if server is not None:
                args += ("--redis", server.url, "--node-id", f"b{i}")
            nodes.append(start_broker(*args))
        publisher = await client_sdk.connect(nodes[0].url, "realm1")
        anchor = await _publish(publisher, 1)
        await _publish(publisher, events)
        session = await client_sdk.connect(nodes[-1].url, "realm1")
        counter = Counter()
        resumer = Resumer(TOPIC, counter)
        sub = await session.subscribe(TOPIC, resumer.deliver)
        resumer.last_publication = anchor
        resumer.begin()
        cpu = procstat.sample([nodes[-1].proc.pid]).cpu_s, time.process_time()
        started = time.perf_counter()
        await resumer.recover(session, sub.id)
        await counter.until(events)
        total = time.perf_counter() - started
        node_cpu = procstat.sample([nodes[-1].proc.pid]).cpu_s - cpu[0]
        client_cpu = time.process_time() - cpu[1]
        gaps = [gap.reason for gap in resumer.gaps]
        for each in (session, publisher):
            await each.leave()
        return {
            "total_s": round(total, 3),
            "node_cpu_s": round(node_cpu, 3),
            "client_cpu_s": round(client_cpu, 3),
            "replayed": resumer.replayed,
            "gaps": gaps,
        }
    finally:
        for node in nodes:
            node.stop()
        if server is not None:
            server.kill()


async def child(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "broker.toml"
        config.write_text(CONFIG, encoding="utf-8")
        if args.case == "repair":
            return await repair_case(config, args.events, args.subscribers)
        return await sdk_case(config, args.events, args.case == "sdk-redis")


# --- parent side -------------------------------------------------------------------------
def run_child(tree: Path, case: str, args: argparse.Namespace) -> dict[str, Any]:
    """One case in a fresh interpreter importing ``tree``'s code (``-P``: not bench/)."""
    command = [sys.executable, "-P", str(HERE), "--child", "--case", case]
    command += ["--events", str(args.events), "--subscribers", str(args.subscribers)]
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"{case} in {tree} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def table(results: dict[tuple[str, str], list[dict[str, Any]]], trees: list[str]) -> str:
    """Markdown: median of each figure per case and tree."""
    lines = ["| case | figure | " + " | ".join(trees) + " |", "|---|---|" + "---|" * len(trees)]
    for case in CASES:
        runs = {tree: results.get((case, tree), []) for tree in trees}
        figures = [
            k
            for k in ("total_s", "first_s", "catchup_s", "read_s", "node_cpu_s", "client_cpu_s")
            if any(k in r for r in runs.get(trees[0], []))
        ]
        for figure in figures:
            cells = []
            for tree in trees:
                values = [r[figure] for r in runs[tree] if figure in r]
                cells.append(f"{statistics.median(values):.3f}" if values else "-")
            lines.append(f"| {case} | {figure} (median) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000, help="missed events")
    parser.add_argument("--subscribers", type=int, default=1, help="subscribers on node B (repair)")
    parser.add_argument("--runs", type=int, default=3, help="runs per case and tree")
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated cases")
    parser.add_argument("--tree", action="append", default=[], help="NAME=PATH (repeatable)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(asyncio.run(child(args))))
        return
    trees = dict(t.split("=", 1) for t in args.tree) or {"this": str(HERE.parent.parent)}
    results: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for _ in range(args.runs):
        for case in args.cases.split(","):
            for name, path in trees.items():  # alternate trees: the same machine load
                result = run_child(Path(path).resolve(), case, args)
                results.setdefault((case, name), []).append(result)
                print(json.dumps({"case": case, "tree": name, **result}), flush=True)
    print(table(results, list(trees)))


if __name__ == "__main__":
    main()
