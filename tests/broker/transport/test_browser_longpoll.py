"""Autobahn|JS in headless Chromium over HTTP long-poll, against a Python WebSocket peer.

The page comes from another origin than the broker (its own little HTTP server), so
every long-poll request is a cross-origin XHR: the broker's CORS answers are part of
what is proven. One page is forced onto long-poll (transport list ``[longpoll]``);
the other lists WebSocket first in a browser without WebSocket and must fall back
to long-poll by itself.
"""

from __future__ import annotations

import asyncio
import functools
import http.server
import json
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.types import PublishOptions

from tests.broker.interop._autobahn import connect
from tests.examples.cdp import Chromium
from tests.examples.test_browser import autobahn_js, chromium  # noqa: F401  (fixtures)
from tests.support.processes import BrokerProcess

PAGE = """<!doctype html>
<html><body><script src="/autobahn.min.js"></script><script>
"use strict";
const TRANSPORTS = %(transports)s;
if (%(no_websocket)s) { window.WebSocket = undefined; }  // a browser without WebSocket
window.started = new Promise((ready) => { window.markReady = ready; });
window.done = new Promise((resolve, reject) => {
  const connection = new autobahn.Connection(
    { transports: TRANSPORTS, realm: "realm1", max_retries: 0 });
  connection.onopen = async (session) => {
    try {
      let gotEvent;
      const event = new Promise((r) => { gotEvent = r; });
      await session.subscribe("com.lpjs.to_page", (args) => gotEvent(args[0]));
      await session.register("com.lpjs.mul", (args) => args[0] * args[1]);
      await session.publish("com.lpjs.from_page", ["hi from the page"], {},
                            { acknowledge: true });
      const sum = await session.call("com.lpjs.add", [2, 3]);
      const type = connection.transport.info.type;
      window.markReady(type);
      const received = await event;
      resolve(JSON.stringify({ type: type, sum: sum, received: received }));
      connection.close();
    } catch (error) {
      reject(new Error(String((error && error.error) || error)));
    }
  };
  connection.onclose = (reason) => { reject(new Error("closed: " + reason)); return true; };
  connection.open();
});
</script></body></html>
"""


@pytest.fixture
def page_server(tmp_path: Path, autobahn_js: Path) -> Iterator[tuple[Path, int]]:  # noqa: F811
    """A static HTTP server on its own port (another origin than the broker)."""
    shutil.copy(autobahn_js, tmp_path / "autobahn.min.js")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield tmp_path, server.server_address[1]
    server.shutdown()
    server.server_close()


async def run_page(
    broker: BrokerProcess,
    browser: Chromium,
    page_server: tuple[Path, int],
    transports: list[dict[str, Any]],
    no_websocket: bool,
) -> None:
    root, port = page_server
    html = PAGE % {"transports": json.dumps(transports), "no_websocket": json.dumps(no_websocket)}
    (root / "index.html").write_text(html)
    python = await connect(broker.url, "msgpack")
    try:
        await python.register(lambda a, b: a + b, "com.lpjs.add")
        from_page: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await python.subscribe(lambda text: from_page.set_result(text), "com.lpjs.from_page")
        page = await asyncio.to_thread(browser.open_page, f"http://127.0.0.1:{port}/index.html")
        assert await asyncio.to_thread(page.evaluate, "window.started") == "longpoll"
        assert await asyncio.wait_for(from_page, 10) == "hi from the page"
        assert await python.call("com.lpjs.mul", 6, 7) == 42  # Python calls the page
        await python.publish(
            "com.lpjs.to_page", "hello page", options=PublishOptions(acknowledge=True)
        )
        result = json.loads(await asyncio.to_thread(page.evaluate, "window.done"))
        assert result == {"type": "longpoll", "sum": 5, "received": "hello page"}
    finally:
        await python.close()


async def test_autobahn_js_forced_onto_longpoll(
    broker: BrokerProcess,
    chromium: Chromium,  # noqa: F811
    page_server: tuple[Path, int],
) -> None:
    lp = broker.http_base + "/lp"
    await run_page(broker, chromium, page_server, [{"type": "longpoll", "url": lp}], False)


async def test_autobahn_js_falls_back_to_longpoll_without_websocket(
    broker: BrokerProcess,
    chromium: Chromium,  # noqa: F811
    page_server: tuple[Path, int],
) -> None:
    transports = [
        {"type": "websocket", "url": broker.url},
        {"type": "longpoll", "url": broker.http_base + "/lp"},
    ]
    await run_page(broker, chromium, page_server, transports, True)
    assert "over longpoll" in broker.output
