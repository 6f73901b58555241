"""A guessing run against a real broker, with a witness session in another realm.

Ten connections send up to 1,000 wrong credentials (ticket, wampcra, and a ticket
for an authid only the dynamic authenticator knows), each from its own loopback
address, for at most a few seconds. The assertions are about throttling, not
timing: every answer is the one failure ABORT; the broker checked only the free
failures plus a few per second (``wamp_auth_failures_total``) and refused the rest
unchecked (``wamp_auth_throttled_total``); the witness's acknowledged publishes
all came back; another address and principal still joins. The latency figures are
in bench/auth_guess.py.
"""

from __future__ import annotations

import asyncio
import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp import auth as ab_auth

from broker.auth.secrets import hash_ticket
from broker.auth.wampcra import derive_key
from broker.core.auth_guard import ADDRESS_POLICY, AUTHID_POLICY
from tests.broker.security._wire import ABORT, CHALLENGE, PUBLISH, PUBLISHED, RawClient
from tests.support.processes import BrokerProcess, start_broker

FAILED = ("wamp.error.authentication_failed", "authentication failed")
ATTEMPTS, CONNECTIONS, MAX_TIME = 1000, 10, 8.0
SALT = "salt-of-bob"


@pytest.fixture(scope="module")
def guess_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config = tmp_path_factory.mktemp("guess") / "broker.toml"
    alice = hash_ticket("alice-ticket")  # the default rounds: ~50 ms per check
    olivia = hash_ticket("olivia-ticket", iterations=1000)
    bob = derive_key("bob-secret", SALT, 1000, 32).decode()
    config.write_text(f"""
[[realm]]
name = "secure"
anonymous = false
[realm.auth.ticket]
dynamic = "com.auth.authenticate"
dynamic_timeout = 2
[realm.auth.ticket.principals.alice]
ticket_hash = "{alice}"
role = "user"
[realm.auth.ticket.principals.olivia]
ticket_hash = "{olivia}"
role = "user"
[realm.auth.wampcra.principals.bob]
derived_key = "{bob}"
salt = "{SALT}"
iterations = 1000
keylen = 32
role = "user"
[[realm.role]]
name = "user"
permissions = [{{ uri = "com.app.", match = "prefix", allow = ["publish"] }}]

[[realm]]
name = "witness"
anonymous = true
""")
    proc = start_broker("--config", str(Path(config)))
    yield proc
    proc.stop()


def auth_counters(broker: BrokerProcess) -> dict[str, float]:
    """``wamp_auth_*_total`` for realm ``secure``, summed over authmethods."""
    with urllib.request.urlopen(broker.http_base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    found: dict[str, float] = {}
    for name, labels, value in re.findall(r"^(wamp_auth_\w+_total)\{(.*)\} (\S+)$", text, re.M):
        if 'realm="secure"' in labels.split(","):
            found[name] = found.get(name, 0.0) + float(value)
    return found


async def guess(url: str, method: str, authid: str, address: str) -> tuple[str, str] | None:
    """One wrong login from ``address``; the ABORT's (reason, message), None if none came."""
    client = await RawClient.connect(url, local_addr=(address, 0))
    try:
        authmethod = "wampcra" if method == "wampcra" else "ticket"
        details = {"roles": {"publisher": {}}, "authmethods": [authmethod], "authid": authid}
        await client.send([1, "secure", details])
        reply = await client.recv(10)
        if reply[0] == CHALLENGE:
            await client.send([5, "wrong-guess", {}])
            reply = await client.recv(10)
        return (reply[2], reply[1].get("message")) if reply[0] == ABORT else None
    finally:
        await client.close()


async def guessing_run(url: str, method: str, authid: str, address: str) -> list[Any]:
    """``CONNECTIONS`` loops of wrong logins: ``ATTEMPTS`` at most, ``MAX_TIME`` s at most."""
    answers: list[Any] = []
    started = 0
    deadline = time.monotonic() + MAX_TIME

    async def loop() -> None:
        nonlocal started
        while started < ATTEMPTS and time.monotonic() < deadline:
            started += 1
            answers.append(await guess(url, method, authid, address))

    await asyncio.gather(*(loop() for _ in range(CONNECTIONS)))
    return answers


async def witness_publishes(url: str, stop: asyncio.Event) -> int:
    """Acknowledged publishes in realm ``witness`` until ``stop``; how many came back."""
    client = await RawClient.connect(url)
    try:
        await client.join("witness")
        acknowledged = 0
        for _ in range(10_000):  # bounded; the run ends long before
            if stop.is_set():
                break
            reply = await client.request([PUBLISH, {"acknowledge": True}, "com.w.tick", [1]], 17)
            assert reply[0] == PUBLISHED, reply
            acknowledged += 1
            await asyncio.sleep(0.02)  # pacing, not synchronisation
        return acknowledged
    finally:
        await client.close()


@pytest.mark.parametrize(
    ("method", "authid", "address"),
    [
        ("ticket", "alice", "127.0.0.11"),
        ("wampcra", "bob", "127.0.0.12"),
        ("dynamic", "zed", "127.0.0.13"),  # no static principal: the dynamic procedure decides
    ],
)
async def test_guessing_run_is_throttled_and_another_realm_keeps_working(
    guess_broker: BrokerProcess, method: str, authid: str, address: str
) -> None:
    url = guess_broker.url
    before = auth_counters(guess_broker)
    stop = asyncio.Event()
    witness = asyncio.create_task(witness_publishes(url, stop))
    began = time.monotonic()
    answers = await guessing_run(url, method, authid, address)
    elapsed = time.monotonic() - began
    stop.set()
    acknowledged = await witness
    after = auth_counters(guess_broker)

    # every attempt got the one failure ABORT: nothing tells throttled from wrong
    assert answers and set(answers) == {FAILED}
    checked, refused = (
        after.get(name, 0) - before.get(name, 0)
        for name in ("wamp_auth_failures_total", "wamp_auth_throttled_total")
    )
    # the free failures, then at most one check per spacing slot (>= 0.5 s)
    free = min(ADDRESS_POLICY.free_failures, AUTHID_POLICY.free_failures)
    assert AUTHID_POLICY.free_failures <= checked <= free + elapsed / AUTHID_POLICY.base_delay + 1
    assert refused > 0 and checked + refused == len(answers)
    # the witness in another realm was answered throughout
    assert acknowledged > 0

    # another address and principal is not affected
    other = await RawClient.connect(url, local_addr=("127.0.0.2", 0))
    try:
        welcome = await other.join(
            "secure", authmethods=["ticket"], authid="olivia", sign=lambda _: "olivia-ticket"
        )
        assert welcome[2]["authid"] == "olivia"
    finally:
        await other.close()


async def test_wampcra_right_answer_still_joins(guess_broker: BrokerProcess) -> None:
    """The guesser's address is throttled, not the method: bob joins from elsewhere."""
    client = await RawClient.connect(guess_broker.url, local_addr=("127.0.0.3", 0))

    def sign(extra: dict[str, Any]) -> str:
        key = ab_auth.derive_key("bob-secret", extra["salt"], extra["iterations"], extra["keylen"])
        return str(ab_auth.compute_wcs(key, extra["challenge"]).decode("ascii"))

    try:
        welcome = await client.join("secure", authmethods=["wampcra"], authid="bob", sign=sign)
        assert welcome[2]["authid"] == "bob"
    finally:
        await client.close()
