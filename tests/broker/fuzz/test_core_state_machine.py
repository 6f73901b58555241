"""Hypothesis drives the sans-I/O router with random message sequences from several peers.

No I/O: fake peers record what the router sends; a manual clock fires timers. Frames
are built as lists (valid-looking, wrong types, out of order), decoded by the real
JSON codec, and fed to the router. Properties after every step:

- the router never raises (a bug would; bad input must become ABORT/ERROR);
- a peer the router closed was told why first (ABORT or GOODBYE with a reason);
- at the end, when every peer is gone, no realm holds a session, subscription,
  registration or pending call (nothing leaks).
"""

from __future__ import annotations

import heapq
import itertools
import json
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from broker.auth.secrets import hash_ticket
from broker.auth.ticket import TicketAuthenticator, TicketPrincipal
from broker.core.authorization import Authorization, Permission, Role
from broker.core.router import Router
from broker.core.settings import RealmSettings, SessionLimits
from protocol_spec import ProtocolError
from protocol_spec.messages import Abort, Goodbye, Message
from protocol_spec.serializers import by_name

CASES = 1000
STEPS = 60
JSON = by_name("json")
TICKET_HASH = hash_ticket("pw", iterations=10)


class FakePeer:
    """Records what the router sends; remembers whether it was closed and how."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.closed: tuple[int, str] | None = None
        self.transport_info: dict[str, Any] = {"type": "fuzz"}

    def send(self, message: Message, cache: dict[str, Any] | None = None) -> None:
        self.sent.append(message)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)


class _Timer:
    def __init__(self, callback: Callable[[], None]) -> None:
        self.callback, self.cancelled = callback, False

    def cancel(self) -> None:
        self.cancelled = True


class ManualScheduler:
    """Timers fire only when ``advance`` passes them."""

    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list[tuple[float, int, _Timer]] = []
        self.seq = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(callback)
        heapq.heappush(self.heap, (self.now + delay, next(self.seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self.heap and self.heap[0][0] <= target:
            when, _, timer = heapq.heappop(self.heap)
            self.now = when
            if not timer.cancelled:
                timer.callback()
        self.now = target


def make_router() -> Router:
    roles = Authorization(
        [
            Role(
                "user",
                (
                    Permission(
                        "com.", "prefix", frozenset({"publish", "subscribe", "call", "register"})
                    ),
                    Permission("com.secret.", "prefix", frozenset()),
                    Permission("wamp.session.", "prefix", frozenset({"call"}), disclose=True),
                ),
            ),
            Role("guest", (Permission("", "prefix", frozenset({"subscribe"})),)),
        ]
    )
    limits = SessionLimits(max_subscriptions=4, max_registrations=3, max_pending_calls=3)
    secure = RealmSettings(
        "secure",
        anonymous=True,
        anonymous_role="guest",
        authenticators=(
            TicketAuthenticator({"u": TicketPrincipal(TICKET_HASH, "user")}, dynamic="com.auth"),
        ),
        authorization=roles,
        limits=limits,
    )
    return Router([RealmSettings("realm1"), secure], ManualScheduler())


# --- frames -----------------------------------------------------------------------------
URIS = st.sampled_from(
    [
        "com.a",
        "com.a.b",
        "com.secret.x",
        "com.",
        "com..b",
        "wamp.session.count",
        "wamp.session.list",
        "wamp.subscription.match",
        "com.auth",
        "",
        "bad uri",
        "x" * 300,
    ]
)
IDS = st.one_of(st.integers(0, 6), st.just(2**53), st.integers(-3, 2**60))
SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=False), st.text(max_size=8)
)
OPTION_KEYS = st.sampled_from(
    [
        "match",
        "acknowledge",
        "exclude_me",
        "timeout",
        "receive_progress",
        "invoke",
        "progress",
        "mode",
        "get_retained",
        "retain",
        "disclose_me",
        "eligible",
        "exclude",
        "eligible_authrole",
    ]
)
OPTION_VALUES = st.one_of(
    SCALARS,
    st.sampled_from(["prefix", "wildcard", "exact", "roundrobin", "kill", "skip"]),
    st.lists(st.integers(0, 5), max_size=3),
    st.lists(st.text(max_size=3), max_size=2),
)
OPTIONS = st.dictionaries(OPTION_KEYS, OPTION_VALUES, max_size=4)
ANY = st.one_of(SCALARS, OPTIONS, st.lists(SCALARS, max_size=3))
ROLES = st.sampled_from(
    [
        {
            "caller": {},
            "callee": {"features": {"call_canceling": True, "progressive_call_results": True}},
            "publisher": {},
            "subscriber": {},
        },
        {},
        {"bogus": {}},
        "x",
    ]
)


def hello() -> st.SearchStrategy[list[Any]]:
    details = st.fixed_dictionaries(
        {"roles": ROLES},
        optional={
            "authmethods": st.lists(
                st.sampled_from(["ticket", "anonymous", "wampcra", 3]), max_size=3
            ),
            "authid": st.sampled_from(["u", "nobody", "", 7]),
        },
    )
    return st.tuples(st.just(1), st.sampled_from(["realm1", "secure", "nope", ""]), details).map(
        list
    )


def frame() -> st.SearchStrategy[list[Any]]:
    """A frame: mostly well-formed messages in random order, some with wrong types."""
    well_formed = st.one_of(
        hello(),
        st.tuples(st.just(5), st.sampled_from(["pw", "wrong", ""]), st.just({})).map(list),
        st.tuples(st.just(6), st.just({}), st.just("wamp.close.normal")).map(list),
        st.tuples(st.just(3), st.just({}), st.just("wamp.error.x")).map(list),
        st.tuples(st.just(16), IDS, OPTIONS, URIS, st.lists(SCALARS, max_size=2)).map(list),
        st.tuples(st.just(32), IDS, OPTIONS, URIS).map(list),
        st.tuples(st.just(34), IDS, IDS).map(list),
        st.tuples(st.just(48), IDS, OPTIONS, URIS, st.lists(SCALARS, max_size=2)).map(list),
        st.tuples(st.just(49), IDS, OPTIONS).map(list),
        st.tuples(st.just(64), IDS, OPTIONS, URIS).map(list),
        st.tuples(st.just(66), IDS, IDS).map(list),
        st.tuples(st.just(70), IDS, OPTIONS, st.lists(SCALARS, max_size=2)).map(list),
        st.tuples(st.just(8), st.sampled_from([68, 48, 16]), IDS, st.just({}), URIS).map(list),
    )
    wrong = st.lists(ANY, min_size=0, max_size=5).map(
        lambda rest: [rest[0] if rest else None, *rest[1:]]
    )
    typed_wrong = st.tuples(
        st.sampled_from([1, 5, 16, 32, 48, 64, 70, 2, 4, 99]), st.lists(ANY, max_size=4)
    ).map(lambda t: [t[0], *t[1]])
    return st.one_of(well_formed, well_formed, well_formed, wrong, typed_wrong)


STEP = st.one_of(
    st.tuples(st.just("send"), st.integers(0, 3), frame()),
    st.tuples(st.just("detach"), st.integers(0, 3), st.none()),
    st.tuples(st.just("advance"), st.floats(0, 30), st.none()),
)


def deliver(router: Router, session: Any, raw: list[Any]) -> None:
    """Encode as JSON and decode with the real codec, as the transport would."""
    try:
        message = JSON.decode(json.dumps(raw))
    except ProtocolError as exc:
        router.protocol_violation(session, str(exc))
        return
    router.receive(session, message)


def check_closed_peers_were_told(peers: list[FakePeer]) -> None:
    for peer in peers:
        if peer.closed is not None and peer.closed[0] != 1000:
            assert any(isinstance(m, Abort | Goodbye) for m in peer.sent), (peer.closed, peer.sent)
        for message in peer.sent:
            if isinstance(message, Abort):
                assert message.reason.startswith("wamp.") and message.details.get("message")


GOOD_ROLES = {
    "caller": {},
    "callee": {"features": {"call_canceling": True, "progressive_call_results": True}},
    "publisher": {},
    "subscriber": {},
}
JOIN = st.sampled_from(["realm1", "secure-anonymous", "secure-ticket", "secure-bad-ticket", "none"])


def join(router: Router, session: Any, how: str) -> None:
    """Start a session the usual way, so the random frames meet joined sessions too."""
    if how == "none":
        return
    realm = "realm1" if how == "realm1" else "secure"
    details: dict[str, Any] = {"roles": GOOD_ROLES}
    if how.startswith("secure-") and how != "secure-anonymous":
        details.update(authmethods=["ticket"], authid="u")
    deliver(router, session, [1, realm, details])
    if how in ("secure-ticket", "secure-bad-ticket"):
        deliver(router, session, [5, "pw" if how == "secure-ticket" else "nope", {}])


@settings(max_examples=CASES, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(st.lists(JOIN, min_size=4, max_size=4), st.lists(STEP, max_size=STEPS))
# found by this test: an unhashable option value crashed the policy lookup (fixed)
@example(["realm1"] * 4, [("send", 0, [32, 1, {"match": []}, "com.a"])])
@example(["realm1"] * 4, [("send", 0, [64, 1, {"invoke": {}}, "com.a"])])
@example(["realm1"] * 4, [("send", 0, [49, 1, {"mode": []}])])
def test_random_message_sequences_never_break_the_router(
    joins: list[str], steps: list[Any]
) -> None:
    router = make_router()
    scheduler = router.scheduler
    assert isinstance(scheduler, ManualScheduler)
    peers = [FakePeer() for _ in range(4)]
    sessions = [router.attach(peer) for peer in peers]
    for session, how in zip(sessions, joins, strict=True):
        join(router, session, how)
    for kind, arg, payload in steps:
        if kind == "send":
            session = sessions[arg]
            if session.id in router.sessions and peers[arg].closed is None:
                deliver(router, session, payload)
        elif kind == "detach":
            router.detach(sessions[arg])
        else:
            scheduler.advance(arg)
        check_closed_peers_were_told(peers)
    joined = sum(1 for p in peers if any(type(m).__name__ == "Welcome" for m in p.sent))
    event(f"sessions joined: {joined}")
    for session in sessions:
        router.detach(session)
    scheduler.advance(3600)
    for realm in router.realms.values():
        assert not realm.sessions
        assert not realm.broker.subscriptions()
        assert not realm.dealer.registrations()
    for session in sessions:
        assert not session.calls and not session.invocations
    assert not router._backlog
