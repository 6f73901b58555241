"""Say that a node is dead, from outside it: ``broker --workers N``'s supervisor.

A node that stops heartbeating is dropped by the others only once its heartbeat key
expires (``node_timeout``), and calls pending on it wait until then. A supervisor
that saw its worker process exit (waitpid) knows better: it deletes the worker's
heartbeat key and publishes ``gone`` for it on the control channel, exactly what
a graceful leave or the reaper publishes (protocol_spec/cluster.md, "Node identity
and liveness"). Every node drops the dead one at once, failing the calls pending on
its callees with ``wamp.error.canceled``; the next heartbeat check of any node then
finds the key gone and reaps the rest (testaments, registration claims) as usual.
"""

from __future__ import annotations

import asyncio

from protocol_spec.cluster import NodeGone

from . import keys
from .connect import parse_redis_url, shared_client

__all__ = ["announce_gone"]


async def announce_gone(url: str, node: str, timeout: float = 1.0) -> None:
    """Delete ``node``'s heartbeat key and publish ``gone`` for it (within ``timeout`` s).

    Only for a node whose process is known to have ended: a live node would be dropped
    by the others while it still serves (until its next heartbeat republishes it).
    The client is ``connect.shared_client``'s (single server, Sentinel's master, or a
    Redis Cluster client, where control envelopes are published sharded).
    """
    publish = parse_redis_url(url).publish_command
    client = shared_client(url, timeout)
    try:
        pipe = client.pipeline(transaction=False)
        pipe.delete(keys.node_key(node))
        pipe.execute_command(publish, keys.CONTROL, NodeGone(node).pack())
        await asyncio.wait_for(pipe.execute(), timeout)
    finally:
        await client.aclose()
