"""JWT tickets: the ticket is a signed JSON Web Token, verified with PyJWT.

HS256/384/512 use a shared ``secret``; RS*, PS*, ES* and EdDSA a ``public_key``
(PEM). One family per realm, so an HMAC secret can never be confused with a
public key (the classic algorithm-confusion attack); ``none`` is never accepted.
``exp`` is required; ``iss`` and ``aud`` are checked when configured. The
session's authid comes from ``authid_claim`` (default ``sub``) and its role from
``role_claim`` (default ``role``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["HMAC_ALGORITHMS", "PUBLIC_KEY_ALGORITHMS", "JwtSettings", "JwtVerifier"]

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)


@dataclass(frozen=True, slots=True)
class JwtSettings:
    """How JWT tickets of one realm are verified."""

    algorithms: tuple[str, ...] = ("HS256",)
    secret: str | None = None
    public_key: str | None = None
    issuer: str | None = None
    audience: str | None = None
    role_claim: str = "role"
    authid_claim: str = "sub"
    leeway: float = 0.0

    def __post_init__(self) -> None:
        algs = set(self.algorithms)
        if not algs:
            raise ValueError("algorithms must name at least one algorithm")
        unknown = algs - HMAC_ALGORITHMS - PUBLIC_KEY_ALGORITHMS
        if unknown:
            raise ValueError(f"unsupported algorithm(s) {', '.join(sorted(unknown))}")
        if algs <= HMAC_ALGORITHMS:
            if not self.secret or self.public_key:
                raise ValueError("HMAC algorithms need a secret (and no public_key)")
            if len(self.secret.encode()) < 32:
                raise ValueError("an HMAC secret must have at least 32 bytes")
        elif algs <= PUBLIC_KEY_ALGORITHMS:
            if not self.public_key or self.secret:
                raise ValueError("public-key algorithms need a public_key (and no secret)")
        else:
            raise ValueError("do not mix HMAC and public-key algorithms in one realm")


class JwtVerifier:
    """Checks a token and returns its claims, or ``None`` when anything is wrong."""

    def __init__(self, settings: JwtSettings) -> None:
        # PyJWT (and the OpenSSL bindings it loads) are imported with the first realm
        # that uses JWT tickets: a few MiB of RSS that other brokers need not carry.
        import jwt
        from cryptography.hazmat.primitives.serialization import load_pem_public_key

        self._jwt = jwt
        self.settings = settings
        key: Any = settings.secret
        if settings.public_key is not None:
            try:
                key = load_pem_public_key(settings.public_key.encode("utf-8"))
            except ValueError as exc:
                raise ValueError(f"public_key is not a PEM public key: {exc}") from None
        self._key = key

    def claims(self, token: str) -> dict[str, Any] | None:
        """The verified claims of ``token``; ``None`` if invalid, expired or misaddressed."""
        s = self.settings
        required = ["exp", s.authid_claim]
        if s.issuer is not None:
            required.append("iss")
        if s.audience is not None:
            required.append("aud")
        try:
            claims: dict[str, Any] = self._jwt.decode(
                token,
                self._key,
                algorithms=list(s.algorithms),
                issuer=s.issuer,
                audience=s.audience,
                leeway=s.leeway,
                options={"require": required, "verify_aud": s.audience is not None},
            )
        except self._jwt.PyJWTError:
            return None
        return claims

    @staticmethod
    def looks_like_jwt(ticket: str) -> bool:
        """Tell whether a ticket has the three dot-separated parts of a JWS."""
        return ticket.count(".") == 2 and len(ticket) < 16_384
