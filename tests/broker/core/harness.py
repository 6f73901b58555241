"""Drive the sans-I/O router directly: recording peers and a manual clock.

No sockets, no event loop: a ``Peer`` that records what the router sends it and a
``Scheduler`` whose time only moves when a test says so.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from typing import Any

from broker.core.realm import RealmSettings
from broker.core.router import Router
from broker.core.session import Session
from protocol_spec.messages import Hello, Message, Welcome

ALL_ROLES: dict[str, Any] = {
    "caller": {"features": {"progressive_call_results": True, "call_canceling": True}},
    "callee": {"features": {"progressive_call_results": True, "call_canceling": True}},
    "publisher": {"features": {}},
    "subscriber": {"features": {}},
}


class RecordingPeer:
    """A ``Peer`` that keeps every message and remembers the encode caches it saw."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.caches: list[dict[str, Any] | None] = []
        self.closed: tuple[int, str] | None = None
        self.transport_info: dict[str, Any] = {"type": "test"}

    def send(self, message: Message, cache: dict[str, Any] | None = None) -> None:
        self.sent.append(message)
        self.caches.append(cache)

    def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)


class _Timer:
    def __init__(self, clock: ManualClock, when: float, callback: Callable[[], None]) -> None:
        self.clock, self.when, self.callback, self.cancelled = clock, when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class ManualClock:
    """A ``Scheduler`` that runs callbacks only when ``advance`` passes their time."""

    def __init__(self) -> None:
        self.now = 0.0
        self._heap: list[tuple[float, int, _Timer]] = []
        self._seq = itertools.count()

    def call_later(self, delay: float, callback: Callable[[], None]) -> _Timer:
        timer = _Timer(self, self.now + delay, callback)
        heapq.heappush(self._heap, (timer.when, next(self._seq), timer))
        return timer

    def advance(self, seconds: float) -> None:
        target = self.now + seconds
        while self._heap and self._heap[0][0] <= target:
            when, _, timer = heapq.heappop(self._heap)
            self.now = when
            if not timer.cancelled:
                timer.callback()
        self.now = target

    @property
    def pending(self) -> int:
        return sum(1 for _, _, t in self._heap if not t.cancelled)


class Client:
    """One connected peer plus its session, with helpers to send and inspect."""

    def __init__(self, router: Router) -> None:
        self.router = router
        self.peer = RecordingPeer()
        self.session: Session = router.attach(self.peer)
        self._seen = 0

    def send(self, message: Message) -> None:
        self.router.receive(self.session, message)

    def join(
        self, realm: str = "realm1", roles: dict[str, Any] | None = None, **details: Any
    ) -> Welcome:
        self.send(Hello(realm, {"roles": roles or ALL_ROLES, **details}))
        welcome = self.take()[-1]
        assert isinstance(welcome, Welcome), welcome
        return welcome

    def take(self) -> list[Message]:
        """Messages received since the last ``take``."""
        new = self.peer.sent[self._seen :]
        self._seen = len(self.peer.sent)
        return new

    def take_one(self, kind: type[Any]) -> Any:
        """Exactly one new message, of type ``kind``."""
        new = self.take()
        assert len(new) == 1 and isinstance(new[0], kind), new
        return new[0]

    def leave_abruptly(self) -> None:
        self.router.detach(self.session)


class World:
    """A router with realm1 (or given realms) and a manual clock."""

    def __init__(self, *realms: RealmSettings) -> None:
        self.clock = ManualClock()
        self.router = Router(realms or (RealmSettings("realm1"),), self.clock)

    def client(self, join: bool = True, **details: Any) -> Client:
        client = Client(self.router)
        if join:
            client.join(**details)
        return client
