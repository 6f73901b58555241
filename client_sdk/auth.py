"""Client-side WAMP authentication: anonymous, ticket, wampcra (salted too), cryptosign.

An authenticator contributes ``authmethod``, ``authid`` and ``authextra`` to HELLO and
answers the router's CHALLENGE with the AUTHENTICATE signature (wamp.md §Auth):

- ticket: the signature is the ticket itself.
- wampcra: ``base64(HMAC-SHA256(key, extra.challenge))`` where ``key`` is the secret,
  or, when the challenge carries ``salt``, ``base64(PBKDF2-HMAC-SHA256(secret, salt,
  iterations, keylen))`` (the base64 text is the HMAC key, as in Autobahn and Crossbar).
- cryptosign: HELLO.authextra.pubkey is the Ed25519 public key in hex; the signature is
  ``hex(ed25519_signature(challenge) ‖ challenge)`` (96 bytes → 192 hex characters).
  Needs the ``cryptography`` package, imported only when a cryptosign key is used.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

from .errors import ClientError

__all__ = [
    "AnonymousAuth",
    "AuthError",
    "Authenticator",
    "CryptosignAuth",
    "TicketAuth",
    "WampCraAuth",
    "compute_wcs",
    "cryptosign_public_key",
    "cryptosign_sign",
    "derive_key",
]


class AuthError(ClientError):
    """A challenge the authenticator cannot answer (malformed, or a missing dependency)."""


class Authenticator:
    """Base class: one authentication method offered in HELLO.

    Subclasses set ``authmethod`` and implement ``sign``. ``authid`` and ``authrole``
    are the identity and role requested in HELLO (a router may override them);
    ``authextra`` is merged into HELLO.Details.authextra.
    """

    authmethod: str = ""

    def __init__(self, authid: str | None = None, *, authrole: str | None = None) -> None:
        self.authid = authid
        self.authrole = authrole

    @property
    def authextra(self) -> dict[str, Any]:
        """Extra HELLO data for this method (for example the cryptosign public key)."""
        return {}

    def sign(self, extra: Mapping[str, Any]) -> str:
        """Answer a CHALLENGE: return the AUTHENTICATE signature for CHALLENGE.Extra."""
        raise AuthError(f"authmethod {self.authmethod!r} does not expect a challenge")

    def __repr__(self) -> str:  # never show secrets
        return f"{type(self).__name__}(authid={self.authid!r}, authrole={self.authrole!r})"


class AnonymousAuth(Authenticator):
    """The ``anonymous`` method: no proof (the default when no authenticator is given)."""

    authmethod = "anonymous"


class TicketAuth(Authenticator):
    """The ``ticket`` method: a static secret (password, token) sent on CHALLENGE."""

    authmethod = "ticket"

    def __init__(self, authid: str | None, ticket: str, *, authrole: str | None = None) -> None:
        super().__init__(authid, authrole=authrole)
        self._ticket = ticket

    def sign(self, extra: Mapping[str, Any]) -> str:
        """Return the ticket."""
        return self._ticket


def derive_key(
    secret: str | bytes, salt: str | bytes, iterations: int = 1000, keylen: int = 32
) -> bytes:
    """Derive a salted WAMP-CRA key: base64 of PBKDF2-HMAC-SHA256 (ASCII bytes, no newline)."""
    secret_b = secret.encode("utf-8") if isinstance(secret, str) else secret
    salt_b = salt.encode("utf-8") if isinstance(salt, str) else salt
    key = hashlib.pbkdf2_hmac("sha256", secret_b, salt_b, iterations, keylen)
    return base64.b64encode(key)


def compute_wcs(key: str | bytes, challenge: str) -> str:
    """Compute a WAMP-CRA signature: base64 of HMAC-SHA256(key, challenge as UTF-8)."""
    key_b = key.encode("utf-8") if isinstance(key, str) else key
    digest = hmac.new(key_b, challenge.encode("utf-8"), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


class WampCraAuth(Authenticator):
    """The ``wampcra`` method: HMAC over the router's challenge with a shared secret.

    Salted secrets work transparently: when CHALLENGE.Extra has ``salt`` (with
    ``iterations`` and ``keylen``), the key is derived with ``derive_key`` first.
    """

    authmethod = "wampcra"

    def __init__(self, authid: str, secret: str | bytes, *, authrole: str | None = None) -> None:
        super().__init__(authid, authrole=authrole)
        self._secret = secret

    def sign(self, extra: Mapping[str, Any]) -> str:
        """Return base64 HMAC-SHA256 of ``extra["challenge"]`` under the (derived) key."""
        challenge = extra.get("challenge")
        if not isinstance(challenge, str):
            raise AuthError("wampcra CHALLENGE lacks a string 'challenge'")
        key: str | bytes = self._secret
        salt = extra.get("salt")
        if salt is not None:
            iterations = extra.get("iterations", 1000)
            keylen = extra.get("keylen", 32)
            if (
                not isinstance(salt, (str, bytes))
                or type(iterations) is not int
                or type(keylen) is not int
            ):
                raise AuthError("wampcra CHALLENGE has a malformed salt/iterations/keylen")
            if iterations < 1 or not 1 <= keylen <= 1024:
                raise AuthError("wampcra CHALLENGE has out-of-range iterations/keylen")
            key = derive_key(self._secret, salt, iterations, keylen)
        return compute_wcs(key, challenge)


def _seed(private_key: str | bytes) -> bytes:
    if isinstance(private_key, str):
        try:
            raw = binascii.unhexlify(private_key.strip())
        except (binascii.Error, ValueError) as exc:
            raise AuthError("a cryptosign private key in text form must be 64 hex digits") from exc
    else:
        raw = bytes(private_key)
    if len(raw) != 32:
        raise AuthError("a cryptosign private key is a 32-byte Ed25519 seed")
    return raw


def _private_key(private_key: str | bytes) -> Any:
    """Build a ``cryptography`` Ed25519 private key, importing the package lazily."""
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise AuthError(
            "cryptosign needs the 'cryptography' package (pip install cryptography)"
        ) from exc
    return ed25519.Ed25519PrivateKey.from_private_bytes(_seed(private_key))


def cryptosign_public_key(private_key: str | bytes) -> str:
    """Return the Ed25519 public key (hex) of a 32-byte private seed (bytes or hex)."""
    key = _private_key(private_key)
    return bytes(key.public_key().public_bytes_raw()).hex()


def cryptosign_sign(private_key: str | bytes, challenge_hex: str) -> str:
    """Sign a cryptosign challenge (64 hex digits): hex(signature ‖ challenge)."""
    try:
        challenge = binascii.unhexlify(challenge_hex)
    except (binascii.Error, ValueError) as exc:
        raise AuthError("cryptosign challenge is not hex") from exc
    if len(challenge) != 32:
        raise AuthError("cryptosign challenge must be 32 bytes")
    signature: bytes = _private_key(private_key).sign(challenge)
    return (signature + challenge).hex()


class CryptosignAuth(Authenticator):
    """The ``cryptosign`` method: an Ed25519 signature over the router's random challenge.

    ``private_key`` is the 32-byte seed as bytes or 64 hex digits. The public key goes
    in HELLO.authextra.pubkey so the router can find the principal.
    """

    authmethod = "cryptosign"

    def __init__(
        self, authid: str | None, private_key: str | bytes, *, authrole: str | None = None
    ) -> None:
        super().__init__(authid, authrole=authrole)
        self._seed = _seed(private_key)
        self.public_key = cryptosign_public_key(self._seed)

    @property
    def authextra(self) -> dict[str, Any]:
        """HELLO.authextra: ``{"pubkey": <hex>}``."""
        return {"pubkey": self.public_key}

    def sign(self, extra: Mapping[str, Any]) -> str:
        """Return hex(signature ‖ challenge) for ``extra["challenge"]``."""
        challenge = extra.get("challenge")
        if not isinstance(challenge, str):
            raise AuthError("cryptosign CHALLENGE lacks a hex 'challenge'")
        return cryptosign_sign(self._seed, challenge)
