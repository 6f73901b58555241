"""``SessionPort``: what the client roles (``pubsub``, ``rpc``) need from their session.

The roles talk to the router through this port and nothing else, so they import
no ``session`` module: ``Session`` implements the port and hands itself to the
roles it creates. A test can hand them any other object with these members.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

__all__ = ["ReplyHandler", "SessionPort"]

ReplyHandler = Callable[[Any], Any]
"""Turns a request's reply message into the request's result (runs when the reply arrives)."""


class SessionPort(Protocol):
    """The session as the roles see it: request IDs, sending, requests, tasks."""

    @property
    def is_open(self) -> bool:
        """True while the session is joined and not closing."""
        ...

    def router_features(self, role: str) -> frozenset[str]:
        """The features the router announced for ``role`` ("broker" or "dealer")."""
        ...

    def next_request(self) -> int:
        """A fresh request ID for a message this session sends."""
        ...

    async def send(self, message: Any) -> None:
        """Send one WAMP message; raise ``SessionClosed`` if the session has ended."""
        ...

    async def request(self, message: Any, on_reply: ReplyHandler | None = None) -> Any:
        """Send a request (PUBLISH, SUBSCRIBE, …) and wait for its reply.

        Returns ``on_reply(reply)`` (or the reply itself). Raises
        ``ApplicationError`` for an ERROR answer and ``SessionClosed`` or
        ``TransportLost`` if the session ends first.
        """
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the session keeps a reference to until it finishes."""
        ...
