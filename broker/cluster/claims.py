"""Registration claims and releases: the commands running the atomic Lua scripts.

See protocol_spec/cluster.md, "Registration claims"; the scripts are in ``scripts``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from broker.core.host import ClusterHost
from broker.core.ports import ClaimDone
from broker.core.session import Session
from protocol_spec import errors
from protocol_spec.cluster import CalleeRecord, CalleeRemoved

from . import keys
from .keys import CONTROL, SEP, text
from .outbox import Command, Reply
from .scripts import CLAIM, RELEASE

if TYPE_CHECKING:
    from broker.core.dealer import Registration

__all__ = ["Claim", "claim_reply", "reclaim_reply", "release_command", "release_entry"]

log = logging.getLogger(__name__)

Push = Callable[[Command], None]


@dataclass(frozen=True, slots=True)
class Claim:
    """A local callee's claim on (match, procedure) in ``realm``."""

    realm: str
    session: Session
    procedure: str
    match: str
    invoke: str
    disclose: bool

    @classmethod
    def held(cls, realm: str, reg: Registration, callee: Session) -> Claim:
        """The claim of a callee already in ``reg`` (to write it again)."""
        return cls(realm, callee, reg.procedure, reg.match, reg.invoke, reg.disclose_caller)

    def command(self, node: str, candidate: int, reclaim: bool, pub: str) -> Command:
        """The claim script call; ``candidate`` is the ID used if the key is new.

        ``pub`` is the publish command (``PUBLISH``, ``SPUBLISH`` on a Redis Cluster).
        """
        session = self.session
        callee = session.client_roles.get("callee")
        features = callee.get("features") if isinstance(callee, dict) else None
        entry = CalleeRecord(
            node=node,
            realm=self.realm,
            uri=self.procedure,
            match=self.match,
            invoke=self.invoke,
            session=session.id,
            disclose=self.disclose,
            authid=session.authid,
            authrole=session.authrole,
            features={k: v for k, v in (features or {}).items() if isinstance(v, bool)},
        )
        return (
            "EVAL",
            CLAIM,
            3,
            keys.reg_key(self.realm, self.match, self.procedure),
            keys.node_hash(node, "regs"),
            keys.SEQ,
            self.invoke,
            str(candidate),
            f"{node}:{session.id}",
            "1" if reclaim else "0",
            entry.pack(),
            CONTROL,
            node,
            f"{self.realm}{SEP}",
            str(session.id),
            pub,
        )

    def release(self, node: str, reg_id: int, pub: str) -> Command:
        """The release script call for this claim, granted as ``reg_id``."""
        return release_command(
            node, self.realm, reg_id, self.procedure, self.match, self.session.id, pub
        )


def claim_reply(
    claim: Claim, node: str, host: ClusterHost, done: ClaimDone, push: Push, pub: str
) -> Reply:
    """Answer ``done`` from the script's result.

    A grant whose callee left the registration meanwhile is released at once.
    """
    procedure = claim.procedure

    def reply(result: Any) -> None:
        if isinstance(result, BaseException):
            done(errors.UNAVAILABLE, "the cluster is unreachable: cannot register now", 0, 0)
            return
        status = text(result[0])
        if status == "exists":
            done(
                errors.PROCEDURE_ALREADY_EXISTS,
                f"procedure {procedure!r} is already registered",
                0,
                0,
            )
        elif status == "conflict":
            message = f"procedure {procedure!r} is registered with invoke {text(result[1])!r}"
            done(errors.PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT, message, 0, 0)
        else:
            reg_id = int(result[1])
            done(None, "", reg_id, int(result[2]))
            realm = host.realms.get(claim.realm)
            reg = realm.dealer.registration(reg_id) if realm is not None else None
            if reg is None or claim.session not in reg.callees:
                push(claim.release(node, reg_id, pub))

    return reply


def release_command(
    node: str, realm: str, reg_id: int, procedure: str, match: str, sid: int, pub: str
) -> Command:
    """The release script call for callee ``sid`` of ``node``."""
    env = CalleeRemoved(node, realm, reg_id, sid)
    return (
        "EVAL",
        RELEASE,
        2,
        keys.reg_key(realm, match, procedure),
        keys.node_hash(node, "regs"),
        f"{node}:{sid}",
        f"{realm}{SEP}{reg_id}{SEP}{sid}",
        CONTROL,
        env.pack(),
        pub,
    )


def release_entry(entry: CalleeRecord, pub: str) -> Command:
    """The release script call for a callee entry read back from a ``:regs`` hash."""
    return release_command(
        entry.node, entry.realm, entry.reg, entry.uri, entry.match, entry.session, pub
    )


def reclaim_reply(callee: Session, reg: Registration) -> Reply:
    """Log a reclaim (after an outage) that Redis did not grant."""

    def reply(result: Any) -> None:
        if isinstance(result, BaseException) or text(result[0]) != "ok":
            log.warning(
                "cluster: %r could not reclaim registration %r after a Redis outage: %s",
                callee,
                reg.procedure,
                result if isinstance(result, BaseException) else text(result[0]),
            )

    return reply
