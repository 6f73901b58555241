"""Throttling and offloading of authentication, on the sans-I/O router with a manual clock.

``AuthGuard`` spaces out and then refuses checks per address and per authid; the
router holds throttled answers back, runs ticket derivations on its ``Offload``
(refusing at once when it is full), bounds dynamic-authenticator calls, and answers
every one of these cases with the same ABORT as a wrong ticket.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from broker.auth.secrets import hash_ticket
from broker.auth.ticket import TicketAuthenticator, TicketPrincipal
from broker.core.auth_guard import AuthGuard, ThrottlePolicy
from broker.core.realm import RealmSettings
from broker.core.router import Router
from protocol_spec.messages import (
    Abort,
    Authenticate,
    Challenge,
    Hello,
    Invocation,
    Register,
    Welcome,
)
from tests.broker.core.harness import ALL_ROLES, Client, ManualClock

FAILED = ("wamp.error.authentication_failed", "authentication failed")
HASH = hash_ticket("right", iterations=10)
POLICY = ThrottlePolicy(
    free_failures=2, leak=0.0, lockout_after=5, lockout=30.0, base_delay=1.0, max_delay=4.0
)
LOOSE = ThrottlePolicy(free_failures=1000, leak=0.0, lockout_after=1000)


class HeldOffload:
    """An ``Offload`` that keeps work until the test runs it; ``capacity`` jobs at most."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.jobs: list[tuple[Callable[[], Any], Callable[[Any], None]]] = []

    def submit(self, work: Callable[[], Any], done: Callable[[Any], None]) -> bool:
        if len(self.jobs) >= self.capacity:
            return False
        self.jobs.append((work, done))
        return True

    def run_all(self) -> None:
        jobs, self.jobs = self.jobs, []
        for work, done in jobs:
            done(work())


def make_router(
    clock: ManualClock,
    address_policy: ThrottlePolicy = POLICY,
    authid_policy: ThrottlePolicy = LOOSE,
    **kwargs: Any,
) -> Router:
    ticket = TicketAuthenticator(
        {"alice": TicketPrincipal(HASH, "user"), "olivia": TicketPrincipal(HASH, "user")},
        dynamic="com.auth.authenticate",
    )
    secure = RealmSettings("secure", anonymous=True, authenticators=(ticket,))
    guard = AuthGuard(address_policy, authid_policy, clock=lambda: clock.now, max_wait=4.0)
    return Router([secure, RealmSettings("witness")], clock, guard=guard, **kwargs)


def attempt(router: Router, address: str, authid: str, ticket: str) -> Client:
    """Connect from ``address``, HELLO for ``authid``, answer the CHALLENGE with ``ticket``."""
    client = Client(router)
    client.peer.transport_info = {"type": "websocket", "peer": f"tcp4:{address}:50000"}
    client.send(Hello("secure", {"roles": ALL_ROLES, "authmethods": ["ticket"], "authid": authid}))
    client.take_one(Challenge)
    client.send(Authenticate(ticket, {}))
    return client


def aborted(client: Client) -> bool:
    """True when the client got exactly the failure ABORT (and nothing else)."""
    new = client.take()
    if not new:
        return False
    assert len(new) == 1 and isinstance(new[0], Abort), new
    assert (new[0].reason, new[0].details["message"]) == FAILED
    return True


def test_policy_spacing_doubles_up_to_its_cap() -> None:
    assert [POLICY.delay(level) for level in range(7)] == [0, 0, 1, 2, 4, 4, 4]


def test_free_failures_then_spaced_checks_then_lockout() -> None:
    clock = ManualClock()
    guard = AuthGuard(POLICY, LOOSE, clock=lambda: clock.now, max_wait=4.0)
    for _ in range(2):  # free: checked at once, answered at once
        assert guard.admit("10.0.0.1", "r", "a").wait == 0.0
        assert guard.failed("10.0.0.1", "r", "a", "ticket") == 0.0
    first = guard.admit("10.0.0.1", "r", "a")
    assert first.allowed and first.wait == 0.0  # takes the next slot, 1 s after now
    second = guard.admit("10.0.0.1", "r", "a")
    assert second.allowed and second.wait == 1.0  # spaced: waits for its slot
    assert guard.admit("10.0.0.9", "r", "a") == guard.admit("10.0.0.8", "r", "a")  # others free
    assert guard.failed("10.0.0.1", "r", "a", "ticket") == 1.0  # answer held back
    # the next slots are far: more than max_wait away means refused unchecked
    for _ in range(3):
        guard.admit("10.0.0.1", "r", "a")
    refused = guard.admit("10.0.0.1", "r", "a")
    assert not refused.allowed and refused.wait > 0.0
    for _ in range(2):
        guard.failed("10.0.0.1", "r", "a", "ticket")
    clock.now += 20.0  # slots are past, but 5 failures locked the address for 30 s
    assert not guard.admit("10.0.0.1", "r", "a").allowed
    clock.now += 11.0
    assert guard.admit("10.0.0.1", "r", "a").allowed
    assert guard.failures == {("r", "ticket"): 5}


