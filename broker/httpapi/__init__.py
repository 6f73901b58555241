"""The HTTP API for services: publish and call over plain HTTP, signed requests, webhooks.

``service.HttpApiService`` wires it into a server: each realm's
``[realm.http_api]`` paths become ``HttpApp`` handlers of the transport's HTTP
layer, each ``[[realm.webhook]]`` a subscription whose events are POSTed to a URL.
Principals act through internal sessions (``sessions.py``), so authorization and
cluster distribution are the realm's own. README "HTTP API" shows the requests;
protocol_spec/http-api.json is the OpenAPI 3 description. ``settings.py`` (parsed
by broker.config) imports neither the transport nor the core's router.
"""
