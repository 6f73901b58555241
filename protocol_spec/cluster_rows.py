"""Inbox envelopes as rows: the compact form a direct link between nodes carries.

On Redis an inbox envelope is a map naming its fields (``v``, ``op``, ``n``, …). On a
direct link (broker/cluster/peers.py) a data frame is one msgpack array of *rows*, each
an envelope's fields in declaration order behind a numeric op code, without the sending
node (the link's hello named it) and without the version (the hello carried it)::

    [1, r, s, i, reg, d, a, k]      InboxInvocation
    [2, r, s, i, o]                 InboxInterrupt
    [3, r, s, i, d, a, k]           InboxResult
    [4, r, s, i, d, e, a, k]        InboxError

Rows decode into the same classes as maps, with the same field checks
(protocol_spec/cluster.md, "Direct links").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

from .cluster import InboxError, InboxInterrupt, InboxInvocation, InboxMessage, InboxResult
from .cluster_codec import ClusterProtocolError, row_decoder, row_packer, unpack

__all__ = [
    "ROW_TYPES",
    "array_header",
    "decode_rows",
    "row_error",
    "row_interrupt",
    "row_invocation",
    "row_result",
]

ROW_TYPES: Final[dict[int, type[InboxMessage]]] = {
    1: InboxInvocation,
    2: InboxInterrupt,
    3: InboxResult,
    4: InboxError,
}
"""Op code → envelope class of a row."""

row_invocation: Final = row_packer(InboxInvocation, 1)
"""The row of ``InboxInvocation(node, *fields)``, given the fields after ``node``."""
row_interrupt: Final = row_packer(InboxInterrupt, 2)
row_result: Final = row_packer(InboxResult, 3)
row_error: Final = row_packer(InboxError, 4)

_DECODERS: Final[dict[int, Callable[[str, list[Any]], InboxMessage]]] = {
    code: row_decoder(cls) for code, cls in ROW_TYPES.items()
}


def array_header(count: int) -> bytes:
    """The msgpack array header of ``count`` items: packed items may follow it as they are."""
    if count < 16:
        return bytes((0x90 | count,))
    if count < 0x10000:
        return b"\xdc" + count.to_bytes(2, "big")
    return b"\xdd" + count.to_bytes(4, "big")


def decode_rows(node: str, data: bytes) -> list[InboxMessage | ClusterProtocolError]:
    """The envelopes of one data frame from ``node``: each row on its own (a malformed
    one is its ``ClusterProtocolError``); raise it when the bytes are not one array.
    """
    rows = unpack(data, "frame")
    if type(rows) is not list:
        raise ClusterProtocolError("a data frame must be an array of rows")
    found: list[InboxMessage | ClusterProtocolError] = []
    for row in rows:
        try:
            found.append(_DECODERS[row[0]](node, row))
        except (KeyError, IndexError, TypeError, ClusterProtocolError):
            code = row[0] if type(row) is list and row else None
            found.append(ClusterProtocolError(f"malformed row (op code {code!r})"))
    return found
