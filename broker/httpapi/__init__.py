"""The HTTP API for services: publish and call over plain HTTP, signed requests, webhooks.

``HttpApiService`` wires it into a server: each realm's ``[realm.http_api]``
paths become ``HttpApp`` handlers of the transport's HTTP layer, each
``[[realm.webhook]]`` a subscription whose events are POSTed to a URL. Principals
act through internal sessions (``sessions.py``), so authorization and cluster
distribution are the realm's own. README "HTTP API" shows the requests;
protocol_spec/http-api.json is the OpenAPI 3 description.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import redis.asyncio as aioredis

from .api import HttpApi, OpenApi
from .sessions import AUTHMETHOD, HttpGate
from .webhooks import Webhook, Webhooks

if TYPE_CHECKING:
    from broker.config import Settings
    from broker.core.router import Router
    from broker.transport.listener import Listener

__all__ = ["AUTHMETHOD", "HttpApiService"]


class HttpApiService:
    """Every realm's HTTP API and webhooks on one server."""

    def __init__(self, router: Router, settings: Settings, listener: Listener) -> None:
        self.router = router
        self.gate = HttpGate()
        self.apis: list[HttpApi] = []
        realms = {api.realm for api in settings.http_apis} | {h.realm for h in settings.webhooks}
        for name in realms:
            realm = router.realms[name]
            realm.settings = dataclasses.replace(
                realm.settings, authenticators=(*realm.settings.authenticators, self.gate)
            )
        apps = listener.http_apps
        for api_settings in settings.http_apis:
            api = HttpApi(router, api_settings, self.gate)
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
        self.webhooks: Webhooks | None = None

    def start(self, node: str) -> None:
        """Start the webhooks (subscribe, workers); needs the running loop."""
        s = self._settings
        if not s.webhooks:
            return
        claims = aioredis.Redis.from_url(s.redis_url) if s.redis_url else None
        hooks = [Webhook(h, claims, node) for h in s.webhooks]
        self.webhooks = Webhooks(hooks, claims)
        for hook in hooks:
            hook.start(self.router, self.gate)

    def metrics_text(self) -> str:
        """Webhook counters in the Prometheus text format (appended to /metrics)."""
        if self.webhooks is None:
            return ""
        return "\n".join(self.webhooks.metrics_lines()) + "\n"

    async def close(self) -> None:
        """Leave every internal session; stop the webhooks."""
        for api in self.apis:
            api.close()
        if self.webhooks is not None:
            await self.webhooks.close()
            self.webhooks = None
