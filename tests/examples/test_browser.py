"""examples/browser: Autobahn|JS in headless Chromium subscribes, publishes, calls Python."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.examples.cdp import Chromium, find_chromium
from tests.examples.conftest import EXAMPLES, Example
from tests.support.processes import BrokerProcess

PACKAGE = EXAMPLES / "browser" / "package.json"


def _cache_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    version = json.loads(PACKAGE.read_text())["dependencies"]["autobahn-browser"]
    return base / "wamp-broker" / f"autobahn-browser-{version}"


@pytest.fixture(scope="session")
def autobahn_js() -> Path:
    """Autobahn|JS's browser bundle, installed from npm once into a cache directory."""
    target = _cache_dir()
    bundle = target / "node_modules" / "autobahn-browser" / "autobahn.min.js"
    if not bundle.is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is not installed: cannot fetch Autobahn|JS")
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(PACKAGE, target / "package.json")
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            check=True,
            timeout=300,
        )
    assert bundle.is_file()
    return bundle


@pytest.fixture
def chromium(tmp_path: Path) -> Iterator[Chromium]:
    executable = find_chromium()
    if executable is None:
        pytest.skip("chromium is not installed (bash .ci/test.sh installs it with apt-get)")
    browser = Chromium.start(executable, tmp_path / "profile")
    yield browser
    browser.close()


def test_page_subscribes_publishes_and_calls_python(
    broker: BrokerProcess, example: Example, autobahn_js: Path, chromium: Chromium
) -> None:
    server = example(
        broker, "browser/server.py", "--http-port", "0", "--autobahn", str(autobahn_js)
    )
    output = server.wait_for_output(r"open http://127\.0\.0\.1:\d+/")
    page_url = output.split("open ", 1)[1].split()[0]

    page = chromium.open_page(page_url)
    shown = page.evaluate("window.exampleDone")  # resolves (or rejects) when the page is done

    assert page.evaluate("document.getElementById('status').textContent") == "done"
    assert shown.splitlines() == [
        "subscribed: com.example.browser.chat",
        "published: hello from the browser",
        "received: hello from the browser",
        "called: com.example.browser.shout -> HELLO FROM THE BROWSER!",
    ]
