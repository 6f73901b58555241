"""examples/hello: the client gets "Hello NAME!" from the service through the broker."""

from __future__ import annotations

from tests.examples.conftest import Example, finish
from tests.support.processes import BrokerProcess


def test_hello_client_gets_greeting_from_service(broker: BrokerProcess, example: Example) -> None:
    service = example(broker, "hello/service.py")
    service.wait_for_output(r"ready: com\.example\.hello\.greet registered")

    output = finish(example(broker, "hello/client.py", "Alice"))

    assert output.strip() == "Hello Alice!"


def test_hello_client_without_service_reports_no_such_procedure(
    fresh_broker: BrokerProcess, example: Example
) -> None:
    client = example(fresh_broker, "hello/client.py", "Bob")
    assert client.proc.wait(15) == 1
    assert "wamp.error.no_such_procedure" in client.wait_for_output("no_such_procedure")
