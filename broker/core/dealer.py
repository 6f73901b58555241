"""The dealer role: registrations and call routing.

REGISTER / UNREGISTER keep one ``Registration`` per (match, procedure); a CALL picks
a callee and starts a ``PendingCall``. Everything after the INVOCATION (results,
errors, cancel, timeouts) is ``Invocations``' job (``invocations.py``). In a cluster,
registrations are claimed in Redis first and callees of other nodes take part as
``RemoteSession`` stand-ins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol_spec import errors, meta
from protocol_spec.messages import (
    Call,
    Cancel,
    Error,
    Invocation,
    MessageType,
    Register,
    Registered,
    Result,
    Unregister,
    Unregistered,
    Yield,
)
from protocol_spec.uri import MATCH_EXACT, MATCH_POLICIES, is_reserved, is_valid_uri

from .cluster import RemoteSession
from .invocations import UNDELIVERABLE_RESULT, Invocations, delivered
from .matching import UriMap
from .registration import (
    INVOKE_POLICIES,
    Deferred,
    InternalError,
    InternalProcedure,
    InternalReply,
    Registration,
)
from .session import PendingCall, fail

if TYPE_CHECKING:
    from .context import RealmContext
    from .interfaces import Scheduler
    from .session import Session

__all__ = [
    "INVOKE_POLICIES",
    "Dealer",
    "InternalError",
    "MetaPublisher",
    "PendingCall",
    "Registration",
]

MetaPublisher = Callable[[str, list[Any]], None]
"""Publishes a meta event (topic, args) in the realm: the broker role's ``publish_meta``."""


def _no_eligible_callee(request: int, procedure: str) -> Error:
    return Error(
        MessageType.CALL,
        request,
        {},
        errors.NO_ELIGIBLE_CALLEE,
        [f"no callee is authorized to serve {procedure!r}"],
    )


def _has_local_callee(reg: Registration) -> bool:
    return any(not isinstance(callee, RemoteSession) for callee in reg.callees)


def _refuse_register(msg: Register, match: Any, invoke: Any) -> tuple[str, str] | None:
    """(error URI, text) for a REGISTER with bad options or URI, whatever is registered."""
    if type(match) is not str or match not in MATCH_POLICIES:  # [] is unhashable
        return errors.INVALID_ARGUMENT, f"invalid match policy {match!r}"
    if type(invoke) is not str or invoke not in INVOKE_POLICIES:
        return errors.INVALID_ARGUMENT, f"invalid invocation policy {invoke!r}"
    if not is_valid_uri(msg.procedure, match) or is_reserved(msg.procedure):
        return errors.INVALID_URI, f"invalid procedure URI {msg.procedure!r} for match {match!r}"
    return None


