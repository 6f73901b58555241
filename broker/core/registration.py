"""Registered procedures: one ``Registration`` per (match, URI) and its callees.

Also what the router answers itself (the meta API): ``InternalProcedure``, the
``InternalError`` such a procedure raises to answer with ERROR, and ``Deferred``, what it
returns to answer later (a backend that must ask Redis first).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .clock import now_iso
from .ids import random_id

if TYPE_CHECKING:
    from .session import Session

__all__ = [
    "INVOKE_POLICIES",
    "Deferred",
    "InternalError",
    "InternalProcedure",
    "InternalReply",
    "Registration",
]

INVOKE_POLICIES = frozenset({"single", "roundrobin", "random", "first", "last"})

InternalReply = tuple[list[Any] | None, dict[str, Any] | None]
"""An internal procedure's answer: RESULT (args, kwargs)."""

InternalProcedure = Callable[["Session", list[Any], dict[str, Any]], "InternalReply | Deferred"]
"""A router-implemented procedure (meta API): (caller, args, kwargs) → (args, kwargs).

It may return a ``Deferred`` instead: the answer then comes later, on the event loop.
"""


class InternalError(Exception):
    """Raised by an internal procedure to answer the caller with ERROR ``uri``."""

    def __init__(self, uri: str, *args: Any) -> None:
        super().__init__(uri, *args)
        self.uri = uri
        self.args_list = list(args)


class Deferred:
    """An internal procedure's answer that comes later (the core stays sans-I/O).

    ``start`` is called once by the dealer with the function that answers the caller:
    give it the RESULT (args, kwargs) or an ``InternalError``, once, on the event loop.
    A caller gone meanwhile is not answered.
    """

    __slots__ = ("start",)

    def __init__(self, start: Callable[[Callable[[InternalReply | InternalError], None]], None]):
        self.start = start


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
