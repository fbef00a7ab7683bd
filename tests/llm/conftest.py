"""Fixtures for the LLM layer: one stub process per test module, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.openai_stub import StubServer, start_stub


@pytest.fixture(scope="module")
def stub() -> Iterator[StubServer]:
    server = start_stub()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(autouse=True)
def _fresh_stub(request: pytest.FixtureRequest) -> None:
    # Only tests that use the stub pay for the reset round-trip.
    if "stub" in request.fixturenames:
        server: StubServer = request.getfixturevalue("stub")
        server.reset()
