"""Fixtures: one broker process serving the HTTP API of realm1 (and a throttled realm2)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.broker.interop._autobahn import ClientPool
from tests.support.processes import BrokerProcess, start_broker

from ._support import KEY_HASH, Api, config_text, write_config

REALM2 = f"""
[[realm]]
name = "realm2"
anonymous = true
[realm.http_api]
publish_path = "/r2/publish"
call_path = "/r2/call"
openapi_path = ""
rate = 1.0
burst = 2
max_body = 200
[realm.http_api.keys.svc]
key_hash = "{KEY_HASH}"
authid = "svc2"
role = "anonymous"
"""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    directory = tmp_path_factory.mktemp("httpapi")
    path = write_config(directory, config_text() + REALM2)
    process = start_broker("--config", str(path))
    yield process
    process.stop()


@pytest.fixture
def api(broker: BrokerProcess) -> Iterator[Api]:
    client = Api(broker.http_base)
    yield client
    client.close()


@pytest.fixture
async def pool(broker: BrokerProcess) -> AsyncIterator[ClientPool]:
    clients = ClientPool(broker.url)
    yield clients
    await clients.close_all()
