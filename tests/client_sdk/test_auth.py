"""Client-side authentication computations, checked against independent implementations."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json

import pytest

from client_sdk.auth import (
    AuthError,
    CryptosignAuth,
    TicketAuth,
    WampCraAuth,
    compute_wcs,
    cryptosign_public_key,
    derive_key,
)

CHALLENGE = json.dumps(
    {
        "authid": "joe",
        "authrole": "user",
        "authmethod": "wampcra",
        "authprovider": "static",
        "nonce": "LHRTC9zeOIrt_9U3",
        "timestamp": "2014-06-22T16:36:25.448Z",
        "session": 3251278072152162,
    }
)


def test_ticket_signature_is_the_ticket() -> None:
    auth = TicketAuth("joe", "secret!!!")
    assert auth.authmethod == "ticket"
    assert auth.sign({}) == "secret!!!"
    assert "secret" not in repr(auth)


def test_wampcra_signature_is_base64_hmac_sha256_of_the_challenge() -> None:
    expected = base64.b64encode(
        hmac.new(b"secret2", CHALLENGE.encode(), hashlib.sha256).digest()
    ).decode()
    assert WampCraAuth("joe", "secret2").sign({"challenge": CHALLENGE}) == expected


def test_salted_wampcra_derives_the_key_with_pbkdf2_first() -> None:
    salt, iterations, keylen = "salt123", 100, 16
    derived = base64.b64encode(
        hashlib.pbkdf2_hmac("sha256", b"secret2", salt.encode(), iterations, keylen)
    )
    expected = base64.b64encode(
        hmac.new(derived, CHALLENGE.encode(), hashlib.sha256).digest()
    ).decode()
    extra = {"challenge": CHALLENGE, "salt": salt, "iterations": iterations, "keylen": keylen}
    assert WampCraAuth("joe", "secret2").sign(extra) == expected


def test_wampcra_matches_autobahn() -> None:
    autobahn_auth = pytest.importorskip("autobahn.wamp.auth")
    key = autobahn_auth.derive_key("secret2", "salt123", 1000, 32)
    assert derive_key("secret2", "salt123", 1000, 32) == key
    assert compute_wcs(key, CHALLENGE) == autobahn_auth.compute_wcs(key, CHALLENGE).decode()
    assert (
        compute_wcs("secret2", CHALLENGE)
        == autobahn_auth.compute_wcs(b"secret2", CHALLENGE).decode()
    )


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"challenge": 5},
        {"challenge": "x", "salt": "s", "iterations": "many"},
        {"challenge": "x", "salt": "s", "keylen": 0},
    ],
)
def test_wampcra_rejects_malformed_challenges(extra: dict[str, object]) -> None:
    with pytest.raises(AuthError):
        WampCraAuth("joe", "secret").sign(extra)


# RFC 8032, section 7.1, TEST 1: the secret key and its public key.
RFC8032_SEED = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
RFC8032_PUBLIC = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"


def test_cryptosign_public_key_matches_rfc8032_vector() -> None:
    assert cryptosign_public_key(RFC8032_SEED) == RFC8032_PUBLIC
    assert cryptosign_public_key(bytes.fromhex(RFC8032_SEED)) == RFC8032_PUBLIC
    auth = CryptosignAuth("alice", RFC8032_SEED)
    assert auth.authextra == {"pubkey": RFC8032_PUBLIC}


def test_cryptosign_signature_is_hex_of_signature_then_challenge() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    challenge = bytes(range(32))
    signature = bytes.fromhex(
        CryptosignAuth("alice", RFC8032_SEED).sign({"challenge": challenge.hex()})
    )
    assert len(signature) == 96
    assert signature[64:] == challenge
    public = Ed25519PublicKey.from_public_bytes(bytes.fromhex(RFC8032_PUBLIC))
    public.verify(signature[:64], challenge)  # raises InvalidSignature if wrong


@pytest.mark.parametrize("challenge", ["zz" * 32, "00" * 31, None])
def test_cryptosign_rejects_malformed_challenges(challenge: object) -> None:
    with pytest.raises(AuthError):
        CryptosignAuth("alice", RFC8032_SEED).sign({"challenge": challenge})


def test_cryptosign_rejects_a_bad_private_key() -> None:
    with pytest.raises(AuthError):
        CryptosignAuth("alice", "abcd")
