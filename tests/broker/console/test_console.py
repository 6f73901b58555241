"""The web console in headless Chromium against a real 2-node cluster with real Redis.

The console page is served by node n0 and logs in there; test sessions join node n1,
so everything the page shows of them crossed the cluster. Page calls run in a thread
(``asyncio.to_thread``) so the Autobahn clients' event loop keeps running meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.broker.interop._autobahn import connect
from tests.examples.cdp import Chromium
from tests.support.processes import BrokerProcess

from .conftest import ADMIN_SEED, ADMIN_TICKET, VIEWER_TICKET, ConsolePage, open_console

APP_SHOWN = "!document.getElementById('app').hidden"


def logged_in(browser: Chromium, node: BrokerProcess, shots: Path) -> ConsolePage:
    page = open_console(browser, node, shots)
    page.login("admin", ADMIN_TICKET)
    page.until(APP_SHOWN + " && window.consoleState.ready")
    return page


def test_login_refuses_wrong_ticket_and_other_roles(
    console_nodes: list[BrokerProcess], chromium: Chromium, tmp_path: Path
) -> None:
    page = open_console(chromium, console_nodes[0], tmp_path)
    page.login("admin", "not-the-ticket")
    error = page.until("document.getElementById('login-error').textContent")
    assert "login failed" in error and "wamp.error." in error
    assert page.js(APP_SHOWN) is False

    page.js("document.getElementById('login-error').textContent = ''; true")
    page.login("viewer", VIEWER_TICKET)
    error = page.until("document.getElementById('login-error').textContent")
    assert error.startswith("refused: viewer has role user")
    assert page.js(APP_SHOWN) is False
    page.screenshot("refused")

    page.login("admin", ADMIN_TICKET)
    page.until(APP_SHOWN)
    assert page.text("who") == "admin (admin) on realm1"
    assert page.console_errors() == []


def test_login_with_cryptosign(
    console_nodes: list[BrokerProcess], chromium: Chromium, tmp_path: Path
) -> None:
    page = open_console(chromium, console_nodes[1], tmp_path)
    page.login("keyadmin", "00" * 32, "cryptosign")  # not keyadmin's key
    error = page.until("document.getElementById('login-error').textContent")
    assert error.startswith("login failed: wamp.error.")
    page.login("keyadmin", "not hex", "cryptosign")
    assert page.until("document.getElementById('login-error').textContent") == (
        "the private key seed is 64 hex digits"
    )
    page.login("keyadmin", ADMIN_SEED, "cryptosign")
    page.until(APP_SHOWN)
    assert page.text("who") == "keyadmin (admin) on realm1"
    assert page.console_errors() == []


def test_nodes_page_lists_both_nodes(
    console_nodes: list[BrokerProcess], chromium: Chromium, tmp_path: Path
) -> None:
    page = logged_in(chromium, console_nodes[0], tmp_path)
    rows = page.until(
        """(() => {
            const rows = [...document.querySelectorAll('#nodes-body tr')].map(
                (tr) => [...tr.children].map((td) => td.textContent));
            return rows.length === 2 && rows.every((r) => r[1] === 'up' && r[2].endsWith('ms'))
                && rows;
        })()"""
    )
    assert [r[0] for r in rows] == ["n0", "n1"]
    page.show("realms")
    realms = page.until("document.querySelector('#realms-body tr td')?.textContent")
    assert realms == "realm1"
    page.show("nodes")
    page.screenshot("nodes")
    assert page.console_errors() == []


async def test_sessions_page_kills_a_session_on_the_other_node(
    console_nodes: list[BrokerProcess], chromium: Chromium, tmp_path: Path
) -> None:
    victim = await connect(console_nodes[1].url, authid="console-victim")
    try:
        page = await asyncio.to_thread(logged_in, chromium, console_nodes[0], tmp_path)
        await asyncio.to_thread(page.show, "sessions")
        cells = await asyncio.to_thread(
            page.until,
            f"""(() => {{
                const search = document.getElementById('session-search');
                if (search.value !== 'console-victim') {{
                    search.value = 'console-victim'; search.dispatchEvent(new Event('input'));
                }}
                const tr = document.querySelector('#sessions-body button[data-session="{victim.id}"]')
                    ?.closest('tr');
                if (!tr) {{ document.getElementById('session-refresh').click(); return null; }}
                return [...tr.children].map((td) => td.textContent);
            }})()""",
        )
        assert cells[:3] == [str(victim.id), "console-victim", "anonymous"]
        assert cells[3:5] == ["websocket", "wamp.2.json"]
        assert cells[5].startswith("tcp4:127.0.0.1:") and cells[6] == "n1"
        await asyncio.to_thread(page.screenshot, "sessions")
        await asyncio.to_thread(
            page.js,
            f"document.querySelector('#sessions-body button[data-session=\"{victim.id}\"]')"
            ".click(); true",
        )
        details = await asyncio.wait_for(asyncio.shield(victim.left), 10)
        assert details.reason == "wamp.close.killed"
        assert details.message == "killed from the console"
        status = await asyncio.to_thread(
            page.until, "document.getElementById('sessions-status').textContent"
        )
        assert status == f"killed session {victim.id}"
        assert await asyncio.to_thread(page.console_errors) == []
    finally:
        await victim.close()


async def test_publish_tool_reaches_an_autobahn_subscriber(
    console_nodes: list[BrokerProcess], chromium: Chromium, tmp_path: Path
) -> None:
    subscriber = await connect(console_nodes[1].url)
    received: asyncio.Future[tuple[tuple[object, ...], dict[str, object]]] = (
        asyncio.get_running_loop().create_future()
    )

    def on_event(*args: object, **kwargs: object) -> None:
        if not received.done():
            received.set_result((args, kwargs))

    try:
        await subscriber.subscribe(on_event, "com.example.console.news")
        await subscriber.register(lambda x: x * 2, "com.example.console.double")
        page = await asyncio.to_thread(logged_in, chromium, console_nodes[0], tmp_path)
        await asyncio.to_thread(page.show, "registrations")
        await asyncio.to_thread(
            page.until,
            """[...document.querySelectorAll('#registrations-body tr')].some(
                (tr) => [...tr.children].map((td) => td.textContent).slice(1).join('|')
                    === 'com.example.console.double|exact|single|n1: 1')
              || (document.getElementById('reg-refresh').click(), false)""",
        )
        await asyncio.to_thread(page.show, "events")
        await asyncio.to_thread(
            page.js,
            """document.getElementById('watch-topic').value = 'com.example.console.';
            document.getElementById('watch-start').click(); true""",
        )
        await asyncio.to_thread(
            page.until,
            "document.getElementById('watch-status').textContent"
            " === 'watching com.example.console. (prefix)'",
        )
        await asyncio.to_thread(page.show, "subscriptions")
        # the subscription on n1 is known on n0 once the console lists it there
        await asyncio.to_thread(
            page.until,
            """[...document.querySelectorAll('#subscriptions-body tr')].some(
                (tr) => tr.children[1].textContent === 'com.example.console.news'
                    && tr.children[3].textContent === 'n1: 1')
              || (document.getElementById('sub-refresh').click(), false)""",
        )
        await asyncio.to_thread(page.show, "tools")
        await asyncio.to_thread(
            page.js,
            """document.getElementById('pub-topic').value = 'com.example.console.news';
            document.getElementById('pub-args').value = '[1, "two"]';
            document.getElementById('pub-kwargs').value = '{"three": [3]}';
            document.getElementById('pub-send').click(); true""",
        )
        args, kwargs = await asyncio.wait_for(received, 10)
        assert args == (1, "two") and kwargs == {"three": [3]}
        shown = await asyncio.to_thread(
            page.until, "document.getElementById('pub-result').textContent"
        )
        assert shown.startswith("published to com.example.console.news")
        seen = await asyncio.to_thread(
            page.until, "document.querySelector('#events-list li')?.textContent"
        )
        assert seen.endswith('com.example.console.news {"args":[1,"two"],"kwargs":{"three":[3]}}')

        await asyncio.to_thread(
            page.js,
            """document.getElementById('call-procedure').value = 'wamp.session.count';
            document.getElementById('call-args').value = '[["anonymous"]]';
            document.getElementById('call-send').click(); true""",
        )
        result = await asyncio.to_thread(
            page.until, "document.getElementById('call-result').textContent"
        )
        assert result.replace(" ", "").replace("\n", "") == "1"
        await asyncio.to_thread(page.screenshot, "tools")
        await asyncio.to_thread(
            page.js,
            """document.getElementById('call-procedure').value = 'com.example.console.double';
            document.getElementById('call-args').value = '[21]';
            document.getElementById('call-result').textContent = '';
            document.getElementById('call-send').click(); true""",
        )
        doubled = await asyncio.to_thread(
            page.until, "document.getElementById('call-result').textContent"
        )
        assert doubled.replace(" ", "").replace("\n", "") == "42"
        assert await asyncio.to_thread(page.console_errors) == []
    finally:
        await subscriber.close()


async def test_rates_plot_moves_under_load(
    console_nodes: list[BrokerProcess], chromium: Chromium, tmp_path: Path
) -> None:
    page = await asyncio.to_thread(logged_in, chromium, console_nodes[0], tmp_path)
    await asyncio.to_thread(page.show, "rates")
    before = await asyncio.to_thread(page.js, "document.getElementById('rates-plot').toDataURL()")
    publisher = await connect(console_nodes[1].url)
    try:
        moved = asyncio.create_task(
            asyncio.to_thread(
                page.until,
                "window.consoleState.series.slice(-5).some((p) => p[1] > 50)",
                20.0,
            )
        )
        deadline = time.monotonic() + 20
        sent = 0
        while not moved.done() and sent < 20_000 and time.monotonic() < deadline:
            await asyncio.gather(
                *(
                    publisher.publish("com.example.console.load", i, options=_ACK)
                    for i in range(100)
                )
            )
            sent += 100
        assert await moved
        await asyncio.to_thread(page.js, "new Promise((r) => setTimeout(r, 1100))")
        after = await asyncio.to_thread(
            page.js, "document.getElementById('rates-plot').toDataURL()"
        )
        assert after != before
        legend = await asyncio.to_thread(page.text, "rates-legend")
        assert "messages in:" in legend
        await asyncio.to_thread(page.screenshot, "rates")
        assert await asyncio.to_thread(page.console_errors) == []
    finally:
        await publisher.close()


def _ack() -> object:
    from autobahn.wamp.types import PublishOptions

    return PublishOptions(acknowledge=True)


_ACK = _ack()
