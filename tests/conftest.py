"""Shared fixtures: a real broker process per test module or test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.processes import BrokerProcess, start_broker


@pytest.fixture(scope="module")
def broker() -> Iterator[BrokerProcess]:
    """A broker process on the embedded default (realm1, anonymous), shared per module."""
    proc = start_broker()
    yield proc
    proc.stop()


@pytest.fixture
def fresh_broker() -> Iterator[BrokerProcess]:
    """A broker process of its own for tests that kill or restart it."""
    proc = start_broker()
    yield proc
    proc.stop()
