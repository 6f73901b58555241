"""The browser example's server: static files over HTTP plus a Python procedure over WAMP.

    (cd examples/browser && npm install)          # fetches Autobahn|JS (autobahn-browser)
    python examples/browser/server.py [--url ws://127.0.0.1:8080/ws] [--http-port 8000]

It registers ``com.example.browser.shout`` (text → TEXT!) with the broker and serves
``static/`` plus ``/autobahn.min.js`` (from ``node_modules``, or ``--autobahn FILE``)
on 127.0.0.1. Open the printed address: the page connects to the broker given in its
``?router=`` parameter, subscribes, publishes and calls the procedure.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import signal
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote

import client_sdk

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
DEFAULT_AUTOBAHN = HERE / "node_modules" / "autobahn-browser" / "autobahn.min.js"
PROCEDURE = "com.example.browser.shout"


def shout(text: str) -> str:
    """The procedure the page calls."""
    return text.upper() + "!"


class StaticHandler(SimpleHTTPRequestHandler):
    """``static/`` as the site root, ``/autobahn.min.js`` from npm; no request logging."""

    autobahn_js: Path = DEFAULT_AUTOBAHN

    def translate_path(self, path: str) -> str:
        if path.split("?", 1)[0] == "/autobahn.min.js":
            return str(self.autobahn_js)
        return super().translate_path(path)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def serve_static(port: int, autobahn_js: Path) -> ThreadingHTTPServer:
    """Start the HTTP server on 127.0.0.1 in a daemon thread."""
    handler = type("Handler", (StaticHandler,), {"autobahn_js": autobahn_js})
    httpd = ThreadingHTTPServer(
        ("127.0.0.1", port), functools.partial(handler, directory=str(STATIC))
    )
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("WAMP_URL", "ws://127.0.0.1:8080/ws"))
    parser.add_argument("--realm", default=os.environ.get("WAMP_REALM", "realm1"))
    parser.add_argument("--http-port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--autobahn", type=Path, default=DEFAULT_AUTOBAHN)
    args = parser.parse_args()
    if not args.autobahn.is_file():
        parser.error(f"{args.autobahn} not found: run `npm install` in {HERE} first")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with client_sdk.Client(args.url, args.realm) as client:
        await client.register(PROCEDURE, shout)
        httpd = serve_static(args.http_port, args.autobahn)
        port = httpd.server_address[1]
        query = f"?router={quote(args.url, safe=':/')}&realm={quote(args.realm)}"
        print(f"registered {PROCEDURE}; open http://127.0.0.1:{port}/{query}", flush=True)
        try:
            await stop.wait()
        finally:
            httpd.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
