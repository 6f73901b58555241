"""The state of a node's link to the cluster, as a table of allowed transitions.

::

    connecting --connected, subscriptions live, state republished--> up
    connecting --command or pub/sub error--> degraded
    connecting/up --probe not echoed on the pub/sub link--> deaf
    up --command, pub/sub or heartbeat error, or no answer within command_timeout--> degraded
    degraded/deaf --backoff with jitter elapsed--> connecting
    any --close--> down

Only ``up`` lets traffic cross nodes (``LinkState.available``). A transition not in
the table is refused and logged; the state stays as it was.
"""

from __future__ import annotations

import enum
import logging
from typing import Final

__all__ = ["TRANSITIONS", "LinkState", "LinkStateMachine"]

log = logging.getLogger(__name__)


class LinkState(enum.Enum):
    """Where the link to Redis stands (protocol_spec/cluster.md, "Redis outage")."""

    CONNECTING = "connecting"
    UP = "up"
    DEGRADED = "degraded"
    DEAF = "deaf"
    DOWN = "down"

    @property
    def available(self) -> bool:
        """Whether other nodes can be reached."""
        return self is LinkState.UP


_S = LinkState

TRANSITIONS: Final[dict[LinkState, frozenset[LinkState]]] = {
    _S.CONNECTING: frozenset({_S.UP, _S.DEGRADED, _S.DEAF, _S.DOWN}),
    _S.UP: frozenset({_S.DEGRADED, _S.DEAF, _S.DOWN}),
    _S.DEGRADED: frozenset({_S.CONNECTING, _S.DOWN}),
    _S.DEAF: frozenset({_S.CONNECTING, _S.DOWN}),
    _S.DOWN: frozenset(),
}
"""State → the states it may move to."""


class LinkStateMachine:
    """The current ``LinkState`` and why; moves only along ``TRANSITIONS``."""

    __slots__ = ("reason", "state")

    def __init__(self) -> None:
        self.state = LinkState.CONNECTING
        self.reason = ""

    def move(self, to: LinkState, reason: str = "") -> bool:
        """Go to ``to``; False (logged) when the table does not allow it."""
        if to not in TRANSITIONS[self.state]:
            if to is not self.state:
                log.warning(
                    "cluster: link state %s -> %s refused (%s)",
                    self.state.value,
                    to.value,
                    reason or "no reason",
                )
            return False
        log.debug("cluster: link state %s -> %s %s", self.state.value, to.value, reason)
        self.state = to
        self.reason = reason
        return True

    @property
    def text(self) -> str:
        """The state and its reason, for humans (``/readyz``)."""
        return f"{self.state.value}: {self.reason}" if self.reason else self.state.value
