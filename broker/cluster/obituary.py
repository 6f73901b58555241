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
from .connect import connect_clients, parse_redis_url

__all__ = ["announce_gone"]


async def announce_gone(url: str, node: str, timeout: float = 1.0) -> None:
    """Delete ``node``'s heartbeat key and publish ``gone`` for it (at most ``timeout`` s each step).

    Only for a node whose process is known to have ended: a live node would be dropped
    by the others while it still serves (until its next heartbeat republishes it).
    """
    cmd, sub, _master = await connect_clients(parse_redis_url(url), timeout)
    try:
        pipe = cmd.pipeline(transaction=False)
        pipe.delete(keys.node_key(node))
        pipe.publish(keys.CONTROL, NodeGone(node).pack())
        await asyncio.wait_for(pipe.execute(), timeout)
    finally:
        await cmd.aclose()
        await sub.aclose()
