"""A real Redis Cluster on loopback: 6 redis-server in cluster mode, 3 masters with replicas.

Every server is started on a free port (its cluster bus on port + 10000, so the port
is chosen with that one free too) and stopped by its PID. ``cluster-node-timeout``
is 1000 ms, so a killed master's replica takes over within a few seconds.
``RedisClusterSet.url`` is the broker's ``redis+cluster://`` URL for the set.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis

from .processes import RedisProcess, start_redis

__all__ = ["RedisClusterSet", "start_redis_cluster"]

NODE_TIMEOUT_MS = 1000


def _free_cluster_port() -> int:
    """A port free on 127.0.0.1 whose cluster bus port (port + 10000) is free too."""
    for _ in range(200):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port + 10000 > 65535:
            continue
        try:
            with socket.socket() as bus:
                bus.bind(("127.0.0.1", port + 10000))
        except OSError:
            continue
        return port
    raise RuntimeError("no free port pair for a cluster node")


def _cluster_state(port: int) -> str | None:
    """``cluster_state`` as the server on ``port`` says (``CLUSTER INFO``)."""
    client = redis.Redis(port=port, socket_timeout=1)
    try:
        raw = client.execute_command("CLUSTER", "INFO")
    finally:
        client.close()
    text = raw.decode() if isinstance(raw, bytes) else str(raw)
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return fields.get("cluster_state")


@dataclass
class RedisClusterSet:
    """The 6 processes of one Redis Cluster and what the servers say about it."""

    servers: list[RedisProcess]

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{s.port}" for s in self.servers)
        return f"redis+cluster://{hosts}"

    def alive(self) -> list[RedisProcess]:
        return [s for s in self.servers if s.proc.poll() is None]

    def masters(self) -> dict[int, list[tuple[int, int]]]:
        """Master port → its slot ranges, as a live server says (``CLUSTER SLOTS``)."""
        for server in self.alive():
            client = redis.Redis(port=server.port, socket_timeout=1)
            try:
                slots = client.execute_command("CLUSTER", "SLOTS")
            except redis.RedisError:
                continue
            finally:
                client.close()
            found: dict[int, list[tuple[int, int]]] = {}
            for entry in slots:
                start, end, master = int(entry[0]), int(entry[1]), entry[2]
                found.setdefault(int(master[1]), []).append((start, end))
            return found
        return {}

    def master_of_slot(self, slot: int) -> int:
        """The port of the master serving ``slot``."""
        for port, ranges in self.masters().items():
            if any(start <= slot <= end for start, end in ranges):
                return port
        raise AssertionError(f"no master serves slot {slot}")

    def server(self, port: int) -> RedisProcess:
        return next(s for s in self.servers if s.port == port)

    def node_id(self, port: int) -> str:
        """The cluster node ID of the server on ``port``."""
        client = redis.Redis(port=port, socket_timeout=2)
        try:
            return str(client.execute_command("CLUSTER", "MYID").decode())
        finally:
            client.close()

    def replica_of(self, master: int) -> int:
        """The port of a live replica of the master on ``master``."""
        wanted = self.node_id(master)
        for server in self.alive():
            client = redis.Redis(port=server.port, socket_timeout=2)
            try:
                info = client.info("replication")
                if info.get("role") != "slave" or int(info.get("master_port", 0)) != master:
                    continue
                mine = client.execute_command("CLUSTER", "MYID").decode()
                lines = client.execute_command("CLUSTER", "NODES").decode().splitlines()
            finally:
                client.close()
            for line in lines:
                if line.startswith(mine) and wanted in line:
                    return server.port
        raise AssertionError(f"no replica of {master}")

    def manual_failover(self, master: int) -> int:
        """``CLUSTER FAILOVER`` on a replica of ``master`` (both stay up); the new master's port."""
        replica = self.replica_of(master)
        client = redis.Redis(port=replica, socket_timeout=5)
        try:
            client.execute_command("CLUSTER", "FAILOVER")
        finally:
            client.close()
        return replica

    def move_empty_slot(self, slot: int, to: int) -> None:
        """Move ``slot`` (holding no keys) to the master on ``to`` (``CLUSTER SETSLOT``)."""
        source = self.master_of_slot(slot)
        source_id, target_id = self.node_id(source), self.node_id(to)
        steps = [
            (to, ("IMPORTING", source_id)),
            (source, ("MIGRATING", target_id)),
            (to, ("NODE", target_id)),
            (source, ("NODE", target_id)),
        ]
        for port, args in steps:
            client = redis.Redis(port=port, socket_timeout=5)
            try:
                client.execute_command("CLUSTER", "SETSLOT", slot, *args)
            finally:
                client.close()

    def wait_ok(self, timeout: float = 30.0, without: int | None = None) -> float:
        """Wait until every live server says ``cluster_state:ok`` and no master is ``without``.

        Returns ``time.monotonic()`` when that was first seen.
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                states = [_cluster_state(s.port) for s in self.alive()]
                masters = self.masters()
            except redis.RedisError:
                states, masters = [], {}
            if (
                states
                and all(state == "ok" for state in states)
                and len(masters) == 3
                and without not in masters
            ):
                return time.monotonic()
            time.sleep(0.05)  # polling external processes, not synchronising test logic
        raise AssertionError(f"the Redis Cluster did not reach cluster_state:ok in {timeout} s")

    def stop(self) -> None:
        for server in self.servers:
            server.kill()


def start_redis_cluster(directory: Path) -> RedisClusterSet:
    """Start 6 cluster-enabled servers, create the cluster (1 replica each), wait for ok."""
    cli = shutil.which("redis-cli")
    if cli is None:
        raise RuntimeError("redis-cli is not installed (the test command installs it)")
    servers: list[RedisProcess] = []
    deployment = RedisClusterSet(servers)
    try:
        for index in range(6):
            port = _free_cluster_port()
            where = directory / f"node-{index}"
            where.mkdir(parents=True, exist_ok=True)
            extra = (
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                str(where / "nodes.conf"),
                "--cluster-node-timeout",
                str(NODE_TIMEOUT_MS),
                "--dir",
                str(where),
            )
            servers.append(start_redis(port, extra))
        hosts = [f"127.0.0.1:{s.port}" for s in servers]
        subprocess.run(
            [cli, "--cluster", "create", *hosts, "--cluster-replicas", "1", "--cluster-yes"],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
        deployment.wait_ok()
        _wait_replicas(deployment)
    except BaseException:
        deployment.stop()
        raise
    return deployment


def _wait_replicas(deployment: RedisClusterSet, timeout: float = 30.0) -> None:
    """Wait until every replica's link to its master is up (so a failover can happen)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        linked = 0
        for server in deployment.servers:
            client = redis.Redis(port=server.port, socket_timeout=1)
            try:
                info = client.info("replication")
            finally:
                client.close()
            if info.get("role") == "slave" and info.get("master_link_status") == "up":
                linked += 1
        if linked == 3:
            return
        time.sleep(0.05)  # polling external processes, not synchronising test logic
    raise AssertionError("the replicas did not link to their masters in time")
