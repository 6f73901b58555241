"""Session behaviour against a scripted in-memory router (handshake, auth, violations)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
from typing import Any

import pytest

import protocol_spec as wamp
from client_sdk import (
    ApplicationError,
    CallOptions,
    JoinError,
    ProtocolViolation,
    SessionClosed,
    TransportLost,
    WampCraAuth,
)
from client_sdk.session import Session
from protocol_spec import errors

WELCOME_DETAILS = {
    "roles": {"broker": {"features": {}}, "dealer": {"features": {}}},
    "authid": "joe",
}


class ScriptedTransport:
    """A transport whose far end is the test: messages round-trip through a real codec."""

    def __init__(self, serializer: str = "json") -> None:
        self.serializer = wamp.by_name(serializer)
        self.sent: asyncio.Queue[Any] = asyncio.Queue()
        self.incoming: asyncio.Queue[Any] = asyncio.Queue()
        self.closed = False

    async def send(self, message: Any) -> None:
        if self.closed:
            raise TransportLost(errors.NETWORK_FAILURE, "closed")
        await self.sent.put(self.serializer.decode(self.serializer.encode(message)))

    async def recv(self) -> Any:
        item = await self.incoming.get()
        if item is None:
            raise TransportLost(errors.NETWORK_FAILURE, "connection lost")
        return self.serializer.decode(self.serializer.encode(item))

    async def close(self) -> None:
        self.closed = True

    def feed(self, message: Any) -> None:
        self.incoming.put_nowait(message)

    async def next_sent(self) -> Any:
        return await asyncio.wait_for(self.sent.get(), 2)


async def joined_session(transport: ScriptedTransport) -> Session:
    session = Session(transport, "realm1")
    transport.feed(wamp.Welcome(12345, WELCOME_DETAILS))
    await asyncio.wait_for(session.join(), 2)
    hello = await transport.next_sent()
    assert isinstance(hello, wamp.Hello)
    return session


async def test_join_sends_hello_and_reads_welcome() -> None:
    transport = ScriptedTransport()
    session = await joined_session(transport)
    assert session.id == 12345
    assert session.authid == "joe"
    assert session.is_open


async def test_wampcra_challenge_is_answered_with_the_hmac() -> None:
    transport = ScriptedTransport()
    session = Session(transport, "realm1", auth=WampCraAuth("joe", "s3cret"))
    transport.feed(wamp.Challenge("wampcra", {"challenge": '{"nonce": "abc"}'}))
    join = asyncio.create_task(session.join())
    hello = await transport.next_sent()
    assert hello.details["authmethods"] == ["wampcra"] and hello.details["authid"] == "joe"
    authenticate = await transport.next_sent()
    expected = base64.b64encode(
        hmac.new(b"s3cret", b'{"nonce": "abc"}', hashlib.sha256).digest()
    ).decode()
    assert isinstance(authenticate, wamp.Authenticate)
    assert authenticate.signature == expected
    transport.feed(wamp.Welcome(1, WELCOME_DETAILS))
    await asyncio.wait_for(join, 2)
    assert session.is_open


async def test_abort_on_join_raises_join_error_with_reason_and_message() -> None:
    transport = ScriptedTransport()
    session = Session(transport, "nope")
    transport.feed(wamp.Abort({"message": "no realm nope"}, errors.NO_SUCH_REALM))
    with pytest.raises(JoinError) as info:
        await asyncio.wait_for(session.join(), 2)
    assert info.value.reason == errors.NO_SUCH_REALM
    assert info.value.message == "no realm nope"
    assert transport.closed


async def test_welcome_without_roles_is_a_protocol_violation() -> None:
    transport = ScriptedTransport()
    session = Session(transport, "realm1")
    transport.feed(wamp.Welcome(1, {}))
    with pytest.raises(ProtocolViolation):
        await asyncio.wait_for(session.join(), 2)
    await transport.next_sent()  # HELLO
    abort = await transport.next_sent()
    assert isinstance(abort, wamp.Abort) and abort.reason == errors.PROTOCOL_VIOLATION


async def test_challenge_for_a_method_not_offered_is_a_protocol_violation() -> None:
    transport = ScriptedTransport()
    session = Session(transport, "realm1")
    transport.feed(wamp.Challenge("ticket", {}))
    with pytest.raises(ProtocolViolation):
        await asyncio.wait_for(session.join(), 2)


async def test_unexpected_message_after_welcome_aborts_and_fails_pending_calls() -> None:
    transport = ScriptedTransport()
    session = await joined_session(transport)
    call = asyncio.create_task(session.call("com.x"))
    assert isinstance(await transport.next_sent(), wamp.Call)
    transport.feed(wamp.Hello("realm1", {}))
    with pytest.raises(SessionClosed) as info:
        await asyncio.wait_for(call, 2)
    assert info.value.reason == errors.PROTOCOL_VIOLATION
    abort = await transport.next_sent()
    assert isinstance(abort, wamp.Abort) and abort.reason == errors.PROTOCOL_VIOLATION
    assert not session.is_open


async def test_call_error_carries_uri_args_and_kwargs() -> None:
    transport = ScriptedTransport()
    session = await joined_session(transport)
    call = asyncio.create_task(session.call("com.x", 1, options=CallOptions(timeout=2), key="v"))
    msg = await transport.next_sent()
    assert (msg.procedure, msg.args, msg.kwargs, msg.options) == (
        "com.x",
        [1],
        {"key": "v"},
        {"timeout": 2000},
    )
    transport.feed(wamp.Error(wamp.MessageType.CALL, msg.request, {}, "com.err", ["why"], {"n": 1}))
    with pytest.raises(ApplicationError) as info:
        await asyncio.wait_for(call, 2)
    assert (info.value.uri, info.value.args, info.value.kwargs) == ("com.err", ("why",), {"n": 1})


async def test_client_enforces_timeout_when_the_router_lacks_call_timeout() -> None:
    transport = ScriptedTransport()
    session = await joined_session(transport)
    call = asyncio.create_task(session.call("com.slow", options=CallOptions(timeout=0.05)))
    msg = await transport.next_sent()
    with pytest.raises(ApplicationError) as info:
        await asyncio.wait_for(call, 2)
    assert info.value.uri == errors.TIMEOUT
    cancel = await transport.next_sent()
    assert (
        isinstance(cancel, wamp.Cancel)
        and cancel.request == msg.request
        and cancel.options == {"mode": "kill"}
    )


async def test_router_goodbye_is_answered_and_closes_the_session() -> None:
    transport = ScriptedTransport()
    session = await joined_session(transport)
    transport.feed(wamp.Goodbye({"message": "bye"}, errors.CLOSE_SYSTEM_SHUTDOWN))
    why = await asyncio.wait_for(session.wait_closed(), 2)
    assert why.reason == errors.CLOSE_SYSTEM_SHUTDOWN
    reply = await transport.next_sent()
    assert isinstance(reply, wamp.Goodbye) and reply.reason == errors.CLOSE_GOODBYE_AND_OUT
    with pytest.raises(SessionClosed):
        await session.publish("com.x")


async def test_transport_loss_fails_pending_requests_with_transport_lost() -> None:
    transport = ScriptedTransport()
    session = await joined_session(transport)
    subscribe = asyncio.create_task(session.subscribe("com.t", lambda e: None))
    await transport.next_sent()
    transport.feed(None)
    with pytest.raises(TransportLost):
        await asyncio.wait_for(subscribe, 2)


async def test_leave_sends_goodbye_and_waits_for_the_reply() -> None:
    transport = ScriptedTransport()
    session = await joined_session(transport)
    leave = asyncio.create_task(session.leave())
    goodbye = await transport.next_sent()
    assert isinstance(goodbye, wamp.Goodbye) and goodbye.reason == errors.CLOSE_NORMAL
    transport.feed(wamp.Goodbye({}, errors.CLOSE_GOODBYE_AND_OUT))
    await asyncio.wait_for(leave, 2)
    assert transport.closed
    assert session.close_reason is not None and session.close_reason.reason == errors.CLOSE_NORMAL


async def test_cryptosign_join_sends_pubkey_and_a_verifiable_signature() -> None:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from client_sdk import CryptosignAuth

    transport = ScriptedTransport("msgpack")
    session = Session(transport, "realm1", auth=CryptosignAuth("alice", "01" * 32))
    challenge = bytes(range(100, 132))
    transport.feed(wamp.Challenge("cryptosign", {"challenge": challenge.hex()}))
    join = asyncio.create_task(session.join())
    hello = await transport.next_sent()
    assert hello.details["authmethods"] == ["cryptosign"]
    pubkey = bytes.fromhex(hello.details["authextra"]["pubkey"])
    authenticate = await transport.next_sent()
    signed = bytes.fromhex(authenticate.signature)
    assert signed[64:] == challenge
    Ed25519PublicKey.from_public_bytes(pubkey).verify(signed[:64], challenge)
    transport.feed(wamp.Welcome(1, WELCOME_DETAILS))
    await asyncio.wait_for(join, 2)


async def test_ticket_join_sends_the_ticket() -> None:
    from client_sdk import TicketAuth

    transport = ScriptedTransport("cbor")
    session = Session(transport, "realm1", auth=TicketAuth("joe", "open sesame"))
    transport.feed(wamp.Challenge("ticket", {}))
    transport.feed(wamp.Welcome(1, WELCOME_DETAILS))
    await asyncio.wait_for(session.join(), 2)
    await transport.next_sent()  # HELLO
    authenticate = await transport.next_sent()
    assert authenticate.signature == "open sesame"
