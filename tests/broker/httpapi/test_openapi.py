"""The OpenAPI description in protocol_spec matches the implementation and is served."""

from __future__ import annotations

import asyncio
import json
import urllib.request

from broker.httpapi import api as http_api
from broker.httpapi.settings import HttpApiSettings
from tests.support.processes import BrokerProcess

SPEC = json.loads(http_api.OPENAPI_FILE.read_text(encoding="utf-8"))


def test_paths_are_the_default_routes() -> None:
    defaults = HttpApiSettings(realm="r")
    assert set(SPEC["paths"]) == {defaults.publish_path, defaults.call_path, defaults.openapi_path}


def test_every_status_the_code_can_give_is_documented() -> None:
    call = set(SPEC["paths"]["/call"]["post"]["responses"])
    publish = set(SPEC["paths"]["/publish"]["post"]["responses"])
    mapped = {str(s) for s in http_api.STATUS_OF.values()}
    # the request layer: validation 400, credentials 401, 405, 413, 429; a session ended 503
    request_layer = {"200", "400", "401", "403", "405", "413", "429", "503", "504"}
    assert mapped | request_layer | {str(http_api.APPLICATION_ERROR_STATUS)} <= call
    assert (mapped - {"404"}) | request_layer <= publish


def test_request_schemas_match_the_validation() -> None:
    schemas = SPEC["components"]["schemas"]
    publish_options = set(schemas["PublishRequest"]["properties"]["options"]["properties"])
    assert publish_options == set(http_api._LIST_OPTIONS) | set(http_api._BOOL_OPTIONS)
    assert schemas["PublishRequest"]["required"] == ["topic"]
    assert schemas["CallRequest"]["required"] == ["procedure"]
    assert set(schemas["CallRequest"]["properties"]["options"]["properties"]) == {
        "timeout",
        "disclose_me",
    }
    assert set(schemas["Error"]["required"]) == {"error", "args", "kwargs"}
    batch = SPEC["paths"]["/publish"]["post"]["requestBody"]["content"]["application/json"]
    assert batch["schema"]["oneOf"][1]["maxItems"] == http_api._MAX_BATCH


def test_every_documented_error_status_is_reachable() -> None:
    """No documented status without a code path: each is named in api.py."""
    source = http_api.__file__
    text = open(source, encoding="utf-8").read()
    for path in ("/publish", "/call"):
        for status in SPEC["paths"][path]["post"]["responses"]:
            if status == "200":
                continue
            named = (
                int(status) in http_api.STATUS_OF.values()
                or int(status) == http_api.APPLICATION_ERROR_STATUS
                or f"{status}," in text
                or f"{status})" in text
                or status in ("401", "405", "413")
            )
            assert named, (path, status)


async def test_the_description_is_served(broker: BrokerProcess) -> None:
    def fetch() -> bytes:
        with urllib.request.urlopen(broker.http_base + "/openapi.json", timeout=5) as response:
            assert response.headers["Content-Type"] == "application/json"
            return bytes(response.read())

    assert json.loads(await asyncio.to_thread(fetch)) == SPEC
