"""The dealer role: registrations, call routing, results, cancel and timeouts.

A call becomes a ``PendingCall`` indexed twice: by the caller's CALL request ID in
``caller.calls`` and by the callee's INVOCATION request ID in ``callee.invocations``.
Whichever side ends first (result, error, cancel, timeout, a session leaving)
removes both entries, so nothing waits forever and nothing leaks.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol_spec import errors
from protocol_spec.messages import (
    Call,
    Cancel,
    Error,
    Interrupt,
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
from .ids import random_id
from .interfaces import Scheduler, TimerHandle
from .matching import UriMap
from .pubsub import now_iso

if TYPE_CHECKING:
    from .realm import Realm
    from .session import Session

__all__ = ["INVOKE_POLICIES", "Dealer", "InternalError", "PendingCall", "Registration"]

INVOKE_POLICIES = frozenset({"single", "roundrobin", "random", "first", "last"})
CANCEL_MODES = frozenset({"skip", "kill", "killnowait"})

InternalProcedure = Callable[
    ["Session", list[Any], dict[str, Any]], tuple[list[Any] | None, dict[str, Any] | None]
]
"""A router-implemented procedure (meta API): (caller, args, kwargs) → (args, kwargs)."""


class InternalError(Exception):
    """Raised by an internal procedure to answer the caller with ERROR ``uri``."""

    def __init__(self, uri: str, *args: Any) -> None:
        super().__init__(uri, *args)
        self.uri = uri
        self.args_list = list(args)


class Registration:
    """One registered procedure (match, URI) and its callees in registration order."""

    __slots__ = (
        "callees",
        "created",
        "disclose_caller",
        "id",
        "invoke",
        "match",
        "procedure",
        "rr",
        "seqs",
    )

    def __init__(
        self,
        procedure: str,
        match: str,
        invoke: str,
        disclose_caller: bool,
        reg_id: int = 0,
    ) -> None:
        self.id = reg_id or random_id()
        self.procedure = procedure
        self.match = match
        self.invoke = invoke
        self.disclose_caller = disclose_caller
        self.created = now_iso()
        self.callees: list[Session] = []
        self.rr = 0
        # cluster-wide registration order of each callee (session ID → seq); empty locally
        self.seqs: dict[int, int] = {}

    def add(self, session: Session, seq: int) -> None:
        """Add a callee; with a cluster sequence number, keep callees in that order."""
        if not seq:
            self.callees.append(session)
            return
        self.seqs[session.id] = seq
        index = len(self.callees)
        while index > 0 and self.seqs.get(self.callees[index - 1].id, 0) > seq:
            index -= 1
        self.callees.insert(index, session)

    def info(self) -> dict[str, Any]:
        """The registration's description for the meta API."""
        return {
            "id": self.id,
            "created": self.created,
            "uri": self.procedure,
            "match": self.match,
            "invoke": self.invoke,
        }

    def pick(self, eligible: Callable[[Session], bool] | None = None) -> Session | None:
        """Choose the callee for the next call according to the invoke policy.

        With ``eligible``, only callees it accepts are considered; None when there is
        none (a shared pattern registration whose callees' roles may not all serve
        the called procedure).
        """
        callees = self.callees
        if eligible is not None:
            callees = [callee for callee in callees if eligible(callee)]
            if not callees:
                return None
        if self.invoke == "roundrobin":
            self.rr = (self.rr + 1) % len(callees)
            return callees[self.rr]
        if self.invoke == "random":
            return random.choice(callees)
        if self.invoke == "last":
            return callees[-1]
        return callees[0]


def _guard(realm: Realm) -> Any:
    """The realm's authorization (security hook), None for an open realm."""
    return realm.settings.extra.get("authorization")


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


class PendingCall:
    """A call in flight between a caller and a callee."""

    __slots__ = (
        "call_request",
        "callee",
        "caller",
        "canceled",
        "invocation_request",
        "receive_progress",
        "timer",
    )

    def __init__(
        self,
        caller: Session,
        call_request: int,
        callee: Session,
        invocation_request: int,
        receive_progress: bool,
    ) -> None:
        self.caller = caller
        self.call_request = call_request
        self.callee = callee
        self.invocation_request = invocation_request
        self.receive_progress = receive_progress
        self.timer: TimerHandle | None = None
        self.canceled = False  # the caller was already answered (skip / kill sent)


