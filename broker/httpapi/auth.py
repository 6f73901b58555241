"""Who an HTTP API request acts as: bearer keys, Crossbar-style signed requests, limits.

Bearer keys: ``Authorization: Bearer <key id>.<secret>``. The config holds the
salted PBKDF2 hash of the secret (like ticket principals). The first check of a
key runs PBKDF2 on the server's bounded, low-priority ``Offload`` pool (the one
ticket and WAMP-CRA logins use; full: 503, retry), concurrent first checks of one
token share that derivation, and a verified token is remembered by its SHA-256
digest (bounded cache, cleared on restart): later requests with the same key cost
one hash, not 50 ms.

Signed requests (Crossbar.io's HTTP bridge scheme): query parameters ``key``,
``timestamp`` (UTC ISO 8601 ``2011-10-14T16:59:51.123Z``), ``seq`` (integer),
``nonce`` (integer) and ``signature`` =
``base64url(HMAC-SHA256(secret, key ‖ timestamp ‖ seq ‖ nonce ‖ body))``. The
timestamp must be within ``signature_window`` seconds of the node's clock; a
(key, nonce) pair is accepted once within the window (replay protection): each
node remembers the nonces it accepted, and in a cluster the nonce is also claimed
in Redis (``SET NX``, expiring after twice the window), so a replay sent to
another node fails too.

Limits per credential: a token bucket (``rate``/``burst``) and a bound on calls in
flight (``max_concurrent_calls``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import parse_qs

import redis.asyncio as aioredis

from broker.auth.secrets import verify_ticket
from broker.core.auth import Offload

from .sessions import Principal
from .settings import HttpApiSettings

__all__ = ["AuthError", "Credentials", "Verdict", "sign_request"]

log = logging.getLogger(__name__)

NONCE_PREFIX = "wamp:httpnonce:"
"""Redis key prefix of signed-request nonces (cluster: shared replay protection)."""
_CACHE_SIZE = 4096
_NONCES_MAX = 100_000


class AuthError(Exception):
    """The request is not authenticated: answered with ``status`` and ``error``."""

    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error


@dataclass(frozen=True, slots=True)
class Verdict:
    """An authenticated request: its principal and the credential its limits count on."""

    principal: Principal
    credential: str


def sign_request(
    key: str, secret: str, body: bytes, *, seq: int, nonce: int, now: float | None = None
) -> dict[str, str]:
    """The query parameters of a signed request (what a Crossbar client sends)."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, UTC)
    timestamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
    mac = hmac.new(secret.encode("utf-8"), digestmod=hashlib.sha256)
    for part in (key, timestamp, str(seq), str(nonce)):
        mac.update(part.encode("utf-8"))
    mac.update(body)
    signature = base64.urlsafe_b64encode(mac.digest()).decode("ascii")
    return {
        "key": key,
        "timestamp": timestamp,
        "seq": str(seq),
        "nonce": str(nonce),
        "signature": signature,
    }


class _Bucket:
    __slots__ = ("stamp", "tokens")

    def __init__(self, tokens: float, stamp: float) -> None:
        self.tokens = tokens
        self.stamp = stamp


