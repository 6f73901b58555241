"""Channel names and envelopes of protocol_spec/cluster.md (no Redis needed)."""

from __future__ import annotations

import fnmatch

import msgpack
import pytest

from broker.cluster.keys import event_channel, watch_target
from protocol_spec.cluster import EventEnvelope, decode_event


@pytest.mark.parametrize(
    ("match", "topic", "published", "reaches"),
    [
        ("exact", "a.b", "a.b", True),
        ("prefix", "a.b", "a.b.c", True),
        ("prefix", "a.b", "a.x", False),
        ("wildcard", "a..c", "a.b.c", True),
        ("wildcard", "a..c", "x.b.c", False),
        ("wildcard", ".b.c", "z.b.c", True),
        ("prefix", "odd*[?]", "odd*[?].x", True),
        ("prefix", "odd*[?]", "oddX[?].x", False),
    ],
)
def test_watch_target_covers_every_topic_the_subscription_matches(
    match: str, topic: str, published: str, reaches: bool
) -> None:
    is_pattern, target = watch_target("realm1", match, topic)
    channel = event_channel("realm1", published).decode()
    if is_pattern:
        # Redis glob semantics for our escapes match fnmatch's with [] escaping
        pattern = target.decode().replace("\\*", "[*]").replace("\\?", "[?]")
        pattern = pattern.replace("\\[", "[[]").replace("\\]", "[]]")
        assert fnmatch.fnmatchcase(channel, pattern) is reaches
    else:
        assert (target.decode() == channel) is reaches


def test_envelopes_round_trip_binary_payloads() -> None:
    env = EventEnvelope("a", "r", "t", 2**53, {}, [b"\x00\xff", 1.5, None], {"x": True})
    assert decode_event(env.pack()) == env


def test_a_non_map_envelope_is_rejected() -> None:
    with pytest.raises(ValueError):
        decode_event(msgpack.packb([1, 2]))
    with pytest.raises(ValueError):
        decode_event(b"\xc1")
