"""Wires every realm's HTTP API and webhooks into one server (the server calls this)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from broker.cluster.connect import shared_client

from .api import HttpApi, OpenApi
from .sessions import HttpGate
from .webhooks import Webhook, WebhookCounters, Webhooks

if TYPE_CHECKING:
    from broker.config import Settings
    from broker.core.auth import Offload
    from broker.core.router import Router
    from broker.metrics import BrokerMetrics
    from broker.transport.listener import Listener

__all__ = ["HttpApiService"]


class HttpApiService:
    """Every realm's HTTP API and webhooks on one server."""

    def __init__(
        self,
        router: Router,
        settings: Settings,
        listener: Listener,
        metrics: BrokerMetrics,
        offload: Offload | None = None,
    ) -> None:
        self.router = router
        self.gate = HttpGate()
        self.apis: list[HttpApi] = []
        realms = {api.realm for api in settings.http_apis} | {h.realm for h in settings.webhooks}
        for name in sorted(realms):
            context = router.realms[name].context
            context.settings = dataclasses.replace(
                context.settings, authenticators=(*context.settings.authenticators, self.gate)
            )
        apps = listener.http_apps
        # one Redis client (pool) for webhook claims and signed-request nonces
        self.redis = shared_client(settings.redis_url) if settings.redis_url else None
        for api_settings in settings.http_apis:
            api = HttpApi(router, api_settings, self.gate, offload, self.redis)
            self.apis.append(api)
            for path, app in (
                (api_settings.publish_path, api.publish),
                (api_settings.call_path, api.call),
            ):
                if path:
                    if path in apps:
                        raise ValueError(f"HTTP API path {path} is used twice")
                    apps[path] = app
            if api_settings.openapi_path:
                apps.setdefault(api_settings.openapi_path, OpenApi())
        self._settings = settings
        self.counters = WebhookCounters.register(metrics) if settings.webhooks else None
        self.webhooks: Webhooks | None = None

    def start(self, node: str) -> None:
        """Start the webhooks (subscribe, workers); needs the running loop."""
        s = self._settings
        if self.counters is None:
            return
        hooks = [Webhook(h, self.redis, node, self.counters) for h in s.webhooks]
        self.webhooks = Webhooks(hooks)
        for hook in hooks:
            hook.start(self.router, self.gate)

    async def close(self) -> None:
        """Leave every internal session; stop the webhooks."""
        for api in self.apis:
            api.close()
        if self.webhooks is not None:
            await self.webhooks.close()
            self.webhooks = None
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
