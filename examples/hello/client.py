"""The hello client: calls ``com.example.hello.greet`` with a name and prints the answer.

Usage::

    python examples/hello/client.py Alice [--url ws://127.0.0.1:8080/ws] [--realm realm1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

import client_sdk


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name")
    parser.add_argument("--url", default=os.environ.get("WAMP_URL", "ws://127.0.0.1:8080/ws"))
    parser.add_argument("--realm", default=os.environ.get("WAMP_REALM", "realm1"))
    args = parser.parse_args()

    async with client_sdk.connect(args.url, args.realm) as session:
        try:
            result = await session.call("com.example.hello.greet", args.name)
        except client_sdk.ApplicationError as exc:  # e.g. wamp.error.no_such_procedure
            print(f"error: {exc.uri}", file=sys.stderr)
            return 1
    print(result.value)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
