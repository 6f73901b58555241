"""Authenticators for the router: ticket (static hashes, JWT), wampcra, cryptosign, dynamic.

Each class implements ``broker.core.auth.Authenticator`` for one ``authmethod``;
``broker.config`` builds them from the ``[realm.auth.*]`` tables. They are
sans-I/O like the core: a dynamic authenticator asks the router to call a
procedure by returning ``Consult``.

Every denial uses the same reason (``wamp.error.authentication_failed``) and the
same message, whatever went wrong (unknown authid, bad secret, expired token), so
a failure tells an attacker nothing.
"""

from __future__ import annotations

from .cryptosign import CryptosignAuthenticator, CryptosignPrincipal
from .dynamic import parse_dynamic_reply
from .jwt_ticket import JwtSettings, JwtVerifier
from .secrets import hash_ticket, verify_ticket
from .ticket import TicketAuthenticator, TicketPrincipal
from .wampcra import WampCraAuthenticator, WampCraPrincipal

__all__ = [
    "CryptosignAuthenticator",
    "CryptosignPrincipal",
    "JwtSettings",
    "JwtVerifier",
    "TicketAuthenticator",
    "TicketPrincipal",
    "WampCraAuthenticator",
    "WampCraPrincipal",
    "hash_ticket",
    "parse_dynamic_reply",
    "verify_ticket",
]
