"""Password guessing against the broker, and what it does to a session in another realm.

Usage (from the repository root)::

    python -m bench.auth_guess                          # ticket and wampcra, ~2 minutes
    python -m bench.auth_guess --methods ticket --attempts 1000 --connections 10
    python -m bench.auth_guess --broker-path /work/main # the broker from another checkout

For each method a fresh broker is started (pinned to ``--server-cpu``; this process to
``--client-cpu``) with realm ``secure`` (ticket principal ``alice``: a salted PBKDF2 hash
with the default 100,000 rounds; wampcra principal ``bob``: a salted derived key) and an
anonymous realm ``witness``. A witness session in ``witness`` publishes with
``acknowledge`` every ``--interval`` seconds and times PUBLISH → PUBLISHED: first
``--quiet`` seconds with nothing else going on, then while ``--connections`` guessers
(all from 127.0.0.1) try wrong credentials for ``alice``/``bob``, one attempt per
connection (WebSocket, HELLO, CHALLENGE, AUTHENTICATE, ABORT), until ``--attempts``
attempts are answered or ``--max-time`` seconds pass. Prints one JSON line per method:
witness latency (ms) quiet and during the run, the guesser's answered attempts per
second (all from one address), and the broker's ``wamp_auth_*`` counters (checked
failures vs refused unchecked) when its /metrics has them.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack

from bench.compare import ROOT, Server, _drain, _pin, _wait_listening
from bench.fastws import connect_fast
from bench.loadgen import percentiles
from bench.wamp import ABORT, HELLO, MSGPACK, PUBLISH, PUBLISHED, ROLES, check_local, join

CHALLENGE, AUTHENTICATE = 4, 5
ITERATIONS = 100_000  # broker.auth.secrets.DEFAULT_ITERATIONS (~50 ms per check)


def config_text() -> str:
    """Realm ``secure`` (ticket alice, wampcra bob) and anonymous realm ``witness``."""
    from broker.auth.secrets import hash_ticket
    from broker.auth.wampcra import derive_key

    alice = hash_ticket("the-real-ticket", iterations=ITERATIONS)
    bob = derive_key("the-real-secret", "salt-of-bob", 1000, 32).decode()
    return f"""
[[realm]]
name = "secure"
anonymous = false
[realm.auth.ticket.principals.alice]
ticket_hash = "{alice}"
role = "user"
[realm.auth.wampcra.principals.bob]
derived_key = "{bob}"
salt = "salt-of-bob"
iterations = 1000
keylen = 32
role = "user"

