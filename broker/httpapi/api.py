"""The HTTP API of one realm: ``POST /publish`` (one event or a batch) and ``POST /call``.

Requests are JSON; every answer is JSON (``application/json``), errors as
``{"error": URI, "args": [...], "kwargs": {...}}`` plus ``"field"`` when one request
field is wrong. A request that fails validation or authentication never reaches
the realm. Publishes and calls run on the principal's internal session
(``sessions.py``): the realm's authorization, options and cluster distribution
apply exactly as for a WebSocket client.

HTTP status of a WAMP error (``STATUS_OF``; any other URI, i.e. an application
error raised by the callee, is 502 Bad Gateway): ``no_such_procedure`` 404,
``not_authorized`` 403, ``timeout`` 504, ``canceled``/``unavailable``/
``no_eligible_callee`` 503, ``invalid_uri``/``invalid_argument`` 400, the broker's
limit errors 429.

A call whose HTTP client disconnects before the answer is canceled (CANCEL
``killnowait``: the callee gets INTERRUPT).

Progressive results: a call sent with ``Accept: application/x-ndjson`` asks the
callee for progressive results and gets a chunked ``200`` whose body has one JSON
object per line: ``{"progress": true, "args", "kwargs"}`` for each progressive
result, then the final ``{"args", "kwargs"}`` or ``{"error", "args", "kwargs"}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from broker.core.auth import Offload
from broker.core.router import Router
from broker.transport.http import HttpConnection, HttpRequest
from protocol_spec import errors
from protocol_spec.errors import LIMIT_EXCEEDED, RATE_LIMIT_EXCEEDED
from protocol_spec.messages import Abort, Call, Cancel, Error, Message, Publish, Published, Result
from protocol_spec.uri import is_reserved, is_valid_uri

from .auth import AuthError, Credentials, Verdict
from .sessions import HttpGate, PrincipalSession, Sessions
from .settings import HttpApiSettings

__all__ = ["INVALID_REQUEST", "OPENAPI_FILE", "STATUS_OF", "HttpApi", "ValidationError"]

log = logging.getLogger(__name__)

INVALID_REQUEST = "broker.error.invalid_request"
"""Error of a request that is not valid JSON of the documented shape (400)."""
UNAUTHENTICATED = "broker.error.unauthenticated"
TOO_MANY_REQUESTS = "broker.error.too_many_requests"
OPENAPI_FILE = Path(__file__).resolve().parents[2] / "protocol_spec" / "http-api.json"
"""The OpenAPI 3 description kept in protocol_spec and served at ``openapi_path``."""

STATUS_OF: dict[str, int] = {
    errors.NO_SUCH_PROCEDURE: 404,
    errors.NOT_AUTHORIZED: 403,
    errors.TIMEOUT: 504,
    errors.CANCELED: 503,
    errors.UNAVAILABLE: 503,
    errors.NO_ELIGIBLE_CALLEE: 503,
    errors.INVALID_URI: 400,
    errors.INVALID_ARGUMENT: 400,
    LIMIT_EXCEEDED: 429,
    RATE_LIMIT_EXCEEDED: 429,
}
APPLICATION_ERROR_STATUS = 502
NDJSON = "application/x-ndjson"
_JSON = {"Content-Type": "application/json", "Cache-Control": "no-store"}
_LIST_OPTIONS = (
    "exclude",
    "eligible",
    "exclude_authid",
    "exclude_authrole",
    "eligible_authid",
    "eligible_authrole",
)
_BOOL_OPTIONS = ("retain", "disclose_me", "exclude_me")
_MAX_BATCH = 1000
_REPLY_WAIT = 30.0  # seconds a publish waits for PUBLISHED (an authorizer may be asked)


class ValidationError(Exception):
    """A request field is missing or has the wrong type: 400 naming ``field``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def error_body(error: str, args: list[Any], kwargs: dict[str, Any], **extra: Any) -> bytes:
    """The JSON body of an error answer."""
    return json.dumps({"error": error, "args": args, "kwargs": kwargs, **extra}).encode()


