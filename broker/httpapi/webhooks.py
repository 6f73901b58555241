"""Webhooks: events of a topic POSTed as JSON to a URL, with retries, a bounded queue, HMAC.

Each ``[[realm.webhook]]`` subscribes (topic + match) on an internal session of
authid ``webhook:<name>`` and the configured role, so the realm's authorization
applies to it like to any subscriber. Every EVENT goes to the webhook's queue;
``concurrency`` workers (default 1) POST the events; with one worker the receiver
gets them in publication order, with more they overlap (faster, order not kept):

- body ``{"webhook", "realm", "topic", "publication", "args", "kwargs", "details"}``;
- headers ``X-Broker-Webhook``, ``X-Broker-Publication``, ``X-Broker-Timestamp``
  (Unix seconds) and, when a secret is configured, ``X-Broker-Signature:
  sha256=<hex HMAC-SHA256(secret, timestamp + "." + body)>`` (the timestamp inside
  the MAC lets the receiver refuse old replays);
- a 2xx answer is a delivery; any other answer, a timeout (``timeout`` seconds) or
  a connection error is retried after ``protocol_spec.backoff.Backoff`` delays
  (``backoff_initial`` doubling up to ``backoff_max``, jittered), at most
  ``max_attempts`` POSTs; then the event is dropped (``reason="attempts"``).
- Queue policy: drop-oldest. When ``queue`` events wait, the oldest waiting event
  is dropped for the new one (``reason="queue_full"``); the event being delivered
  is not. Counted in ``/metrics``: ``wamp_webhook_dropped_total{realm,webhook,reason}``,
  ``wamp_webhook_delivered_total``, ``wamp_webhook_retries_total``,
  ``wamp_webhook_skipped_total`` (claimed by another node).

Cluster: every node subscribes, so every node sees every event. Before POSTing, a
node claims the event in Redis (``SET <prefix><realm>:<webhook>:<publication> NX``,
expiring after a day): exactly one node wins and delivers, the others skip it.
If the winner dies before delivering, that event is lost (at-most-once under node
failure; exactly-once otherwise).

HTTP client: httpx (maintained by Encode, the authors of Starlette/uvicorn):
asyncio-native, connection pooling with keep-alive, per-request timeouts, HTTP/1.1
and optional HTTP/2, typed. One ``AsyncClient`` per webhook.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

from broker.core.router import Router
from protocol_spec.backoff import Backoff
from protocol_spec.messages import Event, Message, Subscribe, Subscribed

from .sessions import HttpGate, Principal, PrincipalSession
from .settings import WebhookSettings

if TYPE_CHECKING:
    from broker.metrics import BrokerMetrics, LabelCounts

__all__ = ["CLAIM_PREFIX", "Webhook", "WebhookCounters", "Webhooks", "signature"]

log = logging.getLogger(__name__)

CLAIM_PREFIX = "wamp:webhook:"
"""Redis key prefix of per-event delivery claims (cluster only)."""
CLAIM_TTL = 86_400


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Broker-Signature`` value of a delivery."""
    mac = hmac.new(secret.encode("utf-8"), timestamp.encode("ascii") + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


@dataclass(frozen=True, slots=True)
class WebhookCounters:
    """The webhook families of ``/metrics``, labelled (realm, webhook[, reason])."""

    delivered: LabelCounts
    retries: LabelCounts
    skipped: LabelCounts
    dropped: LabelCounts

    @classmethod
    def register(cls, metrics: BrokerMetrics) -> WebhookCounters:
        """Register the families on a server's metrics (once per server)."""
        labels = ("realm", "webhook")
        return cls(
            metrics.counter("wamp_webhook_delivered", "Webhook events delivered (2xx).", labels),
            metrics.counter(
                "wamp_webhook_retries", "Webhook POSTs repeated after a failure.", labels
            ),
            metrics.counter("wamp_webhook_skipped", "Webhook events another node claimed.", labels),
            metrics.counter(
                "wamp_webhook_dropped",
                "Webhook events dropped: queue_full (oldest dropped) or attempts (gave up).",
                (*labels, "reason"),
            ),
        )


@dataclass(frozen=True, slots=True)
class _Queued:
    topic: str
    publication: int
    details: dict[str, Any]
    args: list[Any] | None
    kwargs: dict[str, Any] | None


class Webhook:
    """One webhook: its subscription, queue, worker and counters."""

    def __init__(
        self,
        settings: WebhookSettings,
        claims: aioredis.Redis | aioredis.RedisCluster | None,
        node: str,
        counters: WebhookCounters,
    ) -> None:
        self.settings = settings
        self.counters = counters
        self.labels = (settings.realm, settings.name)
        self.claims = claims
        self.node = node
        self.queue: deque[_Queued] = deque()
        self.wakeup = asyncio.Event()
        self.held: PrincipalSession | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.backoff = Backoff(
            initial=settings.backoff_initial,
            maximum=max(settings.backoff_max, settings.backoff_initial),
        )
        import httpx  # here, not at the top: a broker without webhooks never loads it

        self._http_error: type[Exception] = httpx.HTTPError
        self.client = httpx.AsyncClient(timeout=settings.timeout)

    def start(self, router: Router, gate: HttpGate) -> None:
        """Join, subscribe and start the worker."""
        s = self.settings
        held = PrincipalSession(router, Principal(f"webhook:{s.name}", s.role))
        if not held.join(gate, s.realm):
            log.error("webhook %s: its session was refused (%s)", s.name, held.refusal)
            return
        self.held = held
        held.on_event = self._on_event
        request = held.requests.next()

        def subscribed(reply: Message) -> None:
            held.handlers.pop(request, None)
            if not isinstance(reply, Subscribed):
                log.error("webhook %s: subscribing to %s failed: %r", s.name, s.topic, reply)

        held.handlers[request] = subscribed
        router.receive(held.session, Subscribe(request, {"match": s.match}, s.topic))
        self.tasks = [asyncio.ensure_future(self._work()) for _ in range(s.concurrency)]

    def _on_event(self, message: Message) -> None:
        if not isinstance(message, Event):
            return
        topic = message.details.get("topic", self.settings.topic)
        details = {k: v for k, v in message.details.items() if k != "topic"}
        if len(self.queue) >= self.settings.queue:
            self.queue.popleft()
            self.counters.dropped.inc(*self.labels, "queue_full")
        self.queue.append(
            _Queued(str(topic), message.publication, details, message.args, message.kwargs)
        )
        self.wakeup.set()

    async def _work(self) -> None:
        while True:
            while not self.queue:
                self.wakeup.clear()
                await self.wakeup.wait()
            item = self.queue.popleft()
            try:
                if await self._claim(item):
                    await self._deliver(item)
                else:
                    self.counters.skipped.inc(*self.labels)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("webhook %s: internal error delivering", self.settings.name)

    async def _claim(self, item: _Queued) -> bool:
        if self.claims is None:
            return True
        s = self.settings
        key = f"{CLAIM_PREFIX}{s.realm}:{s.name}:{item.publication}"
        try:
            return bool(await self.claims.set(key, self.node, nx=True, ex=CLAIM_TTL))
        except Exception as exc:  # Redis down: deliver (a duplicate beats a loss)
            log.warning("webhook %s: claim failed (%s): delivering anyway", s.name, exc)
            return True

    def _request(self, item: _Queued) -> tuple[bytes, dict[str, str]]:
        s = self.settings
        body = json.dumps(
            {
                "webhook": s.name,
                "realm": s.realm,
                "topic": item.topic,
                "publication": item.publication,
                "args": item.args or [],
                "kwargs": item.kwargs or {},
                "details": item.details,
            }
        ).encode()
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "X-Broker-Webhook": s.name,
            "X-Broker-Publication": str(item.publication),
            "X-Broker-Timestamp": stamp,
        }
        if s.secret:
            headers["X-Broker-Signature"] = signature(s.secret, stamp, body)
        return body, headers

    async def _deliver(self, item: _Queued) -> None:
        s = self.settings
        body, headers = self._request(item)
        for attempt in range(s.max_attempts):
            if attempt:
                self.counters.retries.inc(*self.labels)
                await asyncio.sleep(self.backoff.delay(attempt - 1))
            try:
                response = await self.client.post(s.url, content=body, headers=headers)
            except self._http_error as exc:
                log.debug("webhook %s: attempt %d failed: %s", s.name, attempt + 1, exc)
                continue
            if 200 <= response.status_code < 300:
                self.counters.delivered.inc(*self.labels)
                return
            log.debug("webhook %s: attempt %d got %d", s.name, attempt + 1, response.status_code)
        self.counters.dropped.inc(*self.labels, "attempts")
        log.warning(
            "webhook %s: publication %d dropped after %d attempts",
            s.name,
            item.publication,
            s.max_attempts,
        )

    async def close(self) -> None:
        """Stop the worker, leave, close the HTTP client."""
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.held is not None:
            self.held.leave()
        await self.client.aclose()


class Webhooks:
    """Every webhook of the server."""

    def __init__(self, hooks: list[Webhook]) -> None:
        self.hooks = hooks

    async def close(self) -> None:
        """Stop every webhook."""
        for hook in self.hooks:
            await hook.close()
