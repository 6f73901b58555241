"""What a ``Client`` keeps across reconnections: subscriptions and registrations.

Each is the application's *intent* (topic or procedure, handler, options); on every
join the ``Client`` applies it to the new ``Session`` (``_apply``), and
``unsubscribe``/``unregister`` stop keeping it. A subscription made with
``resume=True`` also carries a ``resume.Resumer`` that remembers what was delivered
and recovers what was missed after a re-join.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import SessionClosed
from .pubsub import EventHandler, Subscription
from .resume import GapHandler, Resumer
from .rpc import ProcedureHandler, Registration
from .session import Session
from .values import Gap, InvokePolicy, MatchPolicy

if TYPE_CHECKING:
    from .client import Client

__all__ = ["ClientRegistration", "ClientSubscription"]

log = logging.getLogger(__name__)


@dataclass(eq=False)
class ClientSubscription:
    """A subscription the client keeps across reconnections; ``await s.unsubscribe()``.

    With ``resume`` its events go through a ``client_sdk.resume.Resumer``: each
    publication is handed to the handler once, and after every re-join what was
    published meanwhile is fetched from the router's event history and delivered
    first, in order (``Event.replayed``). ``complete`` tells whether the last
    recovery proved nothing was missed; ``on_gap`` is told when it could not.
    """

    topic: str
    handler: EventHandler
    match: MatchPolicy
    get_retained: bool
    current: Subscription | None = None
    active: bool = True
    _client: Client | None = field(default=None, repr=False)
    resume: bool = False
    on_gap: GapHandler | None = field(default=None, repr=False)
    _resumer: Resumer | None = field(default=None, repr=False)
    _task: asyncio.Task[None] | None = field(default=None, repr=False)
    _applied: bool = field(default=False, repr=False)

    def __post_init__(self) -> None:
        if self.resume:
            self._resumer = Resumer(self.topic, self.handler, self.on_gap)

    @property
    def complete(self) -> bool:
        """False while a recovery runs and after one that reported a gap (always True without resume)."""
        return self._resumer.complete if self._resumer is not None else True

    @property
    def recovering(self) -> bool:
        """True while missed events are being fetched (live events wait meanwhile)."""
        return self._resumer is not None and self._resumer.recovering

    @property
    def last_publication(self) -> int | None:
        """The publication ID last handed to the handler (resume only, else None)."""
        return self._resumer.last_publication if self._resumer is not None else None

    @property
    def replayed(self) -> int:
        """How many events were delivered from the router's history so far (resume only)."""
        return self._resumer.replayed if self._resumer is not None else 0

    @property
    def gaps(self) -> list[Gap]:
        """Every gap reported so far (resume only)."""
        return list(self._resumer.gaps) if self._resumer is not None else []

    async def recovered(self) -> bool:
        """Wait until no recovery runs; return ``complete``."""
        return await self._resumer.recovered() if self._resumer is not None else True

    async def unsubscribe(self) -> None:
        """Stop restoring this subscription and remove it from the current session."""
        if self.active and self._client is not None:
            await self._client._forget(self)

    async def _apply(self, session: Session) -> None:
        resumer = self._resumer
        if resumer is None:
            self.current = await session.subscribe(
                self.topic, self.handler, match=self.match, get_retained=self.get_retained
            )
            return
        self._stop_recovery()
        rejoin = self._applied
        if rejoin:
            resumer.begin()  # buffer live events until the history is delivered
        try:
            self.current = await session.subscribe(
                self.topic, resumer.deliver, match=self.match, get_retained=self.get_retained
            )
        except BaseException:
            resumer.abandon()
            raise
        self._applied = True
        step = resumer.recover if rejoin else resumer.anchor
        self._start(_quietly(step(session, self.current.id)), f"wamp-resume-{self.topic}")

    def _start(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        task = asyncio.create_task(coro, name=name)
        self._task = task
        if self._client is not None:
            self._client._background.add(task)
            task.add_done_callback(self._client._background.discard)

    def _stop_recovery(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
        if self._resumer is not None:
            self._resumer.abandon()

    async def _release(self) -> None:
        self._stop_recovery()
        current, self.current = self.current, None
        if current is not None:
            await current.unsubscribe()


@dataclass(eq=False)
class ClientRegistration:
    """A registration the client keeps across reconnections; ``await r.unregister()``."""

    procedure: str
    handler: ProcedureHandler
    match: MatchPolicy
    invoke: InvokePolicy
    details_arg: str | None
    current: Registration | None = None
    active: bool = True
    _client: Client | None = field(default=None, repr=False)

    async def unregister(self) -> None:
        """Stop restoring this registration and remove it from the current session."""
        if self.active and self._client is not None:
            await self._client._forget(self)

    async def _apply(self, session: Session) -> None:
        self.current = await session.register(
            self.procedure,
            self.handler,
            match=self.match,
            invoke=self.invoke,
            details_arg=self.details_arg,
        )

    async def _release(self) -> None:
        current, self.current = self.current, None
        if current is not None:
            await current.unregister()


async def _quietly(step: Coroutine[Any, Any, None]) -> None:
    """Run a resume step; the end of its session is not an error (the next join retries)."""
    try:
        await step
    except SessionClosed as exc:
        log.debug("resume step ended with its session: %s", exc)
