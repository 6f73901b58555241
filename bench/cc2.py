"""Python function calls and event-loop iterations per call: local call vs cross-node call.

Starts a single node, then Redis and two cluster nodes (callee on A, callers on B), each
under cProfile, from one source tree. Every node runs a warm-up of ``--warmup-calls``
unprofiled, then is profiled over ``--count`` calls only (SIGUSR1 starts the profiler,
SIGUSR2 writes the counts), so start-up and imports are left out. Counts come from
``Profile.getstats()`` per code object (``pstats`` would merge the generated functions
that share ``<string>:1`` names). Prints one JSON line: calls per call and loop
iterations (``BaseEventLoop._run_once``) per call for the single node, A and B, and the
cross-node ÷ local ratio; ``--top N`` also prints the functions whose count differs most.

    python -m bench.callcount --tree . --count 8000
    python -m bench.callcount --tree /work/wt/before --count 8000
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import runpy
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import CodeType
from typing import Any

from bench.compare import ROOT, Server, _drain, _pin, _wait_listening, free_port
from bench.xnode import start_redis


def _name(code: CodeType | str) -> str:
    if isinstance(code, str):
        return code
    return f"{Path(code.co_filename).name}:{code.co_firstlineno}:{code.co_name}"


def serve(out: str, argv: list[str]) -> None:
    """Run ``python -m broker argv`` with a profiler switched by SIGUSR1 / SIGUSR2."""
    prof = cProfile.Profile()

    def dump(*_: Any) -> None:
        prof.disable()
        counts: Counter[str] = Counter()
        for entry in prof.getstats():
            counts[_name(entry.code)] += entry.callcount
        prof.dump_stats(out + ".prof")
        Path(out + ".tmp").write_text(json.dumps(counts))
        os.replace(out + ".tmp", out)

    signal.signal(signal.SIGUSR1, lambda *_: prof.enable())
    signal.signal(signal.SIGUSR2, dump)
    sys.argv = ["broker", *argv]
    runpy.run_module("broker", run_name="__main__", alter_sys=True)


def _node(tree: Path, out: Path, extra: list[str]) -> Server:
    # this file by path: the tree measured may not have it
    args = [sys.executable, __file__, "--serve", str(out), "--"]
    args += ["--host", "127.0.0.1", "--port", "0", *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(tree))
    proc = subprocess.Popen(
        args, cwd=tree, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env, preexec_fn=_pin([0]),
    )  # fmt: skip
    server = Server(out.stem, proc)
    server.url = _wait_listening(server, 60)
    _drain(server)
    return server


def _load(args: list[str], count: int) -> None:
    cmd = [sys.executable, "-m", "bench.loadgen", *args, "--callers", "50"]
    cmd += ["--count", str(count), "--cpu", "1", "--duration", "300", "--warmup", "0"]
    # this tree's load generator for every tree measured
    out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    record = json.loads(out.stdout.strip().splitlines()[-1])
    if record["errors"]:
        raise RuntimeError(f"loadgen errors: {record['errors']}")


def _measure(p: argparse.Namespace, nodes: list[tuple[Server, Path]], args: list[str]) -> None:
    _load(args, p.warmup_calls)
    for server, _out in nodes:
        os.kill(server.proc.pid, signal.SIGUSR1)
    time.sleep(0.2)  # let the signal handlers run before the measured load starts
    _load(args, p.count)
    for server, out in nodes:
        os.kill(server.proc.pid, signal.SIGUSR2)
        deadline = time.monotonic() + 60
        while not out.exists() and time.monotonic() < deadline:
            time.sleep(0.1)  # polling for the profile file the node writes
        server.stop()


def run(p: argparse.Namespace) -> dict[str, Any]:
    work = "/tmp/exp/cc"
    os.makedirs(work, exist_ok=True)
    if True:
        outs = {name: Path(work, f"{name}.json") for name in ("local", "A", "B")}
        single = _node(p.tree, outs["local"], [])
        _measure(p, [(single, outs["local"])], ["rpc", "--url", single.url])
        port = free_port()
        redis = start_redis(port, [0], work)
        try:
            url = f"redis://127.0.0.1:{port}/0"
            a = _node(p.tree, outs["A"], ["--redis", url, "--node-id", "a"])
            b = _node(p.tree, outs["B"], ["--redis", url, "--node-id", "b"])
            cross = ["rpc", "--url", b.url, "--callee-url", a.url]
            _measure(p, [(a, outs["A"]), (b, outs["B"])], cross)
        finally:
            redis.terminate()
            redis.wait(10)
        counts = {k: Counter(json.loads(v.read_text())) for k, v in outs.items()}
    per = {k: round(sum(c.values()) / p.count, 1) for k, c in counts.items()}
    loops = {
        k: round(sum(n for f, n in c.items() if f.endswith(":_run_once")) / p.count, 3)
        for k, c in counts.items()
    }
    cross = per["A"] + per["B"]
    if p.top:
        diff = counts["A"] + counts["B"]
        diff.subtract(counts["local"])
        for func, n in sorted(diff.items(), key=lambda kv: -abs(kv[1]))[: p.top]:
            print(f"{n / p.count:8.2f}  {func}")
    return {
        "tree": str(p.tree),
        "count": p.count,
        "calls_per_call": per,
        "loop_iterations_per_call": loops,
        "cross_calls": round(cross, 1),
        "cross_over_local": round(cross / per["local"], 3),
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--serve":
        serve(sys.argv[2], sys.argv[4:])  # --serve OUT -- broker args
        return
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tree", type=lambda s: Path(s).resolve(), default=Path(".").resolve())
    ap.add_argument("--count", type=int, default=8000, help="profiled calls")
    ap.add_argument("--warmup-calls", type=int, default=2000, help="unprofiled calls first")
    ap.add_argument("--top", type=int, default=0, help="print the N largest differences")
    print(json.dumps(run(ap.parse_args())), flush=True)


if __name__ == "__main__":
    main()
