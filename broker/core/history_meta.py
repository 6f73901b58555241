"""``wamp.subscription.get_events``: a subscription's event history (spec "Event History").

``[subscription]`` plus the spec's keyword arguments, checked here (a bad value is
``wamp.error.invalid_argument`` naming it); the answer is ``[[event, ...]]`` with each
event ``{timestamp, subscription, publication, details, args?, kwargs?}`` and the
keyword result ``{"more": bool}``, plus ``"anchor_found": bool`` when
``after_publication`` or ``from_publication`` was given (protocol_spec/wamp.md, "Event
history"). The caller must be allowed to subscribe to the subscription's topic or
pattern; each event is then shown only if its publication's authid/authrole
black/whitelists let the caller receive it and, through a pattern, only if the
caller's role may subscribe to the event's own topic.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from protocol_spec import errors
from protocol_spec import meta as names
from protocol_spec.uri import MATCH_EXACT, is_valid_uri

from .history import HistoryPage, HistoryQuery, StoredEvent
from .registration import Deferred, InternalError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .realm import Realm
    from .session import Session

__all__ = ["GET_EVENTS", "MAX_EVENTS", "get_events"]

GET_EVENTS = names.SUBSCRIPTION_GET_EVENTS

MAX_EVENTS = 10_000
"""Events one call returns at most (``more`` says when the limit left some out)."""

_MAX_ID = 2**53
_TIMES = ("from_time", "after_time", "before_time", "until_time")
_PUBLICATIONS = (
    "from_publication",
    "after_publication",
    "before_publication",
    "until_publication",
)
_KEYS = frozenset({"reverse", "limit", "topic", *_TIMES, *_PUBLICATIONS})
# rounding of a time bound to whole milliseconds that keeps ms-timestamp comparisons exact
_ROUND = {"from_time": math.ceil, "after_time": math.floor}
_ROUND |= {"before_time": math.ceil, "until_time": math.floor}

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)

Reply = tuple[list[Any] | None, dict[str, Any] | None]


def _invalid(text: str) -> InternalError:
    return InternalError(errors.INVALID_ARGUMENT, text)


def parse_time(name: str, value: Any) -> int:
    """An RFC 3339 timestamp as whole milliseconds since the epoch, rounded for ``name``."""
    if not isinstance(value, str):
        raise _invalid(f"{name} must be an RFC 3339 timestamp string")
    text = value.strip()
    if text[-1:] in ("Z", "z"):
        text = text[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise _invalid(f"{name}: {value!r} is not an RFC 3339 timestamp") from None
    if moment.tzinfo is None:
        raise _invalid(f"{name}: {value!r} needs a time zone (Z or an offset)")
    micros = (moment - _EPOCH) // _MICROSECOND
    return int(_ROUND[name](micros / 1000))


def format_time(millis: int) -> str:
    """Milliseconds since the epoch as RFC 3339 (``2026-01-02T03:04:05.678Z``)."""
    moment = datetime.fromtimestamp(millis / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _publication(name: str, value: Any) -> int:
    if type(value) is not int or not 1 <= value <= _MAX_ID:
        raise _invalid(f"{name} must be a publication ID (an integer from 1 to 2^53)")
    return value


def parse_query(uri: str, match: str, kwargs: dict[str, Any]) -> HistoryQuery:
    """The ``HistoryQuery`` for subscription (match, uri) from get_events' kwargs."""
    unknown = sorted(set(kwargs) - _KEYS)
    if unknown:
        raise _invalid(f"unknown keyword argument(s) {', '.join(unknown)}")
    reverse = kwargs.get("reverse", False)
    if type(reverse) is not bool:
        raise _invalid("reverse must be true or false")
    limit = kwargs.get("limit")
    if limit is not None and (type(limit) is not int or limit <= 0):
        raise _invalid("limit must be a positive integer")
    topic = kwargs.get("topic")
    if topic is not None and not is_valid_uri(topic):
        raise _invalid(f"topic must be a topic URI, got {topic!r}")
    times = {
        name: parse_time(name, kwargs[name]) for name in _TIMES if kwargs.get(name) is not None
    }
    anchors = {
        name: _publication(name, kwargs[name])
        for name in _PUBLICATIONS
        if kwargs.get(name) is not None
    }
    return HistoryQuery(
        uri=uri,
        match=match,
        topic=topic,
        reverse=reverse,
        limit=min(limit, MAX_EVENTS) if limit is not None else MAX_EVENTS,
        **times,
        **anchors,
    )