class Dealer:
    """The RPC role of one realm."""

    __slots__ = ("_by_id", "_publish_meta", "_regs", "calls", "internal", "realm", "scheduler")

    def __init__(
        self, realm: RealmContext, scheduler: Scheduler, publish_meta: MetaPublisher
    ) -> None:
        # the realm's name, sessions, settings, guard and cluster backend (not the Realm)
        self.realm = realm
        self.scheduler = scheduler
        self._publish_meta = publish_meta
        self.calls = Invocations(scheduler)
        self._regs: UriMap[Registration] = UriMap()
        self._by_id: dict[int, Registration] = {}
        self.internal: dict[str, InternalProcedure] = {}

    # --- queries (meta API) ----------------------------------------------------------
    def registration(self, reg_id: int) -> Registration | None:
        """The registration with this ID, if it exists."""
        return self._by_id.get(reg_id)

    def registrations(self) -> list[Registration]:
        """Every live registration."""
        return list(self._by_id.values())

    def lookup(self, procedure: str, match: str) -> Registration | None:
        """The registration for exactly (match, procedure), if any."""
        return self._regs.get(procedure, match)

    def best(self, procedure: str) -> Registration | None:
        """The registration a CALL to ``procedure`` would reach."""
        return self._regs.best(procedure)

    # --- REGISTER / UNREGISTER ---------------------------------------------------------
    def register(self, session: Session, msg: Register) -> None:
        """Handle REGISTER: create or join a registration, answer REGISTERED or ERROR."""
        rtype = MessageType.REGISTER
        match = msg.options.get("match", MATCH_EXACT)
        invoke = msg.options.get("invoke", "single")
        refused = _refuse_register(msg, match, invoke) or self._conflict(
            session, msg, match, invoke
        )
        if refused is not None:
            fail(session, rtype, msg.request, *refused)
            return
        disclose = msg.options.get("disclose_caller") is True
        cluster = self.realm.cluster
        if not cluster.distributed:
            reg = self._add_callee(session, msg.procedure, match, invoke, disclose, 0, 0)
            session.peer.send(Registered(msg.request, reg.id))
            self._announce(session, reg, reg.callees == [session])
            return
        if not cluster.available:
            text = "the cluster is unreachable: cannot register now"
            fail(session, rtype, msg.request, errors.UNAVAILABLE, text)
            return

        def claimed(error: str | None, text: str, reg_id: int, seq: int) -> None:
            if self.realm.sessions.get(session.id) is not session:
                return  # the callee left meanwhile; the backend releases the claim
            if error is not None:
                fail(session, rtype, msg.request, error, text)
                return
            reg = self._add_callee(session, msg.procedure, match, invoke, disclose, reg_id, seq)
            session.peer.send(Registered(msg.request, reg.id))
            self._announce(session, reg, len(reg.callees) == 1)

        cluster.claim(self.realm.name, session, msg.procedure, match, invoke, disclose, claimed)

    def _conflict(
        self, session: Session, msg: Register, match: str, invoke: str
    ) -> tuple[str, str] | None:
        """(error URI, text) when an existing registration refuses this callee."""
        reg = self._regs.get(msg.procedure, match)
        if reg is None or (self.realm.cluster.distributed and not _has_local_callee(reg)):
            # Only callees of other nodes, as mirrored here: the mirror may be stale (a
            # release not seen yet), so the claim script in Redis decides.
            return None
        if reg.invoke == "single" or session in reg.callees:
            text = f"procedure {msg.procedure!r} is already registered"
            return errors.PROCEDURE_ALREADY_EXISTS, text
        if reg.invoke != invoke:
            text = f"procedure {msg.procedure!r} is registered with invoke {reg.invoke!r}"
            return errors.PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT, text
        return None

    def _add_callee(
        self,
        session: Session,
        procedure: str,
        match: str,
        invoke: str,
        disclose: bool,
        reg_id: int,
        seq: int,
    ) -> Registration:
        """Add a callee (local, or a stand-in for a remote one) to its registration."""
        reg = self._regs.get(procedure, match)
        if reg is not None and reg_id and reg.id != reg_id:
            # a stale registration of callees another node already released
            for callee in list(reg.callees):
                self._remove_callee(callee, reg)
            reg = self._regs.get(procedure, match)
        if reg is None:
            reg = Registration(procedure, match, invoke, disclose, reg_id)
            self._regs.set(procedure, match, reg)
            self._by_id[reg.id] = reg
        reg.add(session, seq)
        session.registrations.add(reg.id)
        return reg

    def _announce(self, session: Session, reg: Registration, created: bool) -> None:
        if created:
            self._publish_meta(meta.REGISTRATION_ON_CREATE, [session.id, reg.info()])
        self._publish_meta(meta.REGISTRATION_ON_REGISTER, [session.id, reg.id])

    # --- callees on other nodes (called by the cluster backend) ------------------------
    def add_remote_callee(
        self,
        callee: RemoteSession,
        procedure: str,
        match: str,
        invoke: str,
        disclose: bool,
        reg_id: int,
        seq: int,
    ) -> None:
        """Another node's callee joined (match, procedure) with registration ``reg_id``."""
        reg = self._by_id.get(reg_id)
        if reg is not None and callee in reg.callees:
            return
        reg = self._add_callee(callee, procedure, match, invoke, disclose, reg_id, seq)
        self._announce(callee, reg, len(reg.callees) == 1)

    def remove_remote_callee(self, callee: RemoteSession, reg_id: int) -> None:
        """Another node's callee left registration ``reg_id``."""
        reg = self._by_id.get(reg_id)
        if reg is not None and callee in reg.callees:
            self._remove_callee(callee, reg)

    def unregister(self, session: Session, msg: Unregister) -> None:
        """Handle UNREGISTER; ERROR no_such_registration when the session is no callee."""
        reg = self._by_id.get(msg.registration)
        if reg is None or session not in reg.callees:
            rtype = MessageType.UNREGISTER
            fail(session, rtype, msg.request, errors.NO_SUCH_REGISTRATION, "not registered")
            return
        request = msg.request

        def done() -> None:
            session.peer.send(Unregistered(request))

        self._remove_callee(session, reg, done)

    def _remove_callee(
        self, session: Session, reg: Registration, done: Callable[[], None] | None = None
    ) -> None:
        """Drop a callee; ``done`` runs once the procedure is free cluster-wide."""
        reg.callees.remove(session)
        reg.seqs.pop(session.id, None)
        session.registrations.discard(reg.id)
        cluster = self.realm.cluster
        if cluster.distributed and not isinstance(session, RemoteSession):
            cluster.release(self.realm.name, reg, session, done)
            done = None
        self._publish_meta(meta.REGISTRATION_ON_UNREGISTER, [session.id, reg.id])
        if not reg.callees:
            self._regs.remove(reg.procedure, reg.match)
            del self._by_id[reg.id]
            self._publish_meta(meta.REGISTRATION_ON_DELETE, [session.id, reg.id])
        if done is not None:
            done()

    # --- CALL ------------------------------------------------------------------------
    def call(self, session: Session, msg: Call) -> None:
        """Handle CALL: route to a callee (or a meta procedure), arm the timeout."""
        procedure = msg.procedure
        rtype = MessageType.CALL
        refused = self._refuse_call(session, msg)
        if refused is not None:
            fail(session, rtype, msg.request, *refused)
            return
        internal = self.internal.get(procedure) if is_reserved(procedure) else None
        if internal is not None:
            self._call_internal(session, msg, internal)
            return
        reg = self._regs.best(procedure)
        if reg is None:
            text = f"no callee registered procedure {procedure!r}"
            fail(session, rtype, msg.request, errors.NO_SUCH_PROCEDURE, text)
            return
        timeout = msg.options.get("timeout", 0)
        if type(timeout) not in (int, float) or timeout < 0:
            text = "timeout must be a non-negative number of milliseconds"
            fail(session, rtype, msg.request, errors.INVALID_ARGUMENT, text)
            return
        callee = reg.pick(self._eligible(reg, procedure))
        if callee is None:
            session.peer.send(_no_eligible_callee(msg.request, procedure))
            return
        if isinstance(callee, RemoteSession) and not self.realm.cluster.available:
            text = "the callee is on another node and the cluster is unreachable"
            fail(session, rtype, msg.request, errors.UNAVAILABLE, text)
            return
        self._invoke(session, msg, reg, callee, timeout)

    @staticmethod
    def _refuse_call(session: Session, msg: Call) -> tuple[str, str] | None:
        """(error URI, text) for a CALL that cannot be routed whatever is registered."""
        if not is_valid_uri(msg.procedure):
            return errors.INVALID_URI, f"invalid procedure URI {msg.procedure!r}"
        if msg.request in session.calls:
            return errors.INVALID_ARGUMENT, "a call with this request ID is still pending"
        return None

    def _eligible(self, reg: Registration, procedure: str) -> Callable[[Session], bool] | None:
        """The callee filter of a pattern registration in a realm with roles, else None."""
        if reg.match == MATCH_EXACT or self.realm.guard is None:
            return None

        # remote callees are checked on their own node (invoke_remote)
        def eligible(callee: Session) -> bool:
            return isinstance(callee, RemoteSession) or self._may_serve(reg, callee, procedure)

        return eligible

    def _invoke(
        self, session: Session, msg: Call, reg: Registration, callee: Session, timeout: float
    ) -> None:
        """Send INVOCATION to the chosen callee and start tracking the call."""
        options = msg.options
        details: dict[str, Any] = {}
        if reg.match != MATCH_EXACT:
            details["procedure"] = msg.procedure
        if self._disclose(options, reg):
            details["caller"] = session.id
            details["caller_authid"] = session.authid
            details["caller_authrole"] = session.authrole
        receive_progress = options.get("receive_progress") is True
        if receive_progress and callee.supports("callee", "progressive_call_results"):
            details["receive_progress"] = True
        if timeout:
            details["timeout"] = timeout
        request = callee.next_invocation_id()
        pending = PendingCall(session, msg.request, callee, request, receive_progress)
        invocation = Invocation(request, reg.id, details, msg.args, msg.kwargs)
        self.calls.start(pending, timeout, invocation)

    def _may_serve(self, reg: Registration, callee: Session, procedure: str) -> bool:
        """A pattern registration never serves a procedure its callee's role may not register."""
        guard = self.realm.guard
        return (
            guard is None or reg.match == MATCH_EXACT or guard.may_serve(callee.authrole, procedure)
        )

    def _call_internal(self, session: Session, msg: Call, proc: InternalProcedure) -> None:
        try:
            answer = proc(session, list(msg.args or ()), dict(msg.kwargs or {}))
        except InternalError as exc:
            session.peer.send(
                Error(MessageType.CALL, msg.request, {}, exc.uri, exc.args_list or None)
            )
            return
        except (TypeError, ValueError, KeyError) as exc:
            text = f"invalid arguments for {msg.procedure}: {exc}"
            fail(session, MessageType.CALL, msg.request, errors.INVALID_ARGUMENT, text)
            return
        if isinstance(answer, Deferred):
            answer.start(lambda outcome: self._answer_internal(session, msg, outcome))
            return
        self._answer_internal(session, msg, answer)

    def _answer_internal(
        self, session: Session, msg: Call, outcome: InternalReply | InternalError
    ) -> None:
        """Answer an internal procedure's caller, unless it left meanwhile (``Deferred``)."""
        if self.realm.sessions.get(session.id) is not session:
            return
        if isinstance(outcome, InternalError):
            error = Error(MessageType.CALL, msg.request, {}, outcome.uri, outcome.args_list or None)
            session.peer.send(error)
            return
        args, kwargs = outcome
        if not delivered(session.peer, Result(msg.request, {}, args, kwargs)):
            text = UNDELIVERABLE_RESULT
            fail(session, MessageType.CALL, msg.request, errors.INVALID_ARGUMENT, text)

    def _disclose(self, options: dict[str, Any], reg: Registration) -> bool:
        policy = self.realm.settings.disclose_caller
        if policy == "always":
            return True
        if policy == "never":
            return False
        return reg.disclose_caller or options.get("disclose_me") is True

    # --- calls in flight (Invocations) ---------------------------------------------------
    def yield_(self, session: Session, msg: Yield) -> None:
        """Handle YIELD: forward RESULT (progressive or final) to the caller."""
        progress = msg.options.get("progress") is True
        self.calls.answer_result(session, msg.request, progress, msg.args, msg.kwargs)

    def invocation_error(self, session: Session, msg: Error) -> None:
        """Handle ERROR for an INVOCATION: forward it to the caller as a CALL error."""
        self.calls.answer_error(session, msg.request, msg.details, msg.error, msg.args, msg.kwargs)

    def cancel(self, session: Session, msg: Cancel) -> None:
        """Handle CANCEL with mode skip, kill or killnowait (default killnowait)."""
        self.calls.cancel(session, msg)

    # --- calls between nodes (called by the cluster backend) ---------------------------
    def invoke_remote(
        self,
        caller: RemoteSession,
        request: int,
        callee_id: int,
        reg_id: int,
        details: dict[str, Any],
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
    ) -> None:
        """A caller on another node invokes local callee ``callee_id`` (already chosen).

        ``caller`` stands for (caller node, this callee); ``request`` is the key that
        node uses, answered through ``caller.peer`` as RESULT/ERROR for ``request``.
        """
        callee = self.realm.sessions.get(callee_id)
        reg = self._by_id.get(reg_id)
        if callee is None or reg is None or callee not in reg.callees:
            fail(caller, MessageType.CALL, request, errors.CANCELED, "callee disconnected")
            return
        if request in caller.calls:
            return  # duplicate envelope
        procedure = details.get("procedure", reg.procedure)
        if not self._may_serve(reg, callee, procedure):
            caller.peer.send(_no_eligible_callee(request, procedure))
            return
        invocation = callee.next_invocation_id()
        receive_progress = details.get("receive_progress") is True
        pending = PendingCall(caller, request, callee, invocation, receive_progress)
        self.calls.start(pending, 0, Invocation(invocation, reg_id, details, args, kwargs))

    def interrupt_remote(
        self, caller: RemoteSession, request: int, options: dict[str, Any]
    ) -> None:
        """The caller node canceled (or timed out) call ``request``: interrupt the callee."""
        self.calls.interrupt_remote(caller, request, options)

    def abandon(self, session: Session, uri: str, text: str) -> None:
        """End every call ``session`` serves (ERROR ``uri`` to callers) or made (INTERRUPT)."""
        self.calls.abandon(session, uri, text)

    # --- a session leaves -------------------------------------------------------------
    def detach(self, session: Session, text: str = "callee disconnected") -> None:
        """Fail calls served by the leaving session, interrupt calls it made, unregister."""
        self.abandon(session, errors.CANCELED, text)
        for reg_id in list(session.registrations):
            reg = self._by_id.get(reg_id)
            if reg is not None and session in reg.callees:
                self._remove_callee(session, reg)
        session.registrations.clear()