def _payload(where: str, body: dict[str, Any]) -> tuple[list[Any] | None, dict[str, Any] | None]:
    args, kwargs = body.get("args"), body.get("kwargs")
    if args is not None and not isinstance(args, list):
        raise ValidationError(f"{where}args", "args must be an array")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise ValidationError(f"{where}kwargs", "kwargs must be an object")
    return args, kwargs


def _uri(where: str, body: dict[str, Any], name: str) -> str:
    uri = body.get(name)
    if not isinstance(uri, str):
        raise ValidationError(f"{where}{name}", f"{name} must be a string URI")
    if not is_valid_uri(uri) or is_reserved(uri):
        raise ValidationError(f"{where}{name}", f"{name} is not a valid URI: {uri!r}")
    return uri


def _options(where: str, body: dict[str, Any]) -> dict[str, Any]:
    options = body.get("options", {})
    if not isinstance(options, dict):
        raise ValidationError(f"{where}options", "options must be an object")
    return options


def parse_publish(where: str, body: Any) -> Publish:
    """One event of a publish request as a PUBLISH (request 0, acknowledged)."""
    if not isinstance(body, dict):
        raise ValidationError(where.rstrip(".") or "body", "an event is a JSON object")
    topic = _uri(where, body, "topic")
    args, kwargs = _payload(where, body)
    given = _options(where, body)
    options: dict[str, Any] = {"acknowledge": True}
    for name, value in given.items():
        if name in _LIST_OPTIONS:
            kind = int if name in ("exclude", "eligible") else str
            if not isinstance(value, list) or not all(
                isinstance(v, kind) and not isinstance(v, bool) for v in value
            ):
                raise ValidationError(f"{where}options.{name}", f"{name} must be a list")
        elif name in _BOOL_OPTIONS:
            if not isinstance(value, bool):
                raise ValidationError(f"{where}options.{name}", f"{name} must be a boolean")
        elif name == "acknowledge":
            continue  # implied
        options[name] = value
    return Publish(0, options, topic, args, kwargs)


def parse_call(body: Any, default_timeout: float) -> Call:
    """A call request as a CALL (request 0); ``options.timeout`` in milliseconds."""
    if not isinstance(body, dict):
        raise ValidationError("body", "a call is a JSON object")
    procedure = _uri("", body, "procedure")
    args, kwargs = _payload("", body)
    given = _options("", body)
    timeout = given.get("timeout", int(default_timeout * 1000))
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 0:
        raise ValidationError("options.timeout", "timeout must be a non-negative integer (ms)")
    options: dict[str, Any] = {"timeout": timeout}
    disclose = given.get("disclose_me")
    if disclose is not None:
        if not isinstance(disclose, bool):
            raise ValidationError("options.disclose_me", "disclose_me must be a boolean")
        options["disclose_me"] = disclose
    return Call(0, options, procedure, args, kwargs)


def parse_json(body: bytes) -> Any:
    """The request body as JSON, or ``ValidationError`` on field ``body``."""
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValidationError("body", f"malformed JSON: {exc}") from None