class Dealer:
    """The RPC role of one realm."""

    __slots__ = ("_by_id", "_regs", "internal", "realm", "scheduler")

    def __init__(self, realm: Realm, scheduler: Scheduler) -> None:
        self.realm = realm
        self.scheduler = scheduler
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
        options = msg.options
        match = options.get("match", MATCH_EXACT)
        invoke = options.get("invoke", "single")
        rtype = MessageType.REGISTER
        if type(match) is not str or match not in MATCH_POLICIES:  # [] is unhashable
            self._error(
                session,
                rtype,
                msg.request,
                errors.INVALID_ARGUMENT,
                f"invalid match policy {match!r}",
            )
            return
        if type(invoke) is not str or invoke not in INVOKE_POLICIES:
            self._error(
                session,
                rtype,
                msg.request,
                errors.INVALID_ARGUMENT,
                f"invalid invocation policy {invoke!r}",
            )
            return
        if not is_valid_uri(msg.procedure, match) or is_reserved(msg.procedure):
            self._error(
                session,
                rtype,
                msg.request,
                errors.INVALID_URI,
                f"invalid procedure URI {msg.procedure!r} for match {match!r}",
            )
            return
        reg = self._regs.get(msg.procedure, match)
        cluster = self.realm.cluster
        if reg is not None and cluster.distributed and not _has_local_callee(reg):
            # Only callees of other nodes, as mirrored here: the mirror may be stale (a
            # release not seen yet), so the claim script in Redis decides.
            reg = None
        if reg is not None:
            if reg.invoke == "single" or session in reg.callees:
                self._error(
                    session,
                    rtype,
                    msg.request,
                    errors.PROCEDURE_ALREADY_EXISTS,
                    f"procedure {msg.procedure!r} is already registered",
                )
                return
            if reg.invoke != invoke:
                self._error(
                    session,
                    rtype,
                    msg.request,
                    errors.PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT,
                    f"procedure {msg.procedure!r} is registered with invoke {reg.invoke!r}",
                )
                return
        disclose = options.get("disclose_caller") is True
        if not cluster.distributed:
            reg = self._add_callee(session, msg.procedure, match, invoke, disclose, 0, 0)
            session.peer.send(Registered(msg.request, reg.id))
            self._announce(session, reg, reg.callees == [session])
            return
        if not cluster.available:
            self._error(
                session,
                rtype,
                msg.request,
                errors.UNAVAILABLE,
                "the cluster is unreachable: cannot register now",
            )
            return

        def claimed(error: str | None, text: str, reg_id: int, seq: int) -> None:
            if self.realm.sessions.get(session.id) is not session:
                return  # the callee left meanwhile; the backend releases the claim
            if error is not None:
                self._error(session, rtype, msg.request, error, text)
                return
            reg = self._add_callee(session, msg.procedure, match, invoke, disclose, reg_id, seq)
            session.peer.send(Registered(msg.request, reg.id))
            self._announce(session, reg, len(reg.callees) == 1)

        cluster.claim(self.realm.name, session, msg.procedure, match, invoke, disclose, claimed)

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
        broker = self.realm.broker
        if created:
            broker.publish_meta("wamp.registration.on_create", [session.id, reg.info()])
        broker.publish_meta("wamp.registration.on_register", [session.id, reg.id])

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
            self._error(
                session,
                MessageType.UNREGISTER,
                msg.request,
                errors.NO_SUCH_REGISTRATION,
                "not registered",
            )
            return
        request = msg.request
        self._remove_callee(session, reg, lambda: session.peer.send(Unregistered(request)))

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
        broker = self.realm.broker
        broker.publish_meta("wamp.registration.on_unregister", [session.id, reg.id])
        if not reg.callees:
            self._regs.remove(reg.procedure, reg.match)
            del self._by_id[reg.id]
            broker.publish_meta("wamp.registration.on_delete", [session.id, reg.id])
        if done is not None:
            done()

    # --- CALL ------------------------------------------------------------------------
    def call(self, session: Session, msg: Call) -> None:
        """Handle CALL: route to a callee (or a meta procedure), arm the timeout."""
        procedure = msg.procedure
        rtype = MessageType.CALL
        if not is_valid_uri(procedure):
            self._error(
                session,
                rtype,
                msg.request,
                errors.INVALID_URI,
                f"invalid procedure URI {procedure!r}",
            )
            return
        if msg.request in session.calls:
            self._error(
                session,
                rtype,
                msg.request,
                errors.INVALID_ARGUMENT,
                "a call with this request ID is still pending",
            )
            return
        internal = self.internal.get(procedure) if is_reserved(procedure) else None
        if internal is not None:
            self._call_internal(session, msg, internal)
            return
        reg = self._regs.best(procedure)
        if reg is None:
            self._error(
                session,
                rtype,
                msg.request,
                errors.NO_SUCH_PROCEDURE,
                f"no callee registered procedure {procedure!r}",
            )
            return
        options = msg.options
        timeout = options.get("timeout", 0)
        if type(timeout) not in (int, float) or timeout < 0:
            self._error(
                session,
                rtype,
                msg.request,
                errors.INVALID_ARGUMENT,
                "timeout must be a non-negative number of milliseconds",
            )
            return
        eligible = None
        if reg.match != MATCH_EXACT and _guard(self.realm) is not None:
            # remote callees are checked on their own node (invoke_remote)
            def eligible(callee: Session) -> bool:
                return isinstance(callee, RemoteSession) or self._may_serve(reg, callee, procedure)

        callee = reg.pick(eligible)
        if callee is None:
            session.peer.send(_no_eligible_callee(msg.request, procedure))
            return
        if isinstance(callee, RemoteSession) and not self.realm.cluster.available:
            self._error(
                session,
                rtype,
                msg.request,
                errors.UNAVAILABLE,
                "the callee is on another node and the cluster is unreachable",
            )
            return
        details: dict[str, Any] = {}
        if reg.match != MATCH_EXACT:
            details["procedure"] = procedure
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
        session.calls[msg.request] = pending
        callee.invocations[request] = pending
        if timeout:
            pending.timer = self.scheduler.call_later(
                timeout / 1000.0, lambda: self._on_timeout(pending)
            )
        callee.peer.send(Invocation(request, reg.id, details, msg.args, msg.kwargs))

    def _may_serve(self, reg: Registration, callee: Session, procedure: str) -> bool:
        """A pattern registration never serves a procedure its callee's role may not register."""
        guard = _guard(self.realm)
        return (
            guard is None or reg.match == MATCH_EXACT or guard.may_serve(callee.authrole, procedure)
        )

    def _call_internal(self, session: Session, msg: Call, proc: InternalProcedure) -> None:
        try:
            args, kwargs = proc(session, list(msg.args or ()), dict(msg.kwargs or {}))
        except InternalError as exc:
            session.peer.send(
                Error(MessageType.CALL, msg.request, {}, exc.uri, exc.args_list or None)
            )
            return
        except (TypeError, ValueError, KeyError) as exc:
            self._error(
                session,
                MessageType.CALL,
                msg.request,
                errors.INVALID_ARGUMENT,
                f"invalid arguments for {msg.procedure}: {exc}",
            )
            return
        session.peer.send(Result(msg.request, {}, args, kwargs))

    def _disclose(self, options: dict[str, Any], reg: Registration) -> bool:
        policy = self.realm.settings.disclose_caller
        if policy == "always":
            return True
        if policy == "never":
            return False
        return reg.disclose_caller or options.get("disclose_me") is True

    # --- YIELD / ERROR from callees --------------------------------------------------
    def yield_(self, session: Session, msg: Yield) -> None:
        """Handle YIELD: forward RESULT (progressive or final) to the caller."""
        progress = msg.options.get("progress") is True
        self.answer_result(session, msg.request, progress, msg.args, msg.kwargs)

    def invocation_error(self, session: Session, msg: Error) -> None:
        """Handle ERROR for an INVOCATION: forward it to the caller as a CALL error."""
        self.answer_error(session, msg.request, msg.details, msg.error, msg.args, msg.kwargs)

    def answer_result(
        self,
        callee: Session,
        request: int,
        progress: bool,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
    ) -> None:
        """Callee ``callee`` answered its invocation ``request`` (a YIELD, or a remote result).

        A remote callee's node calls this directly: nothing is rebuilt into a YIELD.
        """
        pending = callee.invocations.get(request)
        if pending is None:
            return  # late answer to a call that was canceled or timed out
        if progress:
            if pending.receive_progress and not pending.canceled:
                pending.caller.peer.send(
                    Result(pending.call_request, {"progress": True}, args, kwargs)
                )
            return
        self._finish(pending)
        if not pending.canceled:
            pending.caller.peer.send(Result(pending.call_request, {}, args, kwargs))

    def answer_error(
        self,
        callee: Session,
        request: int,
        details: dict[str, Any],
        error: str,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
    ) -> None:
        """Callee ``callee`` failed its invocation ``request`` (an ERROR, or a remote error).

        A remote callee's node calls this directly: nothing is rebuilt into an ERROR.
        """
        pending = callee.invocations.get(request)
        if pending is None:
            return
        self._finish(pending)
        if not pending.canceled:
            pending.caller.peer.send(
                Error(MessageType.CALL, pending.call_request, details, error, args, kwargs)
            )

    # --- CANCEL and timeouts ------------------------------------------------------------
    def cancel(self, session: Session, msg: Cancel) -> None:
        """Handle CANCEL with mode skip, kill or killnowait (default killnowait)."""
        pending = session.calls.get(msg.request)
        if pending is None or pending.canceled:
            return
        mode = msg.options.get("mode", "killnowait")
        if type(mode) is not str or mode not in CANCEL_MODES:
            mode = "killnowait"
        callee_cancels = pending.callee.supports("callee", "call_canceling")
        if mode == "kill" and callee_cancels:
            pending.callee.peer.send(Interrupt(pending.invocation_request, {"mode": "kill"}))
            return  # the callee's ERROR (or RESULT) answers the caller
        if mode == "killnowait" and callee_cancels:
            pending.callee.peer.send(Interrupt(pending.invocation_request, {"mode": "killnowait"}))
            self._finish(pending)
        else:
            # skip (or a callee that cannot be interrupted): answer now, drop the
            # callee's eventual answer when it comes.
            self._detach_caller(pending)
        pending.canceled = True
        session.peer.send(
            Error(MessageType.CALL, msg.request, {}, errors.CANCELED, ["call canceled"])
        )

    def _on_timeout(self, pending: PendingCall) -> None:
        pending.timer = None
        if pending.canceled or pending.caller.calls.get(pending.call_request) is not pending:
            return
        if pending.callee.supports("callee", "call_canceling"):
            pending.callee.peer.send(
                Interrupt(
                    pending.invocation_request, {"mode": "killnowait", "reason": errors.TIMEOUT}
                )
            )
        self._finish(pending)
        pending.canceled = True
        pending.caller.peer.send(
            Error(
                MessageType.CALL,
                pending.call_request,
                {},
                errors.TIMEOUT,
                ["call timed out in the router"],
            )
        )

    def _finish(self, pending: PendingCall) -> None:
        """Forget the call on both sides and stop its timer."""
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if pending.caller.calls.get(pending.call_request) is pending:
            del pending.caller.calls[pending.call_request]
        if pending.callee.invocations.get(pending.invocation_request) is pending:
            del pending.callee.invocations[pending.invocation_request]

    def _detach_caller(self, pending: PendingCall) -> None:
        """Forget the call on the caller's side only (skip-cancel)."""
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if pending.caller.calls.get(pending.call_request) is pending:
            del pending.caller.calls[pending.call_request]

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
            caller.peer.send(
                Error(MessageType.CALL, request, {}, errors.CANCELED, ["callee disconnected"])
            )
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
        caller.calls[request] = pending
        callee.invocations[invocation] = pending
        callee.peer.send(Invocation(invocation, reg_id, details, args, kwargs))

    def interrupt_remote(
        self, caller: RemoteSession, request: int, options: dict[str, Any]
    ) -> None:
        """The caller node canceled (or timed out) call ``request``: interrupt the callee."""
        pending = caller.calls.get(request)
        if pending is None:
            return
        if pending.callee.supports("callee", "call_canceling"):
            pending.callee.peer.send(Interrupt(pending.invocation_request, options))
        if options.get("mode") != "kill":
            self._finish(pending)
            pending.canceled = True

    def abandon(self, session: Session, uri: str, text: str) -> None:
        """End every call ``session`` serves (ERROR ``uri`` to callers) or made (INTERRUPT)."""
        for pending in list(session.invocations.values()):
            self._finish(pending)
            if not pending.canceled:
                pending.canceled = True
                pending.caller.peer.send(
                    Error(MessageType.CALL, pending.call_request, {}, uri, [text])
                )
        for pending in list(session.calls.values()):
            self._finish(pending)
            if pending.callee.supports("callee", "call_canceling"):
                pending.callee.peer.send(
                    Interrupt(pending.invocation_request, {"mode": "killnowait"})
                )

    # --- a session leaves -------------------------------------------------------------
    def detach(self, session: Session, text: str = "callee disconnected") -> None:
        """Fail calls served by the leaving session, interrupt calls it made, unregister."""
        self.abandon(session, errors.CANCELED, text)
        for reg_id in list(session.registrations):
            reg = self._by_id.get(reg_id)
            if reg is not None and session in reg.callees:
                self._remove_callee(session, reg)
        session.registrations.clear()

    @staticmethod
    def _error(session: Session, request_type: int, request: int, uri: str, text: str) -> None:
        session.peer.send(Error(request_type, request, {}, uri, [text]))
