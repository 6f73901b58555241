"""Cross-node costs: router CPU per call and per delivered event, local vs across nodes.

Starts one redis-server, a single node (no Redis) and a two-node cluster, from one or
more source trees (``--tree``; ``before`` vs ``after``), and runs, in the same round:

- ``rpc-local``: callers and callee on the single node;
- ``rpc-cluster-local``: callers and callee on cluster node A (the cluster's overhead
  on a call that does not cross);
- ``rpc-cross``: callee on node A, callers on node B (a direct link between them, when
  the tree has them);
- ``rpc-cross-redis``: the same on nodes C and D, both started with ``--peer off``, so
  call traffic goes through Redis's inboxes (C and D are started only for this case; a
  tree without ``--peer`` starts them as they are, its calls cross through Redis anyway);
- ``rpc-cross-tls``: the same on nodes E and F, whose direct link is mutual TLS
  (``BROKER_PEER_TLS_*``, certificates from a throwaway CA; only trees that have it);
- ``fanout-local``: publisher and subscribers on the single node;
- ``fanout-cross``: publisher on A, subscribers on B.

Per case it records the routers' CPU per operation (``/proc`` of the node processes,
over the measured window; ``router_sys_us`` is the part spent in the kernel) and Redis's CPU per operation (``INFO cpu``, over the whole
load generator run divided by everything sent, less Redis's idle rate with both nodes
connected, measured for 3 s first), and the µs Redis spent executing each ``PUBLISH``
(``INFO commandstats``; ``redis_publish_cmd_us``), so the ratios the scale-out issue
asks about (cross-node call vs local call, cross-node delivered event vs local) come
from the same run. Rounds alternate between trees, so the machine's load hits both.

    python -m bench.xnode --tree before=/work/wt/xnode-base --tree after=. --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.compare import ROOT, Server, _drain, _pin, _wait_listening, free_port

CASES = (
    "rpc-local",
    "rpc-cluster-local",
    "rpc-cross",
    "rpc-cross-redis",
    "rpc-cross-tls",
    "fanout-local",
    "fanout-cross",
)
CROSS = {"rpc": ("rpc-cross", "rpc-cross-redis", "rpc-cross-tls"), "fanout": ("fanout-cross",)}
"""The cross-node cases compared with each kind's local case in the summary."""


def start_node(
    tree: Path, cpus: list[int], extra: list[str], env_extra: dict[str, str] | None = None
) -> Server:
    """A broker from ``tree`` (its own working directory and PYTHONPATH)."""
    args = [sys.executable, "-m", "broker", "--host", "127.0.0.1", "--port", "0"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(tree), **(env_extra or {}))
    proc = subprocess.Popen(
        [*args, *extra],
        cwd=tree,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_pin(cpus),
    )
    server = Server("ours", proc)
    server.url = _wait_listening(server, 30)
    _drain(server)
    return server


def start_redis(port: int, cpus: list[int], workdir: str) -> subprocess.Popen[bytes]:
    """A throwaway redis-server on 127.0.0.1 (no persistence)."""
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
        + ["--appendonly", "no", "--dir", workdir],
        stdout=subprocess.DEVNULL,
        preexec_fn=_pin(cpus),
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if redis_cli(port, "PING") == "PONG":
            return proc
        time.sleep(0.1)  # polling a starting process
    proc.kill()
    raise RuntimeError("redis-server did not start")


