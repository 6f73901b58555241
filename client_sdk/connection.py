"""``connect``: open a WebSocket, join a realm, hand back a ``Session``."""

from __future__ import annotations

import asyncio
import ssl as ssl_module
from collections.abc import Callable, Coroutine, Generator, Mapping, Sequence
from types import TracebackType
from typing import Any

import protocol_spec as wamp
from protocol_spec import errors as wamp_errors

from .auth import Authenticator
from .errors import JoinError
from .session import Session
from .transport import open_websocket

__all__ = ["Connect", "connect"]


class Connect:
    """The result of ``connect``: await it for a ``Session``, or use it with ``async with``."""

    def __init__(self, factory: Callable[[], Coroutine[Any, Any, Session]]) -> None:
        self._factory = factory
        self._session: Session | None = None

    def __await__(self) -> Generator[Any, None, Session]:
        return self._factory().__await__()

    async def __aenter__(self) -> Session:
        self._session = await self._factory()
        return self._session

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._session is not None:
            await self._session.leave()


def connect(
    url: str,
    realm: str,
    *,
    serializer: str = "msgpack",
    auth: Authenticator | Sequence[Authenticator] | None = None,
    join_timeout: float | None = 10.0,
    open_timeout: float | None = 10.0,
    max_message_size: int | None = 16 * 1024 * 1024,
    ping_interval: float | None = 20.0,
    ssl: ssl_module.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> Connect:
    """Open a WebSocket to ``url`` and join ``realm``; yield or return a ``Session``.

    ``async with connect(url, realm) as session:`` leaves the session on exit;
    ``session = await connect(...)`` leaves that to you (``await session.leave()``).
    ``serializer`` is ``"json"``, ``"msgpack"`` or ``"cbor"``: exactly that one
    subprotocol is offered. ``auth`` is an authenticator (``TicketAuth``,
    ``WampCraAuth``, ``CryptosignAuth``) or a list of them (each method is offered);
    None joins anonymously. Raises ``JoinError``, ``TransportLost`` or ``ClientError``.
    """
    wamp.by_name(serializer)  # fail early on an unknown serializer name

    async def open_session() -> Session:
        transport = await open_websocket(
            url,
            serializer,
            open_timeout=open_timeout,
            max_size=max_message_size,
            ping_interval=ping_interval,
            ssl=ssl,
            headers=headers,
        )
        session = Session(transport, realm, auth=auth)
        try:
            async with asyncio.timeout(join_timeout):
                await session.join()
        except TimeoutError:
            raise JoinError(wamp_errors.TIMEOUT, f"no WELCOME within {join_timeout} s") from None
        return session

    return Connect(open_session)
