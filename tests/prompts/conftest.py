"""Prompts fixtures: users, groups (inserted as an administrator would create them) and a
helper to publish over the API."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.identity.models import Group, UserGroupMembership
from tests.support.identity import make_user

Headers = dict[str, str]
User = tuple[uuid.UUID, Headers]


@pytest.fixture
async def user(database: Database) -> User:
    return await make_user(database)


@pytest.fixture
async def other_user(database: Database) -> User:
    return await make_user(database)


async def make_group(database: Database, *members: tuple[uuid.UUID, str]) -> uuid.UUID:
    """A group with ``(user_id, role)`` members, joined in the order given."""
    async with database.transaction() as session:
        group = Group(name=f"team-{uuid.uuid4().hex[:8]}")
        session.add(group)
        await session.flush()
        for user_id, role in members:
            session.add(UserGroupMembership(user_id=user_id, group_id=group.id, role=role))
            await session.flush()
        return group.id


async def publish(client: httpx.AsyncClient, headers: Headers, key: str, text: str,
                  **fields: Any) -> dict[str, Any]:
    resp = await client.post("/api/v1/prompts", headers=headers,
                             json={"prompt_key": key, "prompt_text": text, **fields})
    assert resp.status_code == 201, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def resolved(client: httpx.AsyncClient, headers: Headers, key: str,
                   label: str = "production") -> dict[str, Any]:
    resp = await client.get("/api/v1/prompts/resolve", headers=headers,
                            params={"key": key, "label": label})
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body