def redis_cli(port: int, *args: str) -> str:
    out = subprocess.run(
        ["redis-cli", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    )
    return out.stdout.strip()


def redis_commands(port: int) -> int:
    """Commands Redis has run so far (``INFO stats``)."""
    for line in redis_cli(port, "INFO", "stats").splitlines():
        key, _, value = line.partition(":")
        if key == "total_commands_processed":
            return int(value)
    return 0


def redis_cpu(port: int) -> float:
    """used_cpu_user + used_cpu_sys of the Redis server, seconds (``INFO cpu``)."""
    total = 0.0
    for line in redis_cli(port, "INFO", "cpu").splitlines():
        key, _, value = line.partition(":")
        if key in ("used_cpu_user", "used_cpu_sys"):
            total += float(value)
    return total


def publish_stats(port: int) -> tuple[int, int]:
    """(calls, µs) Redis spent executing PUBLISH so far (``INFO commandstats``).

    The command's own work only (no event loop, no socket reads): steady on a loaded
    machine, unlike ``INFO cpu``, which is everything the server process did.
    """
    for line in redis_cli(port, "INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_publish:"):
            fields = dict(item.split("=", 1) for item in line.split(":", 1)[1].split(","))
            return int(fields["calls"]), int(fields["usec"])
    return 0, 0


def idle_rate(port: int, seconds: float = 3.0) -> float:
    """Redis CPU seconds per second while the nodes only heartbeat and probe.

    Subtracted from every case, so the per-operation figures are the traffic's own.
    """
    before = redis_cpu(port)
    time.sleep(seconds)  # a measurement window, not a synchronisation
    return (redis_cpu(port) - before) / seconds


def loadgen(args: list[str]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    return dict(json.loads(lines[-1]))


def has_peer_flag(tree: Path) -> bool:
    """Whether ``tree``'s broker takes ``--peer`` (direct links between nodes)."""
    main = tree / "broker" / "__main__.py"
    return main.exists() and '"--peer"' in main.read_text()


def has_peer_tls(tree: Path) -> bool:
    """Whether ``tree``'s broker takes ``BROKER_PEER_TLS_*`` (TLS on direct links)."""
    config = tree / "broker" / "config.py"
    return config.exists() and "BROKER_PEER_TLS_" in config.read_text()


def tls_env(node: str, authority: Any) -> dict[str, str]:
    """``BROKER_PEER_TLS_*`` for ``node``, its certificate from ``authority``."""
    cert = authority.issue(node)
    return {
        "BROKER_PEER_TLS_CERT": str(cert.cert),
        "BROKER_PEER_TLS_KEY": str(cert.key),
        "BROKER_PEER_TLS_CA": str(cert.ca),
    }


def run_case(
    case: str, nodes: dict[str, Server], port: int, p: argparse.Namespace
) -> dict[str, Any]:
    common = ["--cpu", p.client_cpu, "--duration", str(p.duration), "--warmup", str(p.warmup)]
    if case.startswith("rpc"):
        common += ["--callers", str(p.callers)]
    else:
        common += ["--subscribers", str(p.subscribers)]
    single, a, b = nodes["single"], nodes["a"], nodes["b"]
    pids_ab = ["--pid", str(a.proc.pid), "--pid", str(b.proc.pid)]
    if case in ("rpc-cross-redis", "rpc-cross-tls"):
        c, d = (nodes["c"], nodes["d"]) if case == "rpc-cross-redis" else (nodes["e"], nodes["f"])
        pids_cd = ["--pid", str(c.proc.pid), "--pid", str(d.proc.pid)]
        argv = ["rpc", "--url", d.url, "--callee-url", c.url, *pids_cd]
    else:
        argv = {
            "rpc-local": ["rpc", "--url", single.url, "--pid", str(single.proc.pid)],
            "rpc-cluster-local": ["rpc", "--url", a.url, "--pid", str(a.proc.pid)],
            "rpc-cross": ["rpc", "--url", b.url, "--callee-url", a.url, *pids_ab],
            "fanout-local": ["fanout", "--url", single.url, "--pid", str(single.proc.pid)],
            "fanout-cross": ["cluster", "--pub-url", a.url, "--url", b.url, *pids_ab],
        }[case]
    before, started, commands = redis_cpu(port), time.monotonic(), redis_commands(port)
    publishes, publish_us = publish_stats(port)
    record = loadgen([*argv, *common])
    commands = redis_commands(port) - commands
    calls_after, us_after = publish_stats(port)
    publishes, publish_us = calls_after - publishes, us_after - publish_us
    redis_s = redis_cpu(port) - before - p.redis_idle * (time.monotonic() - started)
    ops = record.get("delivered") or record.get("received") or record["sent"]
    total_ops = record["sent"] * (p.subscribers if case.startswith("fanout") else 1)
    broker = record.get("broker") or {}
    return {
        "case": case,
        "throughput": record["throughput"],
        "ops": ops,
        "errors": record["errors"],
        "router_cpu_us": broker.get("cpu_us_per_op"),
        "router_sys_us": broker.get("sys_us_per_op"),
        "router_slept_per_op": broker.get("slept_per_op"),
        "router_preempted_per_op": broker.get("preempted_per_op"),
        "redis_idle_cpu": round(p.redis_idle, 4),
        "redis_commands_per_publish_or_call": round(commands / max(record["sent"], 1), 3),
        "redis_cpu_us": round(redis_s / max(total_ops, 1) * 1e6, 3),
        "redis_cpu_us_per_publish": round(redis_s / max(record["sent"], 1) * 1e6, 3),
        "redis_publish_cmd_us": round(publish_us / max(publishes, 1), 3),
        "other_cpu": (record.get("machine") or {}).get("other_cpu_util"),
    }


def one_round(name: str, tree: Path, p: argparse.Namespace, index: int = 0) -> list[dict[str, Any]]:
    cpus = [int(c) for c in p.server_cpu.split(",") if c]
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        redis = start_redis(port, cpus, workdir)
        url = f"redis://127.0.0.1:{port}/0"
        nodes: dict[str, Server] = {}
        try:
            nodes["single"] = start_node(tree, cpus, [])
            for node in ("a", "b"):
                nodes[node] = start_node(tree, cpus, ["--redis", url, "--node-id", node])
            cases = p.cases.split(",")
            if not has_peer_tls(tree) and "rpc-cross-tls" in cases:
                cases.remove("rpc-cross-tls")  # that tree has no TLS on direct links
            if "rpc-cross-redis" in cases:
                off = ["--peer", "off"] if has_peer_flag(tree) else []
                for node in ("c", "d"):
                    nodes[node] = start_node(tree, cpus, ["--redis", url, "--node-id", node, *off])
            if "rpc-cross-tls" in cases:
                from tests.support.certs import Authority  # bench-only: a throwaway CA

                authority = Authority(Path(workdir))
                for node in ("e", "f"):
                    env = tls_env(node, authority)
                    nodes[node] = start_node(tree, cpus, ["--redis", url, "--node-id", node], env)
            p.redis_idle = idle_rate(port)
            return print_rows(
                ",".join(cases),
                lambda case: {"tree": name, "round": index, **run_case(case, nodes, port, p)},
            )
        finally:
            for server in nodes.values():
                server.stop()
            redis.send_signal(signal.SIGTERM)
            redis.wait(10)


def print_rows(cases: str, row: Callable[[str], dict[str, Any]]) -> list[dict[str, Any]]:
    """``row(case)`` for each of the comma-separated ``cases``, each printed as a JSON line."""
    rows = []
    for case in cases.split(","):
        rows.append(row(case))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def summary(rows: list[dict[str, Any]]) -> None:
    """Median per (tree, case), and the ratios of the issue."""
    by: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        by.setdefault((row["tree"], row["case"]), []).append(row)

    def med(tree: str, case: str, key: str) -> float:
        values = sorted(r[key] for r in by.get((tree, case), []) if r.get(key) is not None)
        return values[len(values) // 2] if values else float("nan")

    for tree in dict.fromkeys(r["tree"] for r in rows):
        print(f"# {tree} (medians)")
        for case in CASES:
            if (tree, case) in by:
                print(
                    f"  {case:18} router {med(tree, case, 'router_cpu_us'):8.2f} µs/op"
                    f" (kernel {med(tree, case, 'router_sys_us'):6.2f})"
                    f"  redis {med(tree, case, 'redis_cpu_us'):7.2f} µs/op"
                    f" {med(tree, case, 'redis_cpu_us_per_publish'):7.2f} µs/publish-or-call"
                    f" {med(tree, case, 'redis_commands_per_publish_or_call'):6.3f} cmds"
                    f"  {med(tree, case, 'throughput'):10.0f} op/s"
                    f"  switches/op slept {med(tree, case, 'router_slept_per_op'):.3f}"
                    f" preempted {med(tree, case, 'router_preempted_per_op'):.3f}"
                    f"  (runs: {len(by[(tree, case)])})"
                )
        for kind, crosses in CROSS.items():
            local = med(tree, f"{kind}-local", "router_cpu_us")
            for cross in crosses:
                if (tree, cross) in by:
                    ratio = med(tree, cross, "router_cpu_us") / local
                    rounds = _round_ratios(rows, tree, f"{kind}-local", cross)
                    print(f"  {cross}/local {ratio:.2f}x   per round (same round): {rounds}")


def _round_ratios(rows: list[dict[str, Any]], tree: str, local: str, cross: str) -> str:
    """Median and list of cross/local router CPU per op, each pair from one round.

    Both cases of a round ran back to back on the same nodes, so the machine's load
    (other processes) weighs on both alike: steadier than a ratio of medians.
    """
    cpu = {
        (r.get("round"), r["case"]): r["router_cpu_us"]
        for r in rows
        if r["tree"] == tree and r["router_cpu_us"]
    }
    ratios = sorted(
        cpu[(n, cross)] / cpu[(n, local)] for n, case in cpu if case == local and (n, cross) in cpu
    )
    if not ratios:
        return "-"
    listed = ", ".join(f"{x:.2f}" for x in ratios)
    return f"median {ratios[len(ratios) // 2]:.2f}x [{listed}]"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", action="append", default=[], help="NAME=PATH (repeat)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--callers", type=int, default=50)
    ap.add_argument("--subscribers", type=int, default=100)
    ap.add_argument("--server-cpu", default="0", help="CPUs for Redis and nodes")
    ap.add_argument("--client-cpu", default="1", help="CPUs for the load generator")
    ap.add_argument("--out", help="append the JSON rows to this file")
    p = ap.parse_args()
    trees = [t.split("=", 1) for t in p.tree] or [["this", str(ROOT)]]
    rows: list[dict[str, Any]] = []
    for index in range(p.rounds):
        for name, path in trees:
            rows += one_round(name, Path(path).resolve(), p, index)
    if p.out:
        with open(p.out, "a") as f:
            for row in rows:
                f.write(json.dumps(row) + "\n")
    summary(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
