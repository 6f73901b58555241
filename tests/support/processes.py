"""Start real broker (and redis-server) processes on 127.0.0.1 and stop them by PID.

A broker started with ``--port 0`` logs ``listening on ws://HOST:PORT/ws``; we read
the URL from that line instead of guessing a port.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"listening on (ws[s]?://[^\s]+)")

CLUSTER_TIMING = """
[cluster]
heartbeat_interval = 0.25
node_timeout = 2.0
probe_interval = 0.5
probe_timeout = 1.0
"""
"""A ``[cluster]`` section for tests: a dead node is noticed in about 2.5 s, not 6 s."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class BrokerProcess:
    """A running ``python -m broker`` process and the URL it serves.

    A reader thread drains the process's output into ``lines`` so the pipe never
    fills up and no line is stuck in a buffer while we wait for it.
    """

    proc: subprocess.Popen[str]
    url: str
    args: list[str]
    lines: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def __post_init__(self) -> None:
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with self._cond:
                self.lines.append(line)
                self._cond.notify_all()
        with self._cond:
            self.lines.append("")  # EOF marker
            self._cond.notify_all()

    @property
    def output(self) -> str:
        """Everything the process printed so far."""
        return self.read_output()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1].split("/", 1)[0])

    @property
    def http_base(self) -> str:
        return self.url.replace("ws://", "http://", 1).rsplit("/", 1)[0]

    def read_output(self, timeout: float = 0.0) -> str:
        """Everything the process printed so far."""
        with self._cond:
            return "".join(self.lines)

    def wait_for_output(self, pattern: str, timeout: float = 10.0, start: int = 0) -> str:
        """Wait until a line (from index ``start``) matches ``pattern``; return all output."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines[start:]:
                    if rx.search(line):
                        return "".join(self.lines)
                if self.lines and self.lines[-1] == "":
                    break  # process ended
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._cond.wait(remaining)
            text = "".join(self.lines)
        raise AssertionError(f"pattern {pattern!r} not printed; output:\n{text}")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)

    def stop(self, timeout: float = 10.0) -> int:
        """SIGTERM, wait, then SIGKILL if needed; return the exit code."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


def start_broker(
    *extra_args: str,
    port: int = 0,
    env: dict[str, str] | None = None,
    timeout: float = 15.0,
) -> BrokerProcess:
    """Start ``python -m broker --host 127.0.0.1 --port PORT EXTRA...`` and wait for it."""
    args = [sys.executable, "-m", "broker", "--host", "127.0.0.1", "--port", str(port), *extra_args]
    full_env = dict(os.environ)
    full_env["PYTHONUNBUFFERED"] = "1"
    if env:
        full_env.update(env)
    proc = subprocess.Popen(
        args,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=full_env,
    )
    broker = BrokerProcess(proc=proc, url="", args=args)
    try:
        text = broker.wait_for_output(_LISTENING.pattern, timeout=timeout)
    except AssertionError:
        broker.kill()
        raise
    match = _LISTENING.search(text)
    assert match is not None
    broker.url = match.group(1)
    return broker


def local_ports(pid: int) -> set[int]:
    """Local TCP ports of the sockets process ``pid`` holds (from /proc)."""
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
    return ports


def kill_connections(url: str, pid: int) -> int:
    """CLIENT KILL every connection process ``pid`` holds to the Redis at ``url``."""
    import redis

    ports = local_ports(pid)
    client = redis.Redis.from_url(url)
    killed = 0
    try:
        for info in client.client_list():
            if int(info["addr"].rsplit(":", 1)[1]) in ports:
                killed += int(client.execute_command("CLIENT", "KILL", "ID", info["id"]))
    finally:
        client.close()
    return killed


def subscriber_protocols(port: int, pids: Sequence[int]) -> list[int]:
    """The RESP version (``resp=``) of each subscribed connection processes ``pids`` hold
    to the Redis server on ``port`` (``CLIENT LIST``: channels, patterns or shard channels)."""
    import redis

    ports = set().union(*(local_ports(pid) for pid in pids))
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        clients = client.client_list()
    finally:
        client.close()
    return [
        int(info["resp"])
        for info in clients
        if int(info["addr"].rsplit(":", 1)[1]) in ports
        and any(int(info.get(kind, 0)) for kind in ("sub", "psub", "ssub"))
    ]


@dataclass
class RedisProcess:
    """A real redis-server on a free loopback port, without persistence."""

    proc: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.kill()


def start_redis(port: int | None = None, extra: Sequence[str] = ()) -> RedisProcess:
    """Start redis-server on 127.0.0.1 (a free port unless given) and wait until it answers."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed (the test command installs it)")
    port = port or free_port()
    proc = subprocess.Popen(
        [
            exe,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return RedisProcess(proc=proc, port=port)
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)  # polling a starting process, not synchronising test logic
    proc.kill()
    raise RuntimeError(f"redis-server did not start on port {port}")


@contextlib.contextmanager
def broker_nodes(
    redis_url: str, config: Path, names: Sequence[str]
) -> Iterator[list[BrokerProcess]]:
    """One broker node per name on the Redis at ``redis_url``, all with ``config``; stopped after."""
    nodes: list[BrokerProcess] = []
    try:
        for name in names:
            nodes.append(
                start_broker("--redis", redis_url, "--node-id", name, "--config", str(config))
            )
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@contextlib.contextmanager
def nodes_on_one_redis(config: Path, names: Sequence[str]) -> Iterator[list[BrokerProcess]]:
    """A fresh redis-server and one broker node per name, all with ``config``; stopped after."""
    redis = start_redis()
    try:
        with broker_nodes(redis.url, config, names) as nodes:
            yield nodes
    finally:
        redis.kill()