def test_failures_leak_away() -> None:
    clock = ManualClock()
    policy = ThrottlePolicy(free_failures=2, leak=0.5, lockout_after=100)
    guard = AuthGuard(policy, LOOSE, clock=lambda: clock.now)
    for _ in range(4):
        guard.failed("10.0.0.1", "r", "", "ticket")
    assert guard.admit("10.0.0.1", "r", "").wait == 0.0  # takes the free slot
    assert guard.admit("10.0.0.1", "r", "").wait == 2.0  # 0.5 s doubled twice
    clock.now += 8.0  # 4 failures at 0.5/s: forgotten
    assert guard.admit("10.0.0.1", "r", "") == guard.admit("10.0.0.2", "r", "")
    assert len(guard) == 0


def test_per_authid_throttling_spans_addresses() -> None:
    clock = ManualClock()
    guard = AuthGuard(LOOSE, POLICY, clock=lambda: clock.now)
    for n in range(5):
        guard.failed(f"10.0.1.{n}", "r", "alice", "ticket")  # a distributed guess
    assert not guard.admit("10.0.2.1", "r", "alice").allowed
    assert guard.admit("10.0.2.1", "r", "bob").allowed
    assert guard.admit("10.0.2.1", "other-realm", "alice").allowed


def test_throttle_state_is_bounded() -> None:
    clock = ManualClock()
    guard = AuthGuard(POLICY, POLICY, clock=lambda: clock.now, max_entries=100)
    for n in range(1000):  # a botnet of addresses, each guessing another authid
        guard.failed(f"10.{n // 256}.{n % 256}.1", "r", f"user{n}", "ticket")
    assert len(guard) == 100
    assert guard.failures == {("r", "ticket"): 1000}


def test_router_holds_then_refuses_a_guesser_with_the_same_abort() -> None:
    clock = ManualClock()
    router = make_router(clock)
    for _ in range(2):  # free failures: answered at once
        assert aborted(attempt(router, "10.0.0.1", "alice", "wrong"))
    late = attempt(router, "10.0.0.1", "alice", "wrong")  # checked in the next slot
    assert aborted(late) is False  # held back: answered only later
    clock.advance(1.0)
    assert aborted(late)
    for _ in range(4):  # until refused unchecked, answered after a delay
        client = attempt(router, "10.0.0.1", "alice", "wrong")
        clock.advance(4.0)
        assert aborted(client)
    # locked out: even the right ticket is refused, with the same ABORT
    right = attempt(router, "10.0.0.1", "olivia", "right")
    clock.advance(4.0)
    assert aborted(right)
    assert router.guard.throttled[("secure", "ticket")] >= 1
    # another address is not affected
    other = attempt(router, "10.0.0.2", "olivia", "right")
    assert isinstance(other.take_one(Welcome), Welcome)


def test_a_session_that_leaves_while_held_or_deriving_is_forgotten() -> None:
    clock = ManualClock()
    offload = HeldOffload(capacity=4)
    router = make_router(clock, offload=offload)
    deriving = attempt(router, "10.0.0.1", "alice", "right")
    assert offload.jobs and deriving.take() == []
    deriving.leave_abruptly()
    offload.run_all()  # the answer comes back for a session that is gone
    assert deriving.take() == []
    assert not router._backlog


def test_a_session_aborted_while_deriving_gets_no_welcome() -> None:
    clock = ManualClock()
    offload = HeldOffload(capacity=4)
    router = make_router(clock, offload=offload)
    deriving = attempt(router, "10.0.0.1", "alice", "right")
    router.abort(deriving.session, "wamp.error.timeout", "no WELCOME within 10 s")
    assert isinstance(deriving.take_one(Abort), Abort)
    offload.run_all()  # the right ticket checks out, but the session was aborted
    assert deriving.take() == []
    assert not router.realms["secure"].sessions


def test_full_offload_fails_fast_with_the_same_abort() -> None:
    clock = ManualClock()
    offload = HeldOffload(capacity=1)
    router = make_router(clock, offload=offload)
    first = attempt(router, "10.0.0.1", "alice", "right")
    second = attempt(router, "10.0.0.2", "olivia", "right")
    assert aborted(second)  # at once, nothing queued
    assert router.guard.overloaded == {("secure", "ticket"): 1}
    assert router.guard.failures == {}  # not counted against the client
    offload.run_all()
    assert isinstance(first.take_one(Welcome), Welcome)


def test_dynamic_authenticator_calls_are_bounded() -> None:
    clock = ManualClock()
    router = make_router(clock)
    router.guard.max_consults = 2
    backend = Client(router)
    backend.join("secure")
    backend.send(Register(1, {}, "com.auth.authenticate"))
    backend.take()
    waiting = [attempt(router, f"10.0.0.{n}", f"user{n}", "t") for n in range(2)]
    assert sum(isinstance(m, Invocation) for m in backend.take()) == 2  # never answered
    third = attempt(router, "10.0.0.9", "user9", "t")
    assert aborted(third)
    assert router.guard.overloaded == {("secure", "ticket"): 1}
    for client in waiting:
        assert client.take() == []
        client.leave_abruptly()
    clock.advance(11.0)  # the calls time out: their slots are free again
    assert router.guard.consults == 0
