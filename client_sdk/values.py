"""The values applications hand to the SDK (options) and get back (events, results).

Options are keyword-only *objects* so they never collide with application keyword
arguments: ``session.publish("t", 1, options=PublishOptions(acknowledge=True), x=2)``
publishes ``args=[1]``, ``kwargs={"x": 2}``. Only set fields go on the wire, so the
router applies its own defaults for the rest (wamp.md §Options).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "CallOptions",
    "CallResult",
    "CancelMode",
    "Event",
    "Gap",
    "InvocationDetails",
    "InvokePolicy",
    "MatchPolicy",
    "PublishOptions",
    "handler_options",
]

CancelMode = Literal["skip", "kill", "killnowait"]
MatchPolicy = Literal["exact", "prefix", "wildcard"]
InvokePolicy = Literal["single", "roundrobin", "random", "first", "last"]


def handler_options(handler: object, match: MatchPolicy) -> dict[str, Any]:
    """The SUBSCRIBE/REGISTER options for ``match`` (nothing for the default, exact).

    Raises ``TypeError`` if ``handler`` is not callable, before anything is sent.
    """
    if not callable(handler):
        raise TypeError("handler must be callable")
    return {} if match == "exact" else {"match": match}


def _ids(values: Sequence[int] | None) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


def _strs(values: Sequence[str] | None) -> list[str] | None:
    return None if values is None else [str(v) for v in values]


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """Options of one PUBLISH (advanced profile: exclusion, black/white listing, retention).

    ``acknowledge`` makes ``publish`` wait for PUBLISHED (and raise on ERROR) and return
    the publication ID. ``exclude_me`` defaults to the router's default (true: the
    publisher does not receive its own event). ``exclude*``/``eligible*`` take session
    IDs, authids or authroles. ``retain`` asks the router to keep the event for later
    subscribers that ask ``get_retained``; ``disclose_me`` reveals the publisher.
    """

    acknowledge: bool = False
    exclude_me: bool | None = None
    exclude: Sequence[int] | None = None
    exclude_authid: Sequence[str] | None = None
    exclude_authrole: Sequence[str] | None = None
    eligible: Sequence[int] | None = None
    eligible_authid: Sequence[str] | None = None
    eligible_authrole: Sequence[str] | None = None
    retain: bool | None = None
    disclose_me: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the PUBLISH.Options dict: only the options that were set."""
        out: dict[str, Any] = {}
        if self.acknowledge:
            out["acknowledge"] = True
        for key in ("exclude_me", "retain", "disclose_me"):
            value = getattr(self, key)
            if value is not None:
                out[key] = bool(value)
        for key in ("exclude", "eligible"):
            ids = _ids(getattr(self, key))
            if ids is not None:
                out[key] = ids
        for key in ("exclude_authid", "exclude_authrole", "eligible_authid", "eligible_authrole"):
            names = _strs(getattr(self, key))
            if names is not None:
                out[key] = names
        return out


@dataclass(frozen=True, slots=True)
class CallOptions:
    """Options of one CALL.

    ``timeout`` is in seconds (sent as whole milliseconds, rounded up); the router
    cancels the call and answers ``wamp.error.timeout``. When the router does not
    announce ``call_timeout`` the SDK enforces the deadline itself (CANCEL + the same
    error). ``receive_progress`` asks for progressive results; ``on_progress`` (local,
    not sent) receives each one as a ``CallResult`` and implies ``receive_progress``.
    ``cancel_mode`` (local) is the CANCEL mode used when the awaiting task is cancelled.
    """

    timeout: float | None = None
    receive_progress: bool = False
    disclose_me: bool | None = None
    on_progress: Callable[[CallResult], object] | None = None
    cancel_mode: CancelMode = "kill"

    def to_dict(self) -> dict[str, Any]:
        """Return the CALL.Options dict: only the options that were set."""
        out: dict[str, Any] = {}
        if self.timeout is not None:
            if self.timeout <= 0:
                raise ValueError("timeout must be positive")
            out["timeout"] = max(1, math.ceil(self.timeout * 1000))
        if self.receive_progress or self.on_progress is not None:
            out["receive_progress"] = True
        if self.disclose_me is not None:
            out["disclose_me"] = bool(self.disclose_me)
        return out


