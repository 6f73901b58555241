"""Joining a realm: HELLO with roles and features, CHALLENGE ⇄ AUTHENTICATE, WELCOME.

``handshake`` runs the opening exchange on a fresh transport and returns the
validated WELCOME; ``Session.join`` wraps it with the session's life cycle (see
``states``). ``ROLES`` is what this SDK announces: only what it really implements.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import protocol_spec as wamp
from protocol_spec import ProtocolError
from protocol_spec import errors as wamp_errors

from .auth import AnonymousAuth, Authenticator, AuthError
from .errors import JoinError
from .transport import Transport

__all__ = ["AGENT", "ROLES", "abort_quietly", "auth_list", "handshake", "hello_details", "opt_str"]

log = logging.getLogger(__name__)

AGENT = "client_sdk/0.1"
"""HELLO.Details.agent."""

ROLES: dict[str, dict[str, Any]] = {
    "publisher": {
        "features": {
            "publisher_exclusion": True,
            "publisher_identification": True,
            "subscriber_blackwhite_listing": True,
        }
    },
    "subscriber": {
        "features": {
            "publisher_identification": True,
            "pattern_based_subscription": True,
            "event_retention": True,
        }
    },
    "caller": {
        "features": {
            "caller_identification": True,
            "call_canceling": True,
            "call_timeout": True,
            "progressive_call_results": True,
        }
    },
    "callee": {
        "features": {
            "caller_identification": True,
            "call_canceling": True,
            "progressive_call_results": True,
            "pattern_based_registration": True,
            "shared_registration": True,
        }
    },
}
"""The roles and features announced in HELLO: only what this SDK really implements."""


def opt_str(value: object) -> str | None:
    """``value`` if it is a string, else None (for optional Details entries)."""
    return value if isinstance(value, str) else None


def auth_list(auth: Authenticator | Sequence[Authenticator] | None) -> list[Authenticator]:
    """The authenticators to offer, in order; anonymous when none is given."""
    if auth is None:
        return [AnonymousAuth()]
    if isinstance(auth, Authenticator):
        return [auth]
    methods = list(auth)
    return methods or [AnonymousAuth()]


def hello_details(authenticators: Sequence[Authenticator]) -> dict[str, Any]:
    """Build HELLO.Details: roles with features, agent and the authentication offer."""
    details: dict[str, Any] = {"roles": ROLES, "agent": AGENT}
    methods = [a.authmethod for a in authenticators]
    if methods != ["anonymous"]:
        details["authmethods"] = methods
    authid = next((a.authid for a in authenticators if a.authid is not None), None)
    if authid is not None:
        details["authid"] = authid
    authrole = next((a.authrole for a in authenticators if a.authrole is not None), None)
    if authrole is not None:
        details["authrole"] = authrole
    extra: dict[str, Any] = {}
    for a in authenticators:
        extra.update(a.authextra)
    if extra:
        details["authextra"] = extra
    return details


async def handshake(
    transport: Transport, realm: str, authenticators: Sequence[Authenticator]
) -> wamp.Welcome:
    """Send HELLO, answer CHALLENGEs and return the WELCOME.

    Raises ``JoinError`` on ABORT (or when an authenticator cannot sign, after
    sending ABORT) and ``ProtocolError`` when the router misbehaves; the caller
    aborts and closes the transport.
    """
    await transport.send(wamp.Hello(realm, hello_details(authenticators)))
    while True:
        msg = await transport.recv()
        if isinstance(msg, wamp.Welcome):
            _check_welcome(msg)
            return msg
        if isinstance(msg, wamp.Abort):
            raise JoinError(msg.reason, opt_str(msg.details.get("message")))
        if isinstance(msg, wamp.Challenge):
            await _answer(transport, authenticators, msg)
            continue
        raise ProtocolError(f"unexpected {type(msg).__name__.upper()} before WELCOME")


def _check_welcome(msg: wamp.Welcome) -> None:
    roles = msg.details.get("roles")
    if not isinstance(roles, dict) or not ({"broker", "dealer"} & roles.keys()):
        raise ProtocolError("WELCOME.Details.roles must announce broker and/or dealer")


async def _answer(
    transport: Transport, authenticators: Sequence[Authenticator], msg: wamp.Challenge
) -> None:
    method = next((a for a in authenticators if a.authmethod == msg.authmethod), None)
    if method is None:
        raise ProtocolError(f"CHALLENGE for authmethod {msg.authmethod!r} that was not offered")
    try:
        signature = method.sign(msg.extra)
    except AuthError as exc:
        await abort_quietly(transport, str(exc), reason=wamp_errors.AUTHENTICATION_FAILED)
        raise JoinError(wamp_errors.AUTHENTICATION_FAILED, str(exc)) from None
    await transport.send(wamp.Authenticate(signature, {}))


async def abort_quietly(
    transport: Transport, message: str, *, reason: str = wamp_errors.PROTOCOL_VIOLATION
) -> None:
    """Send ABORT with ``message``; ignore a transport that is already gone."""
    try:
        await transport.send(wamp.Abort({"message": message}, reason))
    except Exception:  # the transport may already be gone
        log.debug("could not send ABORT", exc_info=True)
