"""Fixtures for the interop tests: a pool of Autobahn clients on the module's broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.processes import BrokerProcess

from ._autobahn import ClientPool


@pytest.fixture
async def clients(broker: BrokerProcess) -> AsyncIterator[ClientPool]:
    """Autobahn clients on the module's broker, closed with GOODBYE after the test."""
    pool = ClientPool(broker.url)
    yield pool
    await pool.close_all()
