"""The broker role: subscriptions, publications, event fan-out and retained events.

A subscription is shared by every session subscribed to the same (match, topic);
its ID is ``stable_id(realm, match, topic)`` so all cluster nodes agree on it.
Each EVENT is built once per matching subscription and encoded once per
serializer (the ``EncodeCache`` passed to every recipient's peer).

An acknowledged PUBLISH on a distributed backend is answered only once the cluster
accepted the event for the other nodes (PUBLISHED), or ERROR ``wamp.error.unavailable``
when it could not (``Acknowledgements`` keeps each session's answers in request
order). Unacknowledged publishes, and every publish on the local backend, are never held.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol_spec import errors, meta
from protocol_spec.messages import (
    Error,
    Event,
    Message,
    MessageType,
    Publish,
    Published,
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
)
from protocol_spec.uri import (
    MATCH_EXACT,
    MATCH_POLICIES,
    is_reserved,
    is_valid_uri,
)

from .acknowledgements import Acknowledgements, Answer
from .ids import random_id, stable_id
from .matching import UriMap, pattern_matches
from .publication import DeliveryFilter, Publication
from .session import SessionState
from .subscription import Subscription

if TYPE_CHECKING:
    from .context import RealmContext
    from .session import Session

Refuse = Callable[[str, str], None]
"""Refuse a PUBLISH: (error URI, text)."""

__all__ = ["Acknowledgements", "Broker", "DeliveryFilter", "Publication", "Subscription"]


class Broker:
    """The pub/sub role of one realm."""

    __slots__ = ("_by_id", "_subs", "acks", "realm", "retained")

    def __init__(self, realm: RealmContext) -> None:
        # the realm's name, sessions, settings, guard and cluster backend (not the Realm)
        self.realm = realm
        self.acks = Acknowledgements()
        self._subs: UriMap[Subscription] = UriMap()
        self._by_id: dict[int, Subscription] = {}
        self.retained: dict[str, Publication] = {}

    # --- queries (meta API) ----------------------------------------------------------
    def subscription(self, sub_id: int) -> Subscription | None:
        """The subscription with this ID, if it exists."""
        return self._by_id.get(sub_id)

    def subscriptions(self) -> list[Subscription]:
        """Every live subscription."""
        return list(self._by_id.values())

    def lookup(self, topic: str, match: str) -> Subscription | None:
        """The subscription for exactly (match, topic), if any."""
        return self._subs.get(topic, match)

    def matching(self, topic: str) -> list[Subscription]:
        """Every subscription an event on ``topic`` would reach."""
        return self._subs.matching(topic)

    # --- SUBSCRIBE / UNSUBSCRIBE -------------------------------------------------------
    def subscribe(self, session: Session, msg: Subscribe) -> None:
        """Handle SUBSCRIBE: join or create the shared subscription, answer SUBSCRIBED."""
        match = msg.options.get("match", MATCH_EXACT)
        if type(match) is not str or match not in MATCH_POLICIES:  # [] is unhashable
            self._error(
                session,
                MessageType.SUBSCRIBE,
                msg.request,
                errors.INVALID_ARGUMENT,
                f"invalid match policy {match!r}",
            )
            return
        if not is_valid_uri(msg.topic, match):
            self._error(
                session,
                MessageType.SUBSCRIBE,
                msg.request,
                errors.INVALID_URI,
                f"invalid topic URI {msg.topic!r} for match {match!r}",
            )
            return
        cluster = self.realm.cluster
        if cluster.distributed and self._subs.get(msg.topic, match) is None:
            # SUBSCRIBED only once events from other nodes can arrive
            cluster.watch(
                self.realm.name, match, msg.topic, lambda: self._watched(session, msg, match)
            )
            return
        self._attach(session, msg, match)

    def _watched(self, session: Session, msg: Subscribe, match: str) -> None:
        """The cluster subscription for a new local subscription is live."""
        exists = self._subs.get(msg.topic, match) is not None
        joined = (
            self.realm.sessions.get(session.id) is session
            and session.state == SessionState.ESTABLISHED
        )
        if exists or not joined:
            # the existing subscription holds its own watch; a gone subscriber needs none
            self.realm.cluster.unwatch(self.realm.name, match, msg.topic)
        if joined:
            self._attach(session, msg, match)

    def _attach(self, session: Session, msg: Subscribe, match: str) -> None:
        sub = self._subs.get(msg.topic, match)
        created = sub is None
        if sub is None:
            sub = Subscription(stable_id(self.realm.name, match, msg.topic), msg.topic, match)
            self._subs.set(msg.topic, match, sub)
            self._by_id[sub.id] = sub
        already = session.id in sub.subscribers
        sub.subscribers[session.id] = session
        session.subscriptions.add(sub.id)
        if not already and self.realm.cluster.distributed:
            self.realm.cluster.subscription_changed(self.realm.name, sub)
        session.peer.send(Subscribed(msg.request, sub.id))
        if not already and not is_reserved(msg.topic):
            if created:
                self.publish_meta(meta.SUBSCRIPTION_ON_CREATE, [session.id, sub.info()])
            self.publish_meta(meta.SUBSCRIPTION_ON_SUBSCRIBE, [session.id, sub.id])
        if msg.options.get("get_retained") is True:
            self._send_retained(session, sub)

    def unsubscribe(self, session: Session, msg: Unsubscribe) -> None:
        """Handle UNSUBSCRIBE; ERROR no_such_subscription when not subscribed."""
        sub = self._by_id.get(msg.subscription)
        if sub is None or session.id not in sub.subscribers:
            self._error(
                session,
                MessageType.UNSUBSCRIBE,
                msg.request,
                errors.NO_SUCH_SUBSCRIPTION,
                "not subscribed",
            )
            return
        self._remove_subscriber(session, sub)
        session.peer.send(Unsubscribed(msg.request))

    def detach(self, session: Session) -> None:
        """Drop every subscription and held PUBLISH answer of the session (it is leaving)."""
        self.acks.forget(session)
        for sub_id in list(session.subscriptions):
            sub = self._by_id.get(sub_id)
            if sub is not None:
                self._remove_subscriber(session, sub)
        session.subscriptions.clear()

    def _remove_subscriber(self, session: Session, sub: Subscription) -> None:
        sub.subscribers.pop(session.id, None)
        session.subscriptions.discard(sub.id)
        quiet = is_reserved(sub.topic)
        if not quiet:
            self.publish_meta(meta.SUBSCRIPTION_ON_UNSUBSCRIBE, [session.id, sub.id])
        cluster = self.realm.cluster
        if cluster.distributed:
            cluster.subscription_changed(self.realm.name, sub)
        if not sub.subscribers:
            self._subs.remove(sub.topic, sub.match)
            del self._by_id[sub.id]
            if cluster.distributed:
                cluster.unwatch(self.realm.name, sub.match, sub.topic)
            if not quiet:
                self.publish_meta(meta.SUBSCRIPTION_ON_DELETE, [session.id, sub.id])

    # --- PUBLISH ---------------------------------------------------------------------
    def publish(self, session: Session, msg: Publish) -> None:
        """Handle PUBLISH: fan the event out, retain it if asked, acknowledge if asked."""
        topic = msg.topic
        options = msg.options
        # A failed PUBLISH is answered with ERROR only when acknowledged: an
        # unacknowledged publish has no pending request on the client side.
        acknowledge = options.get("acknowledge") is True
        refuse = self._refuser(session, msg.request, acknowledge)
        if not is_valid_uri(topic) or is_reserved(topic):
            refuse(errors.INVALID_URI, f"invalid topic URI {topic!r}")
            return
        cluster = self.realm.cluster
        if acknowledge and not cluster.available:
            refuse(errors.UNAVAILABLE, "the cluster is unreachable: the event was not published")
            return
        try:
            delivery_filter = DeliveryFilter.from_options(options) if options else None
        except ValueError as exc:
            refuse(errors.INVALID_ARGUMENT, f"black/whitelist option {exc}")
            return
        details: dict[str, Any] = {}
        if self._disclose(options):
            details = {
                "publisher": session.id,
                "publisher_authid": session.authid,
                "publisher_authrole": session.authrole,
            }
        retain = options.get("retain") is True
        publication = Publication(
            topic, random_id(), details, msg.args, msg.kwargs, delivery_filter, retain
        )
        skip = session if options.get("exclude_me", True) is not False else None
        self.deliver_local(publication, skip)
        if retain:
            self.retained[topic] = publication
        if not cluster.distributed:
            if acknowledge:
                session.peer.send(Published(msg.request, publication.id))
        elif acknowledge:
            answer = self.acks.expect(session)
            done = self._acknowledger(session, msg.request, publication.id, answer)
            cluster.publish(self.realm.name, publication, done)
        else:
            cluster.publish(self.realm.name, publication)

    def _acknowledger(
        self, session: Session, request: int, publication_id: int, answer: Answer
    ) -> Callable[[str | None], None]:
        """The cluster's verdict on an acknowledged PUBLISH, turned into its answer."""

        def done(error: str | None) -> None:
            if error is None:
                reply: Message = Published(request, publication_id)
            else:
                text = (
                    f"the event may not reach subscribers on other nodes ({error}); it "
                    "was delivered on this node and may still arrive elsewhere"
                )
                reply = Error(MessageType.PUBLISH, request, {}, errors.UNAVAILABLE, [text])
            self.acks.resolve(session, answer, reply)

        return done

    def _refuser(self, session: Session, request: int, acknowledge: bool) -> Refuse:
        """Answer a refused PUBLISH with ERROR (uri, text), only when acknowledged."""

        def refuse(uri: str, text: str) -> None:
            if acknowledge:
                error = Error(MessageType.PUBLISH, request, {}, uri, [text])
                self.acks.send(session, error)

        return refuse

    def deliver(self, publication: Publication, skip: Session | None = None) -> int:
        """Publish a router-originated event (testaments) here and on every other node."""
        sent = self.deliver_local(publication, skip)
        cluster = self.realm.cluster
        if cluster.distributed:
            cluster.publish(self.realm.name, publication)
        return sent

    def deliver_remote(self, publication: Publication) -> int:
        """Deliver an event published on another node to the local subscribers."""
        self.realm.history.record(publication)
        return self._fan_out(self._subs.matching(publication.topic), publication, None)

    def deliver_remote_batch(self, publications: list[Publication]) -> int:
        """Deliver events of one topic published on other nodes, in order (one lookup)."""
        if not publications:
            return 0
        subs = self._subs.matching(publications[0].topic)
        record = self.realm.history.record
        sent = 0
        for publication in publications:
            record(publication)
            sent += self._fan_out(subs, publication, None)
        return sent

    def retain_remote(self, publication: Publication) -> None:
        """Record the retained event of its topic, published on another node."""
        self.retained[publication.topic] = publication

    def deliver_local(self, publication: Publication, skip: Session | None = None) -> int:
        """Send one publication to every local subscriber it reaches; return how many."""
        self.realm.history.record(publication)
        return self._fan_out(self._subs.matching(publication.topic), publication, skip)

    def _fan_out(
        self, subs: list[Subscription], publication: Publication, skip: Session | None
    ) -> int:
        sent = 0
        topic, pub_id, details = publication.topic, publication.id, publication.details
        args, kwargs, delivery_filter = publication.args, publication.kwargs, publication.filter
        # security hook: a pattern subscription delivers only topics the receiver's
        # role may subscribe to (None: the realm is open, no check at all)
        guard = self.realm.guard
        for sub in subs:
            if sub.match == MATCH_EXACT:
                event = Event(sub.id, pub_id, details, args, kwargs)
            else:
                event = Event(sub.id, pub_id, {**details, "topic": topic}, args, kwargs)
            cache: dict[str, Any] = {}
            check = guard if sub.match != MATCH_EXACT else None
            for receiver in sub.subscribers.values():
                if receiver is skip:
                    continue
                if delivery_filter is not None and not delivery_filter.allows(receiver):
                    continue
                if check is not None and not check.may_receive(receiver.authrole, topic):
                    continue
                receiver.peer.send(event, cache)
                sent += 1
        return sent

    def publish_meta(
        self, topic: str, args: list[Any], kwargs: dict[str, Any] | None = None
    ) -> None:
        """Publish a router-originated event (meta events, testaments of no publisher)."""
        subs = self._subs.matching(topic)
        if subs:
            self._fan_out(subs, Publication(topic, random_id(), {}, args, kwargs), None)

    def _disclose(self, options: dict[str, Any]) -> bool:
        policy = self.realm.settings.disclose_publisher
        if policy == "always":
            return True
        if policy == "never":
            return False
        return options.get("disclose_me") is True

    def _send_retained(self, session: Session, sub: Subscription) -> None:
        if sub.match == MATCH_EXACT:
            found = self.retained.get(sub.topic)
            candidates = [found] if found is not None else []
        else:
            candidates = [
                event
                for topic, event in self.retained.items()
                if pattern_matches(sub.match, sub.topic, topic)
            ]
        guard = self.realm.guard  # security hook, see deliver
        for event in candidates:
            if event.filter is not None and not event.filter.allows(session):
                continue
            if guard is not None and not guard.may_receive(session.authrole, event.topic):
                continue
            details = {**event.details, "retained": True}
            if sub.match != MATCH_EXACT:
                details["topic"] = event.topic
            session.peer.send(Event(sub.id, event.id, details, event.args, event.kwargs))

    @staticmethod
    def _error(session: Session, request_type: int, request: int, uri: str, text: str) -> None:
        session.peer.send(Error(request_type, request, {}, uri, [text]))
