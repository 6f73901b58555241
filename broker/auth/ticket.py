"""The ticket method: static principals (salted hashes), JWT tickets, or a dynamic procedure.

HELLO always gets a CHALLENGE (even for an unknown authid, so the answer never
tells which authids exist); AUTHENTICATE.signature is the ticket. A ticket that
looks like a JWT goes to the JWT verifier when one is configured; otherwise the
static principal named by HELLO.authid is checked; otherwise the dynamic
authenticator procedure (if configured) decides.

The salted-hash check (PBKDF2, ~50 ms) is returned as ``Derive``: the router runs
it on its bounded offload pool, never on the event loop.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.core.auth import Accept, AskChallenge, Consult, Deny, Derive, Outcome, Reply

from .dynamic import parse_dynamic_reply
from .jwt_ticket import JwtVerifier
from .secrets import FAILED, hash_ticket, verify_ticket

__all__ = ["TicketAuthenticator", "TicketPrincipal"]


@functools.cache
def _dummy_hash() -> str:
    """A hash to verify against for unknown authids, so they take as long as known ones."""
    return hash_ticket("no such principal")


def _deny(_: object) -> Outcome:
    return Deny(message=FAILED)


@dataclass(frozen=True, slots=True)
class TicketPrincipal:
    """A static principal: the salted hash of its ticket and its role."""

    ticket_hash: str
    role: str


@dataclass(frozen=True, slots=True)
class _State:
    authid: str
    session_id: int
    realm: str
    authextra: dict[str, Any]


class TicketAuthenticator:
    """``authmethod = "ticket"``."""

    authmethod = "ticket"

    def __init__(
        self,
        principals: Mapping[str, TicketPrincipal] | None = None,
        *,
        jwt: JwtVerifier | None = None,
        dynamic: str | None = None,
        dynamic_realm: str = "",
        dynamic_timeout: float = 10.0,
    ) -> None:
        self.principals = dict(principals or {})
        self.jwt = jwt
        self.dynamic = dynamic
        self.dynamic_realm = dynamic_realm
        self.dynamic_timeout = dynamic_timeout

    def hello(self, realm: str, session_id: int, details: dict[str, Any]) -> Outcome:
        """Always challenge: the ticket comes in AUTHENTICATE."""
        authid = details.get("authid")
        authextra = details.get("authextra")
        state = _State(
            authid if isinstance(authid, str) else "",
            session_id,
            realm,
            authextra if isinstance(authextra, dict) else {},
        )
        return AskChallenge(self.authmethod, {}, state)

    def authenticate(self, state: Any, signature: str, extra: dict[str, Any]) -> Outcome:
        """Check the ticket: JWT, static principal or dynamic procedure."""
        if not isinstance(state, _State) or not isinstance(signature, str) or not signature:
            return Deny(message=FAILED)
        if self.jwt is not None and JwtVerifier.looks_like_jwt(signature):
            return self._from_jwt(state, signature)
        principal = self.principals.get(state.authid)
        if principal is not None:
            accept = Accept(state.authid, principal.role, self.authmethod, "static")
            encoded = principal.ticket_hash
            return Derive(
                lambda: verify_ticket(signature, encoded),
                lambda ok: accept if ok is True else Deny(message=FAILED),
            )
        if self.dynamic is not None:
            return self._consult(state, signature)
        # an unknown authid costs the same derivation as a known one
        return Derive(lambda: verify_ticket(signature, _dummy_hash()), _deny)

    def _from_jwt(self, state: _State, token: str) -> Outcome:
        assert self.jwt is not None
        claims = self.jwt.claims(token)
        if claims is None:
            return Deny(message=FAILED)
        settings = self.jwt.settings
        authid = claims.get(settings.authid_claim)
        role = claims.get(settings.role_claim)
        if not isinstance(authid, str) or not authid or not isinstance(role, str) or not role:
            return Deny(message=FAILED)
        if state.authid and state.authid != authid:
            return Deny(message=FAILED)
        return Accept(authid, role, self.authmethod, "jwt")

    def _consult(self, state: _State, ticket: str) -> Outcome:
        assert self.dynamic is not None
        details = {
            "authmethod": self.authmethod,
            "ticket": ticket,
            "session": state.session_id,
            "authextra": state.authextra,
        }
        authid = state.authid

        def resume(reply: Reply) -> Outcome:
            return parse_dynamic_reply(reply, "ticket", authid)

        return Consult(
            self.dynamic,
            [state.realm, authid, details],
            {},
            resume,
            self.dynamic_realm,
            self.dynamic_timeout,
        )