class HttpApi:
    """Serves one realm's publish and call paths (``HttpApp`` handlers)."""

    def __init__(
        self,
        router: Router,
        settings: HttpApiSettings,
        gate: HttpGate,
        offload: Offload | None = None,
        shared: aioredis.Redis | aioredis.RedisCluster | None = None,
    ) -> None:
        self.settings = settings
        self.credentials = Credentials(settings, offload, shared)
        self.sessions = Sessions(router, settings.realm, gate)
        self.tasks: set[asyncio.Task[None]] = set()
        self.publish = _Route(self, self._publish)
        self.call = _Route(self, self._call)

    def close(self) -> None:
        """Leave every principal session; cancel requests in progress."""
        for task in list(self.tasks):
            task.cancel()
        self.sessions.close()

    async def serve(
        self,
        request: HttpRequest,
        conn: HttpConnection,
        action: Callable[[HttpRequest, HttpConnection, Verdict, Any], Any],
    ) -> None:
        """Check method, size and credentials, parse JSON, then run ``action``."""
        if request.method != "POST":
            conn.respond(
                HTTPStatus.METHOD_NOT_ALLOWED,
                error_body(INVALID_REQUEST, ["use POST"], {}),
                {**_JSON, "Allow": "POST"},
            )
            return
        if len(request.body) > self.settings.max_body:
            self.answer(conn, 413, INVALID_REQUEST, "request body too large", field="body")
            return
        query = request.target.partition("?")[2]
        try:
            verdict = await self.credentials.check(request.headers, query, request.body)
        except AuthError as exc:
            error = {401: UNAUTHENTICATED, 429: TOO_MANY_REQUESTS, 503: errors.UNAVAILABLE}.get(
                exc.status, INVALID_REQUEST
            )
            self.answer(conn, exc.status, error, str(exc))
            return
        if not self.credentials.take_token(verdict.credential):
            self.answer(conn, 429, TOO_MANY_REQUESTS, "request rate exceeded for this key")
            return
        try:
            body = parse_json(request.body)
            await action(request, conn, verdict, body)
        except ValidationError as exc:
            self.answer(conn, 400, INVALID_REQUEST, str(exc), field=exc.field)

    def answer(
        self, conn: HttpConnection, status: int, error: str, message: str, **extra: Any
    ) -> None:
        """An error answer with one message."""
        conn.respond(HTTPStatus(status), error_body(error, [message], {}, **extra), _JSON)

    def _session(self, conn: HttpConnection, verdict: Verdict) -> PrincipalSession | None:
        held = self.sessions.get(verdict.principal)
        if held is None:
            self.answer(conn, 403, errors.NOT_AUTHORIZED, "this key's role may not join the realm")
        return held

    # --- publish ----------------------------------------------------------------------
    async def _publish(
        self, request: HttpRequest, conn: HttpConnection, verdict: Verdict, body: Any
    ) -> None:
        batch = isinstance(body, list)
        if batch and not 0 < len(body) <= _MAX_BATCH:
            raise ValidationError("body", f"a batch holds 1 to {_MAX_BATCH} events")
        items = body if batch else [body]
        messages = [parse_publish(f"[{i}]." if batch else "", e) for i, e in enumerate(items)]
        held = self._session(conn, verdict)
        if held is None:
            return
        loop = asyncio.get_running_loop()
        futures = []
        for message in messages:  # all sent at once, in order; answers awaited after
            request_id = held.requests.next()
            future: asyncio.Future[Message] = loop.create_future()
            held.handlers[request_id] = _resolver(held, request_id, future)
            futures.append(future)
            held.router.receive(
                held.session,
                Publish(request_id, message.options, message.topic, message.args, message.kwargs),
            )
        publications: list[int] = []
        for index, future in enumerate(futures):
            # PUBLISHED usually came during receive(): no timer for what is already there
            reply = (
                future.result() if future.done() else await asyncio.wait_for(future, _REPLY_WAIT)
            )
            if not isinstance(reply, Published):
                status, data = _error_of(reply)
                extra = {"index": index, "publications": publications} if batch else {}
                conn.respond(HTTPStatus(status), json.dumps({**data, **extra}).encode(), _JSON)
                return
            publications.append(reply.publication)
        answer = {"publications": publications} if batch else {"publication": publications[0]}
        conn.respond(HTTPStatus.OK, json.dumps(answer).encode(), _JSON)

    # --- call -------------------------------------------------------------------------
    async def _call(
        self, request: HttpRequest, conn: HttpConnection, verdict: Verdict, body: Any
    ) -> None:
        message = parse_call(body, self.settings.call_timeout)
        credential = verdict.credential
        in_flight = self.credentials.in_flight
        if in_flight.get(credential, 0) >= self.settings.max_concurrent_calls:
            self.answer(conn, 429, TOO_MANY_REQUESTS, "too many calls in flight for this key")
            return
        held = self._session(conn, verdict)
        if held is None:
            return
        stream = NDJSON in request.headers.get("accept", "")
        options = {**message.options, "receive_progress": True} if stream else message.options
        request_id = held.requests.next()
        queue: asyncio.Queue[Message] = asyncio.Queue()

        def on_reply(reply: Message) -> None:
            queue.put_nowait(reply)
            if not (isinstance(reply, Result) and reply.details.get("progress") is True):
                held.handlers.pop(request_id, None)

        def on_lost() -> None:  # the HTTP client went away: cancel the call
            if request_id in held.handlers and not held.closed:
                held.router.receive(held.session, Cancel(request_id, {"mode": "killnowait"}))

        held.handlers[request_id] = on_reply
        conn.on_lost = on_lost
        in_flight[credential] = in_flight.get(credential, 0) + 1
        try:
            held.router.receive(
                held.session,
                Call(request_id, options, message.procedure, message.args, message.kwargs),
            )
            if stream:
                await _stream_results(conn, queue)
            else:
                reply = await queue.get()
                status, data = _result_of(reply)
                conn.respond(HTTPStatus(status), json.dumps(data).encode(), _JSON)
        finally:
            in_flight[credential] -= 1
            held.handlers.pop(request_id, None)


