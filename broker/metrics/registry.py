"""``BrokerMetrics``: one server's private prometheus_client registry and its collectors."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric

from . import collectors
from .stats import LabelCounts
from .views import ClusterView, RouterView, TransportView

__all__ = ["AUTH_FAILURES", "CONTENT_TYPE", "BrokerMetrics", "Collect"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The exposition format ``generate_latest`` writes (and ``prometheus_client.parser`` reads)."""

AUTH_FAILURES = "wamp_auth_failures"

Collect = Callable[[], Iterable[Metric]]
"""Builds metric families from live state; called once per scrape."""


class _Collector:
    """Adapts a ``Collect`` callable to prometheus_client's ``Collector`` protocol."""

    __slots__ = ("_collect",)

    def __init__(self, collect: Collect) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class BrokerMetrics:
    """The ``/metrics`` of one broker process, in a registry of its own.

    Families are registered in exposition order. The router and transport are read
    through ``broker.metrics.views`` at scrape time; ``cluster`` is the distributed
    backend (``None`` without one: no cluster families). ``auth_failures`` counts
    ``wamp_auth_failures_total{realm,authmethod}``: ``auth_failures.inc(realm, method)``.
    """

    def __init__(
        self,
        version: str,
        node_id: str,
        router: RouterView,
        transport: TransportView,
        cluster: ClusterView | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._counters: set[str] = set()
        self.register_collector(lambda: collectors.broker_info(version, node_id))
        self.register_collector(lambda: collectors.realm_families(router))
        self.register_collector(lambda: collectors.transport_families(transport))
        if cluster is not None:
            self.register_collector(lambda: collectors.cluster_families(cluster))
        self.auth_failures = self.counter(
            AUTH_FAILURES,
            "Authentications refused, by realm and authentication method.",
            ("realm", "authmethod"),
        )

    def register_collector(self, collect: Collect) -> None:
        """Add families built by ``collect`` at every scrape (after those registered before)."""
        self.registry.register(_Collector(collect))

    def counter(self, name: str, help_text: str, label_names: tuple[str, ...]) -> LabelCounts:
        """A new counter family ``<name>_total``; the caller increments what this returns.

        Raises ``ValueError`` if ``name`` is already a counter of this registry.
        """
        if name in self._counters:
            raise ValueError(f"counter {name} is already registered")
        self._counters.add(name)
        counts = LabelCounts(label_names)
        self.register_collector(lambda: [collectors.counter_family(name, help_text, counts)])
        return counts

    def render(self) -> str:
        """The whole exposition, text format 0.0.4."""
        return generate_latest(self.registry).decode("utf-8")

    def http_response(self) -> tuple[int, str, str]:
        """``GET /metrics`` as the transport's HTTP routes answer it."""
        return 200, CONTENT_TYPE, self.render()
