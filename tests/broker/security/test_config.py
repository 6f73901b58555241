"""Security configuration: clear errors for mistakes, secrets never stored in clear."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from broker.auth.secrets import hash_ticket, verify_ticket
from broker.config import ConfigError, load_settings, settings_from_toml
from broker.core.auth import Reply
from broker.core.authorization import Authorization, Permission, Role, parse_authorizer_reply

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
    assert realm.name == "realm1" and realm.anonymous and realm.authorization is None


def test_example_configs_are_valid() -> None:
    env = {"JWT_SECRET": "y" * 40, "BOB_SECRET": "bob", "BACKEND_TICKET_HASH": "unused"}
    files = sorted(EXAMPLES.glob("*.toml"))
    assert files
    for path in files:
        load_settings(str(path), environ=env)


def test_ticket_hashes_are_salted_and_verify() -> None:
    ticket = "pw: not base64!"  # characters base64 never produces, so "in" cannot match by chance
    one, two = hash_ticket(ticket, iterations=10), hash_ticket(ticket, iterations=10)
    assert one != two and ticket not in one
    assert verify_ticket(ticket, one) and not verify_ticket(ticket.upper(), one)


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


# --- the dynamic authorizer --------------------------------------------------------------
BACKEND_ROLE = (
    '[[realm.role]]\nname = "backend"\n'
    'permissions = [{ uri = "com.example.authorize", match = "exact", allow = ["register"] }]\n'
)


@pytest.mark.parametrize(
    ("role", "complaint"),
    [
        ('authorizer = "com..bad"\n', "not a valid procedure URI"),
        ('authorizer = "wamp.authorize"\n', "outside wamp.*"),
        ("authorizer = 7\n", "authorizer: expected str"),
        ('authorizer = "com.example.authorize"\nauthorizer_timeout = 0\n', "authorizer_timeout"),
        ('authorizer = "com.example.authorize"\nauthorizer_timeout = true\n', "got a boolean"),
        ('authorizer = "com.example.authorize"\nauthorizer_cache = -1\n', "authorizer_cache"),
        ("authorizer_timeout = 3\n", "authorizer_timeout needs authorizer"),
        ('authorizer = "com.example.authorize"\nauthoriser = "x"\n', "unknown key(s) authoriser"),
        ('authorizer = "com.example.other"\n', "no role of the realm may register it"),
    ],
)
def test_authorizer_mistakes_are_config_errors(role: str, complaint: str) -> None:
    text = f'[[realm]]\nname = "r"\n{BACKEND_ROLE}[[realm.role]]\nname = "user"\n{role}'
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert complaint in str(info.value)
    assert "role user" in str(info.value) or "unknown key" in str(info.value)


def test_authorizer_role_is_built_with_its_settings() -> None:
    text = (
        f'[[realm]]\nname = "r"\n{BACKEND_ROLE}[[realm.role]]\nname = "user"\n'
        'authorizer = "com.example.authorize"\nauthorizer_timeout = 2\nauthorizer_cache = 0\n'
        'permissions = [{ uri = "com.example.public.", allow = ["subscribe"] }]\n'
    )
    settings = parse(text)
    auth = settings.realms[0].authorization
    assert auth is not None
    role = auth.roles["user"]
    assert (role.authorizer, role.authorizer_timeout, role.authorizer_cache) == (
        "com.example.authorize",
        2.0,
        0.0,
    )


def test_undecided_actions_consult_the_authorizer_and_wamp_never_does() -> None:
    auth = Authorization(
        [
            Role(
                "r",
                (
                    Permission("com.open.", "prefix", frozenset({"subscribe"})),
                    Permission("com.open.closed.", "prefix", frozenset()),
                ),
                authorizer="com.example.authorize",
            ),
            Role("plain", (Permission("com.open.", "prefix", frozenset({"subscribe"})),)),
        ]
    )
    assert auth.decide("r", "subscribe", "com.open.x").allowed  # a rule decides
    assert not auth.decide("r", "publish", "com.open.x").consult  # the rule denies publish
    assert not auth.decide("r", "subscribe", "com.open.closed.x").consult
    assert auth.decide("r", "call", "com.elsewhere").consult  # no rule: ask
    assert not auth.decide("r", "call", "wamp.session.count").consult  # meta API: static only
    assert not auth.decide("plain", "call", "com.elsewhere").consult  # no authorizer: deny
    # per-event checks of a pattern the authorizer approved: rules still carve holes
    assert auth.may_receive("r", "com.elsewhere.news")
    assert not auth.may_receive("r", "com.open.closed.x")
    assert not auth.may_receive("r", "wamp.session.on_join")
    assert not auth.may_receive("plain", "com.elsewhere.news")
    assert auth.may_serve("r", "com.elsewhere.proc")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (Reply(True, [True], {}), (True, False, False)),
        (Reply(True, [False], {}), (False, False, False)),
        (Reply(True, [{"allow": True, "disclose": True, "cache": True}], {}), (True, True, True)),
        (Reply(True, [{"allow": False, "cache": True}], {}), (False, False, True)),
        (Reply(True, [], {"allow": True}), (True, False, False)),
        (Reply(True, [{"allow": "yes"}], {}), (False, False, False)),
        (Reply(True, [{"allow": True, "admin": True}], {}), (False, False, False)),
        (Reply(True, [1], {}), (False, False, False)),
        (Reply(True, [], {}), (False, False, False)),
        (Reply(False, [], {}, "wamp.error.timeout"), (False, False, False)),
        (Reply(False, [True], {}, "com.error"), (False, False, False)),
    ],
)
def test_authorizer_answers(reply: Reply, expected: tuple[bool, bool, bool]) -> None:
    decision, cache = parse_authorizer_reply(reply, "com.example.authorize")
    assert (decision.allowed, decision.disclose, cache) == expected


def test_dynamic_authenticator_procedure_is_registered_by_static_rules_only() -> None:
    text = (
        '[[realm]]\nname = "r"\n[realm.auth.ticket]\ndynamic = "com.example.authenticate"\n'
        f"{BACKEND_ROLE}"
        '[[realm.role]]\nname = "user"\nauthorizer = "com.example.authorize"\n'
    )
    settings = parse(text)
    auth = settings.realms[0].authorization
    assert auth is not None
    assert auth.decide("user", "register", "com.example.other").consult
    for procedure in ("com.example.authenticate", "com.example.authorize"):
        decision = auth.decide("user", "register", procedure)
        assert not decision.allowed and not decision.consult
        assert not auth.may_serve("user", procedure)
    assert auth.decide("user", "call", "com.example.authenticate").consult
