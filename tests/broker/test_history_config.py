"""``[[realm.history]]`` in the TOML config: rules and the byte bound, and clear errors."""

from __future__ import annotations

import tomllib

import pytest

from broker.config import ConfigError, settings_from_toml
from broker.core.history import DEFAULT_MAX_BYTES, HistoryRule, HistorySettings


def history_of(text: str) -> HistorySettings:
    settings = settings_from_toml(tomllib.loads('[[realm]]\nname = "r"\n' + text), {})
    return settings.realms[0].history


def test_rules_and_byte_bound_are_read() -> None:
    history = history_of(
        "history_max_bytes = 1048576\n"
        '[[realm.history]]\nuri = "com.example.ticker."\nmatch = "prefix"\n'
        "limit = 1000\nttl = 3600\n"
        '[[realm.history]]\nuri = "com.example.chat"\nlimit = 50\n'
    )
    assert history == HistorySettings(
        (
            HistoryRule("com.example.ticker.", "prefix", 1000, 3600.0),
            HistoryRule("com.example.chat", "exact", 50, None),
        ),
        1048576,
    )


def test_a_realm_without_history_keeps_nothing() -> None:
    assert history_of("") == HistorySettings((), DEFAULT_MAX_BYTES)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[[realm.history]]\nuri = "com.t"\nmatch = "regex"\nlimit = 5\n', "match must be one of"),
        ('[[realm.history]]\nuri = "com.t"\nlimit = 0\n', "limit must be a positive"),
        ('[[realm.history]]\nuri = "com.t"\nlimit = -3\n', "limit must be a positive"),
        ('[[realm.history]]\nuri = "com.t"\nlimit = 1.5\n', "limit: expected int"),
        ('[[realm.history]]\nuri = "com.t"\nlimit = 5\nttl = 0\n', "ttl must be a positive"),
        ('[[realm.history]]\nuri = "com.t"\nlimit = 5\nttl = "1h"\n', "ttl: expected int or float"),
        ('[[realm.history]]\nuri = "com..t"\nlimit = 5\n', "invalid exact topic URI"),
        ('[[realm.history]]\nuri = "wamp.session."\nmatch = "prefix"\nlimit = 5\n', "wamp"),
        ('[[realm.history]]\nuri = "com.t"\nlimit = 5\nkeep = 1\n', "unknown key(s) keep"),
        ('[[realm.history]]\nuri = "com.t"\n', "needs uri and limit"),
        (
            '[[realm.history]]\nuri = "com.t"\nlimit = 5\n[[realm.history]]\nuri = "com.t"\nlimit = 6\n',
            "two rules for the same uri and match",
        ),
        ("history_max_bytes = 0\n", "history_max_bytes: must be a positive"),
        ('[realm.history]\nuri = "com.t"\n', "must be an array of tables"),
    ],
)
def test_mistakes_are_named(text: str, complaint: str) -> None:
    with pytest.raises(ConfigError) as raised:
        history_of(text)
    assert complaint in str(raised.value)
    assert "realm r" in str(raised.value)
