"""Autobahn|JS in Node over RawSocket (TCP on the WebSocket port, and a Unix socket),
against an Autobahn|Python WebSocket peer: pub/sub and calls both ways."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.types import PublishOptions

from tests.broker.interop._autobahn import connect
from tests.support.processes import BrokerProcess, start_broker

VERSION = "22.11.1"
SCRIPT = r"""
const autobahn = require("autobahn");
const where = JSON.parse(process.env.WAMP_RAWSOCKET);
const connection = new autobahn.Connection(
  { transports: [Object.assign({ type: "rawsocket" }, where)], realm: "realm1", max_retries: 0 });
const say = (line) => process.stdout.write(JSON.stringify(line) + "\n");
connection.onopen = async (session) => {
  try {
    let gotEvent;
    const event = new Promise((r) => { gotEvent = r; });
    await session.subscribe("com.node.to_node", (args) => gotEvent(args[0]));
    await session.register("com.node.mul", (args) => args[0] * args[1]);
    await session.publish("com.node.from_node", ["hi from node"], {}, { acknowledge: true });
    const sum = await session.call("com.node.add", [2, 3]);
    say({ ready: connection.transport.info.type, sum: sum });
    say({ received: await event });
    connection.close();
  } catch (error) {
    say({ error: String((error && error.error) || error) });
    process.exit(1);
  }
};
connection.onclose = (reason) => { say({ closed: reason }); process.exit(0); };
connection.open();
"""


@pytest.fixture(scope="session")
def autobahn_node() -> Path:
    """Autobahn|JS for Node (it has the RawSocket transport), from npm once into a cache."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = base / "wamp-broker" / f"autobahn-node-{VERSION}"
    modules = target / "node_modules"
    if not (modules / "autobahn" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None or shutil.which("node") is None:
            pytest.skip("node/npm are not installed: cannot run Autobahn|JS in Node")
        target.mkdir(parents=True, exist_ok=True)
        package: dict[str, Any] = {
            "name": "wamp-broker-autobahn-node",
            "private": True,
            "dependencies": {"autobahn": VERSION},
        }
        (target / "package.json").write_text(json.dumps(package))
        subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=target,
            check=True,
            timeout=300,
        )
    return modules


@pytest.fixture(scope="module")
def node_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[BrokerProcess, str]]:
    tmp = tmp_path_factory.mktemp("node")
    path = str(tmp / "wamp.sock")
    config = tmp / "broker.toml"
    config.write_text(f'[[listener]]\npath = "{path}"\n\n[[realm]]\nname = "realm1"\n')
    proc = start_broker("--config", str(config))
    yield proc, path
    proc.stop()


async def run_node(modules: Path, where: dict[str, Any], broker: BrokerProcess) -> None:
    python = await connect(broker.url, "cbor")
    process: asyncio.subprocess.Process | None = None
    try:
        await python.register(lambda a, b: a + b, "com.node.add")
        from_node: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        await python.subscribe(lambda text: from_node.set_result(text), "com.node.from_node")
        process = await asyncio.create_subprocess_exec(
            "node",
            "-e",
            SCRIPT,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "NODE_PATH": str(modules), "WAMP_RAWSOCKET": json.dumps(where)},
        )
        assert process.stdout is not None

        async def line() -> dict[str, Any]:
            assert process is not None and process.stdout is not None
            raw = await asyncio.wait_for(process.stdout.readline(), 20)
            decoded: dict[str, Any] = json.loads(raw)
            return decoded

        assert await line() == {"ready": "rawsocket", "sum": 5}
        assert await asyncio.wait_for(from_node, 5) == "hi from node"
        assert await python.call("com.node.mul", 6, 7) == 42  # Python calls Node
        await python.publish(
            "com.node.to_node", "hello node", options=PublishOptions(acknowledge=True)
        )
        assert await line() == {"received": "hello node"}
        assert "closed" in await line()
        assert await asyncio.wait_for(process.wait(), 10) == 0
    finally:
        if process is not None and process.returncode is None:
            process.kill()
            await process.wait()
        await python.close()


async def test_autobahn_js_node_over_rawsocket_tcp(
    autobahn_node: Path, node_broker: tuple[BrokerProcess, str]
) -> None:
    broker, _ = node_broker
    await run_node(autobahn_node, {"host": "127.0.0.1", "port": broker.port}, broker)


async def test_autobahn_js_node_over_a_unix_socket(
    autobahn_node: Path, node_broker: tuple[BrokerProcess, str]
) -> None:
    broker, path = node_broker
    await run_node(autobahn_node, {"path": path}, broker)
