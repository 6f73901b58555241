"""Throttling of failed authentication attempts, per peer address and per authid.

Each key (a peer address; a realm's authid) has a failure level that leaks away
over time. Below ``free_failures`` attempts are not slowed down. Above it, checks
for that key are spaced out: each one gets a slot ``delay`` after the previous one,
the delay doubling with every further failure up to ``max_delay``; an attempt whose
slot is more than ``max_wait`` away is refused without checking anything. At
``lockout_after`` failures the key is refused outright for ``lockout`` seconds.
Refusals and throttled failures are answered after a delay too, so a guesser's
connections sit idle instead of cycling, and every answer is the same ABORT as any
failure: nothing tells the client it was throttled.

Memory is bounded: at most ``max_entries`` keys, least recently used evicted first
(an attacker who wants to evict its own entry has to fail, slowly, ``max_entries``
times). The counters (``failures``, ``throttled``, ``overloaded``, by realm and
authmethod) are what ``/metrics`` reports. Failures are logged at most once per
``log_interval`` with the number left out.
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["ADDRESS_POLICY", "AUTHID_POLICY", "Admission", "AuthGuard", "ThrottlePolicy"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ThrottlePolicy:
    """How one kind of key (address, authid) is throttled."""

    free_failures: int
    """Failures (after leaking) before checks are spaced out."""
    leak: float
    """Failures forgiven per second."""
    lockout_after: int
    """Failures at which the key is refused outright."""
    lockout: float = 60.0
    """Seconds a locked key stays refused."""
    base_delay: float = 0.5
    """Spacing of checks at ``free_failures``; it doubles with each further failure."""
    max_delay: float = 4.0
    """The largest spacing (and the longest an answer is held back)."""

    def delay(self, level: float) -> float:
        """The spacing between checks at failure ``level`` (0 below ``free_failures``)."""
        if level < self.free_failures:
            return 0.0
        exponent = min(level - self.free_failures, 16.0)
        return float(min(self.max_delay, self.base_delay * 2.0**exponent))


ADDRESS_POLICY = ThrottlePolicy(free_failures=20, leak=0.5, lockout_after=40)
"""Per peer address: a NAT of users may mistype a few times; a guesser gets ~2/s, then none."""
AUTHID_POLICY = ThrottlePolicy(free_failures=10, leak=0.2, lockout_after=30)
"""Per realm and authid, whatever the address (a distributed guess at one account)."""


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether an attempt may be checked, and after how many seconds.

    Refused: ``wait`` is how long to hold the ABORT back.
    """

    allowed: bool
    wait: float = 0.0


_ADMIT_NOW = Admission(True)


class _Entry:
    __slots__ = ("level", "locked_until", "next_slot", "updated")

    def __init__(self, now: float) -> None:
        self.level = 0.0
        self.updated = now
        self.next_slot = now
        self.locked_until = 0.0


_Key = tuple[str, ...]
_Count = dict[tuple[str, ...], int]


