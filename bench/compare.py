"""Run the same scenarios against our broker, Crossbar.io and the bare websockets floor.

Usage (from the repository root)::

    python -m bench.compare                         # ours + crossbar + floor, all cases
    python -m bench.compare --targets crossbar,floor --cases rpc-50,fanout-100
    python -m bench.compare --url ws://127.0.0.1:8080/ws --pid 1234   # any running router

Every case gets a freshly started server (pinned to ``--server-cpu``, default CPU 0) and
the load generator (``python -m bench.loadgen``, pinned to ``--client-cpu``, default 1).
Each result is printed as one JSON line (and appended to ``--out``); a Markdown table
(ours vs Crossbar vs floor, with ratios) follows at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CROSSBAR = HERE / ".venv-crossbar" / "bin" / "crossbar"
CROSSBAR_CONFIG = HERE / "crossbar" / ".crossbar" / "config.json"
_LISTENING = re.compile(r"listening on (ws://[^\s]+)")


@dataclass(frozen=True)
class Case:
    """One measurement: a loadgen scenario with its arguments."""

    name: str
    scenario: str
    args: tuple[str, ...]
    what: str
    targets: tuple[str, ...] = ("ours", "crossbar", "floor")  # where the case makes sense


CASES: tuple[Case, ...] = (
    Case("rpc-50", "rpc", ("--callers", "50"), "RPC, 50 closed-loop callers, 1 callee"),
    Case("rpc-1", "rpc", ("--callers", "1"), "RPC, 1 caller, 1 callee"),
    Case("fanout-100", "fanout", ("--subscribers", "100"), "1 publisher -> 100 subscribers"),
    # The floor's broadcast() has no slow-consumer policy (its buffer for the stalled
    # connection just grows), so there is nothing of backpressure to compare against.
    Case(
        "fanout-100-stalled",
        "fanout",
        ("--subscribers", "100", "--stalled", "1"),
        "fanout-100 plus 1 subscriber that stops reading",
        targets=("ours", "crossbar"),
    ),
    Case(
        "fanout-rate-1000",
        "fanout-rate",
        ("--subscribers", "1000", "--rate", "10"),
        "1 publisher at 10 msg/s -> 1,000 subscribers",
    ),
    Case("connections", "connections", ("--sessions", "10000"), "10,000 idle sessions"),
)
TARGETS = ("ours", "crossbar", "floor")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pin(cpus: list[int]) -> Any:
    def pin() -> None:
        if cpus:
            os.sched_setaffinity(0, cpus)

    return pin


@dataclass
class Server:
    """A started server process and the URL it serves."""

    name: str
    proc: subprocess.Popen[str]
    url: str = ""
    workdir: tempfile.TemporaryDirectory[str] | None = None
    output: list[str] = field(default_factory=list)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.workdir is not None:
            self.workdir.cleanup()


def _wait_listening(server: Server, timeout: float) -> str:
    """Read the process output until a ``listening on ws://...`` line shows up.

    Reads the raw file descriptor: a buffered ``readline()`` after ``select()`` would
    strand a second line that arrived in the same chunk inside the Python buffer.
    """
    assert server.proc.stdout is not None
    fd = server.proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    text = ""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if chunk:
                text += chunk.decode(errors="replace")
                m = _LISTENING.search(text)
                if m:
                    server.output.append(text)
                    return m.group(1)
                continue
        if server.proc.poll() is not None:
            break
    server.output.append(text)
    server.stop()
    raise RuntimeError(f"{server.name} did not start:\n{text}")


def _drain(server: Server) -> None:
    """Keep reading (and dropping) the server's output so a full pipe never blocks it."""
    assert server.proc.stdout is not None
    fd = server.proc.stdout.fileno()

    def pump() -> None:
        with contextlib.suppress(OSError):
            while os.read(fd, 65536):
                pass

    threading.Thread(target=pump, daemon=True).start()


def _wait_port(server: Server, port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.name} exited with {server.proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.2)  # polling a starting process
    server.stop()
    raise RuntimeError(f"{server.name} did not open port {port} within {timeout}s")


TREES: dict[str, Path] = {}
"""Extra targets (``--tree NAME=PATH``): our broker run from another source tree."""


def start_ours(cpus: list[int], extra: Sequence[str] = (), tree: Path | None = None) -> Server:
    args = [sys.executable, "-m", "broker", "--host", "127.0.0.1", "--port", "0", *extra]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    proc = subprocess.Popen(
        args,
        cwd=tree or ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_pin(cpus),
    )
    server = Server("ours", proc)
    server.url = _wait_listening(server, 20)
    _drain(server)
    return server


def start_floor(cpus: list[int]) -> Server:
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        preexec_fn=_pin(cpus),
    )
    server = Server("floor", proc)
    server.url = _wait_listening(server, 20)
    _drain(server)
    return server


def crossbar_available() -> bool:
    return CROSSBAR.exists()


