"""Analytics fixtures: settings whose chDB lives in the test's data dir, users, and
helpers that put events in the outbox."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from roost.analytics.clickhouse import ServerSink, close_chdb
from roost.analytics.outbox import emit
from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import other_user, user  # noqa: F401 - fixtures

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, max_request_bytes=64 * 1024,
                    analytics_export_batch=50)


@pytest.fixture(autouse=True)
def _fresh_sinks() -> Iterator[None]:
    yield
    close_chdb()
    ServerSink.forget_clients()


def llm_call(model: str = "gpt-test", provider: str = "stub", *,
             provider_id: str | None = None, tokens_input: int = 10,
             tokens_output: int = 5, credits: int = 2, cost: str = "0.001500",
             success: bool = True, agent_id: uuid.UUID | None = None,
             api_key_id: uuid.UUID | None = None) -> dict[str, Any]:
    """The event_data of an ``llm.call`` event, as the LLM domain writes it."""
    return {"request_id": str(uuid.uuid4()), "model": model, "provider": provider,
            "provider_id": provider_id,
            "request_type": "chat", "tokens_input": tokens_input,
            "tokens_output": tokens_output, "credits": credits, "cost": cost,
            "currency": "USD", "latency_ms": 120, "success": success,
            "agent_id": str(agent_id) if agent_id else None, "run_id": None,
            "api_key_id": str(api_key_id) if api_key_id else None}


async def add_events(database: Database, events: list[tuple[str, dict[str, Any]]], *,
                     user_id: uuid.UUID | None = None,
                     timestamp: datetime | None = None) -> list[uuid.UUID]:
    """Emit ``events`` ((type, data) pairs) in one transaction, as domains do."""
    async with database.transaction() as session:
        rows = [emit(session, kind, data, user_id=user_id) for kind, data in events]
        if timestamp is not None:
            for row in rows:
                row.timestamp = timestamp
    return [r.id for r in rows]
