"""examples/chat: messages between two terminals, presence from the session meta API."""

from __future__ import annotations

from tests.examples.conftest import Example, finish, send_line
from tests.support.processes import BrokerProcess


def test_chat_messages_and_presence(fresh_broker: BrokerProcess, example: Example) -> None:
    alice = example(fresh_broker, "chat/chat.py", "--name", "alice", stdin=True)
    alice.wait_for_output("^online: alice$")

    bob = example(fresh_broker, "chat/chat.py", "--name", "bob", stdin=True)
    bob.wait_for_output("^online: alice, bob$")
    alice.wait_for_output(r"^\* bob joined$")

    send_line(bob, "hi alice")
    alice.wait_for_output("^<bob> hi alice$")
    send_line(alice, "hello bob")
    bob.wait_for_output("^<alice> hello bob$")
    send_line(alice, "/who")
    alice.wait_for_output("^online: alice, bob$", start=2)

    assert bob.proc.stdin is not None
    bob.proc.stdin.close()  # Ctrl-D: bob leaves
    assert "bye" in finish(bob)
    alice.wait_for_output(r"^\* bob left$")
    assert "<alice>" not in alice.output  # a publisher does not get its own messages
