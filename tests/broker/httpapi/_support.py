"""Helpers of the HTTP API tests: config files, a stdlib HTTP client, a webhook receiver.

The receiver is a stdlib ``http.server`` on 127.0.0.1 in a thread; it records every
POST and answers by a script (fail N times, then succeed; or hold the request
until released), so the tests await what it saw instead of sleeping.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlparse

from broker.auth.secrets import hash_ticket
from broker.httpapi.auth import sign_request

KEY_SECRET = "s3cret-key-part"
SIGNER_SECRET = "signer-shared-secret"
HOOK_SECRET = "hook-secret"
KEY_HASH = hash_ticket(KEY_SECRET, iterations=1000)

ROLES = """
[[realm.role]]
name = "anonymous"
permissions = [
    { uri = "com.", match = "prefix", allow = ["call", "register", "publish", "subscribe"] },
    { uri = "wamp.session.", match = "prefix", allow = ["call"] },
]
[[realm.role]]
name = "service"
permissions = [{ uri = "com.", match = "prefix", allow = ["call", "publish"] }]
[[realm.role]]
name = "narrow"
permissions = [{ uri = "com.open.", match = "prefix", allow = ["publish", "call"] }]
[[realm.role]]
name = "webhook"
permissions = [{ uri = "com.", match = "prefix", allow = ["subscribe"] }]
"""


def config_text(webhooks: str = "", api: str = "") -> str:
    """A realm1 with roles, an HTTP API (keys ``svc``, ``narrow``; signer ``cron``)."""
    return f"""
[[realm]]
name = "realm1"
anonymous = true
{ROLES}
[realm.http_api]
rate = 1000.0
burst = 1000
max_concurrent_calls = 2
max_body = 100000
{api}
[realm.http_api.keys.svc]
key_hash = "{KEY_HASH}"
authid = "svc"
role = "service"
[realm.http_api.keys.narrow]
key_hash = "{KEY_HASH}"
authid = "narrow"
role = "narrow"
[realm.http_api.signers.cron]
secret = "{SIGNER_SECRET}"
authid = "cron"
role = "service"
{webhooks}
"""


def write_config(directory: Path, text: str) -> Path:
    path = directory / "broker.toml"
    path.write_text(text, encoding="utf-8")
    return path


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Api:
    """A keep-alive stdlib HTTP client for one broker."""

    def __init__(self, base: str, token: str | None = f"svc.{KEY_SECRET}") -> None:
        parsed = urlparse(base)
        assert parsed.hostname and parsed.port
        self.conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=10)
        self.token = token

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> Reply:
        data = raw if raw is not None else (b"" if body is None else json.dumps(body).encode())
        sent = {"Content-Type": "application/json", **(headers or {})}
        if self.token is not None:
            sent.setdefault("Authorization", f"Bearer {self.token}")
        target = path + ("?" + urlencode(query) if query else "")
        self.conn.request(method, target, body=data, headers=sent)
        response = self.conn.getresponse()
        return Reply(response.status, dict(response.getheaders()), response.read())

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Reply:
        return self.request("POST", path, body, **kwargs)

    def signed(self, path: str, body: Any, *, nonce: int, **overrides: Any) -> Reply:
        data = json.dumps(body).encode()
        query = sign_request("cron", SIGNER_SECRET, data, seq=1, nonce=nonce, **overrides)
        saved, self.token = self.token, None
        try:
            return self.post(path, raw=data, query=query)
        finally:
            self.token = saved

    def close(self) -> None:
        self.conn.close()


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A webhook receiver: ``answer(n)`` gives the status of the n-th POST (0-based)."""

    answer: Callable[[int], int] = lambda n: 200
    hold: threading.Event | None = None  # set: requests wait on it (a receiver that hangs)
    posts: list[Received] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)
    server: ThreadingHTTPServer | None = None

    def start(self) -> str:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with receiver.cond:
                    index = len(receiver.posts)
                    receiver.posts.append(Received(dict(self.headers.items()), body))
                    receiver.cond.notify_all()
                if receiver.hold is not None:
                    receiver.hold.wait(30)
                status = receiver.answer(index)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def wait_posts(self, count: int, timeout: float = 10.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.posts) < count:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"{count} POSTs expected, got {len(self.posts)}")
                self.cond.wait(remaining)
            return list(self.posts)

    def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in a Prometheus text page (0 when absent)."""
    for line in text.splitlines():
        if not line.startswith(name + "{") and line.split(" ")[0] != name:
            continue
        head, _, value = line.rpartition(" ")
        if all(f'{k}="{v}"' in head for k, v in labels.items()):
            return float(value)
    return 0.0
