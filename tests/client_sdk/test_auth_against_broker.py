"""The SDK's client-side authentication against our broker's authenticators."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

import client_sdk
from broker.auth.secrets import hash_ticket
from client_sdk import CryptosignAuth, JoinError, TicketAuth, WampCraAuth
from tests.support.processes import BrokerProcess, start_broker

SEED = ed25519.Ed25519PrivateKey.generate()
SEED_HEX = SEED.private_bytes_raw().hex()
PUBKEY_HEX = SEED.public_key().public_bytes_raw().hex()


@pytest.fixture(scope="module")
def auth_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config: Path = tmp_path_factory.mktemp("auth") / "broker.toml"
    config.write_text(
        f"""
[[realm]]
name = "app"
anonymous = false

[realm.auth.ticket.principals.alice]
ticket_hash = "{hash_ticket("alice-ticket", iterations=1000)}"
role = "user"

[realm.auth.wampcra.principals.bob]
secret = "bob-secret"
salt = "salty"
iterations = 400
keylen = 32
role = "user"

[realm.auth.cryptosign.principals.carol]
pubkeys = ["{PUBKEY_HEX}"]
role = "user"

[[realm.role]]
name = "user"
permissions = [{{ uri = "com.app.", match = "prefix", allow = ["call", "register"] }}]
"""
    )
    proc = start_broker("--config", str(config))
    yield proc
    proc.stop()


@pytest.mark.parametrize(
    ("auth", "authid", "method"),
    [
        (TicketAuth("alice", "alice-ticket"), "alice", "ticket"),
        (WampCraAuth("bob", "bob-secret"), "bob", "wampcra"),
        (CryptosignAuth("carol", SEED_HEX), "carol", "cryptosign"),
    ],
    ids=["ticket", "wampcra-salted", "cryptosign"],
)
async def test_sdk_authenticates_and_gets_its_role(
    auth_broker: BrokerProcess, auth: client_sdk.Authenticator, authid: str, method: str
) -> None:
    async with client_sdk.connect(auth_broker.url, "app", auth=auth) as session:
        assert session.authid == authid
        assert session.authrole == "user"
        assert session.authmethod == method
        await session.register("com.app.echo", lambda value: value)
        assert (await session.call("com.app.echo", authid)).value == authid


@pytest.mark.parametrize(
    "auth",
    [
        TicketAuth("alice", "wrong-ticket"),
        WampCraAuth("bob", "wrong-secret"),
        CryptosignAuth("carol", ed25519.Ed25519PrivateKey.generate().private_bytes_raw().hex()),
        TicketAuth("nobody", "alice-ticket"),
    ],
    ids=["ticket", "wampcra", "cryptosign", "unknown-authid"],
)
async def test_wrong_credentials_are_refused_with_authentication_failed(
    auth_broker: BrokerProcess, auth: client_sdk.Authenticator
) -> None:
    with pytest.raises(JoinError) as caught:
        async with client_sdk.connect(auth_broker.url, "app", auth=auth):
            pass
    assert caught.value.reason == "wamp.error.authentication_failed"


async def test_anonymous_is_refused_where_the_realm_requires_auth(
    auth_broker: BrokerProcess,
) -> None:
    with pytest.raises(JoinError) as caught:
        async with client_sdk.connect(auth_broker.url, "app"):
            pass
    assert caught.value.reason == "wamp.error.no_auth_method"