def _target(realm: Realm, args: list[Any]) -> tuple[int, str, str]:
    """(subscription ID, topic or pattern, match) of the subscription asked about (any node)."""
    if not args or type(args[0]) is not int:
        raise _invalid("argument subscription (int) missing")
    sub_id: int = args[0]
    local = realm.broker.subscription(sub_id)
    if local is not None:
        return sub_id, local.topic, local.match
    remote = realm.remote.subscriptions.get(sub_id)
    if remote is not None:
        return sub_id, remote.topic, remote.match
    raise InternalError(errors.NO_SUCH_SUBSCRIPTION, "no subscription with this ID")


def _visibility(
    realm: Realm, caller: Session, sub_id: int, uri: str, match: str
) -> Callable[[StoredEvent], bool]:
    """Check the caller may subscribe to (match, uri); return the per-event check."""
    guard = realm.guard  # None: the realm is open
    if guard is not None:
        decision = guard.decide(caller.authrole, "subscribe", uri)
        local = realm.broker.subscription(sub_id)
        # an authorizer's approval is known only through the caller's own subscription
        subscribed = local is not None and caller.id in local.subscribers
        if not (decision.allowed or (decision.consult and subscribed)):
            raise InternalError(
                errors.NOT_AUTHORIZED,
                f"session is not authorized to subscribe to {uri!r}, so not to its history",
            )
    check = guard if match != MATCH_EXACT else None

    def visible(stored: StoredEvent) -> bool:
        event = stored.event
        if event.filter is not None and not event.filter.allows(caller):
            return False
        return check is None or bool(check.may_receive(caller.authrole, event.topic))

    return visible


def get_events(
    realm: Realm, caller: Session, args: list[Any], kwargs: dict[str, Any]
) -> Reply | Deferred:
    """Answer ``wamp.subscription.get_events([subscription], {...})``.

    With a backend that keeps the history (``RealmHistory.reader``), the answer is a
    ``Deferred``: the dealer answers once the backend read it (or ERROR
    ``wamp.error.unavailable`` when it could not).
    """
    sub_id, uri, match = _target(realm, args)
    visible = _visibility(realm, caller, sub_id, uri, match)
    history = realm.context.history
    query = parse_query(uri, match, kwargs)
    reader = history.reader
    if reader is None or not history.settings.rules:
        return _reply(sub_id, match, history.query(query, visible))

    def start(answer: Callable[[Reply | InternalError], None]) -> None:
        def done(page: HistoryPage | str) -> None:
            if isinstance(page, str):
                answer(InternalError(errors.UNAVAILABLE, f"event history unavailable: {page}"))
            else:
                answer(_reply(sub_id, match, page))

        reader.query(query, visible, done)

    return Deferred(start)


def _reply(sub_id: int, match: str, page: HistoryPage) -> Reply:
    events = [_describe(sub_id, match, stored) for stored in page.events]
    info: dict[str, Any] = {"more": page.more}
    if page.anchor_found is not None:
        info["anchor_found"] = page.anchor_found
    return [events], info


def _describe(sub_id: int, match: str, stored: StoredEvent) -> dict[str, Any]:
    event = stored.event
    details = event.details if match == MATCH_EXACT else {**event.details, "topic": event.topic}
    out: dict[str, Any] = {
        "timestamp": format_time(stored.timestamp),
        "subscription": sub_id,
        "publication": event.id,
        "details": details,
    }
    if event.args is not None:
        out["args"] = event.args
    if event.kwargs is not None:
        out["kwargs"] = event.kwargs
    return out
