"""Cross-node costs on a Redis Cluster next to a single Redis, from one source tree.

Starts a single redis-server and a 6-server Redis Cluster (3 masters with a replica
each, ``tests.support.redis_cluster``), a two-node broker pair on each, and runs, in
the same round, alternating the deployments:

- ``rpc-cross``: callee on node A, callers on node B (inboxes: the ``{ctl}`` shard);
- ``fanout-cross``: publisher on A, subscribers on B (one topic: one shard).

Per case: router CPU per operation (``/proc`` of both nodes), throughput, and Redis
CPU per operation summed over every server of the deployment (``INFO cpu``, less the
idle rate with both nodes connected, measured for 3 s first).

    python -m bench.rcluster --rounds 3 --duration 4 --warmup 1
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.compare import ROOT, Server, free_port
from bench.xnode import loadgen, print_rows, redis_cpu, start_node, start_redis
from tests.support.redis_cluster import start_redis_cluster

CASES = ("rpc-cross", "fanout-cross")


def _cpu(ports: list[int]) -> float:
    return sum(redis_cpu(port) for port in ports)


def _case(case: str, a: Server, b: Server, ports: list[int], idle: float, p: Any) -> dict[str, Any]:
    common = ["--cpu", p.client_cpu, "--duration", str(p.duration), "--warmup", str(p.warmup)]
    pids = ["--pid", str(a.proc.pid), "--pid", str(b.proc.pid)]
    if case == "rpc-cross":
        argv = ["rpc", "--url", b.url, "--callee-url", a.url, "--callers", str(p.callers)]
    else:
        argv = ["cluster", "--pub-url", a.url, "--url", b.url, "--subscribers", "100"]
    before, started = _cpu(ports), time.monotonic()
    record = loadgen([*argv, *pids, *common])
    redis_s = _cpu(ports) - before - idle * (time.monotonic() - started)
    broker = record.get("broker") or {}
    return {
        "case": case,
        "throughput": record["throughput"],
        "errors": record["errors"],
        "router_cpu_us": broker.get("cpu_us_per_op"),
        "redis_cpu_us_per_publish_or_call": round(redis_s / max(record["sent"], 1) * 1e6, 3),
        "other_cpu": (record.get("machine") or {}).get("other_cpu_util"),
    }


def _deployment_round(name: str, url: str, ports: list[int], p: Any) -> list[dict[str, Any]]:
    cpus = [int(c) for c in p.server_cpu.split(",") if c]
    servers: list[Server] = []
    try:
        for node in ("a", "b"):
            servers.append(start_node(ROOT, cpus, ["--redis", url, "--node-id", node]))
        before = _cpu(ports)
        time.sleep(3.0)  # a measurement window for the idle rate, not a synchronisation
        idle = (_cpu(ports) - before) / 3.0
        return print_rows(
            p.cases,
            lambda case: {"redis": name, **_case(case, servers[0], servers[1], ports, idle, p)},
        )
    finally:
        for server in servers:
            server.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--callers", type=int, default=50)
    ap.add_argument("--server-cpu", default="0", help="CPUs for Redis and nodes")
    ap.add_argument("--client-cpu", default="1", help="CPUs for the load generator")
    p = ap.parse_args()
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        single = start_redis(port, [int(c) for c in p.server_cpu.split(",")], workdir)
        deployment = start_redis_cluster(Path(workdir) / "cluster")
        try:
            cluster_ports = [s.port for s in deployment.servers]
            for _ in range(p.rounds):
                rows += _deployment_round("single", f"redis://127.0.0.1:{port}/0", [port], p)
                rows += _deployment_round("cluster", deployment.url, cluster_ports, p)
        finally:
            deployment.stop()
            single.terminate()
            single.wait(10)
    for name in ("single", "cluster"):
        print(f"# {name} (medians)")
        for case in p.cases.split(","):
            got = [r for r in rows if r["redis"] == name and r["case"] == case]
            cpu = statistics.median(r["router_cpu_us"] or 0.0 for r in got)
            rcpu = statistics.median(r["redis_cpu_us_per_publish_or_call"] for r in got)
            rate = statistics.median(r["throughput"] for r in got)
            print(f"  {case:13} router {cpu:8.2f} µs/op  redis {rcpu:7.2f} µs/op  {rate:9.0f} op/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
