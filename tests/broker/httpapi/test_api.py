"""The HTTP API against a real broker process: publish, batch, call, errors, limits."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallDetails, RegisterOptions, SubscribeOptions

from tests.broker.interop._autobahn import ClientPool
from tests.support.processes import BrokerProcess

from ._support import KEY_SECRET, Api


async def http(api: Api, path: str, body: Any = None, **kwargs: Any) -> Any:
    """Run a blocking request of the stdlib client off the loop (Autobahn keeps running)."""
    return await asyncio.to_thread(api.post, path, body, **kwargs)


async def subscriber(pool: ClientPool, topic: str, match: str = "exact") -> asyncio.Queue[Any]:
    client = await pool.connect()
    queue: asyncio.Queue[Any] = asyncio.Queue()

    def on_event(*args: Any, **kwargs: Any) -> None:
        queue.put_nowait((list(args), kwargs))

    await client.subscribe(on_event, topic, options=SubscribeOptions(match=match))
    return queue


async def test_publish_reaches_an_autobahn_subscriber(api: Api, pool: ClientPool) -> None:
    events = await subscriber(pool, "com.news.today")
    reply = await http(
        api, "/publish", {"topic": "com.news.today", "args": [1], "kwargs": {"a": 2}}
    )
    assert reply.status == 200, reply.body
    assert isinstance(reply.json()["publication"], int)
    assert await asyncio.wait_for(events.get(), 5) == ([1], {"a": 2})


async def test_batch_publish_arrives_in_order(api: Api, pool: ClientPool) -> None:
    events = await subscriber(pool, "com.batch.", "prefix")
    batch = [{"topic": f"com.batch.t{i % 3}", "args": [i]} for i in range(50)]
    reply = await http(api, "/publish", batch)
    assert reply.status == 200, reply.body
    assert len(reply.json()["publications"]) == 50
    got = [(await asyncio.wait_for(events.get(), 5))[0][0] for _ in range(50)]
    assert got == list(range(50))


async def test_publish_options_exclude_by_authid_and_retain(api: Api, pool: ClientPool) -> None:
    events = await subscriber(pool, "com.opts")
    excluded = await pool.connect(authid="nobody-wants-this")
    missed: list[Any] = []
    await excluded.subscribe(lambda *a: missed.append(a), "com.opts")
    body = {
        "topic": "com.opts",
        "args": ["x"],
        "options": {"exclude_authid": ["nobody-wants-this"]},
    }
    assert (await http(api, "/publish", body)).status == 200
    assert await asyncio.wait_for(events.get(), 5) == (["x"], {})
    retained = {"topic": "com.retained", "args": ["kept"], "options": {"retain": True}}
    assert (await http(api, "/publish", retained)).status == 200
    late = await pool.connect()
    got: asyncio.Queue[Any] = asyncio.Queue()
    await late.subscribe(
        lambda *a: got.put_nowait(a), "com.retained", options=SubscribeOptions(get_retained=True)
    )
    assert await asyncio.wait_for(got.get(), 5) == ("kept",)
    assert missed == []


async def test_call_returns_the_result(api: Api, pool: ClientPool) -> None:
    callee = await pool.connect()
    await callee.register(lambda a, b, scale=1: (a + b) * scale, "com.math.add")
    reply = await http(
        api, "/call", {"procedure": "com.math.add", "args": [1, 2], "kwargs": {"scale": 10}}
    )
    assert reply.status == 200, reply.body
    assert reply.json() == {"args": [30], "kwargs": {}}


async def test_call_errors_map_to_statuses(api: Api, pool: ClientPool) -> None:
    callee = await pool.connect()

    def fail() -> None:
        raise ApplicationError("com.shop.out_of_stock", "none left", item=7)

    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def slow() -> None:
        await never

    await callee.register(fail, "com.err.fail")
    await callee.register(slow, "com.err.slow")
    missing = await http(api, "/call", {"procedure": "com.err.missing"})
    assert (missing.status, missing.json()["error"]) == (404, "wamp.error.no_such_procedure")
    app = await http(api, "/call", {"procedure": "com.err.fail"})
    assert app.status == 502
    assert app.json() == {
        "error": "com.shop.out_of_stock",
        "args": ["none left"],
        "kwargs": {"item": 7},
    }
    timeout = await http(api, "/call", {"procedure": "com.err.slow", "options": {"timeout": 100}})
    assert (timeout.status, timeout.json()["error"]) == (504, "wamp.error.timeout")
    narrow = Api(
        api.conn.host and f"http://{api.conn.host}:{api.conn.port}", f"narrow.{KEY_SECRET}"
    )
    try:
        denied = await http(narrow, "/call", {"procedure": "com.err.fail"})
        assert (denied.status, denied.json()["error"]) == (403, "wamp.error.not_authorized")
        denied = await http(narrow, "/publish", {"topic": "com.secret"})
        assert (denied.status, denied.json()["error"]) == (403, "wamp.error.not_authorized")
        allowed = await http(narrow, "/publish", {"topic": "com.open.news"})
        assert allowed.status == 200
    finally:
        narrow.close()


async def test_callee_gone_mid_call_is_503_canceled(api: Api, pool: ClientPool) -> None:
    callee = await pool.connect()
    entered = asyncio.Event()
    never: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def hang() -> None:
        entered.set()
        await never

    await callee.register(hang, "com.err.hang")
    pending = asyncio.ensure_future(http(api, "/call", {"procedure": "com.err.hang"}))
    await asyncio.wait_for(entered.wait(), 5)
    callee.drop()
    reply = await asyncio.wait_for(pending, 10)
    assert (reply.status, reply.json()["error"]) == (503, "wamp.error.canceled")


async def test_a_call_whose_http_client_leaves_is_canceled(
    broker: BrokerProcess, pool: ClientPool
) -> None:
    callee = await pool.connect()
    entered = asyncio.Event()
    interrupted = asyncio.Event()

    async def hang() -> None:
        entered.set()
        try:
            await asyncio.get_running_loop().create_future()
        except asyncio.CancelledError:
            interrupted.set()
            raise

    await callee.register(hang, "com.err.abandoned")
    _reader, writer = await asyncio.open_connection("127.0.0.1", broker.port)
    body = json.dumps({"procedure": "com.err.abandoned"}).encode()
    writer.write(
        b"POST /call HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer svc.{KEY_SECRET}\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await asyncio.wait_for(entered.wait(), 5)
    writer.close()
    await asyncio.wait_for(interrupted.wait(), 5)


async def test_progressive_results_stream_as_ndjson(api: Api, pool: ClientPool) -> None:
    callee = await pool.connect()

    def count(n: int, details: CallDetails) -> str:
        for i in range(n):
            assert details.progress is not None
            details.progress(i)
        return "done"

    await callee.register(count, "com.stream.count", options=RegisterOptions(details_arg="details"))
    reply = await http(
        api,
        "/call",
        {"procedure": "com.stream.count", "args": [3]},
        headers={"Accept": "application/x-ndjson"},
    )
    assert reply.status == 200
    assert reply.headers["Transfer-Encoding"] == "chunked"
    lines = [json.loads(line) for line in reply.body.decode().splitlines()]
    assert lines == [
        {"progress": True, "args": [0], "kwargs": {}},
        {"progress": True, "args": [1], "kwargs": {}},
        {"progress": True, "args": [2], "kwargs": {}},
        {"args": ["done"], "kwargs": {}},
    ]
    # the keep-alive connection serves the next request after a stream
    assert (await http(api, "/call", {"procedure": "com.stream.count", "args": [0]})).status == 200


async def test_bad_requests_are_400_naming_the_field_and_reach_nothing(
    api: Api, pool: ClientPool
) -> None:
    events = await subscriber(pool, "com.", "prefix")
    cases: list[tuple[bytes, str]] = [
        (b"{not json", "body"),
        (b'{"topic": 5}', "topic"),
        (b'{"topic": "com.x y"}', "topic"),
        (b'{"topic": "wamp.session.on_join"}', "topic"),
        (b'{"topic": "com.x", "args": {"a": 1}}', "args"),
        (b'{"topic": "com.x", "kwargs": [1]}', "kwargs"),
        (b'{"topic": "com.x", "options": {"retain": "yes"}}', "options.retain"),
        (b'{"topic": "com.x", "options": {"exclude": ["a"]}}', "options.exclude"),
        (b'[{"topic": "com.x"}, {"topic": "bad uri"}]', "[1].topic"),
        (b"[]", "body"),
        (b'"text"', "body"),
    ]
    for raw, field in cases:
        reply = await http(api, "/publish", raw=raw)
        assert reply.status == 400, raw
        assert reply.json()["field"] == field, raw
        assert reply.json()["error"] == "broker.error.invalid_request"
    for raw, field in [
        (b'{"procedure": null}', "procedure"),
        (b'{"procedure": "com.p", "options": {"timeout": "1s"}}', "options.timeout"),
    ]:
        reply = await http(api, "/call", raw=raw)
        assert (reply.status, reply.json()["field"]) == (400, field)
    marker = await http(api, "/publish", {"topic": "com.marker"})
    assert marker.status == 200
    assert await asyncio.wait_for(events.get(), 5) == ([], {})  # the marker, nothing before it
    assert events.empty()


async def test_authentication_failures_are_401(broker: BrokerProcess) -> None:
    for token in (None, "svc.wrong-secret", f"nokey.{KEY_SECRET}", KEY_SECRET):
        client = Api(broker.http_base, token)
        try:
            reply = await http(client, "/publish", {"topic": "com.x"})
        finally:
            client.close()
        assert (reply.status, reply.json()["error"]) == (401, "broker.error.unauthenticated"), token


async def test_method_size_rate_and_concurrency_limits(
    api: Api, broker: BrokerProcess, pool: ClientPool
) -> None:
    wrong = await asyncio.to_thread(api.request, "GET", "/publish")
    assert (wrong.status, wrong.headers["Allow"]) == (405, "POST")
    big = await http(api, "/publish", {"topic": "com.big", "args": ["x" * 200_000]})
    assert big.status == 413
    r2 = Api(broker.http_base)
    try:
        statuses = [(await http(r2, "/r2/publish", {"topic": "com.r2"})).status for _ in range(3)]
        assert statuses == [200, 200, 429]
    finally:
        r2.close()
    callee = await pool.connect()
    release: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    entered: asyncio.Queue[None] = asyncio.Queue()

    async def held() -> str:
        entered.put_nowait(None)
        await release
        return "ok"

    await callee.register(held, "com.limit.held")
    clients = [Api(broker.http_base) for _ in range(3)]
    try:
        first = [
            asyncio.ensure_future(http(c, "/call", {"procedure": "com.limit.held"}))
            for c in clients[:2]
        ]
        for _ in range(2):
            await asyncio.wait_for(entered.get(), 5)
        third = await http(clients[2], "/call", {"procedure": "com.limit.held"})
        assert (third.status, third.json()["error"]) == (429, "broker.error.too_many_requests")
        release.set_result(None)
        assert [(await f).status for f in first] == [200, 200]
    finally:
        for c in clients:
            c.close()


async def test_http_principal_is_a_session_in_the_meta_api(api: Api, pool: ClientPool) -> None:
    assert (await http(api, "/publish", {"topic": "com.meta.touch"})).status == 200
    watcher = await pool.connect()
    found = []
    for session_id in await watcher.call("wamp.session.list"):
        info = await watcher.call("wamp.session.get", session_id)
        if info["authid"] == "svc":
            found.append(info)
    assert len(found) == 1
    assert found[0]["authrole"] == "service"
    assert found[0]["authmethod"] == "x_http_api"
    assert found[0]["transport"]["type"] == "http-api"


async def test_a_websocket_client_cannot_use_the_internal_authmethod(broker: BrokerProcess) -> None:
    import client_sdk

    try:
        session = await client_sdk.connect(broker.url, "realm1", authmethods=["x_http_api"])
    except Exception as exc:  # refused: authentication failed / no method
        assert "authentication" in str(exc) or "auth" in str(exc).lower()
    else:
        await session.leave()
        raise AssertionError("x_http_api admitted a WebSocket client")
