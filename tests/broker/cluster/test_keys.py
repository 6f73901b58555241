"""Channel names and envelopes of protocol_spec/cluster.md (no Redis needed)."""

from __future__ import annotations

import fnmatch

import msgpack
import pytest
from redis.crc import key_slot

from broker.cluster import keys
from broker.cluster.connect import parse_redis_url
from broker.cluster.history import history_meta_key, history_stream_key
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


@pytest.mark.parametrize(
    ("url", "seeds", "password"),
    [
        ("redis+cluster://h1:7000", (("h1", 7000),), None),
        ("redis+cluster://:s3cret@h1:7000,h2:7001/", (("h1", 7000), ("h2", 7001)), "s3cret"),
    ],
)
def test_cluster_urls_parse(url: str, seeds: tuple[tuple[str, int], ...], password: str) -> None:
    target = parse_redis_url(url)
    assert target.cluster and not target.sentinel
    assert tuple((e.host, e.port) for e in target.seeds) == seeds
    assert target.password == password and "cret" not in target.display


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+cluster://", "no seed node"),
        ("redis+cluster://h1", "host:port"),
        ("redis+cluster://h1:7000/0", "no database"),
    ],
)
def test_bad_cluster_urls_are_refused(url: str, why: str) -> None:
    with pytest.raises(ValueError, match=why):
        parse_redis_url(url)


def test_names_that_a_script_touches_together_share_one_slot() -> None:
    control = {
        key_slot(name.encode() if isinstance(name, str) else name)
        for name in (
            keys.CONTROL,
            keys.NODES,
            keys.SEQ,
            keys.node_key("n{1}"),
            *keys.node_hashes("n}x{"),
            keys.reg_key("r{", "exact", "a.}b"),
            keys.inbox("{other}"),
            keys.retained_key("r"),
        )
    }
    assert len(control) == 1
    for realm, topic in (("realm1", "a.b"), ("r{x}", "t.{y}.z"), ("r", "}")):
        slots = {
            key_slot(keys.event_channel(realm, topic)),
            key_slot(history_meta_key(realm, topic).encode()),
            key_slot(history_stream_key(realm, topic).encode()),
        }
        assert len(slots) == 1


def test_a_probe_tag_lands_in_the_slots_asked_for() -> None:
    for wanted in ({0}, set(range(5461, 10923)), {16383}):
        assert key_slot(keys.probe("n", keys.probe_tag(wanted))) in wanted
