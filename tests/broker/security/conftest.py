"""A broker process with a secured configuration, shared by the security tests.

Realm ``secure``: no anonymous access; ticket (static hashes, JWT HS256, dynamic),
wampcra (salted and not), cryptosign; roles ``user``, ``guest``, ``backend``.
Realm ``rsa``: JWT tickets signed with RS256. Realm ``open``: anonymous clients
get role ``guest``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from broker.auth.secrets import hash_ticket
from broker.auth.wampcra import derive_key
from tests.support.processes import BrokerProcess, start_broker

JWT_SECRET = "s3cret-for-tests-only-0123456789abcdef"
ISSUER = "https://issuer.test"
AUDIENCE = "broker-tests"
CRA_SALT = "pepper-and-salt"


@dataclass(frozen=True)
class Keys:
    """Key material the tests sign with (the broker gets only the public halves)."""

    rsa_private: rsa.RSAPrivateKey
    rsa_public_pem: str
    ed_private_hex: str
    ed_public_hex: str
    other_ed_private_hex: str


def make_keys() -> Keys:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public_pem = (
        rsa_key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    ed = ed25519.Ed25519PrivateKey.generate()
    other = ed25519.Ed25519PrivateKey.generate()
    return Keys(
        rsa_key,
        public_pem,
        ed.private_bytes_raw().hex(),
        ed.public_key().public_bytes_raw().hex(),
        other.private_bytes_raw().hex(),
    )


def secure_config(keys: Keys, tmp: Path) -> str:
    pem = tmp / "jwt-public.pem"
    pem.write_text(keys.rsa_public_pem)
    alice = hash_ticket("alice-ticket", iterations=1000)
    backend = hash_ticket("backend-ticket", iterations=1000)
    dave_key = derive_key("dave-secret", CRA_SALT, 500, 32).decode()
    return f"""
[[realm]]
name = "secure"
anonymous = false

[realm.auth.ticket]
dynamic = "com.auth.authenticate"
dynamic_timeout = 3
[realm.auth.ticket.principals.alice]
ticket_hash = "{alice}"
role = "user"
[realm.auth.ticket.principals.backend]
ticket_hash = "{backend}"
role = "backend"
[realm.auth.ticket.jwt]
algorithms = ["HS256"]
secret = "{JWT_SECRET}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"

[realm.auth.wampcra.principals.bob]
secret = "bob-secret"
salt = "{CRA_SALT}"
iterations = 500
keylen = 32
role = "user"
[realm.auth.wampcra.principals.dave]
derived_key = "{dave_key}"
salt = "{CRA_SALT}"
iterations = 500
keylen = 32
role = "guest"
[realm.auth.wampcra.principals.erin]
secret = "erin-plain-secret"
role = "user"

[realm.auth.cryptosign.principals.carol]
pubkeys = ["{keys.ed_public_hex}"]
role = "user"

[[realm.role]]
name = "user"
permissions = [
    {{ uri = "com.app.", match = "prefix", allow = ["publish", "subscribe", "call", "register"] }},
    {{ uri = "com.app.secret.", match = "prefix", allow = [] }},
    {{ uri = "com.app.audited", match = "exact", allow = ["call", "publish"], disclose = true }},
]

[[realm.role]]
name = "guest"
permissions = [
    {{ uri = "com.app.public.", match = "prefix", allow = ["subscribe", "call"] }},
    {{ uri = "com.app..feed", match = "wildcard", allow = ["subscribe"] }},
    {{ uri = "", match = "prefix", allow = ["subscribe"] }},
    {{ uri = "com.app.secret.", match = "prefix", allow = [] }},
    {{ uri = "com.guest.", match = "prefix", allow = ["register"] }},
    {{ uri = "com.guest.private.", match = "prefix", allow = [] }},
]

[[realm.role]]
name = "backend"
permissions = [
    {{ uri = "", match = "prefix", allow = ["publish", "subscribe", "call", "register"] }},
    {{ uri = "wamp.", match = "prefix", allow = ["call", "subscribe"] }},
]

[[realm]]
name = "rsa"
anonymous = false
[realm.auth.ticket.jwt]
algorithms = ["RS256"]
public_key_file = "{pem}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
[[realm.role]]
name = "user"
permissions = [{{ uri = "com.app.", allow = ["call", "register"] }}]

[[realm]]
name = "open"
anonymous = true
anonymous_role = "guest"
[[realm.role]]
name = "guest"
permissions = [{{ uri = "com.open.", allow = ["publish", "subscribe"] }}]
"""


@pytest.fixture(scope="session")
def keys() -> Keys:
    return make_keys()


@pytest.fixture(scope="module")
def secure_broker(keys: Keys, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    tmp = tmp_path_factory.mktemp("secure")
    config = tmp / "broker.toml"
    config.write_text(secure_config(keys, tmp))
    proc = start_broker("--config", str(config))
    yield proc
    proc.stop()
