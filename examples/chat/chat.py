"""A terminal chat with presence from the WAMP session meta API.

    python examples/chat/chat.py --name alice [--url ws://127.0.0.1:8080/ws] [--realm realm1]

Lines you type are published to ``com.example.chat.message``; messages from others are
printed as ``<name> text``. Presence comes from the router, not from the chat clients:
the name is the session's ``authid`` (anonymous authentication with a requested
authid), ``wamp.session.list`` + ``wamp.session.get`` say who is online at start (and
on ``/who``), and the meta events ``wamp.session.on_join`` / ``on_leave`` announce
arrivals and departures. Ctrl-D (end of input) leaves.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any

import client_sdk

TOPIC = "com.example.chat.message"


def say(text: str) -> None:
    print(text, flush=True)


async def online(session: client_sdk.Session) -> list[str]:
    """Names (authids) of every session in the realm, from the meta API."""
    ids = (await session.call("wamp.session.list")).value or []
    names = []
    for session_id in ids:
        try:
            info: dict[str, Any] = (await session.call("wamp.session.get", session_id)).value
        except client_sdk.ApplicationError:  # left in the meantime
            continue
        names.append(str(info.get("authid")))
    return sorted(names)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--url", default=os.environ.get("WAMP_URL", "ws://127.0.0.1:8080/ws"))
    parser.add_argument("--realm", default=os.environ.get("WAMP_REALM", "realm1"))
    args = parser.parse_args()

    auth = client_sdk.AnonymousAuth(args.name)  # anonymous, but asking for this authid
    async with client_sdk.connect(args.url, args.realm, auth=auth) as session:
        names: dict[int, str] = {}  # session id -> name, for on_leave

        def joined(event: client_sdk.Event) -> None:
            info = event.args[0]
            names[info["session"]] = info["authid"]
            if info["session"] != session.id:
                say(f"* {info['authid']} joined")

        def left(event: client_sdk.Event) -> None:
            session_id, authid = event.args[0], event.args[1] if len(event.args) > 1 else None
            say(f"* {authid or names.get(session_id, session_id)} left")

        def message(event: client_sdk.Event) -> None:
            say(f"<{event.kwargs.get('name', '?')}> {event.kwargs.get('text', '')}")

        await session.subscribe("wamp.session.on_join", joined)
        await session.subscribe("wamp.session.on_leave", left)
        await session.subscribe(TOPIC, message)
        say(f"online: {', '.join(await online(session))}")

        while True:
            line = await asyncio.to_thread(sys.stdin.readline)  # stdin blocks: keep the loop free
            if not line:
                break
            text = line.rstrip("\n")
            if text == "/who":
                say(f"online: {', '.join(await online(session))}")
            elif text:
                await session.publish(TOPIC, name=args.name, text=text)
    say("bye")


if __name__ == "__main__":
    asyncio.run(main())
