"""Does memory come back? RSS of one broker after bursts of idle sessions and a slow consumer.

For every source tree given (``--tree name=path``, default: this checkout) a fresh broker is
started from that tree (``PYTHONPATH=path``) and put through:

1. ``--rounds`` rounds (3) of ``bench.loadgen connections``: ``--sessions`` (3,000) idle
   sessions opened, RSS read with all open, all closed, RSS read again once the broker
   reports no session (bounded by ``--settle-timeout``);
2. one slow-consumer episode: ``bench.loadgen fanout`` with stalled subscribers whose
   socket backpressure fills the broker's write buffers until it drops them; RSS (and the
   process's peak) read after the episode ends.

Prints one JSON line per tree and a Markdown table side by side. Everything runs on
127.0.0.1 and every step is bounded in count and time.

    python -m bench.memory_rounds --tree before=/tmp/old-checkout --tree after=.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench import procstat
from bench.compare import Server, _drain, _wait_listening

ROOT = Path(__file__).resolve().parent.parent


def start(tree: Path) -> Server:
    """A broker from ``tree`` on a free port, its output drained."""
    env = dict(
        os.environ,
        PYTHONUNBUFFERED="1",
        PYTHONPATH=os.pathsep.join(
            [str(tree), *filter(None, [os.environ.get("EXTRA_PYTHONPATH")])]
        ),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "broker", "--host", "127.0.0.1", "--port", "0"],
        cwd=tree,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    server = Server(f"broker@{tree}", proc)
    server.url = _wait_listening(server, 20)
    _drain(server)
    return server


def rss_mib(pid: int) -> tuple[float, float]:
    """(RSS now, peak RSS) of ``pid`` in MiB."""
    rss, hwm = procstat._read_status(pid)[:2]
    return round(rss / 1024, 1), round(hwm / 1024, 1)


def session_count(url: str) -> int | None:
    """The broker's open sessions, from /metrics (None if not readable)."""
    base = url.replace("ws://", "http://").rsplit("/", 1)[0]
    try:
        with urllib.request.urlopen(base + "/metrics", timeout=2) as resp:
            text = resp.read().decode()
    except OSError:
        return None
    total = 0
    for line in text.splitlines():
        if line.startswith("wamp_sessions") and not line.startswith("wamp_sessions_"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def settle(server: Server, timeout: float) -> float:
    """Wait (bounded) until the broker has no session and its RSS stops falling; RSS MiB."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and session_count(server.url) not in (0, None):
        time.sleep(0.1)  # polling another process's state in a benchmark
    # the broker's reclaimer waits for a quiet second and ticks once a second
    time.sleep(min(3.0, max(0.0, deadline - time.monotonic())))
    last = rss_mib(server.proc.pid)[0]
    while time.monotonic() < deadline:
        time.sleep(0.5)  # give a periodic reclaim the chance to run
        now = rss_mib(server.proc.pid)[0]
        if now >= last:
            return now
        last = now
    return last


def loadgen(args: list[str], timeout: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.loadgen", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadgen failed: {out.stderr[-2000:]}")
    record: dict[str, Any] = json.loads(lines[-1])
    return record


def measure(name: str, tree: Path, ns: argparse.Namespace) -> dict[str, Any]:
    server = start(tree)
    pid = server.proc.pid
    result: dict[str, Any] = {"tree": name, "rss_start_mib": rss_mib(pid)[0], "rounds": []}
    try:
        for _ in range(ns.rounds):
            rec = loadgen(
                [
                    "connections",
                    "--url",
                    server.url,
                    "--pid",
                    str(pid),
                    "--sessions",
                    str(ns.sessions),
                    "--timeout",
                    "30",
                ],
                timeout=120,
            )
            loaded = round(rec.get("broker_loaded_rss_kib", 0) / 1024, 1)
            after = settle(server, ns.settle_timeout)
            result["rounds"].append(
                {
                    "joined": rec.get("received"),
                    "rss_open_mib": loaded,
                    "rss_after_close_mib": after,
                }
            )
        rec = loadgen(
            [
                "fanout",
                "--url",
                server.url,
                "--pid",
                str(pid),
                "--subscribers",
                "50",
                "--stalled",
                str(ns.stalled),
                "--payload",
                "4096",
                "--window",
                "512",
                "--duration",
                str(ns.episode),
                "--warmup",
                "0.5",
                "--timeout",
                "20",
            ],
            timeout=120,
        )
        after = settle(server, ns.settle_timeout)
        result["slow_consumer"] = {
            "stalled": rec.get("stalled"),
            "stalled_dropped": rec.get("stalled_dropped"),
            "rss_peak_mib": rss_mib(pid)[1],
            "rss_after_mib": after,
        }
    finally:
        server.stop()
    return result


def table(results: list[dict[str, Any]]) -> str:
    rows = ["RSS at start, MiB"]
    rows += [f"RSS after round {i + 1} closed, MiB" for i in range(len(results[0]["rounds"]))]
    rows += ["peak RSS (slow consumer), MiB", "RSS after slow consumer, MiB"]
    head = "| | " + " | ".join(r["tree"] for r in results) + " |"
    out = [head, "|---" * (len(results) + 1) + "|"]
    for i, label in enumerate(rows):
        cells = []
        for r in results:
            if i == 0:
                cells.append(r["rss_start_mib"])
            elif i <= len(r["rounds"]):
                cells.append(r["rounds"][i - 1]["rss_after_close_mib"])
            elif label.startswith("peak"):
                cells.append(r["slow_consumer"]["rss_peak_mib"])
            else:
                cells.append(r["slow_consumer"]["rss_after_mib"])
        out.append(f"| {label} | " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.memory_rounds", description=__doc__)
    ap.add_argument("--tree", action="append", default=[], help="name=path of a source tree")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=3000)
    ap.add_argument("--stalled", type=int, default=20)
    ap.add_argument("--episode", type=float, default=3.0, help="slow-consumer seconds")
    ap.add_argument("--settle-timeout", type=float, default=10.0)
    ns = ap.parse_args(argv)
    trees = [t.split("=", 1) for t in ns.tree] or [["this", str(ROOT)]]
    results = [measure(name, Path(path).resolve(), ns) for name, path in trees]
    for r in results:
        print(json.dumps(r), flush=True)
    print(table(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
