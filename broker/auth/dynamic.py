"""Dynamic authentication: a procedure, registered by a trusted session, decides.

The router calls it the way Crossbar does: ``procedure(realm, authid, details)``
where ``details`` carries ``authmethod``, ``session`` and the method's proof
(``ticket`` for the ticket method). It answers with a role (a string) or a dict
``{"role": ..., "authid": ..., "extra": {...}}``; any ERROR (or no answer within
the timeout, or no such procedure) denies. Protect the procedure with roles: only
the trusted backend's role should be allowed to register it.
"""

from __future__ import annotations

from broker.core.auth import Accept, Deny, Outcome, Reply

from .secrets import FAILED

__all__ = ["DYNAMIC_PROVIDER", "parse_dynamic_reply"]

DYNAMIC_PROVIDER = "dynamic"


def parse_dynamic_reply(reply: Reply, authmethod: str, authid: str) -> Outcome:
    """Turn a dynamic authenticator's reply into Accept or Deny."""
    if not reply.ok or not reply.args:
        return Deny(message=FAILED)
    answer = reply.args[0]
    if isinstance(answer, str) and answer and authid:
        return Accept(authid, answer, authmethod, DYNAMIC_PROVIDER)
    if not isinstance(answer, dict):
        return Deny(message=FAILED)
    role = answer.get("role")
    new_authid = answer.get("authid", authid)
    extra = answer.get("extra", {})
    if (
        not isinstance(role, str)
        or not role
        or not isinstance(new_authid, str)
        or not new_authid
        or not isinstance(extra, dict)
    ):
        return Deny(message=FAILED)
    return Accept(new_authid, role, authmethod, DYNAMIC_PROVIDER, extra)