class AuthGuard:
    """Failure levels by key, admission of attempts, and the counters for metrics."""

    def __init__(
        self,
        address_policy: ThrottlePolicy = ADDRESS_POLICY,
        authid_policy: ThrottlePolicy = AUTHID_POLICY,
        *,
        max_entries: int = 20_000,
        max_wait: float = 2.0,
        max_consults: int = 256,
        log_interval: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.address_policy = address_policy
        self.authid_policy = authid_policy
        self.max_entries = max_entries
        self.max_wait = max_wait
        self.max_consults = max_consults
        self.log_interval = log_interval
        self.clock = clock
        self.failures: _Count = {}
        """Checked attempts that failed, by (realm, authmethod)."""
        self.throttled: _Count = {}
        """Attempts refused unchecked because their address or authid is throttled."""
        self.overloaded: _Count = {}
        """Attempts refused because the derivation pool or the consult cap was full."""
        self.consults = 0
        """Dynamic-authenticator calls in flight."""
        self.lockouts = 0
        """Times a key was locked out (logged with the failures)."""
        self._entries: OrderedDict[_Key, _Entry] = OrderedDict()
        self._logged_at = -log_interval
        self._unlogged = 0

    def __len__(self) -> int:
        return len(self._entries)

    def _keys(self, address: str, realm: str, authid: str) -> list[tuple[_Key, ThrottlePolicy]]:
        keys: list[tuple[_Key, ThrottlePolicy]] = []
        if address:
            keys.append((("address", address), self.address_policy))
        if authid:
            keys.append((("authid", realm, authid[:256]), self.authid_policy))
        return keys

    def _get(self, key: _Key, policy: ThrottlePolicy, now: float) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        entry.level = max(0.0, entry.level - (now - entry.updated) * policy.leak)
        entry.updated = now
        if entry.level == 0.0 and entry.locked_until <= now and entry.next_slot <= now:
            del self._entries[key]  # forgotten: as if it never failed
            return None
        self._entries.move_to_end(key)
        return entry

    def admit(self, address: str, realm: str, authid: str) -> Admission:
        """Decide whether an attempt from ``address`` for ``authid`` may be checked, and when."""
        now = self.clock()
        found = []
        wait, hold, refuse = 0.0, 0.0, False
        for key, policy in self._keys(address, realm, authid):
            entry = self._get(key, policy, now)
            if entry is None:
                continue
            delay = policy.delay(entry.level)
            hold = max(hold, delay)
            if now < entry.locked_until:
                refuse, hold = True, max(hold, policy.max_delay)
            elif delay > 0.0:
                slot_wait = max(0.0, entry.next_slot - now)
                refuse = refuse or slot_wait > self.max_wait
                wait = max(wait, slot_wait)
                found.append((entry, delay))
        if refuse:
            return Admission(False, hold)
        if not found:
            return _ADMIT_NOW
        for entry, delay in found:
            entry.next_slot = now + wait + delay
        return Admission(True, wait)

    def failed(self, address: str, realm: str, authid: str, authmethod: str) -> float:
        """Record a failed check; return how long to hold back its ABORT."""
        now = self.clock()
        count(self.failures, realm, authmethod)
        hold = 0.0
        for key, policy in self._keys(address, realm, authid):
            entry = self._get(key, policy, now)
            if entry is None:
                entry = self._entries[key] = _Entry(now)
                self._evict()
            entry.level += 1.0
            if entry.level >= policy.lockout_after and entry.locked_until <= now:
                entry.locked_until = now + policy.lockout
                self.lockouts += 1
            hold = max(hold, policy.delay(entry.level - 1.0))
        self._log(now, address, realm, authmethod)
        return hold

    def refused(self, realm: str, authmethod: str) -> None:
        """Count an attempt refused unchecked (throttled)."""
        count(self.throttled, realm, authmethod)

    def overload(self, realm: str, authmethod: str) -> None:
        """Count an attempt refused because too much authentication work is pending."""
        count(self.overloaded, realm, authmethod)
        log.warning("authentication work queue full: refused an attempt (realm %r)", realm)

    def begin_consult(self) -> bool:
        """Reserve a dynamic-authenticator call; False when ``max_consults`` are in flight."""
        if self.consults >= self.max_consults:
            return False
        self.consults += 1
        return True

    def end_consult(self) -> None:
        """A dynamic-authenticator call got its answer (or timed out)."""
        self.consults = max(0, self.consults - 1)

    def _evict(self) -> None:
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def _log(self, now: float, address: str, realm: str, authmethod: str) -> None:
        if now - self._logged_at < self.log_interval:
            self._unlogged += 1
            return
        log.warning(
            "authentication failed from %s (realm %r, %s); %d other failure(s) not logged; "
            "%d lockout(s) so far",
            address or "an internal peer",
            realm,
            authmethod,
            self._unlogged,
            self.lockouts,
        )
        self._logged_at = now
        self._unlogged = 0


def count(counter: _Count, realm: str, authmethod: str) -> None:
    """Add one to ``counter[(realm, authmethod)]``."""
    key = (realm, authmethod)
    counter[key] = counter.get(key, 0) + 1
