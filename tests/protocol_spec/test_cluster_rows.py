"""Inbox envelopes as rows (protocol_spec/cluster_rows.py): a direct link's compact form."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol_spec import cluster
from protocol_spec.cluster_rows import (
    ROW_TYPES,
    array_header,
    decode_rows,
    row_error,
    row_interrupt,
    row_invocation,
    row_result,
)

from .test_cluster_envelopes import FUZZ, inboxes

ROWS = {
    cluster.InboxInvocation: row_invocation,
    cluster.InboxInterrupt: row_interrupt,
    cluster.InboxResult: row_result,
    cluster.InboxError: row_error,
}


def _row(msg: cluster.InboxMessage) -> bytes:
    values = [getattr(msg, f.name) for f in dataclasses.fields(msg)][1:]  # no node
    return ROWS[type(msg)](*values)


def _frame(*rows: bytes) -> bytes:
    return array_header(len(rows)) + b"".join(rows)


@FUZZ
@given(st.lists(inboxes, min_size=1, max_size=20))
def test_rows_of_a_frame_decode_to_the_same_envelopes_with_the_links_node(
    msgs: list[cluster.InboxMessage],
) -> None:
    found = decode_rows("the-link-node", _frame(*(_row(m) for m in msgs)))
    assert found == [dataclasses.replace(m, node="the-link-node") for m in msgs]


@pytest.mark.parametrize("count", [0, 1, 15, 16, 65535, 65536])
def test_the_array_header_is_msgpacks_own(count: int) -> None:
    assert array_header(count) == msgpack.packb([None] * count)[: len(array_header(count))]
    assert msgpack.unpackb(array_header(count) + b"\xc0" * count) == [None] * count


def test_each_op_code_is_its_class_and_a_row_is_shorter_than_the_map() -> None:
    assert {code: cls.__name__ for code, cls in ROW_TYPES.items()} == {
        1: "InboxInvocation",
        2: "InboxInterrupt",
        3: "InboxResult",
        4: "InboxError",
    }
    msg = cluster.InboxResult("node-a", "realm1", 4242, 7, {}, [1, 2], None)
    assert len(_row(msg)) < len(msg.pack()) / 2


def test_a_malformed_row_is_reported_and_the_others_still_decode() -> None:
    good = row_result("realm1", 1, 2, {}, ["ok"], None)
    bad = [
        msgpack.packb([9, "realm1", 1, 2]),  # unknown op code
        msgpack.packb([3, "realm1", 1]),  # too short
        msgpack.packb([3, "realm1", "one", 2, {}, None, None]),  # session not an integer
        msgpack.packb([3, "realm1", 1, 2, {}, None, None, "extra"]),  # too long
        msgpack.packb({"op": "res"}),  # a map, not a row
        msgpack.packb([]),  # empty
        msgpack.packb(7),  # not a list
    ]
    found = decode_rows("n", _frame(good, *bad, good))
    assert found[0] == found[-1] == cluster.InboxResult("n", "realm1", 1, 2, {}, ["ok"], None)
    errors = found[1:-1]
    assert len(errors) == len(bad)
    assert all(isinstance(e, cluster.ClusterProtocolError) for e in errors)
    assert "op code 9" in str(errors[0])


@pytest.mark.parametrize("data", [b"", b"\xc1", msgpack.packb({"a": 1}), b"\x92\x01"])
def test_a_frame_that_is_not_one_array_is_refused(data: bytes) -> None:
    with pytest.raises(cluster.ClusterProtocolError):
        decode_rows("n", data)
