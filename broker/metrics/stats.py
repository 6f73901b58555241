"""Plain integer counters incremented in place; the collectors read them at scrape time.

Nothing here takes a lock or builds an object per message: the WebSocket transport
does one list increment per message on ``TransportStats``, and other components
count into a ``LabelCounts`` with one dict increment. prometheus_client only sees
these numbers when Prometheus scrapes (``broker.metrics.collectors``).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

from protocol_spec.messages import MessageType

__all__ = [
    "CALL_LATENCY_BUCKETS",
    "MAX_ERROR_URIS",
    "MAX_LABEL_SETS",
    "OTHER",
    "OTHER_ERROR_URI",
    "TYPE_SLOTS",
    "LabelCounts",
    "TransportStats",
]

CALL_LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
"""Upper bounds (seconds) of the call-latency histogram; +Inf is implicit."""

MAX_ERROR_URIS = 200
"""Distinct error URIs counted one by one; further ones go to ``OTHER_ERROR_URI``.

Application error URIs are chosen by clients: the cap keeps label cardinality bounded.
"""

OTHER = "other"
OTHER_ERROR_URI = OTHER

MAX_LABEL_SETS = 200
"""Distinct label sets a ``LabelCounts`` keeps; further ones are counted under ``other``."""

TYPE_SLOTS = 256


class TransportStats:
    """Counters the WebSocket transport increments; read by the transport collector.

    ``messages_in`` / ``messages_out`` are lists indexed by WAMP message type so
    the hot path costs one list increment. Calls are timed per peer: the transport
    stores the CALL's arrival in the peer's dict (``start_call``) and hands every
    RESULT/ERROR it sends to ``replied``.
    """

    __slots__ = ("call_buckets", "call_count", "call_sum", "errors", "messages_in", "messages_out")

    def __init__(self) -> None:
        self.messages_in = [0] * TYPE_SLOTS
        self.messages_out = [0] * TYPE_SLOTS
        self.errors: dict[str, int] = {}
        self.call_buckets = [0] * (len(CALL_LATENCY_BUCKETS) + 1)
        self.call_sum = 0.0
        self.call_count = 0

    @staticmethod
    def start_call(started: dict[int, float], request: int) -> None:
        """Remember when CALL ``request`` arrived on one peer."""
        started[request] = time.monotonic()

    def replied(self, started: dict[int, float], message: Any) -> None:
        """Account a RESULT or ERROR sent to a peer (``started`` is that peer's CALL times)."""
        if message.TYPE == MessageType.ERROR:
            self.count_error(message.error)
            if message.request_type != MessageType.CALL:
                return
        elif message.details.get("progress"):
            return  # a progressive result: the call goes on
        began = started.pop(message.request, None)
        if began is not None:
            self.observe_call(time.monotonic() - began)

    def observe_call(self, seconds: float) -> None:
        """Add one call duration to the histogram."""
        self.call_buckets[bisect_left(CALL_LATENCY_BUCKETS, seconds)] += 1
        self.call_sum += seconds
        self.call_count += 1

    def count_error(self, uri: str) -> None:
        """Count one ERROR by URI (bounded by ``MAX_ERROR_URIS``)."""
        errors = self.errors
        if uri in errors:
            errors[uri] += 1
        elif len(errors) < MAX_ERROR_URIS:
            errors[uri] = 1
        else:
            errors[OTHER_ERROR_URI] = errors.get(OTHER_ERROR_URI, 0) + 1


class LabelCounts:
    """One counter family's values: an int per tuple of label values.

    ``inc`` costs one dict update, no lock (the broker runs on one event loop).
    At most ``limit`` distinct label sets are kept; further ones are counted under
    a label set of ``other`` values, so client-chosen strings cannot grow it unbounded.
    """

    __slots__ = ("counts", "label_names", "limit")

    def __init__(self, label_names: tuple[str, ...], limit: int = MAX_LABEL_SETS) -> None:
        self.label_names = label_names
        self.limit = limit
        self.counts: dict[tuple[str, ...], int] = {}

    def inc(self, *labels: str, amount: int = 1) -> None:
        """Add ``amount`` to the counter of ``labels`` (one value per label name)."""
        if len(labels) != len(self.label_names):
            raise ValueError(f"expected labels {self.label_names}, got {labels!r}")
        counts = self.counts
        if labels not in counts and len(counts) >= self.limit:
            labels = (OTHER,) * len(labels)
        counts[labels] = counts.get(labels, 0) + amount
