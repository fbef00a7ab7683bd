"""Calendar fixtures: two users and helpers to create calendars and events over the API."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from tests.support.identity import make_user

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    """Request bodies up to 8 MiB: the import's own limit (5 MiB, 413) is what is tested."""
    return Settings(data_dir=tmp_path / "data", log_json=True, max_request_bytes=8 * 1024 * 1024)


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


@pytest.fixture
async def other_user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


async def make_calendar(client: httpx.AsyncClient, headers: Headers, name: str = "Work",
                        timezone: str = "UTC") -> dict[str, Any]:
    resp = await client.post("/api/v1/calendars", json={"name": name, "timezone": timezone},
                             headers=headers)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created


async def make_event(client: httpx.AsyncClient, headers: Headers, calendar_id: str,
                     **body: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/calendars/{calendar_id}/events", json=body,
                             headers=headers)
    assert resp.status_code == 201, resp.text
    created: dict[str, Any] = resp.json()
    return created
