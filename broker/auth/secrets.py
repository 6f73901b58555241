"""Salted ticket hashes: ``pbkdf2_sha256$<iterations>$<salt b64>$<hash b64>``.

The config stores this string, never the ticket. ``python -m broker.auth hash``
prints one for a ticket read from stdin.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os

__all__ = ["DEFAULT_ITERATIONS", "FAILED", "hash_ticket", "is_ticket_hash", "verify_ticket"]

DEFAULT_ITERATIONS = 100_000
"""PBKDF2 rounds for new hashes: slow enough for passwords, ~50 ms per login."""

FAILED = "authentication failed"
"""The one message every authentication failure carries."""

_SCHEME = "pbkdf2_sha256"
_MAX_ITERATIONS = 10_000_000


def hash_ticket(
    ticket: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """Return the salted hash string of ``ticket`` for the config file."""
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", ticket.encode("utf-8"), salt, iterations)
    return "$".join(
        (
            _SCHEME,
            str(iterations),
            base64.b64encode(salt).decode("ascii"),
            base64.b64encode(digest).decode("ascii"),
        )
    )


def _parse(encoded: str) -> tuple[int, bytes, bytes]:
    parts = encoded.split("$")
    if len(parts) != 4 or parts[0] != _SCHEME:
        raise ValueError(f"a ticket hash looks like {_SCHEME}$ITERATIONS$SALT$HASH")
    try:
        iterations = int(parts[1])
        salt = base64.b64decode(parts[2], validate=True)
        digest = base64.b64decode(parts[3], validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("a ticket hash has a malformed field") from None
    if not 1 <= iterations <= _MAX_ITERATIONS or not salt or len(digest) < 16:
        raise ValueError("a ticket hash has out-of-range fields")
    return iterations, salt, digest


def is_ticket_hash(encoded: str) -> bool:
    """Tell whether ``encoded`` is a well-formed ticket hash."""
    try:
        _parse(encoded)
    except ValueError:
        return False
    return True


def verify_ticket(ticket: str, encoded: str) -> bool:
    """Check ``ticket`` against a hash from ``hash_ticket`` in constant time."""
    iterations, salt, digest = _parse(encoded)
    candidate = hashlib.pbkdf2_hmac("sha256", ticket.encode("utf-8"), salt, iterations, len(digest))
    return hmac.compare_digest(candidate, digest)