class Credentials:
    """Checks a request's credentials against one realm's keys and signers."""

    def __init__(
        self,
        settings: HttpApiSettings,
        offload: Offload | None = None,
        shared: aioredis.Redis | aioredis.RedisCluster | None = None,
    ) -> None:
        self.settings = settings
        self.offload = offload
        self.shared = shared
        self._verified: OrderedDict[bytes, Principal] = OrderedDict()
        self._deriving: dict[bytes, asyncio.Future[bool]] = {}
        self._nonces: dict[tuple[str, str], float] = {}
        self._buckets: dict[str, _Bucket] = {}
        self.in_flight: dict[str, int] = {}

    async def check(self, headers: Mapping[str, str], query: str, body: bytes) -> Verdict:
        """The request's principal, or ``AuthError`` (401 unauthenticated, 400 malformed)."""
        params = {k: v[0] for k, v in parse_qs(query, keep_blank_values=True).items()}
        if "signature" in params or "key" in params:
            verdict = self._signed(params, body)
            await self._claim_nonce(params["key"], params["nonce"])
            return verdict
        authorization = headers.get("authorization", "")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthError(401, "unauthenticated", "a Bearer key or a signed request is needed")
        return await self._bearer(token.strip())

    async def _bearer(self, token: str) -> Verdict:
        digest = hashlib.sha256(token.encode("utf-8")).digest()
        known = self._verified.get(digest)
        key_id = token.partition(".")[0]
        if known is not None:
            self._verified.move_to_end(digest)
            return Verdict(known, f"key:{key_id}")
        key_id, dot, secret = token.partition(".")
        entry = (self.settings.keys or {}).get(key_id)
        if not dot or entry is None:
            raise AuthError(401, "unauthenticated", "unknown API key")
        if not await self._verify(digest, secret, entry.key_hash):
            raise AuthError(401, "unauthenticated", "unknown API key")
        principal = Principal(entry.authid, entry.role)
        self._verified[digest] = principal
        if len(self._verified) > _CACHE_SIZE:
            self._verified.popitem(last=False)
        return Verdict(principal, f"key:{key_id}")

    async def _verify(self, digest: bytes, secret: str, key_hash: str) -> bool:
        """PBKDF2 off the loop; one derivation per token however many requests wait."""
        pending = self._deriving.get(digest)
        if pending is not None:
            return await asyncio.shield(pending)
        if self.offload is None:
            return await asyncio.to_thread(verify_ticket, secret, key_hash)
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def done(result: object) -> None:
            self._deriving.pop(digest, None)
            if not future.done():
                future.set_result(result is True)

        if not self.offload.submit(lambda: verify_ticket(secret, key_hash), done):
            raise AuthError(503, "unavailable", "authentication is busy: retry")
        self._deriving[digest] = future
        return await asyncio.shield(future)

    def _signed(self, params: Mapping[str, str], body: bytes) -> Verdict:
        for name in ("key", "timestamp", "seq", "nonce", "signature"):
            if name not in params:
                raise AuthError(400, "invalid_request", f"signed request: {name!r} missing")
        key = params["key"]
        signer = (self.settings.signers or {}).get(key)
        if signer is None:
            raise AuthError(401, "unauthenticated", "unknown key in signed request")
        for name in ("seq", "nonce"):
            if not params[name].isdigit():
                raise AuthError(400, "invalid_request", f"signed request: {name!r} not an integer")
        try:
            stamp = datetime.strptime(params["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ")
        except ValueError:
            raise AuthError(400, "invalid_request", "signed request: bad timestamp") from None
        now = time.time()
        moment = stamp.replace(tzinfo=UTC).timestamp()
        window = self.settings.signature_window
        if abs(now - moment) > window:
            raise AuthError(401, "unauthenticated", "signed request: timestamp out of window")
        mac = hmac.new(signer.secret.encode("utf-8"), digestmod=hashlib.sha256)
        for name in ("key", "timestamp", "seq", "nonce"):
            mac.update(params[name].encode("utf-8"))
        mac.update(body)
        expected = base64.urlsafe_b64encode(mac.digest()).decode("ascii")
        if not hmac.compare_digest(expected.encode(), params["signature"].encode()):
            raise AuthError(401, "unauthenticated", "signed request: bad signature")
        self._remember_nonce(key, params["nonce"], now, window)
        return Verdict(Principal(signer.authid, signer.role), f"signer:{key}")

    async def _claim_nonce(self, key: str, nonce: str) -> None:
        """Cluster: the nonce is claimed in Redis too, so a replay to another node fails."""
        if self.shared is None:
            return
        name = f"{NONCE_PREFIX}{self.settings.realm}:{key}:{nonce}"
        ttl = max(1, int(2 * self.settings.signature_window))
        try:
            fresh = await self.shared.set(name, "1", nx=True, ex=ttl)
        except Exception as exc:  # Redis down: this node's own check still holds
            log.warning("signed request: nonce not shared (%s)", exc)
            return
        if not fresh:
            raise AuthError(401, "unauthenticated", "signed request: nonce replayed")

    def _remember_nonce(self, key: str, nonce: str, now: float, window: float) -> None:
        seen = self._nonces
        if (key, nonce) in seen and seen[(key, nonce)] > now:
            raise AuthError(401, "unauthenticated", "signed request: nonce replayed")
        if len(seen) >= _NONCES_MAX:
            for stale in [k for k, until in seen.items() if until <= now]:
                del seen[stale]
            if len(seen) >= _NONCES_MAX:
                raise AuthError(429, "too_many_requests", "too many signed requests in the window")
        seen[(key, nonce)] = now + 2 * window

    def take_token(self, credential: str) -> bool:
        """Spend one request of ``credential``'s rate; False when it is exhausted."""
        rate = self.settings.rate
        if rate <= 0:
            return True
        now = time.monotonic()
        burst = float(self.settings.burst)
        bucket = self._buckets.get(credential)
        if bucket is None:
            bucket = self._buckets[credential] = _Bucket(burst, now)
        bucket.tokens = min(burst, bucket.tokens + (now - bucket.stamp) * rate)
        bucket.stamp = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
