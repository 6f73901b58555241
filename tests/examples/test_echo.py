"""examples/echo: every stdin line comes back as "echo: LINE"."""

from __future__ import annotations

from tests.examples.conftest import Example, finish, send_line
from tests.support.processes import BrokerProcess


def test_echo_client_prints_each_line_back(broker: BrokerProcess, example: Example) -> None:
    service = example(broker, "echo/service.py")
    service.wait_for_output(r"ready: com\.example\.echo registered")
    client = example(broker, "echo/client.py", stdin=True)

    for line in ("one", "two words", "üñí"):
        send_line(client, line)
        client.wait_for_output(f"^echo: {line}$")
    assert client.proc.stdin is not None
    client.proc.stdin.close()
    output = finish(client)

    assert [x for x in output.splitlines() if x.startswith("echo:")] == [
        "echo: one",
        "echo: two words",
        "echo: üñí",
    ]
