"""A real Redis Sentinel deployment on loopback: 1 master, 1 replica, 3 sentinels.

Every process is started on a free port and stopped by its PID. Sentinels are tuned
for tests (``down-after-milliseconds 1000``, ``failover-timeout 5000``) so a killed
master is replaced in a few seconds. ``SentinelSet.url`` is the broker's
``redis+sentinel://`` URL for the set.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

from .processes import RedisProcess, free_port, start_redis

__all__ = ["SERVICE", "SentinelSet", "start_sentinel_set"]

SERVICE = "mymaster"


@dataclass
class SentinelSet:
    """The processes of one Sentinel deployment and what the sentinels say about it."""

    servers: list[RedisProcess]
    sentinels: list[RedisProcess]
    _extra: list[RedisProcess] = field(default_factory=list)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"

    def master_port(self) -> int | None:
        """The master's port as the first sentinel that answers names it (None: none)."""
        for sentinel in self.sentinels:
            if sentinel.proc.poll() is not None:
                continue
            try:
                client = redis.Redis(port=sentinel.port, socket_timeout=1)
                try:
                    addr = client.sentinel_get_master_addr_by_name(SERVICE)
                finally:
                    client.close()
            except redis.RedisError:
                continue
            return int(addr[1]) if addr else None
        return None

    def server(self, port: int) -> RedisProcess:
        """The data server listening on ``port``."""
        return next(s for s in self.servers if s.port == port)

    def role(self, port: int) -> str:
        """``master`` or ``slave``, as the server on ``port`` says (``down`` if it does not)."""
        try:
            client = redis.Redis(port=port, socket_timeout=1)
            try:
                return str(client.execute_command("ROLE")[0].decode())
            finally:
                client.close()
        except redis.RedisError:
            return "down"

    def failover(self) -> None:
        """``SENTINEL FAILOVER``: promote the replica although the master is fine."""
        client = redis.Redis(port=self.sentinels[0].port, socket_timeout=5)
        try:
            client.execute_command("SENTINEL", "FAILOVER", SERVICE)
        finally:
            client.close()

    def wait_promoted(self, old: int, timeout: float = 30.0) -> tuple[int, float]:
        """Wait until the sentinels name a master other than ``old`` that says it is one.

        Returns (new master port, ``time.monotonic()`` when that was first seen).
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            port = self.master_port()
            if port is not None and port != old and self.role(port) == "master":
                return port, time.monotonic()
            time.sleep(0.05)  # polling external processes, not synchronising test logic
        raise AssertionError(f"no new master promoted within {timeout} s")

    def stop(self) -> None:
        for process in (*self.sentinels, *self.servers):
            process.kill()


def _sentinel_conf(directory: Path, port: int, master_port: int) -> Path:
    path = directory / f"sentinel-{port}.conf"
    path.write_text(
        f"port {port}\n"
        "bind 127.0.0.1\n"
        f"dir {directory}\n"
        f"sentinel monitor {SERVICE} 127.0.0.1 {master_port} 2\n"
        f"sentinel down-after-milliseconds {SERVICE} 1000\n"
        f"sentinel failover-timeout {SERVICE} 5000\n"
        f"sentinel parallel-syncs {SERVICE} 1\n",
        encoding="utf-8",
    )
    return path


def _start_sentinel(conf: Path, port: int) -> RedisProcess:
    exe = shutil.which("redis-sentinel")
    if exe is None:
        raise RuntimeError("redis-sentinel is not installed (the test command installs it)")
    proc = subprocess.Popen([exe, str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return RedisProcess(proc=proc, port=port)


def _ready(sentinels: list[RedisProcess], timeout: float = 30.0) -> None:
    """Wait until every sentinel sees the replica and the two other sentinels."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        good = 0
        for sentinel in sentinels:
            try:
                client = redis.Redis(port=sentinel.port, socket_timeout=1)
                try:
                    master = client.sentinel_master(SERVICE)
                    replicas = client.sentinel_slaves(SERVICE)
                finally:
                    client.close()
            except redis.RedisError:
                continue
            up = [r for r in replicas if not r["is_sdown"] and r.get("master-link-status") == "ok"]
            if master["num-other-sentinels"] >= len(sentinels) - 1 and up:
                good += 1
        if good == len(sentinels):
            return
        time.sleep(0.1)  # polling external processes, not synchronising test logic
    raise RuntimeError("the sentinels did not see the whole deployment in time")


def start_sentinel_set(directory: Path) -> SentinelSet:
    """Start a master, its replica and three sentinels; wait until they all agree."""
    # --dir: a replica writes the RDB of its full sync to disk, keep it out of the tree
    where = ("--dir", str(directory))
    master = start_redis(extra=where)
    replica = start_redis(extra=(*where, "--replicaof", "127.0.0.1", str(master.port)))
    sentinels: list[RedisProcess] = []
    deployment = SentinelSet([master, replica], sentinels)
    try:
        for _ in range(3):
            port = free_port()
            sentinels.append(_start_sentinel(_sentinel_conf(directory, port, master.port), port))
        _ready(sentinels)
    except BaseException:
        deployment.stop()
        raise
    return deployment
