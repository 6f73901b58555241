"""Crossbar-style signed requests: valid, wrong key, stale timestamp, replayed nonce, modified body."""

from __future__ import annotations

import asyncio
import json
import random
import time

from broker.httpapi.auth import sign_request
from tests.broker.interop._autobahn import ClientPool

from ._support import SIGNER_SECRET, Api


def nonce() -> int:
    return random.randrange(1, 2**53)


async def test_a_signed_publish_reaches_a_subscriber(api: Api, pool: ClientPool) -> None:
    client = await pool.connect()
    got: asyncio.Queue[tuple[object, ...]] = asyncio.Queue()
    await client.subscribe(lambda *a: got.put_nowait(a), "com.signed")
    reply = await asyncio.to_thread(
        api.signed, "/publish", {"topic": "com.signed", "args": [1]}, nonce=nonce()
    )
    assert reply.status == 200, reply.body
    assert await asyncio.wait_for(got.get(), 5) == (1,)


def post_signed(api: Api, body: bytes, query: dict[str, str]) -> tuple[int, str]:
    saved, api.token = api.token, None
    try:
        reply = api.post("/publish", raw=body, query=query)
    finally:
        api.token = saved
    data = reply.json()
    return reply.status, data["args"][0] if "error" in data else ""


async def test_signature_checks(api: Api) -> None:
    body = json.dumps({"topic": "com.signed"}).encode()
    n = nonce()
    good = sign_request("cron", SIGNER_SECRET, body, seq=1, nonce=n)
    assert (await asyncio.to_thread(post_signed, api, body, good))[0] == 200
    status, text = await asyncio.to_thread(post_signed, api, body, good)
    assert (status, text) == (401, "signed request: nonce replayed")
    wrong_key = sign_request("cron", "not-the-secret", body, seq=1, nonce=nonce())
    status, text = await asyncio.to_thread(post_signed, api, body, wrong_key)
    assert (status, text) == (401, "signed request: bad signature")
    unknown = sign_request("nobody", SIGNER_SECRET, body, seq=1, nonce=nonce())
    status, text = await asyncio.to_thread(post_signed, api, body, unknown)
    assert (status, text) == (401, "unknown key in signed request")
    stale = sign_request("cron", SIGNER_SECRET, body, seq=1, nonce=nonce(), now=time.time() - 3600)
    status, text = await asyncio.to_thread(post_signed, api, body, stale)
    assert (status, text) == (401, "signed request: timestamp out of window")
    fresh = sign_request("cron", SIGNER_SECRET, body, seq=1, nonce=nonce())
    modified = json.dumps({"topic": "com.signed.other"}).encode()
    status, text = await asyncio.to_thread(post_signed, api, modified, fresh)
    assert (status, text) == (401, "signed request: bad signature")
    missing = {k: v for k, v in fresh.items() if k != "nonce"}
    status, text = await asyncio.to_thread(post_signed, api, body, missing)
    assert (status, text) == (400, "signed request: 'nonce' missing")
