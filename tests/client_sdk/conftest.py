"""Fixtures for the client SDK tests: real broker processes (see tests/support)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest

from client_sdk import Session, connect
from tests.support.processes import BrokerProcess, start_broker

RouterProcess = BrokerProcess


def start_router(port: int = 0, *extra: str, timeout: float = 15.0) -> BrokerProcess:
    """Start a broker on 127.0.0.1:``port`` and wait for its "listening on" line."""
    return start_broker(*extra, port=port, timeout=timeout)


@pytest.fixture(scope="module")
def broker() -> Iterator[RouterProcess]:
    """A broker shared by the tests of one module (realm1, anonymous)."""
    router = start_router()
    yield router
    router.stop()


@pytest.fixture
def fresh_broker() -> Iterator[RouterProcess]:
    """A broker of its own for a test that kills or restarts it."""
    router = start_router()
    yield router
    router.stop()


@pytest.fixture
async def open_session(broker: RouterProcess) -> AsyncIterator[Callable[..., Awaitable[Session]]]:
    """A factory of joined sessions on the module's broker, all left at teardown."""
    sessions: list[Session] = []

    async def factory(serializer: str = "msgpack", **kwargs: Any) -> Session:
        session = await connect(broker.url, "realm1", serializer=serializer, **kwargs)
        sessions.append(session)
        return session

    yield factory
    for session in sessions:
        await session.leave()