@dataclass(frozen=True, slots=True)
class Event:
    """One event delivered to a subscription handler or an event stream.

    ``topic`` is the concrete topic (from EVENT.Details.topic for pattern
    subscriptions, else the subscribed topic). ``publisher`` and its authid/authrole
    are set when the publisher disclosed itself; ``retained`` marks a retained event
    replayed on subscribe. ``details`` is the raw EVENT.Details dict. ``replayed``
    marks an event a resuming ``Client`` subscription fetched from the router's
    event history after a reconnection (``Client.subscribe(..., resume=True)``).
    """

    topic: str
    args: list[Any]
    kwargs: dict[str, Any]
    publication: int
    subscription: int
    details: dict[str, Any] = field(default_factory=dict)
    replayed: bool = False

    @property
    def publisher(self) -> int | None:
        """The publisher's session ID, if disclosed."""
        value = self.details.get("publisher")
        return value if isinstance(value, int) else None

    @property
    def publisher_authid(self) -> str | None:
        """The publisher's authid, if disclosed."""
        value = self.details.get("publisher_authid")
        return value if isinstance(value, str) else None

    @property
    def publisher_authrole(self) -> str | None:
        """The publisher's authrole, if disclosed."""
        value = self.details.get("publisher_authrole")
        return value if isinstance(value, str) else None

    @property
    def retained(self) -> bool:
        """True when the router replayed this event from its retention store."""
        return bool(self.details.get("retained", False))


@dataclass(frozen=True, slots=True)
class Gap:
    """Events of a resuming subscription that may be missing: told, never silent.

    Handed to ``on_gap`` of ``Client.subscribe(..., resume=True)`` when recovery after
    a reconnection could not prove it delivered every event. ``topic`` is the
    subscribed topic (or pattern), ``subscription`` the new subscription ID,
    ``after_publication`` the last publication delivered before the reconnection
    (None if there was none), ``reason`` says why (one of the ``GAP_*`` texts of
    ``client_sdk.resume``, possibly with details), ``replayed`` counts the history
    events delivered by this recovery so far.
    """

    topic: str
    subscription: int
    after_publication: int | None
    reason: str
    replayed: int = 0


@dataclass(frozen=True, slots=True)
class CallResult:
    """The result of a call, or one progressive result of it.

    Procedure handlers may also *return* a ``CallResult`` to choose the YIELD's
    ``args`` and ``kwargs`` exactly; any other return value ``v`` is sent as
    ``args=[v]`` (``None`` as no payload).
    """

    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    progress: bool = False

    @property
    def value(self) -> Any:
        """The first positional result, or ``None`` when there is none."""
        return self.args[0] if self.args else None


class InvocationDetails:
    """What a procedure handler may know about the call it serves.

    Passed to the handler as the keyword argument named by ``register(...,
    details_arg="details")``. ``caller*`` are set when the caller disclosed itself,
    ``procedure`` is the concrete URI (useful with pattern registrations),
    ``timeout`` the router's deadline in seconds if any, ``details`` the raw dict.
    """

    __slots__ = ("_send_progress", "details", "registration", "request")

    def __init__(
        self,
        request: int,
        registration: int,
        details: dict[str, Any],
        send_progress: Callable[[list[Any], dict[str, Any]], Awaitable[None]],
    ) -> None:
        self.request = request
        self.registration = registration
        self.details = details
        self._send_progress = send_progress

    @property
    def procedure(self) -> str | None:
        """The procedure URI the caller called (set by routers for pattern registrations)."""
        value = self.details.get("procedure")
        return value if isinstance(value, str) else None

    @property
    def caller(self) -> int | None:
        """The caller's session ID, if disclosed."""
        value = self.details.get("caller")
        return value if isinstance(value, int) else None

    @property
    def caller_authid(self) -> str | None:
        """The caller's authid, if disclosed."""
        value = self.details.get("caller_authid")
        return value if isinstance(value, str) else None

    @property
    def caller_authrole(self) -> str | None:
        """The caller's authrole, if disclosed."""
        value = self.details.get("caller_authrole")
        return value if isinstance(value, str) else None

    @property
    def receive_progress(self) -> bool:
        """True when the caller asked for progressive results."""
        return bool(self.details.get("receive_progress", False))

    @property
    def timeout(self) -> float | None:
        """The call's deadline in seconds, when the router forwards it."""
        value = self.details.get("timeout")
        return value / 1000 if isinstance(value, (int, float)) and value > 0 else None

    async def progress(self, *args: Any, **kwargs: Any) -> bool:
        """Send one progressive result; return False (sending nothing) if the caller did not ask."""
        if not self.receive_progress:
            return False
        await self._send_progress(list(args), kwargs)
        return True

    def __repr__(self) -> str:
        return f"InvocationDetails(request={self.request}, details={self.details!r})"
