"""``[realm.http_api]`` and ``[[realm.webhook]]``: parsed into typed settings; errors name the key."""

from __future__ import annotations

import tomllib

import pytest

from broker.config import ConfigError, settings_from_toml

from ._support import KEY_HASH


def parse(text: str, env: dict[str, str] | None = None) -> object:
    return settings_from_toml(tomllib.loads(text), env or {})


BASE = '[[realm]]\nname = "realm1"\n'


def test_full_sections_are_parsed() -> None:
    settings = settings_from_toml(
        tomllib.loads(
            BASE
            + f"""
[realm.http_api]
publish_path = "/api/publish"
rate = 5
[realm.http_api.keys.k1]
key_hash = "{KEY_HASH}"
authid = "svc"
role = "r"
[realm.http_api.signers.cron]
secret_env = "CRON"
authid = "cron"
role = "r"
[[realm.webhook]]
name = "h"
topic = "com.a"
url = "http://127.0.0.1:1/x"
secret_env = "HOOK"
"""
        ),
        {"CRON": "c-secret", "HOOK": "h-secret"},
    )
    (api,) = settings.http_apis
    assert (api.realm, api.publish_path, api.call_path, api.rate) == (
        "realm1",
        "/api/publish",
        "/call",
        5.0,
    )
    assert api.keys is not None and api.keys["k1"].authid == "svc"
    assert api.signers is not None and api.signers["cron"].secret == "c-secret"
    (hook,) = settings.webhooks
    assert (hook.name, hook.match, hook.secret, hook.queue) == ("h", "exact", "h-secret", 1000)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[realm.http_api]\nbogus = 1\n", "unknown key(s) bogus"),
        ("[realm.http_api]\nrate = true\n", "rate"),
        ('[realm.http_api]\ncall_path = "call"\n', "call_path"),
        ('[realm.http_api.keys.k]\nkey_hash = "plain"\nauthid = "a"\nrole = "r"\n', "key_hash"),
        ('[realm.http_api.keys.k]\nkey_hash = "x"\n', "needs authid and role"),
        ('[realm.http_api.signers.s]\nauthid = "a"\nrole = "r"\n', "needs secret"),
        ('[realm.http_api.signers.s]\nsecret_env = "NOPE"\nauthid = "a"\nrole = "r"\n', "NOPE"),
        ('[[realm.webhook]]\nname = "h"\ntopic = "com.a"\n', "needs name, topic and url"),
        ('[[realm.webhook]]\nname = "h"\ntopic = "com a"\nurl = "http://x/"\n', "topic"),
        ('[[realm.webhook]]\nname = "h"\ntopic = "com.a"\nurl = "ftp://x/"\n', "url"),
        (
            '[[realm.webhook]]\nname = "h"\ntopic = "com.a"\nurl = "http://x/"\nmatch = "any"\n',
            "match",
        ),
        (
            '[[realm.webhook]]\nname = "h"\ntopic = "a.b"\nurl = "http://x/"\n'
            '[[realm.webhook]]\nname = "h"\ntopic = "a.c"\nurl = "http://x/"\n',
            "unique",
        ),
    ],
)
def test_invalid_entries_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(BASE + text)
