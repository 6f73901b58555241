"""The echo client: sends each line of standard input to ``com.example.echo``, prints replies.

    python examples/echo/client.py [--url ws://127.0.0.1:8080/ws] [--realm realm1]

Type lines (or pipe a file); end with Ctrl-D. Each reply is printed as ``echo: LINE``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import client_sdk


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("WAMP_URL", "ws://127.0.0.1:8080/ws"))
    parser.add_argument("--realm", default=os.environ.get("WAMP_REALM", "realm1"))
    args = parser.parse_args()

    async with client_sdk.connect(args.url, args.realm) as session:
        print("connected; type lines, Ctrl-D to quit", file=sys.stderr, flush=True)
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)  # stdin blocks: keep the loop free
            if not line:
                break
            result = await session.call("com.example.echo", line.rstrip("\n"))
            print(f"echo: {result.value}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
