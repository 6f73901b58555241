"""Calls in flight: progressive and final results, callee errors, cancel and timeouts.

A call becomes a ``PendingCall`` (``session.py``) indexed twice: by the caller's CALL
request ID in ``caller.calls`` and by the callee's INVOCATION request ID in
``callee.invocations``. Whichever side ends first (result, error, cancel, timeout, a
session leaving) removes both entries, so nothing waits forever and nothing leaks.
The dealer starts calls here and hands every later message about them to this module.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from protocol_spec import errors
from protocol_spec.messages import (
    Cancel,
    Error,
    Interrupt,
    Invocation,
    Message,
    MessageType,
    Result,
)

if TYPE_CHECKING:
    from .interfaces import Peer, Scheduler
    from .session import PendingCall, Session

__all__ = ["CANCEL_MODES", "Invocations", "delivered"]

CANCEL_MODES = frozenset({"skip", "kill", "killnowait"})

log = logging.getLogger(__name__)

UNDELIVERABLE_INVOCATION = "the call's arguments cannot be encoded for the callee"
UNDELIVERABLE_RESULT = "the result cannot be encoded for the caller"
UNDELIVERABLE_ERROR = "the callee's error cannot be encoded for the caller"


def delivered(peer: Peer, message: Message) -> bool:
    """Send ``message``; False when the recipient cannot carry it (see ``Peer.send``).

    A peer that raises instead (a cluster stand-in whose envelope does not encode)
    counts as not delivered: the failure belongs to the recipient, never to the session
    whose message the dealer is handling.
    """
    try:
        return peer.send(message) is not False
    except Exception as exc:
        log.warning("cannot deliver %s: %s: %s", type(message).__name__, type(exc).__name__, exc)
        return False


def _interrupt(pending: PendingCall, options: dict[str, Any]) -> None:
    """INTERRUPT the callee, if it announced ``call_canceling`` (else it never hears)."""
    if pending.callee.supports("callee", "call_canceling"):
        pending.callee.peer.send(Interrupt(pending.invocation_request, options))


def _answer_error(pending: PendingCall, uri: str, text: str) -> None:
    pending.caller.peer.send(Error(MessageType.CALL, pending.call_request, {}, uri, [text]))


class Invocations:
    """The bookkeeping of one realm's calls between INVOCATION and the caller's answer."""

    __slots__ = ("scheduler",)

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def start(self, pending: PendingCall, timeout: float, invocation: Invocation) -> None:
        """Index the call on both sides, arm its timeout (ms, 0: none), send INVOCATION."""
        pending.caller.calls[pending.call_request] = pending
        pending.callee.invocations[pending.invocation_request] = pending
        if timeout:
            pending.timer = self.scheduler.call_later(
                timeout / 1000.0, lambda: self._on_timeout(pending)
            )
        if not delivered(pending.callee.peer, invocation):
            self.finish(pending)
            _answer_error(pending, errors.INVALID_ARGUMENT, UNDELIVERABLE_INVOCATION)

    # --- YIELD / ERROR from callees --------------------------------------------------
    def answer_result(
        self,
        callee: Session,
        request: int,
        progress: bool,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
    ) -> None:
        """Forward a callee's answer (progressive or final) to the caller as RESULT.

        A YIELD, or a remote callee's result: its node calls this directly, nothing is
        rebuilt into a YIELD.
        """
        pending = callee.invocations.get(request)
        if pending is None:
            return  # late answer to a call that was canceled or timed out
        if progress:
            if pending.receive_progress and not pending.canceled:
                result = Result(pending.call_request, {"progress": True}, args, kwargs)
                if not delivered(pending.caller.peer, result):
                    self.finish(pending)  # the caller's answer is the ERROR below
                    self._undeliverable(pending, UNDELIVERABLE_RESULT)
            return
        self.finish(pending)
        if not pending.canceled:
            result = Result(pending.call_request, {}, args, kwargs)
            if not delivered(pending.caller.peer, result):
                self._undeliverable(pending, UNDELIVERABLE_RESULT)

    def answer_error(
        self,
        callee: Session,
        request: int,
        details: dict[str, Any],
        error: str,
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
    ) -> None:
        """Forward a callee's failure (an ERROR, or a remote error) to the caller as a CALL error."""
        pending = callee.invocations.get(request)
        if pending is None:
            return
        self.finish(pending)
        if not pending.canceled:
            answer = Error(MessageType.CALL, pending.call_request, details, error, args, kwargs)
            if not delivered(pending.caller.peer, answer):
                self._undeliverable(pending, UNDELIVERABLE_ERROR)

    @staticmethod
    def _undeliverable(pending: PendingCall, text: str) -> None:
        """Answer the caller with ERROR ``invalid_argument``: its RESULT/ERROR did not encode."""
        pending.canceled = True
        _answer_error(pending, errors.INVALID_ARGUMENT, text)

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
            self.finish(pending)
        else:
            # skip (or a callee that cannot be interrupted): answer now, drop the
            # callee's eventual answer when it comes.
            self._detach_caller(pending)
        pending.canceled = True
        _answer_error(pending, errors.CANCELED, "call canceled")

    def _on_timeout(self, pending: PendingCall) -> None:
        pending.timer = None
        if pending.canceled or pending.caller.calls.get(pending.call_request) is not pending:
            return
        _interrupt(pending, {"mode": "killnowait", "reason": errors.TIMEOUT})
        self.finish(pending)
        pending.canceled = True
        _answer_error(pending, errors.TIMEOUT, "call timed out in the router")

    def finish(self, pending: PendingCall) -> None:
        """Forget the call on both sides and stop its timer."""
        self._detach_caller(pending)
        if pending.callee.invocations.get(pending.invocation_request) is pending:
            del pending.callee.invocations[pending.invocation_request]

    def _detach_caller(self, pending: PendingCall) -> None:
        """Forget the call on the caller's side only (skip-cancel)."""
        if pending.timer is not None:
            pending.timer.cancel()
            pending.timer = None
        if pending.caller.calls.get(pending.call_request) is pending:
            del pending.caller.calls[pending.call_request]

    # --- calls between nodes and sessions leaving ----------------------------------------
    def interrupt_remote(self, caller: Session, request: int, options: dict[str, Any]) -> None:
        """The caller node canceled (or timed out) call ``request``: interrupt the callee."""
        pending = caller.calls.get(request)
        if pending is None:
            return
        _interrupt(pending, options)
        if options.get("mode") != "kill":
            self.finish(pending)
            pending.canceled = True

    def abandon(self, session: Session, uri: str, text: str) -> None:
        """End every call ``session`` serves (ERROR ``uri`` to callers) or made (INTERRUPT)."""
        for pending in list(session.invocations.values()):
            self.finish(pending)
            if not pending.canceled:
                pending.canceled = True
                _answer_error(pending, uri, text)
        for pending in list(session.calls.values()):
            self.finish(pending)
            _interrupt(pending, {"mode": "killnowait"})
