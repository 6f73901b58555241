"""Cluster backends: ``local`` (in-process, the default) and ``redis`` (many nodes).

The core talks to either through ``broker.core.cluster.Cluster``; ``create_backend``
picks one from the settings. The Redis protocol is in protocol_spec/cluster.md.
"""

from __future__ import annotations

from .local import LocalCluster

__all__ = ["LocalCluster"]
