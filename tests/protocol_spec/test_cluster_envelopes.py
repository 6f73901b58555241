"""The cluster wire (protocol_spec/cluster.py): round trips, and malformed input rejected."""

from __future__ import annotations

import dataclasses
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol_spec import cluster
from protocol_spec.cluster import (
    CONTROL_TYPES,
    INBOX_TYPES,
    CalleeAdded,
    CalleeRecord,
    ClusterProtocolError,
    EventEnvelope,
    InboxError,
    InboxResult,
    KillSessions,
    Probe,
    RetainedChanged,
    SessionJoined,
    SubscriptionChanged,
    SubscriptionRecord,
    decode_control,
    decode_event,
    decode_inbox,
)

FUZZ = settings(max_examples=100, deadline=None, database=None)

ids = st.integers(min_value=1, max_value=2**53)
names = st.text(max_size=12)
leaves = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=8)
payload = st.recursive(
    leaves | st.binary(max_size=8) | st.floats(allow_nan=False),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
maps = st.dictionaries(st.text(max_size=6), payload, max_size=4)
args = st.none() | st.lists(payload, max_size=3)
kwargs = st.none() | maps

events = st.builds(EventEnvelope, names, names, names, ids, maps, args, kwargs, st.none() | maps)
subscriptions = st.builds(
    SubscriptionRecord, names, ids, names, names, names, st.lists(ids, max_size=3).map(tuple)
)
callees = st.builds(
    CalleeRecord,
    node=names,
    realm=names,
    uri=names,
    match=names,
    invoke=names,
    session=ids,
    disclose=st.booleans(),
    authid=st.none() | names,
    authrole=st.none() | names,
    features=st.dictionaries(names, st.booleans(), min_size=1, max_size=3),
    reg=ids,
    seq=ids,
)
controls = st.one_of(
    st.builds(cluster.NodeHello, names),
    st.builds(cluster.NodeGone, names),
    st.builds(SessionJoined, names, names, st.builds(lambda s, m: {**m, "session": s}, ids, maps)),
    st.builds(cluster.SessionLeft, names, names, ids, st.none() | names, st.none() | names),
    st.builds(SubscriptionChanged, names, names, subscriptions),
    st.builds(CalleeAdded, names, callees),
    st.builds(cluster.CalleeRemoved, names, names, ids, ids),
    st.builds(RetainedChanged, names, names, names, events),
    st.builds(
        KillSessions,
        names,
        names,
        st.sampled_from(sorted(cluster.KILL_SELECTORS)),
        leaves,
        st.none() | ids,
        st.none() | names,
        st.none() | names,
    ),
)
inboxes = st.one_of(
    st.builds(cluster.InboxInvocation, names, names, ids, ids, ids, maps, args, kwargs),
    st.builds(cluster.InboxInterrupt, names, names, ids, ids, maps),
    st.builds(InboxResult, names, names, ids, ids, maps, args, kwargs),
    st.builds(InboxError, names, names, ids, ids, maps, names, args, kwargs),
)


@FUZZ
@given(events)
def test_event_envelopes_round_trip(env: EventEnvelope) -> None:
    assert decode_event(env.pack()) == env


@FUZZ
@given(controls)
def test_control_envelopes_round_trip(msg: cluster.ControlMessage) -> None:
    assert decode_control(msg.pack()) == msg


@FUZZ
@given(inboxes)
def test_inbox_envelopes_round_trip(msg: cluster.InboxMessage) -> None:
    assert decode_inbox(msg.pack()) == msg


_PACKERS = {
    cluster.InboxInvocation: cluster.pack_invocation,
    cluster.InboxInterrupt: cluster.pack_interrupt,
    InboxResult: cluster.pack_result,
    InboxError: cluster.pack_error,
}


@FUZZ
@given(inboxes)
def test_inbox_packers_give_the_bytes_of_the_envelope(msg: cluster.InboxMessage) -> None:
    values = [getattr(msg, f.name) for f in dataclasses.fields(msg)]
    assert _PACKERS[type(msg)](*values) == msg.pack()


@FUZZ
@given(events, st.none() | ids, st.none() | names)
def test_the_event_packer_gives_the_bytes_of_the_envelope(
    env: EventEnvelope, offset: int | None, epoch: str | None
) -> None:
    env = dataclasses.replace(env, offset=offset, epoch=epoch)
    values = [getattr(env, f.name) for f in dataclasses.fields(env)]
    assert cluster.pack_event(*values) == env.pack()


@FUZZ
@given(st.one_of(subscriptions, callees))
def test_records_round_trip(record: cluster.Record) -> None:
    assert type(record).unpack(record.pack()) == record


def test_every_envelope_carries_the_version_and_its_op() -> None:
    raw = msgpack.unpackb(InboxResult("a", "r", 1, 2, {}, None, None).pack())
    assert raw["v"] == cluster.VERSION and raw["op"] == "res"
    assert "op" not in msgpack.unpackb(EventEnvelope("a", "r", "t", 1, {}).pack())


def test_the_tables_map_each_op_to_its_class() -> None:
    for table in (CONTROL_TYPES, INBOX_TYPES):
        assert all(cls.OP == op for op, cls in table.items())
    assert not set(CONTROL_TYPES) & set(INBOX_TYPES)


def _decode_any(data: bytes) -> None:
    """Each decoder returns its kind or raises ClusterProtocolError, nothing else."""
    for decode, kinds in (
        (decode_event, (EventEnvelope,)),
        (decode_control, tuple(CONTROL_TYPES.values())),
        (decode_inbox, tuple(INBOX_TYPES.values())),
    ):
        try:
            assert isinstance(decode(data), kinds)
        except ClusterProtocolError:
            pass
    for record in (SubscriptionRecord, CalleeRecord, cluster.SessionRecord):
        try:
            record.unpack(data)
        except ClusterProtocolError:
            pass


@FUZZ
@given(st.binary(max_size=256))
def test_arbitrary_bytes_are_rejected_with_a_reason(data: bytes) -> None:
    _decode_any(data)


@FUZZ
@given(st.one_of(controls, inboxes, events), st.data())
def test_a_valid_envelope_with_one_field_broken_is_rejected_or_still_typed(
    msg: cluster.Envelope, data: st.DataObject
) -> None:
    env = msg.to_map()
    key = data.draw(st.sampled_from(sorted(env)))
    env[key] = data.draw(payload)
    packed = msgpack.packb(env, use_bin_type=True)
    _decode_any(packed)
    _same_as_one_by_one(packed)


def _same_as_one_by_one(data: bytes) -> None:
    """The batch decoder's fast path agrees with ``decode_inbox``, error texts included."""
    try:
        expected: Any = decode_inbox(data)
    except ClusterProtocolError as exc:
        expected = str(exc)
    (found,) = cluster.decode_inboxes(data)
    assert (str(found) if isinstance(found, ClusterProtocolError) else found) == expected


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ([1, 2], "must be a map"),
        ({"op": "res", "n": "a"}, "version"),
        ({"v": 99, "op": "res"}, "version"),
        ({"v": 1, "op": "nope", "n": "a"}, "unknown inbox envelope op 'nope'"),
        ({"v": 1, "op": "res", "n": "a", "r": "x", "s": 1, "d": {}}, "InboxResult without 'i'"),
        ({"v": 1, "op": "res", "n": "a", "r": "x", "s": True, "i": 1, "d": {}}, "InboxResult.s"),
        ({"v": 1, "op": "err", "n": "a", "r": "x", "s": 1, "i": 1, "d": [], "e": "u"}, "map"),
    ],
)
def test_malformed_inbox_envelopes_name_their_fault(env: Any, reason: str) -> None:
    with pytest.raises(ClusterProtocolError, match=reason):
        decode_inbox(msgpack.packb(env))
    if type(env) is dict:  # in a batch: the same fault, the next envelope still decodes
        good = cluster.InboxResult("a", "x", 1, 2, {}, None, None)
        bad, ok = cluster.decode_inboxes(msgpack.packb(env) + good.pack())
        assert isinstance(bad, ClusterProtocolError) and reason in str(bad)
        assert ok == good


