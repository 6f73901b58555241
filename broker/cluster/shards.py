"""A cluster session on a Redis Cluster: the command client and one pub/sub lane per master.

The command client is redis-py's cluster client (``connect.cluster_client``): the
writer's pipelines are split per master by slot, keeping each master's commands in
order. The pub/sub side is managed here, not by redis-py's ``ClusterPubSub``: at
connect the node takes the slot map the client loaded and opens one plain pub/sub
connection to every master; every channel is sharded (``SSUBSCRIBE``) on the lane of
the master serving its slot (``ShardMap.route``), and every lane has its own probe
channel, named to hash into that master's slots. The map is fixed for the session:
when it stops being true (a master dies, a failover promotes a replica, a slot
migrates and Redis unsubscribes its shard channels) the session ends and the next
one loads the new map (protocol_spec/cluster.md, "Redis Cluster").
"""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from . import keys
from .connect import PUBSUB_PROTOCOL, Endpoint, RedisTarget, cluster_client
from .link import Lane

__all__ = ["ShardMap", "connect_cluster", "lanes_for", "servers"]


@dataclass(frozen=True, slots=True)
class ShardMap:
    """The masters of a Redis Cluster and which one serves each slot (one session's view)."""

    masters: tuple[Endpoint, ...]
    slots: tuple[int, ...]
    """Slot → index of its master in ``masters``."""

    def route(self, channel: bytes) -> int:
        """The index of the master (and lane) serving ``channel``'s slot."""
        return self.slots[key_slot(channel)]

    def slots_of(self, index: int) -> set[int]:
        """The slots master ``index`` serves."""
        return {slot for slot, owner in enumerate(self.slots) if owner == index}


def shard_map(cmd: RedisCluster) -> ShardMap:
    """The slot map the cluster client loaded; ``ConnectionError`` if a slot has no master."""
    cache = cmd.nodes_manager.slots_cache
    masters: list[Endpoint] = []
    index: dict[str, int] = {}
    slots: list[int] = []
    for slot in range(REDIS_CLUSTER_HASH_SLOTS):
        nodes = cache.get(slot)
        if not nodes:
            raise ConnectionError(f"Redis Cluster slot {slot} is not served")
        primary = nodes[0]
        if primary.name not in index:
            index[primary.name] = len(masters)
            masters.append(Endpoint(primary.host, int(primary.port)))
        slots.append(index[primary.name])
    return ShardMap(tuple(masters), tuple(slots))


def servers(cmd: RedisCluster) -> tuple[Endpoint, ...]:
    """Every server (masters and replicas) the cluster client knows of."""
    return tuple(Endpoint(node.host, int(node.port)) for node in cmd.get_nodes())


async def connect_cluster(
    target: RedisTarget, timeout: float, known: tuple[Endpoint, ...] = ()
) -> tuple[RedisCluster, ShardMap, list[Redis]]:
    """The session's cluster command client (connected), its slot map, a pub/sub client per master.

    ``known`` servers (from an earlier session) are tried after the seeds. The pub/sub
    clients never retry on their own and have no read timeout.
    """
    cmd = cluster_client(target, timeout, known)
    try:
        await cmd.initialize()
        found = shard_map(cmd)
    except BaseException:
        await cmd.aclose()
        raise
    retry = Retry(NoBackoff(), 0)
    subs = [
        Redis(
            host=master.host,
            port=master.port,
            password=target.password,
            socket_connect_timeout=timeout,
            retry=retry,
            protocol=PUBSUB_PROTOCOL,
        )
        for master in found.masters
    ]
    return cmd, found, subs


async def lanes_for(node: str, found: ShardMap, subs: list[Redis]) -> list[Lane]:
    """One connected lane per master, each with a probe channel in that master's slots."""
    lanes = []
    for index, client in enumerate(subs):
        pubsub = client.pubsub()
        await pubsub.connect()  # type: ignore[no-untyped-call]
        lanes.append(Lane(pubsub, keys.probe(node, keys.probe_tag(found.slots_of(index)))))
    return lanes
