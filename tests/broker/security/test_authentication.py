"""Autobahn|Python clients authenticate with ticket, JWT, wampcra (salted) and cryptosign.

Every failure is ABORT wamp.error.authentication_failed with the same message,
whatever went wrong, so a failure tells an attacker nothing.
"""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
from autobahn.wamp import auth as ab_auth

from client_sdk.auth import cryptosign_sign
from tests.broker.security._wire import Aborted, RawClient, autobahn_join
from tests.broker.security.conftest import AUDIENCE, ISSUER, JWT_SECRET, Keys
from tests.support.processes import BrokerProcess

FAILED = "wamp.error.authentication_failed"


def ticket(value: str) -> Any:
    return lambda challenge: value


def wampcra(secret: str) -> Any:
    def sign(challenge: Any) -> str:
        extra = challenge.extra
        key: Any = secret.encode()
        if "salt" in extra:
            key = ab_auth.derive_key(secret, extra["salt"], extra["iterations"], extra["keylen"])
        return str(ab_auth.compute_wcs(key, extra["challenge"]).decode("ascii"))

    return sign


def token(claims: dict[str, Any], key: Any = JWT_SECRET, algorithm: str = "HS256") -> str:
    base = {"sub": "jane", "role": "user", "iss": ISSUER, "aud": AUDIENCE}
    base["exp"] = int(time.time()) + 60
    return jwt.encode({**base, **claims}, key, algorithm=algorithm)


async def assert_fails(url: str, realm: str = "secure", **kwargs: Any) -> Aborted:
    with pytest.raises(Aborted) as info:
        session = await autobahn_join(url, realm, **kwargs)
        session.leave()
    assert info.value.reason == FAILED
    assert info.value.details["message"] == "authentication failed"
    return info.value


async def test_static_ticket_joins_with_its_role(secure_broker: BrokerProcess) -> None:
    session = await autobahn_join(
        secure_broker.url,
        "secure",
        authmethods=["ticket"],
        authid="alice",
        on_challenge=ticket("alice-ticket"),
    )
    d = session.details
    assert (d.authid, d.authrole, d.authmethod, d.authprovider) == (
        "alice",
        "user",
        "ticket",
        "static",
    )
    session.leave()


async def test_wrong_or_unknown_ticket_fails_the_same_way(secure_broker: BrokerProcess) -> None:
    await assert_fails(
        secure_broker.url, authmethods=["ticket"], authid="alice", on_challenge=ticket("nope")
    )
    await assert_fails(
        secure_broker.url, authmethods=["ticket"], authid="mallory", on_challenge=ticket("x")
    )


async def test_no_offered_method_gets_no_auth_method(secure_broker: BrokerProcess) -> None:
    with pytest.raises(Aborted) as info:
        await autobahn_join(secure_broker.url, "secure", authmethods=["anonymous"])
    assert info.value.reason == "wamp.error.no_auth_method"


@pytest.mark.parametrize("serializer", ["json", "msgpack"])
async def test_salted_wampcra_joins(secure_broker: BrokerProcess, serializer: str) -> None:
    session = await autobahn_join(
        secure_broker.url,
        "secure",
        authmethods=["wampcra"],
        authid="bob",
        on_challenge=wampcra("bob-secret"),
        serializer=serializer,
    )
    assert (session.details.authid, session.details.authrole) == ("bob", "user")
    assert session.details.authmethod == "wampcra"
    session.leave()


async def test_wampcra_with_only_the_derived_key_configured(secure_broker: BrokerProcess) -> None:
    session = await autobahn_join(
        secure_broker.url,
        "secure",
        authmethods=["wampcra"],
        authid="dave",
        on_challenge=wampcra("dave-secret"),
    )
    assert session.details.authrole == "guest"
    session.leave()


async def test_unsalted_wampcra_joins(secure_broker: BrokerProcess) -> None:
    session = await autobahn_join(
        secure_broker.url,
        "secure",
        authmethods=["wampcra"],
        authid="erin",
        on_challenge=wampcra("erin-plain-secret"),
    )
    assert session.details.authid == "erin"
    session.leave()


async def test_wampcra_wrong_secret_and_unknown_authid_fail(secure_broker: BrokerProcess) -> None:
    await assert_fails(
        secure_broker.url, authmethods=["wampcra"], authid="bob", on_challenge=wampcra("guess")
    )
    seen: list[Any] = []

    def record(challenge: Any) -> str:
        seen.append(challenge.extra)
        return str(wampcra("guess")(challenge))

    await assert_fails(
        secure_broker.url, authmethods=["wampcra"], authid="nobody", on_challenge=record
    )
    # an unknown authid is challenged like a salted one: the exchange reveals nothing
    assert {"challenge", "salt", "iterations", "keylen"} <= set(seen[0])


async def test_cryptosign_joins_by_public_key(secure_broker: BrokerProcess, keys: Keys) -> None:
    session = await autobahn_join(
        secure_broker.url,
        "secure",
        authmethods=["cryptosign"],
        authextra={"pubkey": keys.ed_public_hex},
        on_challenge=lambda c: cryptosign_sign(keys.ed_private_hex, c.extra["challenge"]),
    )
    assert (session.details.authid, session.details.authrole) == ("carol", "user")
    assert session.details.authmethod == "cryptosign"
    session.leave()


async def test_cryptosign_with_the_wrong_private_key_fails(
    secure_broker: BrokerProcess, keys: Keys
) -> None:
    await assert_fails(
        secure_broker.url,
        authmethods=["cryptosign"],
        authextra={"pubkey": keys.ed_public_hex},
        on_challenge=lambda c: cryptosign_sign(keys.other_ed_private_hex, c.extra["challenge"]),
    )