[[realm]]
name = "witness"
anonymous = true
"""


def start_broker(config: Path, cpus: list[int], broker_path: Path) -> Server:
    """``python -m broker`` from ``broker_path`` (its PYTHONPATH), pinned to ``cpus``."""
    args = [sys.executable, "-m", "broker", "--host", "127.0.0.1", "--port", "0"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(broker_path))
    proc = subprocess.Popen(
        [*args, "--config", str(config)],
        cwd=broker_path,
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


async def witness(url: str, interval: float, stop: asyncio.Event, samples: list[int]) -> None:
    """Publish with acknowledge every ``interval`` s until ``stop``; record latencies (ns)."""
    session = await join(url, "witness")
    try:
        next_at = time.monotonic()
        while not stop.is_set():
            request = session.next_id()
            began = time.perf_counter_ns()
            await session.send([PUBLISH, request, {"acknowledge": True}, "bench.witness", [1]])
            async with asyncio.timeout(10):
                while True:
                    reply = await session.recv()
                    if reply[0] == PUBLISHED and reply[1] == request:
                        break
            samples.append(time.perf_counter_ns() - began)
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    finally:
        await session.close()


async def attempt(url: str, method: str) -> bool:
    """One wrong login; True when the router answered ABORT (or closed) after AUTHENTICATE."""
    authid = "alice" if method == "ticket" else "bob"
    ws = await connect_fast(url, [MSGPACK], open_timeout=10)
    try:
        details = {"roles": ROLES, "authmethods": [method], "authid": authid}
        await ws.send(msgpack.packb([HELLO, "secure", details]))
        async with asyncio.timeout(15):
            reply = msgpack.unpackb(await ws.recv())
            if reply[0] != CHALLENGE:
                return reply[0] == ABORT
            guess = base64.b64encode(os.urandom(12)).decode()
            await ws.send(msgpack.packb([AUTHENTICATE, guess, {}]))
            try:
                reply = msgpack.unpackb(await ws.recv())
            except Exception:
                return True  # closed without a frame: still an answer
            return bool(reply[0] == ABORT)
    finally:
        await ws.close()


async def guessers(
    url: str, method: str, attempts: int, connections: int, max_time: float
) -> dict[str, Any]:
    """``connections`` loops of wrong logins until ``attempts`` are answered or time is up."""
    answered = errors = started_attempts = 0
    started = time.monotonic()
    deadline = started + max_time

    async def loop() -> None:
        nonlocal answered, errors, started_attempts
        while started_attempts < attempts and time.monotonic() < deadline:
            started_attempts += 1
            try:
                async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                    ok = await attempt(url, method)
            except TimeoutError:
                return
            except Exception:
                ok = False
            if ok:
                answered += 1
            else:
                errors += 1

    await asyncio.gather(*(loop() for _ in range(connections)))
    elapsed = time.monotonic() - started
    return {
        "answered": answered,
        "errors": errors,
        "elapsed_s": round(elapsed, 2),
        "attempts_per_s_per_address": round(answered / elapsed, 2),
    }


def auth_counters(url: str) -> dict[str, float]:
    """The broker's ``wamp_auth_*_total`` samples (empty when it has none)."""
    base = url.split("://", 1)[1].split("/", 1)[0]
    with urllib.request.urlopen(f"http://{base}/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for name, value in re.findall(r"^(wamp_auth_\w+_total)\{[^}]*\} (\S+)$", text, re.M):
        found[name] = found.get(name, 0.0) + float(value)
    return found


async def measure(url: str, p: argparse.Namespace, method: str) -> dict[str, Any]:
    stop = asyncio.Event()
    quiet: list[int] = []
    task = asyncio.create_task(witness(url, p.interval, stop, quiet))
    await asyncio.sleep(p.quiet)  # the quiet window is a duration by definition
    quiet_samples = list(quiet)
    quiet.clear()
    run = await guessers(url, method, p.attempts, p.connections, p.max_time)
    loaded = list(quiet)
    stop.set()
    await task
    counters = auth_counters(url)
    checked = counters.get("wamp_auth_failures_total")
    return {
        "scenario": "auth-guess",
        "method": method,
        "params": {
            "attempts": p.attempts,
            "connections": p.connections,
            "max_time": p.max_time,
            "interval": p.interval,
        },
        "witness_quiet_ms": percentiles(quiet_samples),
        "witness_guessing_ms": percentiles(loaded),
        "guesser": run,
        "broker_counters": counters,
        "checked_per_s": round(checked / run["elapsed_s"], 2) if checked is not None else None,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.auth_guess", description=__doc__)
    parser.add_argument("--methods", default="ticket,wampcra")
    parser.add_argument("--attempts", type=int, default=1000)
    parser.add_argument("--connections", type=int, default=10)
    parser.add_argument("--max-time", type=float, default=60.0, help="cap of the guessing run")
    parser.add_argument("--quiet", type=float, default=5.0, help="seconds of quiet baseline")
    parser.add_argument("--interval", type=float, default=0.01, help="witness publish period")
    parser.add_argument("--server-cpu", default="0")
    parser.add_argument("--client-cpu", default="1")
    parser.add_argument("--broker-path", type=Path, default=ROOT, help="checkout to run")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    p = build_parser().parse_args(argv)
    cpus = [int(c) for c in p.server_cpu.split(",") if c]
    client = [int(c) for c in p.client_cpu.split(",") if c]
    if client:
        os.sched_setaffinity(0, client)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "broker.toml"
        config.write_text(config_text())
        for method in p.methods.split(","):
            server = start_broker(config, cpus, p.broker_path.resolve())
            try:
                check_local(server.url)
                record = asyncio.run(measure(server.url, p, method))
            finally:
                server.stop()
            record["broker_path"] = str(p.broker_path)
            print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
