"""The cryptosign method: Ed25519 signatures over a random router challenge.

HELLO.authextra.pubkey names the client's public key (64 hex digits); the router
finds the principal owning it, sends 32 random bytes (hex) in
CHALLENGE.extra.challenge and expects ``hex(signature ‖ challenge)`` (192 hex
digits) in AUTHENTICATE. Channel binding is not supported (``channel_binding``
must be absent or null). Verification uses ``cryptography``.
"""

from __future__ import annotations

import binascii
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.core.auth import Accept, AskChallenge, Deny, Outcome

from .secrets import FAILED

__all__ = ["CryptosignAuthenticator", "CryptosignPrincipal", "parse_public_key"]


def parse_public_key(text: str) -> bytes:
    """Decode an Ed25519 public key given as 64 hex digits; ``ValueError`` otherwise."""
    try:
        raw = binascii.unhexlify(text.strip())
    except (binascii.Error, ValueError):
        raise ValueError("an Ed25519 public key is 64 hex digits") from None
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes (64 hex digits)")
    Ed25519PublicKey.from_public_bytes(raw)  # rejects invalid points
    return raw


@dataclass(frozen=True, slots=True)
class CryptosignPrincipal:
    """An authid, its role and the public keys it may log in with."""

    authid: str
    role: str
    pubkeys: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class _State:
    principal: CryptosignPrincipal
    pubkey: bytes
    challenge: bytes


class CryptosignAuthenticator:
    """``authmethod = "cryptosign"`` with static principals."""

    authmethod = "cryptosign"

    def __init__(self, principals: Mapping[str, CryptosignPrincipal]) -> None:
        self.principals = dict(principals)
        self._by_key: dict[bytes, CryptosignPrincipal] = {}
        for principal in self.principals.values():
            for key in principal.pubkeys:
                if key in self._by_key:
                    raise ValueError("a cryptosign public key belongs to two principals")
                self._by_key[key] = principal

    def hello(self, realm: str, session_id: int, details: dict[str, Any]) -> Outcome:
        """Find the principal by public key and send a random challenge."""
        authextra = details.get("authextra")
        if not isinstance(authextra, dict):
            return Deny(message=FAILED)
        pubkey_hex = authextra.get("pubkey")
        if authextra.get("channel_binding") is not None or not isinstance(pubkey_hex, str):
            return Deny(message=FAILED)
        try:
            pubkey = binascii.unhexlify(pubkey_hex)
        except (binascii.Error, ValueError):
            return Deny(message=FAILED)
        principal = self._by_key.get(pubkey)
        if principal is None:
            return Deny(message=FAILED)
        authid = details.get("authid")
        if authid is not None and authid != principal.authid:
            return Deny(message=FAILED)
        challenge = os.urandom(32)
        return AskChallenge(
            self.authmethod,
            {"challenge": challenge.hex(), "channel_binding": None},
            _State(principal, pubkey, challenge),
        )

    def authenticate(self, state: Any, signature: str, extra: dict[str, Any]) -> Outcome:
        """Verify hex(signature ‖ challenge) with the principal's public key."""
        if not isinstance(state, _State) or not isinstance(signature, str) or len(signature) != 192:
            return Deny(message=FAILED)
        try:
            raw = binascii.unhexlify(signature)
        except (binascii.Error, ValueError):
            return Deny(message=FAILED)
        sig, signed = raw[:64], raw[64:]
        if not hmac.compare_digest(signed, state.challenge):
            return Deny(message=FAILED)
        try:
            Ed25519PublicKey.from_public_bytes(state.pubkey).verify(sig, signed)
        except (InvalidSignature, ValueError):
            return Deny(message=FAILED)
        p = state.principal
        return Accept(p.authid, p.role, self.authmethod, "static", {"pubkey": state.pubkey.hex()})