def test_a_kill_with_an_unknown_selector_is_rejected() -> None:
    env = KillSessions("a", "r", "all", None, None, None, None).to_map()
    env["sel"] = "everyone"
    with pytest.raises(ClusterProtocolError, match="sel"):
        decode_control(msgpack.packb(env))


def test_a_join_without_a_session_id_is_rejected() -> None:
    env = SessionJoined("a", "r", {"session": 5}).to_map()
    env["info"] = {"authid": "x"}
    with pytest.raises(ClusterProtocolError, match="info"):
        decode_control(msgpack.packb(env))


def test_an_empty_features_array_from_redis_lua_reads_as_no_features() -> None:
    # Redis's cmsgpack packs an empty Lua table as an empty array
    env = CalleeAdded("a", CalleeRecord("a", "r", "p", "exact", "single", 7)).to_map()
    env["e"]["features"] = []
    assert decode_control(msgpack.packb(env)) == dataclasses.replace(
        CalleeAdded("a", CalleeRecord("a", "r", "p", "exact", "single", 7)),
        entry=CalleeRecord("a", "r", "p", "exact", "single", 7, features={}),
    )


def test_probes_are_eight_raw_bytes() -> None:
    probe = Probe(b"12345678")
    assert Probe.unpack(probe.pack()) == probe
    with pytest.raises(ClusterProtocolError):
        Probe.unpack(b"short")
