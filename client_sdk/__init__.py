"""An asyncio client for WAMP v2 routers: pub/sub and routed RPC over WebSockets.

Quick start::

    import client_sdk

    async with client_sdk.connect("ws://127.0.0.1:8080/ws", "realm1") as session:
        await session.subscribe("com.example.tick", lambda event: print(event.args))
        await session.publish("com.example.tick", 1, options=client_sdk.PublishOptions(acknowledge=True))
        result = await session.call("com.example.add", 2, 3)
        print(result.value)

``connect`` gives one session; ``Client`` keeps one alive (reconnecting with
backoff and restoring subscriptions and registrations; with
``subscribe(..., resume=True)`` it also fetches the events it missed from the
router's event history); ``client_sdk.sync`` is a blocking facade for scripts;
``wampc`` is the command-line client. The SDK speaks standard WAMP only, so it
works with any WAMP router. ``Backoff`` (the reconnection delays) is
``protocol_spec.backoff.Backoff``, re-exported here (it lives in protocol_spec so
that the broker's Redis link can share it).
"""

from __future__ import annotations

from protocol_spec.backoff import Backoff

from .auth import AnonymousAuth, Authenticator, AuthError, CryptosignAuth, TicketAuth, WampCraAuth
from .client import Client, ClientState
from .connection import connect
from .errors import (
    ApplicationError,
    ClientError,
    JoinError,
    NotConnected,
    ProtocolViolation,
    SessionClosed,
    TransportLost,
)
from .pubsub import EventStream, Subscription
from .rpc import ProgressiveCall, Registration
from .session import Session
from .values import CallOptions, CallResult, Event, Gap, InvocationDetails, PublishOptions

__all__ = [
    "AnonymousAuth",
    "ApplicationError",
    "AuthError",
    "Authenticator",
    "Backoff",
    "CallOptions",
    "CallResult",
    "Client",
    "ClientError",
    "ClientState",
    "CryptosignAuth",
    "Event",
    "EventStream",
    "Gap",
    "InvocationDetails",
    "JoinError",
    "NotConnected",
    "ProgressiveCall",
    "ProtocolViolation",
    "PublishOptions",
    "Registration",
    "Session",
    "SessionClosed",
    "Subscription",
    "TicketAuth",
    "TransportLost",
    "WampCraAuth",
    "connect",
]
