"""Realm policy is typed and frozen; what a realm learns at run time stays on the realm."""

from __future__ import annotations

import dataclasses

import pytest

from broker.core.authorization import Authorization, Decision, Permission, Role
from broker.core.router import Router
from broker.core.settings import RealmSettings, SessionLimits
from protocol_spec import meta

from .harness import ManualClock

AUTHORIZER = "com.example.authorize"


def _policy() -> Authorization:
    member = Role("member", (Permission("com.open.", allow=frozenset({"call"})),), AUTHORIZER)
    return Authorization([member])


def test_policy_travels_in_typed_fields() -> None:
    limits = SessionLimits(max_subscriptions=2)
    settings = RealmSettings("r", authorization=_policy(), limits=limits)
    assert settings.limits is limits and settings.authorization is not None
    assert "extra" not in {f.name for f in dataclasses.fields(RealmSettings)}
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.limits = SessionLimits()  # type: ignore[misc]


def test_realms_built_from_the_same_settings_do_not_share_cached_answers() -> None:
    settings = RealmSettings("r", authorization=_policy())
    first = Router([settings], ManualClock()).realms["r"]
    second = Router([settings], ManualClock()).realms["r"]
    assert first.guard is not None and second.guard is not None
    key = ("member", "joe", "call", "com.elsewhere", "exact")
    first.guard.remember(key, Decision(True))
    assert first.guard.cached(key) == Decision(True)
    assert second.guard.cached(key) is None


def test_an_open_realm_has_no_guard() -> None:
    assert Router([RealmSettings("r")], ManualClock()).realms["r"].guard is None


def test_protecting_builds_a_new_policy_and_leaves_the_old_one_alone() -> None:
    policy = _policy()
    protected = policy.protecting(["com.example.authenticate"])
    assert "com.example.authenticate" in protected.protected
    assert "com.example.authenticate" not in policy.protected
    assert protected.decide("member", "register", "com.example.authenticate") == Decision(False)
    assert policy.decide("member", "register", "com.example.authenticate").consult


def test_every_meta_procedure_is_answered_by_the_router() -> None:
    realm = Router([RealmSettings("r")], ManualClock()).realms["r"]
    assert set(realm.dealer.internal) == meta.PROCEDURES
