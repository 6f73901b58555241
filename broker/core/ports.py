"""The port between the core and a cluster backend, both directions, and the local backend.

The core never waits on the cluster: it *tells* the backend what happened locally
(``Cluster`` methods, all synchronous and cheap). The backend acts on the core only
through ``ClusterHost`` (broker.core.host: find a realm, end a session) and the realm's roles
(``Broker.deliver_remote``, ``Dealer.add_remote_callee``, ``Dealer.calls.answer_result`` …),
or answers asynchronously (a registration claim, a Redis subscription becoming
active). Both run on the one event loop, so no locks are needed.

``LocalCluster`` is the in-process backend: nothing is distributed, every answer is
immediate, and the roles skip the cluster entirely on their hot paths
(``distributed`` is false). ``broker.cluster.redis`` overrides every hook of ``Cluster``.
The wire format between nodes is in protocol_spec/cluster.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .ids import random_id

if TYPE_CHECKING:
    from .publication import Publication
    from .registration import Registration
    from .session import Session
    from .subscription import Subscription

__all__ = ["ClaimDone", "Cluster", "LocalCluster", "PublishDone"]

ClaimDone = Callable[[str | None, str, int, int], None]
"""Answer to a registration claim: (error URI or None, error text, registration ID, seq)."""

PublishDone = Callable[[str | None], None]
"""Outcome of an acknowledged publish: None once the other nodes' copy is accepted, else why not.

The broker answers PUBLISHED on None and ERROR ``wamp.error.unavailable`` otherwise.
"""


class Cluster:
    """The backend as the core sees it. Every method returns at once.

    The bodies here are the single-process behaviour (nothing to tell anyone, every
    answer immediate): ``LocalCluster`` is exactly this, and a distributed backend
    overrides every hook.
    """

    distributed: bool = False
    """False for the in-process backend: the roles then skip every cluster call."""

    @property
    def available(self) -> bool:
        """True while other nodes can be reached (always true when not distributed)."""
        return True

    def publish(
        self, realm: str, publication: Publication, done: PublishDone | None = None
    ) -> None:
        """Send an event (already delivered locally) to the other nodes (and retain it).

        ``done`` is given for acknowledged publishes only and is called exactly once: with
        None once the event's cross-node writes were accepted, or with the reason they
        were not (possibly before this returns). In one process it is accepted at once.
        """
        if done is not None:
            done(None)

    def watch(self, realm: str, match: str, topic: str, done: Callable[[], None]) -> None:
        """A local subscription (match, topic) is about to exist; ``done`` when live."""
        done()

    def unwatch(self, realm: str, match: str, topic: str) -> None:
        """The local subscription (match, topic) is gone."""

    def subscription_changed(self, realm: str, sub: Subscription) -> None:
        """A local subscription's subscribers changed (none left: it is gone)."""

    def session_joined(self, realm: str, session: Session) -> None:
        """A local session joined ``realm``."""

    def session_left(self, realm: str, session: Session) -> None:
        """A local session left ``realm``."""

    def testaments_changed(self, realm: str, session: Session) -> None:
        """A local session's testaments were added or flushed."""

    def claim(
        self,
        realm: str,
        session: Session,
        procedure: str,
        match: str,
        invoke: str,
        disclose: bool,
        done: ClaimDone,
    ) -> None:
        """Claim (match, procedure) for a local callee cluster-wide; answer via ``done``.

        In one process the dealer checks locally and never asks; granted for completeness.
        """
        done(None, "", random_id(), 0)

    def release(
        self,
        realm: str,
        reg: Registration,
        session: Session,
        done: Callable[[], None] | None = None,
    ) -> None:
        """A local callee left a registration; ``done`` runs once that holds cluster-wide.

        In one process it holds at once.
        """
        if done is not None:
            done()

    def kill(
        self,
        realm: str,
        selector: str,
        value: Any,
        except_session: int,
        reason: str,
        message: str | None,
    ) -> None:
        """Ask the other nodes to end their matching sessions (meta API kill)."""


class LocalCluster(Cluster):
    """The in-process backend: one node, every hook the single-process default."""