async def test_cryptosign_with_an_unknown_key_fails(secure_broker: BrokerProcess) -> None:
    client = await RawClient.connect(secure_broker.url)
    with pytest.raises(Aborted) as info:
        await client.join("secure", authmethods=["cryptosign"], authextra={"pubkey": "ab" * 32})
    assert info.value.reason == FAILED


async def test_jwt_hs256_ticket_gives_authid_and_role_from_claims(
    secure_broker: BrokerProcess,
) -> None:
    session = await autobahn_join(
        secure_broker.url,
        "secure",
        authmethods=["ticket"],
        on_challenge=ticket(token({"sub": "jane", "role": "guest"})),
    )
    d = session.details
    assert (d.authid, d.authrole, d.authprovider) == ("jane", "guest", "jwt")
    session.leave()


@pytest.mark.parametrize(
    "claims",
    [
        {"exp": int(time.time()) - 120},
        {"iss": "https://evil.test"},
        {"aud": "someone-else"},
        {"role": None},
    ],
    ids=["expired", "wrong-issuer", "wrong-audience", "no-role"],
)
async def test_jwt_with_bad_claims_fails(
    secure_broker: BrokerProcess, claims: dict[str, Any]
) -> None:
    await assert_fails(
        secure_broker.url, authmethods=["ticket"], on_challenge=ticket(token(claims))
    )


async def test_jwt_with_a_wrong_key_or_alg_none_fails(secure_broker: BrokerProcess) -> None:
    forged = token({}, key="another-secret-that-is-long-enough-0123456789")
    await assert_fails(secure_broker.url, authmethods=["ticket"], on_challenge=ticket(forged))
    unsigned = jwt.encode(
        {"sub": "jane", "role": "user", "iss": ISSUER, "aud": AUDIENCE, "exp": time.time() + 60},
        None,
        algorithm="none",
    )
    await assert_fails(secure_broker.url, authmethods=["ticket"], on_challenge=ticket(unsigned))


async def test_jwt_for_another_authid_than_hello_fails(secure_broker: BrokerProcess) -> None:
    await assert_fails(
        secure_broker.url,
        authmethods=["ticket"],
        authid="alice",
        on_challenge=ticket(token({"sub": "jane"})),
    )


async def test_jwt_rs256_ticket_joins(secure_broker: BrokerProcess, keys: Keys) -> None:
    signed = token({"sub": "rita"}, key=keys.rsa_private, algorithm="RS256")
    session = await autobahn_join(
        secure_broker.url, "rsa", authmethods=["ticket"], on_challenge=ticket(signed)
    )
    assert (session.details.authid, session.details.authrole) == ("rita", "user")
    session.leave()


async def test_rs256_realm_rejects_hmac_tokens_signed_with_the_public_key(
    secure_broker: BrokerProcess, keys: Keys
) -> None:
    # algorithm confusion: an HS256 token keyed with the (public) PEM must not verify
    header = '{"alg":"HS256","typ":"JWT"}'
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    body = {"sub": "rita", "role": "user", "iss": ISSUER, "aud": AUDIENCE}
    body["exp"] = int(time.time()) + 60
    signing_input = f"{b64(header.encode())}.{b64(json.dumps(body).encode())}"
    mac = hmac.new(keys.rsa_public_pem.encode(), signing_input.encode(), hashlib.sha256)
    forged = f"{signing_input}.{b64(mac.digest())}"
    await assert_fails(
        secure_broker.url, realm="rsa", authmethods=["ticket"], on_challenge=ticket(forged)
    )


async def test_dynamic_authenticator_decides_unknown_principals(
    secure_broker: BrokerProcess,
) -> None:
    backend = await autobahn_join(
        secure_broker.url,
        "secure",
        authmethods=["ticket"],
        authid="backend",
        on_challenge=ticket("backend-ticket"),
    )
    calls: list[Any] = []

    def authenticate(realm: str, authid: str, details: dict[str, Any]) -> Any:
        calls.append((realm, authid, details["ticket"]))
        if details["ticket"] != f"{authid}-ok":
            from autobahn.wamp.exception import ApplicationError

            raise ApplicationError("com.auth.invalid_ticket")
        return {"role": "guest", "extra": {"plan": "free"}}

    await backend.register(authenticate, "com.auth.authenticate")
    session = await autobahn_join(
        secure_broker.url,
        "secure",
        authmethods=["ticket"],
        authid="zed",
        on_challenge=ticket("zed-ok"),
    )
    d = session.details
    assert (d.authid, d.authrole, d.authprovider) == ("zed", "guest", "dynamic")
    assert d.authextra == {"plan": "free"}
    session.leave()
    await assert_fails(
        secure_broker.url, authmethods=["ticket"], authid="zed", on_challenge=ticket("zed-bad")
    )
    assert calls == [("secure", "zed", "zed-ok"), ("secure", "zed", "zed-bad")]
    backend.leave()


async def test_without_a_dynamic_authenticator_registered_unknown_principals_fail(
    secure_broker: BrokerProcess,
) -> None:
    await assert_fails(
        secure_broker.url, authmethods=["ticket"], authid="yves", on_challenge=ticket("yves-ok")
    )


async def test_only_the_trusted_role_may_register_the_authenticator(
    secure_broker: BrokerProcess,
) -> None:
    client = await RawClient.connect(secure_broker.url)
    await client.join(
        "secure", authmethods=["ticket"], authid="alice", sign=lambda e: "alice-ticket"
    )
    reply = await client.request([64, {}, "com.auth.authenticate"], 65)
    assert reply[0] == 8 and reply[4] == "wamp.error.not_authorized"
    await client.close()
