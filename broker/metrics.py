"""Prometheus metrics: counters kept by the transport, gauges read at scrape time.

``GET /metrics`` answers the text exposition format 0.0.4 (what
``prometheus_client.parser`` reads). Nothing here runs per message except the
integer increments the transport does on ``TransportStats``; everything else
(sessions per realm, subscriptions, registrations, cluster state) is read from
the router and the cluster backend when Prometheus scrapes.

Exposed families::

    wamp_broker_info{version,node_id}          gauge, always 1
    wamp_sessions{realm}                       gauge: joined sessions on this node
    wamp_subscriptions{realm}                  gauge
    wamp_registrations{realm}                  gauge
    wamp_connections                           gauge: open WebSocket connections
    wamp_messages_received_total{type}         counter: decoded messages, by WAMP type
    wamp_messages_sent_total{type}             counter: messages sent to peers, by type
    wamp_events_delivered_total                counter: EVENT messages sent to subscribers
    wamp_calls_total                           counter: CALL messages received
    wamp_call_duration_seconds                 histogram: CALL → final RESULT/ERROR
    wamp_errors_total{uri}                     counter: ERROR messages sent, by error URI
    wamp_slow_consumer_disconnects_total       counter
    wamp_auth_failures_total{realm,authmethod} counter: authentication checks that failed
    wamp_auth_throttled_total{realm,authmethod} counter: attempts refused unchecked (throttled)
    wamp_auth_overloaded_total{realm,authmethod} counter: attempts refused, auth work queue full
    wamp_cluster_link_up{link}                 gauge, only with a cluster backend that reports it
    wamp_redis_rtt_seconds                     gauge, only with a cluster backend that reports it
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from protocol_spec.messages import MessageType

if TYPE_CHECKING:
    from broker.server import BrokerServer

__all__ = [
    "CALL_LATENCY_BUCKETS",
    "CONTENT_TYPE",
    "MAX_ERROR_URIS",
    "TransportStats",
    "render",
]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

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

OTHER_ERROR_URI = "other"

_TYPE_SLOTS = 256
_TYPE_NAMES = {int(t): t.name.lower() for t in MessageType}


class TransportStats:
    """Counters the WebSocket transport increments; read by ``render``.

    ``messages_in`` / ``messages_out`` are lists indexed by WAMP message type so
    the hot path costs one list increment. Calls are timed per peer: the transport
    stores the CALL's arrival in the peer's dict (``start_call``) and hands every
    RESULT/ERROR it sends to ``replied``.
    """

    __slots__ = ("call_buckets", "call_count", "call_sum", "errors", "messages_in", "messages_out")

    def __init__(self) -> None:
        self.messages_in = [0] * _TYPE_SLOTS
        self.messages_out = [0] * _TYPE_SLOTS
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


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Mapping[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{key}="{_escape(str(value))}"' for key, value in labels.items())
    return "{" + inner + "}"


def _number(value: float) -> str:
    if value == float("inf"):
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def _family(
    name: str, kind: str, help_text: str, samples: Iterable[tuple[Mapping[str, str], float]]
) -> Iterator[str]:
    # Text format 0.0.4 names a counter's family with its ``_total`` suffix, as
    # prometheus_client itself writes it (its parser then strips the suffix).
    if kind == "counter" and not name.endswith("_total"):
        name += "_total"
    yield f"# HELP {name} {help_text}"
    yield f"# TYPE {name} {kind}"
    for labels, value in samples:
        yield f"{name}{_labels(labels)} {_number(value)}"


def _by_type(counts: list[int]) -> list[tuple[Mapping[str, str], float]]:
    return [
        ({"type": _TYPE_NAMES.get(code, str(code))}, count)
        for code, count in enumerate(counts)
        if count
    ]


def _histogram(stats: TransportStats) -> Iterator[str]:
    name = "wamp_call_duration_seconds"
    yield f"# HELP {name} Time from a CALL to its final RESULT or ERROR, as seen by the router."
    yield f"# TYPE {name} histogram"
    cumulative = 0
    for bound, count in zip((*CALL_LATENCY_BUCKETS, float("inf")), stats.call_buckets, strict=True):
        cumulative += count
        yield f'{name}_bucket{{le="{_number(bound)}"}} {cumulative}'
    yield f"{name}_sum {_number(stats.call_sum)}"
    yield f"{name}_count {stats.call_count}"


def _cluster_state(server: BrokerServer) -> tuple[dict[str, bool], float | None]:
    """Link states and Redis RTT from the cluster backend, if it reports them.

    The backend is ``server.backend`` (or ``server.cluster``). It may offer
    ``metrics()`` returning ``{"links": {name: bool}, "redis_rtt": seconds | None}``;
    otherwise its ``available`` flag is reported as the link ``redis`` and a
    ``redis_rtt`` attribute (seconds, e.g. the pub/sub probe's round trip) as the RTT.
    A backend with neither (the embedded one) reports nothing.
    """
    backend = getattr(server, "backend", None) or getattr(server, "cluster", None)
    if backend is None or not getattr(backend, "distributed", True):
        return {}, None
    report = getattr(backend, "metrics", None)
    data = report() if callable(report) else {}
    if not isinstance(data, Mapping):
        data = {}
    links = data.get("links")
    if not isinstance(links, Mapping):
        available = getattr(backend, "available", None)
        links = {"redis": available} if isinstance(available, bool) else {}
    rtt = data.get("redis_rtt", getattr(backend, "redis_rtt", None))
    return (
        {str(k): bool(v) for k, v in links.items()},
        float(rtt) if isinstance(rtt, int | float) and not isinstance(rtt, bool) else None,
    )


def _auth_families(server: BrokerServer) -> Iterator[str]:
    guard = server.router.guard
    for name, counts, help_text in (
        ("wamp_auth_failures", guard.failures, "Authentication checks that failed."),
        ("wamp_auth_throttled", guard.throttled, "Authentication attempts refused unchecked."),
        ("wamp_auth_overloaded", guard.overloaded, "Authentication attempts refused: busy."),
    ):
        samples = [
            ({"realm": realm, "authmethod": method}, n)
            for (realm, method), n in sorted(counts.items())
        ]
        yield from _family(name, "counter", help_text, samples)


def render(server: BrokerServer) -> str:
    """The whole exposition for one broker process."""
    from broker import __version__

    transport = server.transport
    stats = transport.stats
    realms = list(server.router.realms.values())
    lines: list[str] = []
    add = lines.extend
    node = server.settings.node_id or ""
    add(
        _family(
            "wamp_broker_info",
            "gauge",
            "Build and node of this broker process.",
            [({"version": __version__, "node_id": node}, 1)],
        )
    )
    add(
        _family(
            "wamp_sessions",
            "gauge",
            "Joined sessions on this node, by realm.",
            [({"realm": r.name}, len(r.sessions)) for r in realms],
        )
    )
    add(
        _family(
            "wamp_subscriptions",
            "gauge",
            "Subscriptions on this node, by realm.",
            [({"realm": r.name}, len(r.broker.subscriptions())) for r in realms],
        )
    )
    add(
        _family(
            "wamp_registrations",
            "gauge",
            "Registrations on this node, by realm.",
            [({"realm": r.name}, len(r.dealer.registrations())) for r in realms],
        )
    )
    add(
        _family(
            "wamp_connections",
            "gauge",
            "Open WebSocket connections.",
            [({}, len(transport.connections))],
        )
    )
    add(
        _family(
            "wamp_messages_received",
            "counter",
            "WAMP messages received and decoded, by message type.",
            _by_type(stats.messages_in),
        )
    )
    add(
        _family(
            "wamp_messages_sent",
            "counter",
            "WAMP messages sent to peers, by message type.",
            _by_type(stats.messages_out),
        )
    )
    add(
        _family(
            "wamp_events_delivered",
            "counter",
            "EVENT messages sent to subscribers.",
            [({}, stats.messages_out[MessageType.EVENT])],
        )
    )
    add(
        _family(
            "wamp_calls",
            "counter",
            "CALL messages received.",
            [({}, stats.messages_in[MessageType.CALL])],
        )
    )
    add(_histogram(stats))
    add(
        _family(
            "wamp_errors",
            "counter",
            "ERROR messages sent to peers, by error URI.",
            [({"uri": uri}, n) for uri, n in sorted(stats.errors.items())],
        )
    )
    add(
        _family(
            "wamp_slow_consumer_disconnects",
            "counter",
            "Sessions closed because too much output waited for them (slow consumers).",
            [({}, transport.slow_consumers)],
        )
    )
    add(_auth_families(server))
    links, rtt = _cluster_state(server)
    if links:
        add(
            _family(
                "wamp_cluster_link_up",
                "gauge",
                "1 while a cluster link (e.g. Redis commands, Redis pub/sub) is up.",
                [({"link": k}, 1 if up else 0) for k, up in sorted(links.items())],
            )
        )
    if rtt is not None:
        add(
            _family(
                "wamp_redis_rtt_seconds",
                "gauge",
                "Round-trip time of the last Redis probe.",
                [({}, rtt)],
            )
        )
    return "\n".join(lines) + "\n"
