"""A WAMP v2 router: sans-I/O core (broker.core), WebSocket transport, cluster backends."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
