"""Metric families built at scrape time from live state (prometheus_client custom collectors).

Each function takes the narrow view it reads (``broker.metrics.views``) and yields
families; ``BrokerMetrics`` registers them in its private ``CollectorRegistry``.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from protocol_spec.messages import MessageType

from .stats import CALL_LATENCY_BUCKETS, LabelCounts, TransportStats
from .views import CLUSTER_STATES, ClusterView, RouterView, TransportView

__all__ = [
    "broker_info",
    "call_duration",
    "cluster_families",
    "counter_family",
    "realm_families",
    "transport_families",
]

_TYPE_NAMES = {int(t): t.name.lower() for t in MessageType}


def _bound(value: float) -> str:
    """A bucket bound as the ``le`` label has always read: ``0.0005``, ``1``, ``+Inf``."""
    if value == float("inf"):
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


def broker_info(version: str, node_id: str) -> Iterator[Metric]:
    """``wamp_broker_info{version,node_id}``, always 1."""
    info = GaugeMetricFamily(
        "wamp_broker_info",
        "Build and node of this broker process.",
        labels=("version", "node_id"),
    )
    info.add_metric((version, node_id), 1)
    yield info


def realm_families(router: RouterView) -> Iterator[Metric]:
    """Sessions, subscriptions and registrations on this node, by realm."""
    realms = list(router.realms.values())
    sessions = GaugeMetricFamily(
        "wamp_sessions", "Joined sessions on this node, by realm.", labels=("realm",)
    )
    subscriptions = GaugeMetricFamily(
        "wamp_subscriptions", "Subscriptions on this node, by realm.", labels=("realm",)
    )
    registrations = GaugeMetricFamily(
        "wamp_registrations", "Registrations on this node, by realm.", labels=("realm",)
    )
    for realm in realms:
        sessions.add_metric((realm.name,), len(realm.sessions))
        subscriptions.add_metric((realm.name,), len(realm.broker.subscriptions()))
        registrations.add_metric((realm.name,), len(realm.dealer.registrations()))
    yield from (sessions, subscriptions, registrations)


def _by_type(name: str, help_text: str, counts: list[int]) -> Metric:
    family = CounterMetricFamily(name, help_text, labels=("type",))
    for code, count in enumerate(counts):
        if count:
            family.add_metric((_TYPE_NAMES.get(code, str(code)),), count)
    return family


def call_duration(stats: TransportStats) -> Metric:
    """``wamp_call_duration_seconds``: the histogram of CALL → final RESULT/ERROR."""
    buckets: list[tuple[str, float]] = []
    cumulative = 0
    for bound, count in zip((*CALL_LATENCY_BUCKETS, float("inf")), stats.call_buckets, strict=True):
        cumulative += count
        buckets.append((_bound(bound), cumulative))
    return HistogramMetricFamily(
        "wamp_call_duration_seconds",
        "Time from a CALL to its final RESULT or ERROR, as seen by the router.",
        buckets=buckets,
        sum_value=stats.call_sum,
    )


def transport_families(transport: TransportView) -> Iterator[Metric]:
    """Connections, messages by type, events, calls, call latency, errors, slow consumers."""
    stats = transport.stats
    yield GaugeMetricFamily(
        "wamp_connections", "Open WebSocket connections.", value=len(transport.connections)
    )
    yield _by_type(
        "wamp_messages_received",
        "WAMP messages received and decoded, by message type.",
        stats.messages_in,
    )
    yield _by_type(
        "wamp_messages_sent", "WAMP messages sent to peers, by message type.", stats.messages_out
    )
    yield CounterMetricFamily(
        "wamp_events_delivered",
        "EVENT messages sent to subscribers.",
        value=stats.messages_out[MessageType.EVENT],
    )
    yield CounterMetricFamily(
        "wamp_calls", "CALL messages received.", value=stats.messages_in[MessageType.CALL]
    )
    yield call_duration(stats)
    errors = CounterMetricFamily(
        "wamp_errors", "ERROR messages sent to peers, by error URI.", labels=("uri",)
    )
    for uri, count in sorted(stats.errors.items()):
        errors.add_metric((uri,), count)
    yield errors
    yield CounterMetricFamily(
        "wamp_slow_consumer_disconnects",
        "Sessions closed because too much output waited for them (slow consumers).",
        value=transport.slow_consumers,
    )


def cluster_families(cluster: ClusterView) -> Iterator[Metric]:
    """Link states, the Redis probe's RTT, the link state and dropped outbox commands."""
    report = cluster.metrics()
    links = GaugeMetricFamily(
        "wamp_cluster_link_up",
        "1 while a cluster link (e.g. Redis commands, Redis pub/sub) is up.",
        labels=("link",),
    )
    for link, up in sorted(report["links"].items()):
        links.add_metric((link,), 1 if up else 0)
    yield links
    rtt = report["redis_rtt"]
    if rtt is not None:
        yield GaugeMetricFamily(
            "wamp_redis_rtt_seconds", "Round-trip time of the last Redis probe.", value=rtt
        )
    state = GaugeMetricFamily(
        "wamp_cluster_state",
        "1 for the cluster link's current state, 0 for the others.",
        labels=("state",),
    )
    for name in CLUSTER_STATES:
        state.add_metric((name,), 1 if report["state"] == name else 0)
    yield state
    yield CounterMetricFamily(
        "wamp_cluster_outbox_dropped",
        "Commands for Redis dropped because the outbox was full or the link was lost.",
        value=report["outbox_dropped"],
    )
    yield GaugeMetricFamily(
        "wamp_cluster_peer_links",
        "Direct links to other nodes open now (call traffic that skips Redis).",
        value=report["peer_links"],
    )
    yield CounterMetricFamily(
        "wamp_cluster_peer_failures",
        "Direct links to or from other nodes that broke (the calls crossing them failed).",
        value=report["peer_failures"],
    )
    yield GaugeMetricFamily(
        "wamp_cluster_peer_fallbacks",
        "Nodes that advertise a direct link this node cannot use (the first dial failed, "
        "or TLS on one side only): their call traffic goes through Redis.",
        value=report["peer_fallbacks"],
    )


def counter_family(name: str, help_text: str, counts: LabelCounts) -> Metric:
    """A counter family (``<name>_total``) with one sample per label set in ``counts``."""
    family = CounterMetricFamily(name, help_text, labels=counts.label_names)
    for labels, count in sorted(counts.counts.items()):
        family.add_metric(labels, count)
    return family