async def _stream_results(conn: HttpConnection, queue: asyncio.Queue[Message]) -> None:
    conn.start_stream(HTTPStatus.OK, {"Content-Type": NDJSON, "Cache-Control": "no-store"})
    while True:
        reply = await queue.get()
        progress = isinstance(reply, Result) and reply.details.get("progress") is True
        data = _result_of(reply)[1]
        if progress:
            data = {"progress": True, **data}
        conn.write_chunk(json.dumps(data).encode() + b"\n")
        if not progress:
            conn.end_stream()
            return


def _resolver(
    held: PrincipalSession, request_id: int, future: asyncio.Future[Message]
) -> Callable[[Message], None]:
    def resolve(reply: Message) -> None:
        held.handlers.pop(request_id, None)
        if not future.done():
            future.set_result(reply)

    return resolve


def _error_of(reply: Message) -> tuple[int, dict[str, Any]]:
    if isinstance(reply, Error):
        status = STATUS_OF.get(reply.error, APPLICATION_ERROR_STATUS)
        return status, {
            "error": reply.error,
            "args": list(reply.args or ()),
            "kwargs": dict(reply.kwargs or {}),
        }
    reason = reply.reason if isinstance(reply, Abort) else errors.CLOSE_SYSTEM_SHUTDOWN
    return 503, {"error": errors.UNAVAILABLE, "args": [f"session ended: {reason}"], "kwargs": {}}


def _result_of(reply: Message) -> tuple[int, dict[str, Any]]:
    if isinstance(reply, Result):
        return 200, {"args": list(reply.args or ()), "kwargs": dict(reply.kwargs or {})}
    return _error_of(reply)


class _Route:
    """One path of the API as an ``HttpApp``: each request runs as a task."""

    def __init__(
        self, api: HttpApi, action: Callable[[HttpRequest, HttpConnection, Verdict, Any], Any]
    ) -> None:
        self.api = api
        self.action = action

    def handle(self, request: HttpRequest, connection: HttpConnection) -> None:
        """Start serving ``request``; the answer is written when it is ready."""
        task = asyncio.ensure_future(self._run(request, connection))
        self.api.tasks.add(task)
        task.add_done_callback(self.api.tasks.discard)

    async def _run(self, request: HttpRequest, connection: HttpConnection) -> None:
        try:
            await self.api.serve(request, connection, self.action)
        except TimeoutError:
            self.api.answer(connection, 504, errors.TIMEOUT, "no answer from the router in time")
        except Exception:
            log.exception("internal error in an HTTP API request")
            connection.respond(
                HTTPStatus.INTERNAL_SERVER_ERROR,
                error_body("broker.error.internal", ["internal error"], {}),
                _JSON,
                close=True,
            )


class OpenApi:
    """Serves the OpenAPI description (``GET``)."""

    def __init__(self) -> None:
        self.body = OPENAPI_FILE.read_bytes()

    def handle(self, request: HttpRequest, connection: HttpConnection) -> None:
        """Answer with the JSON description."""
        if request.method not in ("GET", "HEAD"):
            connection.respond(HTTPStatus.METHOD_NOT_ALLOWED, b"use GET\n", {"Allow": "GET"})
            return
        body = b"" if request.method == "HEAD" else self.body
        connection.respond(HTTPStatus.OK, body, {"Content-Type": "application/json"})
