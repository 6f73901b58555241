"""Headless Chromium driven over the DevTools protocol (a tiny client, no downloads).

``Chromium.start(tmp)`` runs Debian's ``chromium`` with ``--remote-debugging-port=0`` and
reads the DevTools URL from the line it prints; ``open_page`` attaches to a new tab;
``PageSession.evaluate`` runs JavaScript there (awaiting promises).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from websockets.sync.client import ClientConnection, connect

from tests.support.processes import BrokerProcess

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--no-first-run",
    "--no-default-browser-check",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    for name in CHROMIUM_NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


class DevTools:
    """One DevTools WebSocket: commands by id, events kept until asked for."""

    def __init__(self, url: str, timeout: float) -> None:
        self.timeout = timeout
        self._stack = contextlib.ExitStack()
        self._ws: ClientConnection = self._stack.enter_context(
            connect(url, max_size=None, open_timeout=timeout)
        )
        self._next = 0
        self._events: list[dict[str, Any]] = []

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        self._ws.send(json.dumps(message))
        while True:
            reply = self._receive()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                result: dict[str, Any] = reply.get("result", {})
                return result
            self._events.append(reply)

    def wait_event(self, method: str, session: str | None = None) -> dict[str, Any]:
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    self._events.remove(event)
                    return event
            self._events.append(self._receive())

    def _receive(self) -> dict[str, Any]:
        data = self._ws.recv(timeout=self.timeout)
        message: dict[str, Any] = json.loads(data)
        return message

    def close(self) -> None:
        self._stack.close()


@dataclass
class PageSession:
    devtools: DevTools
    session: str

    def navigate(self, url: str) -> None:
        self.devtools.send("Page.enable", self.session)
        self.devtools.send("Page.navigate", self.session, url=url)
        self.devtools.wait_event("Page.loadEventFired", self.session)

    def evaluate(self, expression: str) -> Any:
        result = self.devtools.send(
            "Runtime.evaluate",
            self.session,
            expression=expression,
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            details = result["exceptionDetails"]
            raise AssertionError(details.get("exception", {}).get("description", details))
        return result["result"].get("value")


class Chromium:
    """A headless Chromium process and its browser-level DevTools connection."""

    def __init__(self, process: BrokerProcess, devtools: DevTools) -> None:
        self.process = process
        self.devtools = devtools

    @classmethod
    def start(cls, executable: str, profile: Path, timeout: float = 30.0) -> Chromium:
        argv = [executable, *_FLAGS, f"--user-data-dir={profile}", "about:blank"]
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        process = BrokerProcess(proc=proc, url="", args=argv)
        try:
            output = process.wait_for_output(r"DevTools listening on ws://", timeout=timeout)
            url = next(
                line.split("DevTools listening on ", 1)[1].strip()
                for line in output.splitlines()
                if "DevTools listening on " in line
            )
            return cls(process, DevTools(url, timeout))
        except BaseException:
            process.kill()
            raise

    def open_page(self, url: str) -> PageSession:
        target = self.devtools.send("Target.createTarget", url="about:blank")["targetId"]
        session = self.devtools.send("Target.attachToTarget", targetId=target, flatten=True)
        page = PageSession(self.devtools, session["sessionId"])
        page.navigate(url)
        return page

    def close(self) -> None:
        try:
            self.devtools.send("Browser.close")
        except Exception:
            pass
        self.devtools.close()
        self.process.stop(timeout=10)
