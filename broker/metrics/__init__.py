"""Prometheus metrics: counters kept by the transport, gauges read at scrape time.

``GET /metrics`` answers the text exposition format 0.0.4, written by
prometheus_client from a ``CollectorRegistry`` private to each server
(``BrokerMetrics``; the global ``REGISTRY`` is never used). Nothing here runs per
message except plain integer increments (``TransportStats``, ``LabelCounts``);
everything else (sessions per realm, subscriptions, registrations, cluster state)
is read from the router, the transport and the cluster backend by custom
collectors when Prometheus scrapes. The package imports neither the server nor
the transport: it reads them through the narrow protocols in ``views``.

Modules::

    stats       TransportStats, LabelCounts: the int counters, incremented in place
    views       RouterView, TransportView, ClusterView (+ the ClusterMetrics contract)
    collectors  the families, built from those views at scrape time
    registry    BrokerMetrics: the registry, its HTTP answer, the contribution API

Other components contribute to a server's registry through ``server.metrics``
(a ``BrokerMetrics``)::

    failures = server.metrics.counter("wamp_x", "help", ("realm",))  # -> LabelCounts
    failures.inc("realm1")                     # one dict increment, no lock
    server.metrics.register_collector(fn)      # fn() -> Iterable[Metric], per scrape

``server.metrics.auth_failures`` is such a counter, labels ``(realm, authmethod)``.

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
    wamp_cluster_link_up{link}                 gauge, only with a cluster backend (redis, pubsub)
    wamp_redis_rtt_seconds                     gauge, only with a cluster backend, while known
    wamp_cluster_state{state}                  gauge, only with a cluster backend: 1 for the
                                               current state, 0 for the others
    wamp_cluster_outbox_dropped_total          counter, only with a cluster backend
    wamp_cluster_peer_links                    gauge, only with a cluster backend: direct links open
    wamp_cluster_peer_failures_total           counter, only with a cluster backend: links broken
    wamp_cluster_peer_fallbacks                gauge, only with a cluster backend: nodes whose
                                               advertised link is unusable (through Redis)
    wamp_auth_failures_total{realm,authmethod} counter: authentication checks that failed
    wamp_auth_throttled_total{realm,authmethod} counter: attempts refused unchecked (throttled)
    wamp_auth_overloaded_total{realm,authmethod} counter: attempts refused, auth work queue full
"""

from __future__ import annotations

from .registry import AUTH_FAILURES, CONTENT_TYPE, BrokerMetrics, Collect
from .stats import (
    CALL_LATENCY_BUCKETS,
    MAX_ERROR_URIS,
    MAX_LABEL_SETS,
    LabelCounts,
    TransportStats,
)
from .views import (
    CLUSTER_STATES,
    ClusterMetrics,
    ClusterState,
    ClusterView,
    RouterView,
    TransportView,
)

__all__ = [
    "AUTH_FAILURES",
    "CALL_LATENCY_BUCKETS",
    "CLUSTER_STATES",
    "CONTENT_TYPE",
    "MAX_ERROR_URIS",
    "MAX_LABEL_SETS",
    "BrokerMetrics",
    "ClusterMetrics",
    "ClusterState",
    "ClusterView",
    "Collect",
    "LabelCounts",
    "RouterView",
    "TransportStats",
    "TransportView",
]
