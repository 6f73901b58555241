"""Security configuration: clear errors for mistakes, secrets never stored in clear."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from broker.auth.secrets import hash_ticket, verify_ticket
from broker.config import ConfigError, load_settings, settings_from_toml
from broker.core.authorization import Authorization, Permission, Role
from broker.core.router import AUTHORIZATION

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "configs"


def parse(text: str) -> object:
    return settings_from_toml(tomllib.loads(text), {"JWT": "x" * 40})


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[[realm]]\nname = "r"\nsurprise = 1\n', "unknown key(s) surprise"),
        ("[limits]\nmax_sessons = 3\n", "unknown key(s) max_sessons"),
        ('[[realm]]\nname = "r"\n[realm.auth.kerberos]\n', "unknown key(s) kerberos"),
        (
            '[[realm]]\nname = "r"\n[realm.auth.ticket.principals.a]\nticket = "pw"\nrole = "u"\n',
            "store ticket_hash, never the ticket",
        ),
        (
            '[[realm]]\nname = "r"\n[realm.auth.ticket.principals.a]\nticket_hash = "x"\nrole = "u"\n',
            "ticket_hash: expected pbkdf2_sha256",
        ),
        (
            '[[realm]]\nname = "r"\n[[realm.role]]\nname = "u"\n'
            'permissions = [{ uri = "com.", allow = ["read"] }]\n',
            "unknown action(s) read",
        ),
        (
            '[[realm]]\nname = "r"\n[[realm.role]]\nname = "u"\n'
            'permissions = [{ uri = "com.", match = "regex" }]\n',
            "match must be one of",
        ),
        (
            '[[realm]]\nname = "r"\n[realm.auth.ticket.jwt]\nsecret = "short"\n',
            "at least 32 bytes",
        ),
        (
            '[[realm]]\nname = "r"\n[realm.auth.ticket.jwt]\nalgorithms = ["HS256", "RS256"]\n'
            'secret_env = "JWT"\n',
            "do not mix",
        ),
        (
            '[[realm]]\nname = "r"\n[realm.auth.ticket.jwt]\nsecret_env = "MISSING"\n',
            "MISSING is not set",
        ),
        (
            '[[realm]]\nname = "r"\n[realm.auth.cryptosign.principals.c]\npubkeys = ["zz"]\n'
            'role = "u"\n',
            "64 hex digits",
        ),
        (
            '[[realm]]\nname = "r"\n[realm.auth.wampcra.principals.b]\nrole = "u"\n',
            "exactly one of secret",
        ),
        ('[tls]\ncert = "/nonexistent.pem"\nkey = "/nonexistent.key"\n', "no such file"),
        ("[limits]\nhello_timeout = 0\n", "must be positive"),
    ],
)
def test_mistakes_are_config_errors_naming_the_place(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=None) as info:
        parse(text)
    assert complaint in str(info.value)


def test_no_config_is_the_open_development_realm() -> None:
    settings = load_settings(environ={})
    assert settings.development_default
    (realm,) = settings.realms
    assert realm.name == "realm1" and realm.anonymous and AUTHORIZATION not in realm.extra


def test_example_configs_are_valid() -> None:
    env = {"JWT_SECRET": "y" * 40, "BOB_SECRET": "bob", "BACKEND_TICKET_HASH": "unused"}
    files = sorted(EXAMPLES.glob("*.toml"))
    assert files
    for path in files:
        load_settings(str(path), environ=env)


def test_ticket_hashes_are_salted_and_verify() -> None:
    one, two = hash_ticket("pw", iterations=10), hash_ticket("pw", iterations=10)
    assert one != two and "pw" not in one
    assert verify_ticket("pw", one) and not verify_ticket("pW", one)


def test_most_specific_rule_wins_and_wamp_needs_an_explicit_grant() -> None:
    everything = frozenset({"publish", "subscribe", "call", "register"})
    auth = Authorization(
        [
            Role(
                "r",
                (
                    Permission("", "prefix", everything),
                    Permission("com.secret.", "prefix", frozenset()),
                    Permission("com.secret.ok", "exact", frozenset({"call"})),
                    Permission("com..public", "wildcard", frozenset({"subscribe"})),
                ),
            )
        ]
    )
    assert auth.decide("r", "call", "com.app.x").allowed
    assert not auth.decide("r", "call", "com.secret.x").allowed
    assert auth.decide("r", "call", "com.secret.ok").allowed
    assert not auth.decide("r", "call", "wamp.session.count").allowed
    assert not auth.decide("other", "call", "com.app.x").allowed
    assert auth.may_receive("r", "com.x.public")
