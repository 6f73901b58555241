"""Options encoding, result objects, errors and the backoff schedule (no router needed)."""

from __future__ import annotations

import pickle
import random

import pytest

from client_sdk import ApplicationError, Backoff, CallOptions, CallResult, Event, PublishOptions
from client_sdk.auth import AnonymousAuth, CryptosignAuth, TicketAuth
from client_sdk.session import ROLES, hello_details


def test_default_publish_options_send_nothing() -> None:
    assert PublishOptions().to_dict() == {}


def test_publish_options_send_only_what_was_set() -> None:
    options = PublishOptions(
        acknowledge=True,
        exclude_me=False,
        exclude=[1, 2],
        eligible=(3,),
        exclude_authid=["bob"],
        eligible_authrole=["admin"],
        retain=True,
        disclose_me=True,
    )
    assert options.to_dict() == {
        "acknowledge": True,
        "exclude_me": False,
        "exclude": [1, 2],
        "eligible": [3],
        "exclude_authid": ["bob"],
        "eligible_authrole": ["admin"],
        "retain": True,
        "disclose_me": True,
    }


def test_call_timeout_goes_on_the_wire_in_whole_milliseconds_rounded_up() -> None:
    assert CallOptions(timeout=5).to_dict() == {"timeout": 5000}
    assert CallOptions(timeout=0.0001).to_dict() == {"timeout": 1}
    assert CallOptions(timeout=1.2345).to_dict() == {"timeout": 1235}
    with pytest.raises(ValueError):
        CallOptions(timeout=0).to_dict()


def test_on_progress_implies_receive_progress_and_stays_local() -> None:
    wire = CallOptions(on_progress=lambda r: None, disclose_me=True, cancel_mode="skip").to_dict()
    assert wire == {"receive_progress": True, "disclose_me": True}


def test_event_exposes_publisher_details() -> None:
    event = Event(
        "t",
        [1],
        {},
        10,
        20,
        {"publisher": 7, "publisher_authid": "a", "publisher_authrole": "r", "retained": True},
    )
    assert (event.publisher, event.publisher_authid, event.publisher_authrole, event.retained) == (
        7,
        "a",
        "r",
        True,
    )
    assert Event("t", [], {}, 1, 2).publisher is None


def test_call_result_value_is_the_first_argument() -> None:
    assert CallResult([5, 6]).value == 5
    assert CallResult().value is None


def test_application_error_keeps_uri_args_and_kwargs() -> None:
    error = ApplicationError("com.example.oops", "bad thing", 42, code=7)
    assert error.uri == "com.example.oops"
    assert error.args == ("bad thing", 42)
    assert error.kwargs == {"code": 7}
    assert str(error) == "com.example.oops: bad thing"
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.uri, copy.args, copy.kwargs) == (error.uri, error.args, error.kwargs)


def test_hello_announces_the_four_client_roles_with_boolean_features() -> None:
    details = hello_details([AnonymousAuth()])
    assert set(details["roles"]) == {"caller", "callee", "publisher", "subscriber"}
    for role in ROLES.values():
        assert all(value is True for value in role["features"].values())
    assert "authmethods" not in details


def test_hello_offers_every_authenticator_with_one_authid() -> None:
    seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
    details = hello_details(
        [CryptosignAuth("alice", seed, authrole="user"), TicketAuth("alice", "t")]
    )
    assert details["authmethods"] == ["cryptosign", "ticket"]
    assert details["authid"] == "alice"
    assert details["authrole"] == "user"
    assert (
        details["authextra"]["pubkey"]
        == "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    )


def test_backoff_without_jitter_doubles_up_to_the_maximum() -> None:
    backoff = Backoff(initial=0.5, maximum=4, multiplier=2, jitter=0)
    delays = backoff.delays()
    assert [next(delays) for _ in range(7)] == [0.5, 1, 2, 4, 4, 4, 4]
    assert backoff.base(10_000) == 4


def test_backoff_jitter_stays_within_the_documented_band() -> None:
    backoff = Backoff(initial=1, maximum=8, jitter=0.5)
    rng = random.Random(1234)
    for attempt in range(10):
        base = backoff.base(attempt)
        for _ in range(50):
            assert base * 0.5 <= backoff.delay(attempt, rng) <= base
    samples = {round(backoff.delay(3, rng), 6) for _ in range(20)}
    assert len(samples) > 1  # really random


@pytest.mark.parametrize(
    "kwargs", [{"jitter": 2}, {"initial": 5, "maximum": 1}, {"multiplier": 0.5}]
)
def test_backoff_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        Backoff(**kwargs)
