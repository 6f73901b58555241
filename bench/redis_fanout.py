"""Redis CPU per PUBLISH as a function of how many node connections receive it.

A cross-node event costs Redis one PUBLISH plus one write per subscribed node; this
measures both terms on a throwaway redis-server (``INFO cpu`` before and after), so
the capacity model in bench/README.md ("Cluster costs and Redis capacity") can be
extended to clusters of many nodes. Subscribers are plain sockets drained by threads.

    python -m bench.redis_fanout --nodes 1,4,16 --count 50000 --payload 120
"""

from __future__ import annotations

import argparse
import socket
import tempfile
import threading
import time

from bench.compare import free_port
from bench.xnode import redis_cpu, start_redis
from broker.cluster.keys import event_channel


def _subscriber(port: int, channel: str, ready: threading.Event, stop: threading.Event) -> None:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.sendall(f"SUBSCRIBE {channel}\r\n".encode())
    sock.settimeout(0.2)
    ready.set()
    with sock:
        while not stop.is_set():
            try:
                if not sock.recv(1 << 16):
                    return
            except TimeoutError:
                continue


def measure(port: int, nodes: int, count: int, payload: int) -> float:
    """Redis CPU µs per PUBLISH with ``nodes`` subscribed connections."""
    channel = event_channel("realm1", f"bench.{nodes}").decode()
    stop = threading.Event()
    threads = []
    for _ in range(nodes):
        ready = threading.Event()
        t = threading.Thread(target=_subscriber, args=(port, channel, ready, stop), daemon=True)
        t.start()
        ready.wait(5)
        threads.append(t)
    time.sleep(0.2)  # let the SUBSCRIBEs land (a bench helper, not a test)
    data = "x" * payload
    batch = "".join(
        f"*3\r\n$7\r\nPUBLISH\r\n${len(channel)}\r\n{channel}\r\n${payload}\r\n{data}\r\n"
        for _ in range(500)
    ).encode()
    with socket.create_connection(("127.0.0.1", port)) as pub:
        before = redis_cpu(port)
        for _ in range(count // 500):
            pub.sendall(batch)
            got = 0
            while got < 500:  # one ":<n>\r\n" reply per PUBLISH
                got += pub.recv(1 << 16).count(b"\r\n")
        spent = redis_cpu(port) - before
    stop.set()
    for t in threads:
        t.join(2)
    return spent / (count // 500 * 500) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--nodes", default="0,1,4,16")
    ap.add_argument("--count", type=int, default=50_000)
    ap.add_argument("--payload", type=int, default=120)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--cpu", default="0")
    p = ap.parse_args()
    with tempfile.TemporaryDirectory() as workdir:
        port = free_port()
        redis = start_redis(port, [int(c) for c in p.cpu.split(",") if c], workdir)
        try:
            for nodes in (int(n) for n in p.nodes.split(",")):
                runs = sorted(measure(port, nodes, p.count, p.payload) for _ in range(p.rounds))
                print(
                    f"subscribed nodes {nodes:3}: Redis {runs[len(runs) // 2]:.2f} µs/PUBLISH "
                    f"(runs {', '.join(f'{r:.2f}' for r in runs)})",
                    flush=True,
                )
        finally:
            redis.terminate()
            redis.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
