"""A 2-node cluster (real Redis) with the console on, and a headless Chromium to drive it.

Realm ``realm1``: anonymous clients (role ``anonymous``: ``com.example.``), ticket
principals ``admin`` (role ``admin``, the console's) and ``viewer`` (role ``user``).
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from broker.auth.secrets import hash_ticket
from tests.broker.cluster.conftest import TIMING
from tests.examples.cdp import Chromium, PageSession, find_chromium
from tests.support.processes import (
    BrokerProcess,
    nodes_on_one_redis,
)

if shutil.which("redis-server") is None:  # pragma: no cover - the test command installs it
    pytest.skip("redis-server is not installed", allow_module_level=True)

ADMIN_TICKET = "console-admin-secret"
VIEWER_TICKET = "console-viewer-secret"
ADMIN_SEED = "4d" * 32
"""The Ed25519 private key seed (hex) of the cryptosign principal ``keyadmin``."""


def public_key(seed_hex: str) -> str:
    from cryptography.hazmat.primitives.asymmetric import ed25519
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    key = ed25519.Ed25519PrivateKey.from_private_bytes(bytes.fromhex(seed_hex))
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()


def console_config(path: Path) -> Path:
    """Write the nodes' TOML file; return its path."""
    admin, viewer = (
        hash_ticket(ADMIN_TICKET, iterations=1000),
        hash_ticket(VIEWER_TICKET, iterations=1000),
    )
    path.write_text(
        TIMING
        + f"""
[console]
enabled = true
path = "/console"
realm = "realm1"
role = "admin"

[[realm]]
name = "realm1"
anonymous = true
anonymous_role = "anonymous"
[realm.auth.ticket.principals]
admin = {{ ticket_hash = "{admin}", role = "admin" }}
viewer = {{ ticket_hash = "{viewer}", role = "user" }}
[realm.auth.cryptosign.principals.keyadmin]
pubkeys = ["{public_key(ADMIN_SEED)}"]
role = "admin"

[[realm.role]]
name = "anonymous"
permissions = [{{ uri = "com.example.", allow = ["call", "register", "publish", "subscribe"] }}]
[[realm.role]]
name = "user"
permissions = [{{ uri = "com.example.", allow = ["subscribe"] }}]
[[realm.role]]
name = "admin"
permissions = [{{ uri = "com.example.", allow = ["call", "publish", "subscribe"] }}]
""",
        encoding="utf-8",
    )
    return path


@pytest.fixture(scope="module")
def console_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BrokerProcess]]:
    """Redis and two broker nodes (n0, n1) with the console on."""
    config = console_config(tmp_path_factory.mktemp("console") / "broker.toml")
    with nodes_on_one_redis(config, ("n0", "n1")) as nodes:
        yield nodes


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    executable = find_chromium()
    if executable is None:
        pytest.skip("chromium is not installed (bash .ci/test.sh installs it with apt-get)")
    browser = Chromium.start(executable, tmp_path / "profile")
    yield browser
    browser.close()


class ConsolePage:
    """One console tab: JavaScript, waits on page state, screenshots, console errors."""

    def __init__(self, page: PageSession, shots: Path) -> None:
        self.page = page
        self.shots = shots
        page.devtools.send("Runtime.enable", page.session)
        page.devtools.send("Log.enable", page.session)
        page.devtools.send(
            "Emulation.setDeviceMetricsOverride",
            page.session,
            width=1280,
            height=800,
            deviceScaleFactor=1,
            mobile=False,
        )

    def js(self, expression: str) -> Any:
        return self.page.evaluate(expression)

    def until(self, expression: str, timeout: float = 10.0) -> Any:
        """Evaluate ``expression`` in the page until truthy (the page polls, on its clock)."""
        script = f"""new Promise((resolve, reject) => {{
            const deadline = Date.now() + {timeout * 1000};
            const check = () => {{
                let value; try {{ value = ({expression}); }} catch (e) {{ value = null; }}
                if (value) resolve(value);
                else if (Date.now() > deadline) reject(new Error("timed out: " + {json.dumps(expression)}));
                else setTimeout(check, 50);
            }};
            check();
        }})"""
        return self.js(script)

    def login(self, authid: str, ticket: str, method: str = "ticket") -> None:
        self.js(
            f"""document.getElementById('authmethod').value = {json.dumps(method)};
            document.getElementById('authid').value = {json.dumps(authid)};
            document.getElementById('ticket').value = {json.dumps(ticket)};
            document.getElementById('login-button').click(); true"""
        )

    def show(self, page: str) -> None:
        self.js(f"document.querySelector('#tabs button[data-page={page}]').click(); true")

    def text(self, element_id: str) -> str:
        return str(self.js(f"document.getElementById({json.dumps(element_id)}).textContent"))

    def screenshot(self, name: str) -> Path:
        shot = self.page.devtools.send("Page.captureScreenshot", self.page.session, format="png")
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

    def console_errors(self) -> list[str]:
        """Errors the page logged or threw so far (console.error, exceptions, failed loads)."""
        self.js("true")  # a round trip: every event sent before it has arrived
        found = []
        for event in self.page.devtools._events:
            params = event.get("params", {})
            method = event.get("method")
            if method == "Runtime.exceptionThrown":
                found.append(str(params.get("exceptionDetails", {}).get("text")))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                found.append(json.dumps(params.get("args")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                found.append(str(params["entry"].get("text")))
        return found


def open_console(browser: Chromium, node: BrokerProcess, shots: Path) -> ConsolePage:
    page = browser.open_page(f"{node.http_base}/console/")
    console = ConsolePage(page, shots)
    console.until("window.consoleState && window.consoleState.config")
    return console
