"""Cluster backends beyond the in-process one: ``redis`` (many nodes through Redis).

The core talks to a backend through the port ``broker.core.ports`` (``Cluster``, and
``ClusterHost`` for the way back); the in-process default, ``LocalCluster``, lives
there too. ``broker.server`` wires a backend to the router. The Redis protocol is in
protocol_spec/cluster.md.
"""

from __future__ import annotations

__all__: list[str] = []
