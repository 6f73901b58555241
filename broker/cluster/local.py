"""The in-process backend: one node, every cluster hook a no-op (the default)."""

from __future__ import annotations

from broker.core.cluster import LocalCluster

__all__ = ["LocalCluster"]
