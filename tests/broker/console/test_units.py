"""The console's pieces without a browser: static files, ``[console]`` settings, paging."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace
from typing import Any

import pytest

from broker.config import ConfigError, settings_from_toml
from broker.console.http import console_response
from broker.console.procedures import MAX_PAGE, NodeStatus
from broker.core.registration import InternalError
from broker.core.router import Router
from broker.core.settings import RealmSettings
from broker.metrics.stats import TransportStats
from tests.broker.core.harness import ManualClock

CONFIG = b'{"realm": "admin"}'


def test_static_files_have_their_types_and_cache_policy() -> None:
    index = console_response("/console", "/console/")
    assert index is not None and index[:2] == (200, "text/html; charset=utf-8")
    assert b"vendor/autobahn.min.js" in index[2] and index[3]["Cache-Control"] == "no-cache"
    script = console_response("/console", "/console/console.js")
    assert script is not None and script[1] == "text/javascript; charset=utf-8"
    assert script[3]["Cache-Control"] == "public, max-age=3600"
    assert script[3]["X-Content-Type-Options"] == "nosniff"
    vendor = console_response("/console", "/console/vendor/autobahn.min.js")
    assert vendor is not None and vendor[0] == 200 and len(vendor[2]) > 100_000
    licence = console_response("/console", "/console/vendor/autobahn-LICENSE")
    assert licence is not None and b"MIT" in licence[2]
    config = console_response("/console", "/console/config.json", CONFIG)
    assert config == (200, "application/json", CONFIG, {"Cache-Control": "no-store"})


def test_the_prefix_redirects_and_other_paths_are_not_the_consoles() -> None:
    assert console_response("/console", "/console") == (
        308,
        "text/plain; charset=utf-8",
        b"",
        {"Location": "/console/"},
    )
    assert console_response("/console", "/ws") is None
    assert console_response("/console", "/consolex/index.html") is None


@pytest.mark.parametrize(
    "path",
    [
        "/console/../config.py",
        "/console/%2e%2e/http.py",
        "/console/..%2fhttp.py",
        "/console//etc/passwd",
        "/console/%2Fetc%2Fpasswd",
        "/console/static/index.html",
        "/console/vendor/../../http.py",
        "/console/__init__.py",
        "/console/missing.js",
    ],
)
def test_nothing_outside_the_static_folder_is_served(path: str) -> None:
    answer = console_response("/console", path)
    assert answer is not None and answer[0] == 404 and answer[2] == b"not found\n"


REALM = """
[[realm]]
name = "ops"
anonymous = false
[realm.auth.ticket.principals]
root = { ticket_hash = "pbkdf2_sha256$1000$c2FsdA==$ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGk=", role = "admin" }
[[realm.role]]
name = "user"
permissions = [{ uri = "com.example.", allow = ["call"] }]
"""


def _settings(console: dict[str, Any], realm: str = REALM) -> Any:
    import tomllib

    data = tomllib.loads(realm)
    data["console"] = console
    return settings_from_toml(data, {})


def test_the_console_is_off_unless_enabled() -> None:
    assert _settings({}).console is None
    assert _settings({"enabled": False, "realm": "nowhere"}).console is None


def test_the_console_role_gets_the_meta_api_and_nothing_more() -> None:
    settings = _settings({"enabled": True, "realm": "ops", "role": "admin", "path": "/ui/"})
    assert settings.console.path == "/ui" and settings.console.role == "admin"
    policy = settings.realms[0].authorization
    for action in ("call", "subscribe"):
        assert policy.decide("admin", action, "wamp.session.list").allowed
        assert policy.decide("admin", action, "wamp.broker.node_list").allowed
    assert not policy.decide("admin", "register", "wamp.session.list").allowed
    assert not policy.decide("admin", "publish", "wamp.session.on_join").allowed
    assert not policy.decide("admin", "call", "com.example.anything").allowed
    assert not policy.decide("user", "call", "wamp.session.list").allowed


def test_a_configured_console_role_keeps_its_permissions() -> None:
    realm = REALM + (
        '[[realm.role]]\nname = "admin"\n'
        'permissions = [{ uri = "com.example.", allow = ["publish"] }]\n'
    )
    policy = _settings({"enabled": True, "realm": "ops"}, realm).realms[0].authorization
    assert policy.decide("admin", "publish", "com.example.x").allowed
    assert policy.decide("admin", "call", "wamp.session.kill").allowed


@pytest.mark.parametrize(
    ("console", "realm", "message"),
    [
        ({"enabled": True, "realm": "other"}, REALM, "not a configured"),
        ({"enabled": True, "realm": "ops", "colour": "red"}, REALM, "unknown key"),
        ({"enabled": True, "realm": "ops", "path": "/ws"}, REALM, "collides"),
        ({"enabled": True, "realm": "ops", "path": "/metrics"}, REALM, "collides"),
        ({"enabled": "yes", "realm": "ops"}, REALM, "must be a bool"),
        ({"enabled": True, "realm": "ops"}, REALM.split("[[realm.role]]")[0], "no [[realm.role]]"),
        (
            {"enabled": True, "realm": "ops", "role": "guest"},
            REALM.replace("anonymous = false", 'anonymous = true\nanonymous_role = "guest"'),
            "anonymous clients",
        ),
    ],
)
def test_console_settings_that_would_be_unsafe_or_wrong_are_refused(
    console: dict[str, Any], realm: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        _settings(console, realm)


def _status_with_remote_sessions(count: int) -> tuple[NodeStatus, Any]:
    router = Router([RealmSettings("r")], ManualClock())
    realm = router.realms["r"]
    for sid in range(1, count + 1):
        info = {"session": sid, "authid": f"user-{sid}", "authrole": "anonymous", "transport": {}}
        realm.remote.add_session(f"n{sid % 3}", info)
    transport = SimpleNamespace(stats=TransportStats(), connections=(), slow_consumers=0)
    return NodeStatus("n9", "0", router, transport, None, "r"), realm  # type: ignore[arg-type]


def test_sessions_come_in_pages_even_with_ten_thousand() -> None:
    status, realm = _status_with_remote_sessions(10_000)
    started = time.perf_counter()
    _, page = status.session_page(realm, {"offset": 9_990, "limit": 50})
    elapsed = time.perf_counter() - started
    assert page["total"] == 10_000 and page["offset"] == 9_990
    assert [row["session"] for row in page["rows"]] == list(range(9_991, 10_001))
    assert page["rows"][0]["node"] == "n1" and page["rows"][0]["authid"] == "user-9991"
    assert elapsed < 0.5, f"one page of 10,000 sessions took {elapsed:.3f} s"
    _, capped = status.session_page(realm, {"limit": 10_000})
    assert len(capped["rows"]) == MAX_PAGE
    assert len(json.dumps(capped)) < 100_000
    _, found = status.session_page(realm, {"search": "USER-777"})
    assert [row["session"] for row in found["rows"]] == [777, *range(7770, 7780)]


@pytest.mark.parametrize("kwargs", [{"offset": -1}, {"limit": "10"}, {"search": 3}])
def test_bad_page_arguments_are_invalid_argument(kwargs: dict[str, Any]) -> None:
    status, realm = _status_with_remote_sessions(1)
    with pytest.raises(InternalError) as raised:
        status.session_page(realm, kwargs)
    assert raised.value.uri == "wamp.error.invalid_argument"