def start_crossbar(cpus: list[int]) -> Server:
    """``crossbar start`` on a copy of bench/crossbar/.crossbar with a free port."""
    port = free_port()
    workdir = tempfile.TemporaryDirectory(prefix="bench-crossbar-")
    cbdir = Path(workdir.name) / ".crossbar"
    cbdir.mkdir()
    config = json.loads(CROSSBAR_CONFIG.read_text())
    for worker in config["workers"]:
        for transport in worker.get("transports", ()):
            transport["endpoint"]["port"] = port
    (cbdir / "config.json").write_text(json.dumps(config, indent=2))
    proc = subprocess.Popen(
        [str(CROSSBAR), "start", "--cbdir", str(cbdir), "--loglevel", "warn"],
        cwd=workdir.name,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=_pin(cpus),
        start_new_session=True,
    )
    server = Server("crossbar", proc, workdir=workdir)
    _drain(server)
    _wait_port(server, port, 60)
    server.url = f"ws://127.0.0.1:{port}/ws"
    return server


def start(target: str, cpus: list[int], broker_args: Sequence[str]) -> Server:
    if target in TREES:
        return start_ours(cpus, broker_args, TREES[target])
    if target == "ours":
        return start_ours(cpus, broker_args)
    if target == "crossbar":
        return start_crossbar(cpus)
    if target == "floor":
        return start_floor(cpus)
    raise ValueError(target)


def run_loadgen(
    case: Case, url: str, target: str, pids: list[int], ns: argparse.Namespace
) -> dict[str, Any]:
    args = [
        sys.executable,
        "-m",
        "bench.loadgen",
        case.scenario,
        "--url",
        url,
        "--target",
        target,
        "--duration",
        str(ns.duration),
        "--warmup",
        str(ns.warmup),
        "--client",
        ns.client,
        "--procs",
        str(ns.procs),
        *case.args,
    ]
    if ns.client_cpu:
        args += ["--cpu", ns.client_cpu]
    if ns.pub_url:
        args += ["--pub-url", ns.pub_url]
    for pid in pids:
        args += ["--pid", str(pid)]
    budget = ns.duration + ns.warmup + 180
    try:
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=budget)
    except subprocess.TimeoutExpired:
        return {"scenario": case.scenario, "target": target, "error": "loadgen timed out"}
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        err = (done.stderr or done.stdout).strip().splitlines()[-5:]
        return {"scenario": case.scenario, "target": target, "error": " | ".join(err)}
    record: dict[str, Any] = json.loads(lines[-1])
    return record


# ----------------------------------------------------------------------------- table

# (case, label, how to read the value from a record, True if higher is better); a path
# "x/case" is x divided by x of the same target's record for that other case.
METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("rpc-50", "calls/s", "throughput", True),
    ("rpc-50", "p99 ms", "latency_ms.p99", False),
    ("rpc-1", "calls/s", "throughput", True),
    ("rpc-1", "p50 ms", "latency_ms.p50", False),
    ("fanout-100", "delivered events/s", "throughput", True),
    ("fanout-100", "p99 ms", "latency_ms.p99", False),
    ("fanout-100", "broker CPU µs/event", "broker.cpu_us_per_op", False),
    ("fanout-100", "broker peak RSS, MiB", "broker.peak_rss_kib", False),
    ("fanout-100-stalled", "delivered events/s", "throughput", True),
    ("fanout-100-stalled", "events/s ÷ fanout-100's", "throughput/fanout-100", True),
    ("fanout-100-stalled", "broker peak RSS, MiB", "broker.peak_rss_kib", False),
    ("fanout-rate-1000", "delivered events/s", "throughput", True),
    ("fanout-rate-1000", "p50 ms", "latency_ms.p50", False),
    ("fanout-rate-1000", "p99 ms", "latency_ms.p99", False),
    ("connections", "set-ups/s", "throughput", True),
    ("connections", "KiB RSS per idle session", "rss_per_session_kib", False),
    ("connections", "RSS before sessions, MiB", "broker_idle_rss_kib", False),
    ("connections", "RSS with all sessions, MiB", "broker_loaded_rss_kib", False),
)


def pick(record: dict[str, Any] | None, path: str) -> float | None:
    value: Any = record
    for key in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(key)
    if not isinstance(value, (int, float)):
        return None
    if path.endswith("rss_kib"):
        return value / 1024
    return float(value)


def value_of(
    results: dict[tuple[str, str], dict[str, Any]], target: str, case: str, path: str
) -> float | None:
    """The metric ``path`` of ``target``'s record for ``case`` (see METRICS)."""
    path, _, base = path.partition("/")
    value = pick(results.get((target, case)), path)
    if not base or value is None:
        return value
    denominator = pick(results.get((target, base)), path)
    return value / denominator if denominator else None


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if value >= 1000:
        return f"{value:,.0f}"
    if value >= 100:
        return f"{value:.0f}"
    if value >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def ratio(a: float | None, b: float | None) -> str:
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}x"


