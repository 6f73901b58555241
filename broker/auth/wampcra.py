"""The wampcra method: HMAC-SHA256 over a router challenge, with optional PBKDF2 salting.

The config holds, per principal, either the shared ``secret`` or (better) only the
derived key: with ``salt``/``iterations``/``keylen`` the client derives
``base64(PBKDF2-HMAC-SHA256(secret, salt, iterations, keylen))`` and uses that as
the HMAC key, so the router needs the derived key alone (``derived_key``).

CHALLENGE.extra.challenge is a JSON string (authid, authrole, authmethod,
authprovider, nonce, timestamp, session); the signature is
``base64(HMAC-SHA256(key, challenge))``. An unknown authid gets a challenge too,
with a salt that is stable per authid, so the exchange does not reveal whether the
authid exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from broker.core.auth import Accept, AskChallenge, Deny, Outcome

from .secrets import FAILED

__all__ = ["WampCraAuthenticator", "WampCraPrincipal", "derive_key"]


def derive_key(secret: str, salt: str, iterations: int, keylen: int) -> bytes:
    """The salted WAMP-CRA key: base64 of PBKDF2-HMAC-SHA256 (what clients compute)."""
    raw = hashlib.pbkdf2_hmac(
        "sha256", secret.encode("utf-8"), salt.encode("utf-8"), iterations, keylen
    )
    return base64.b64encode(raw)


@dataclass(frozen=True, slots=True)
class WampCraPrincipal:
    """A principal's HMAC key (the secret, or the derived key when salted) and role."""

    key: bytes
    role: str
    salt: str | None = None
    iterations: int = 1000
    keylen: int = 32

    @classmethod
    def from_secret(
        cls,
        secret: str,
        role: str,
        salt: str | None = None,
        iterations: int = 1000,
        keylen: int = 32,
    ) -> WampCraPrincipal:
        """Build from the plain secret (derived here when a salt is given)."""
        if salt is None:
            return cls(secret.encode("utf-8"), role)
        return cls(derive_key(secret, salt, iterations, keylen), role, salt, iterations, keylen)


@dataclass(frozen=True, slots=True)
class _State:
    key: bytes | None
    role: str
    authid: str
    challenge: str


class WampCraAuthenticator:
    """``authmethod = "wampcra"`` with static principals."""

    authmethod = "wampcra"

    def __init__(self, principals: Mapping[str, WampCraPrincipal]) -> None:
        self.principals = dict(principals)
        self._pepper = os.urandom(32)  # for the fake salts of unknown authids

    def hello(self, realm: str, session_id: int, details: dict[str, Any]) -> Outcome:
        """Challenge the authid named in HELLO (a fake challenge for unknown ones)."""
        authid = details.get("authid")
        if not isinstance(authid, str) or not authid or len(authid) > 256:
            return Deny(message=FAILED)
        principal = self.principals.get(authid)
        role = principal.role if principal is not None else "user"
        challenge = json.dumps(
            {
                "authid": authid,
                "authrole": role,
                "authmethod": self.authmethod,
                "authprovider": "static",
                "nonce": base64.b64encode(os.urandom(24)).decode("ascii"),
                "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds")[:-6] + "Z",
                "session": session_id,
            },
            separators=(",", ":"),
        )
        extra: dict[str, Any] = {"challenge": challenge}
        if principal is None:
            fake = hmac.new(self._pepper, authid.encode("utf-8"), hashlib.sha256).digest()
            extra.update(
                salt=base64.b64encode(fake[:16]).decode("ascii"), iterations=1000, keylen=32
            )
        elif principal.salt is not None:
            extra.update(
                salt=principal.salt, iterations=principal.iterations, keylen=principal.keylen
            )
        key = principal.key if principal is not None else None
        return AskChallenge(self.authmethod, extra, _State(key, role, authid, challenge))

    def authenticate(self, state: Any, signature: str, extra: dict[str, Any]) -> Outcome:
        """Compare the signature with our own HMAC of the challenge, in constant time."""
        if not isinstance(state, _State) or not isinstance(signature, str):
            return Deny(message=FAILED)
        key = state.key if state.key is not None else self._pepper
        expected = base64.b64encode(
            hmac.new(key, state.challenge.encode("utf-8"), hashlib.sha256).digest()
        ).decode("ascii")
        if state.key is None or not hmac.compare_digest(expected.encode(), signature.encode()):
            return Deny(message=FAILED)
        return Accept(state.authid, state.role, self.authmethod, "static")
