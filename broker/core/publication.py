"""One publication as it travels through the core and between nodes.

A ``Publication`` is what PUBLISH (or a testament, or another node) produced: the
topic, the publication ID, the EVENT details, the payload, the black/whitelisting
filter and whether it is retained. The broker role fans it out, keeps it as the
retained event of its topic, and hands it to the cluster backend, which turns it into
an event envelope (protocol_spec/cluster.md, "Envelopes") and back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .session import Session

__all__ = ["DeliveryFilter", "Publication"]


@dataclass(frozen=True, slots=True)
class DeliveryFilter:
    """PUBLISH black- and whitelisting options, checked per receiving session."""

    exclude: frozenset[int] = frozenset()
    exclude_authid: frozenset[str] = frozenset()
    exclude_authrole: frozenset[str] = frozenset()
    eligible: frozenset[int] | None = None
    eligible_authid: frozenset[str] | None = None
    eligible_authrole: frozenset[str] | None = None

    def allows(self, session: Session) -> bool:
        """Tell whether ``session`` may receive the event."""
        if session.id in self.exclude:
            return False
        if session.authid in self.exclude_authid or session.authrole in self.exclude_authrole:
            return False
        if self.eligible is not None and session.id not in self.eligible:
            return False
        if self.eligible_authid is not None and session.authid not in self.eligible_authid:
            return False
        return not (
            self.eligible_authrole is not None and session.authrole not in self.eligible_authrole
        )

    def to_options(self) -> dict[str, Any]:
        """The PUBLISH options this filter stands for (``from_options`` reverses it)."""
        out: dict[str, Any] = {}
        for key in _FILTER_KEYS:
            value = getattr(self, key)
            if value:
                out[key] = sorted(value)
            elif value is not None and key.startswith("eligible"):
                out[key] = []
        return out

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> DeliveryFilter | None:
        """Build the filter from PUBLISH options; ``None`` when no list is given.

        Raises ``ValueError`` when a list has the wrong element type.
        """
        if not any(key in options for key in _FILTER_KEYS):
            return None
        return cls(
            exclude=_ids(options.get("exclude")) or frozenset(),
            exclude_authid=_strs(options.get("exclude_authid")) or frozenset(),
            exclude_authrole=_strs(options.get("exclude_authrole")) or frozenset(),
            eligible=_ids(options.get("eligible")),
            eligible_authid=_strs(options.get("eligible_authid")),
            eligible_authrole=_strs(options.get("eligible_authrole")),
        )


_FILTER_KEYS = (
    "exclude",
    "exclude_authid",
    "exclude_authrole",
    "eligible",
    "eligible_authid",
    "eligible_authrole",
)


def _ids(value: Any) -> frozenset[int] | None:
    if value is None:
        return None
    if type(value) is not list or not all(type(v) is int for v in value):
        raise ValueError("must be a list of session IDs")
    return frozenset(value)


def _strs(value: Any) -> frozenset[str] | None:
    if value is None:
        return None
    if type(value) is not list or not all(type(v) is str for v in value):
        raise ValueError("must be a list of strings")
    return frozenset(value)


@dataclass(slots=True)
class Publication:
    """One event to deliver: what every subscriber it reaches gets (before per-sub details).

    ``details`` holds the publisher disclosure (computed by the origin node); ``retain``
    says the event is also kept as its topic's retained event (event_retention).

    Read-only by convention, not ``frozen``: one is built for every PUBLISH and for
    every event from another node, and a frozen dataclass sets each field through
    ``object.__setattr__`` (about 4x the construction cost, bench/README.md, "Fifth pass").
    """

    topic: str
    id: int
    details: dict[str, Any]
    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    filter: DeliveryFilter | None = None
    retain: bool = False

    def filter_options(self) -> dict[str, Any] | None:
        """The filter as PUBLISH options (as the cluster carries it), or None."""
        return self.filter.to_options() if self.filter is not None else None

    @staticmethod
    def remote_filter(options: dict[str, Any] | None) -> DeliveryFilter | None:
        """The filter carried by a cluster envelope (validated by its origin node).

        A malformed one delivers to nobody.
        """
        try:
            return DeliveryFilter.from_options(options) if options else None
        except ValueError:
            return DeliveryFilter(eligible=frozenset())