def table(results: dict[tuple[str, str], dict[str, Any]], targets: Sequence[str]) -> str:
    cols = [t for t in TARGETS if t in targets] + [t for t in targets if t in TREES]
    head = ["case", "metric", *cols]
    if "ours" in cols and "crossbar" in cols:
        head.append("ours / crossbar")
    if "ours" in cols and "floor" in cols:
        head.append("ours / floor")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for case, label, path, higher in METRICS:
        if not any((t, case) in results for t in cols):
            continue
        values = {t: value_of(results, t, case, path) for t in cols}
        row = [case, label + (" ↑" if higher else " ↓")]
        for t in cols:
            rec = results.get((t, case))
            row.append("pending" if rec is None and t == "ours" else fmt(values[t]))
        if "ours" in cols and "crossbar" in cols:
            row.append(ratio(values["ours"], values["crossbar"]))
        if "ours" in cols and "floor" in cols:
            row.append(ratio(values["ours"], values["floor"]))
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- main


def emit(record: dict[str, Any], out: Path | None) -> None:
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        with out.open("a") as f:
            f.write(line + "\n")


@contextlib.contextmanager
def running(target: str, cpus: list[int], broker_args: Sequence[str]) -> Iterator[Server]:
    server = start(target, cpus, broker_args)
    try:
        yield server
    finally:
        server.stop()


def main(argv: Sequence[str] | None = None) -> int:
    from bench.loadgen import parse_cpus

    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default=",".join(TARGETS), help="ours,crossbar,floor")
    ap.add_argument("--cases", default=",".join(c.name for c in CASES))
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--client", default="fast", choices=("fast", "websockets"))
    ap.add_argument("--procs", type=int, default=1)
    ap.add_argument("--server-cpu", default="0", help="CPUs for the server ('' = no pinning)")
    ap.add_argument("--client-cpu", default="1", help="CPUs for the load generator")
    ap.add_argument("--broker-arg", action="append", default=[], help="extra `broker` flag")
    ap.add_argument("--url", help="measure this running router instead of starting servers")
    ap.add_argument("--pub-url", help="with --url: publisher's node (cluster)")
    ap.add_argument("--pid", type=int, action="append", default=[], help="with --url")
    ap.add_argument("--target", default="router", help="with --url: name in the records")
    ap.add_argument("--out", type=Path, help="append the JSON lines to this file")
    ap.add_argument(
        "--tree",
        action="append",
        default=[],
        help="NAME=PATH: also run our broker from source tree PATH as target NAME (repeat)",
    )
    ns = ap.parse_args(argv)
    for spec in ns.tree:
        name, _, path = spec.partition("=")
        TREES[name] = Path(path).resolve()

    cases = [c for c in CASES if c.name in ns.cases.split(",")]
    if ns.pub_url:
        cases = [Case("cluster-100", "cluster", ("--subscribers", "100"), "fanout A -> B")]
    results: dict[tuple[str, str], dict[str, Any]] = {}
    server_cpus = parse_cpus(ns.server_cpu)

    if ns.url:
        for case in cases:
            record = run_loadgen(case, ns.url, ns.target, ns.pid, ns)
            record["case"] = case.name
            emit(record, ns.out)
            results[(ns.target, case.name)] = record
        print()
        print(table_for_single(results, ns.target))
        return 0

    targets = [t for t in ns.targets.split(",") if t] + [t for t in TREES if t not in ns.targets]
    if "crossbar" in targets and not crossbar_available():
        print(f"# crossbar skipped: {CROSSBAR} missing (run bench/setup_crossbar.sh)")
        targets.remove("crossbar")
    for target in targets:
        for case in cases:
            if ("ours" if target in TREES else target) not in case.targets:
                continue
            try:
                with running(target, server_cpus, ns.broker_arg) as server:
                    record = run_loadgen(case, server.url, target, [server.proc.pid], ns)
            except RuntimeError as exc:
                record = {"scenario": case.scenario, "target": target, "error": str(exc)}
            record["case"] = case.name
            emit(record, ns.out)
            if "error" not in record:
                results[(target, case.name)] = record
    print()
    shown = targets if "ours" in targets or TREES else [*targets, "ours"]
    print(table(results, shown))
    return 0


def table_for_single(results: dict[tuple[str, str], dict[str, Any]], target: str) -> str:
    lines = [f"| case | metric | {target} |", "|---|---|---|"]
    for (_, case), rec in results.items():
        for c, label, path, _ in METRICS:
            if c == case:
                value = value_of(results, target, case, path)
                lines.append(f"| {case} | {label} | {fmt(value)} |")
        if case.startswith("cluster"):
            for label, path in (
                ("delivered events/s", "throughput"),
                ("p99 ms", "latency_ms.p99"),
                ("broker CPU µs/event", "broker.cpu_us_per_op"),
            ):
                lines.append(f"| {case} | {label} | {fmt(pick(rec, path))} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
