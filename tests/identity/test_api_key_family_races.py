"""A key made with a key at the moment that key is revoked or throttled (docs/identity.md,
"API keys"): the revocation and the new limits reach it (a key made meanwhile outlived
its parent's revocation, or kept the limits from before the throttle)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from roost.db.engine import Database
from roost.identity import apikeys
from roost.identity.models import ApiKey
from tests.support.identity import make_user

KEYS = "/api/v1/api-keys"
Headers = dict[str, str]


def _between_auth_and_insert(
    monkeypatch: pytest.MonkeyPatch, meanwhile: Callable[[], Awaitable[None]],
) -> None:
    """Run ``meanwhile()`` (another request, committed) once, while a key creation that
    has already authenticated and read its parent key waits for the per-account lock:
    the interleaving of two requests sent at once."""
    original = apikeys.lock_owner_quota
    done: list[bool] = []

    async def lock(session: Any, user_id: uuid.UUID, what: str) -> None:
        if not done:
            done.append(True)
            await meanwhile()
        await original(session, user_id, what)

    monkeypatch.setattr(apikeys, "lock_owner_quota", lock)


async def test_a_key_minted_while_its_parent_is_revoked_does_not_outlive_it(
    client: httpx.AsyncClient, database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The owner revokes a leaked key at the moment its holder mints a key with it: the
    mint is refused (401), nothing is stored (the minted key worked after the 204)."""
    _, helper = await make_user(database)
    made = await client.post(KEYS, headers=helper, json={"name": "leaked"})
    assert made.status_code == 201, made.text
    leaked_id, leaked = made.json()["id"], {"Authorization": f"Bearer {made.json()['key']}"}
    # Used once already: its last_used_at is fresh, so the mint's request does not touch it.
    assert (await client.get("/api/v1/users/me", headers=leaked)).status_code == 200

    async def revoke() -> None:
        answer = await client.delete(f"{KEYS}/{leaked_id}", headers=helper)
        assert answer.status_code == 204, answer.text

    _between_auth_and_insert(monkeypatch, revoke)
    minted = await client.post(KEYS, headers=leaked, json={"name": "minted"})
    assert minted.status_code == 401, minted.text
    assert "revoked" in minted.json()["detail"]
    async with database.transaction() as session:
        stored = await session.scalar(select(ApiKey.id).where(ApiKey.name == "minted"))
    assert stored is None


async def test_a_key_minted_while_its_parent_is_throttled_keeps_the_new_limits(
    client: httpx.AsyncClient, database: Database, monkeypatch: pytest.MonkeyPatch,
    admin_headers: Headers,
) -> None:
    """An administrator throttles a key at the moment its holder mints a key with it: the
    minted key has the new limits (it kept the ones from before)."""
    _, helper = await make_user(database)
    made = await client.post(KEYS, headers=helper, json={"name": "parent"})
    assert made.status_code == 201, made.text
    parent_id, parent = made.json()["id"], {"Authorization": f"Bearer {made.json()['key']}"}
    # Used once already: its last_used_at is fresh, so the mint's request does not touch it.
    assert (await client.get("/api/v1/users/me", headers=parent)).status_code == 200

    async def throttle() -> None:
        answer = await client.put(f"/api/v1/admin/limits/api-keys/{parent_id}",
                                  headers=admin_headers, json={"requests_per_minute": 2})
        assert answer.status_code == 200, answer.text

    _between_auth_and_insert(monkeypatch, throttle)
    minted = await client.post(KEYS, headers=parent, json={"name": "minted"})
    assert minted.status_code == 201, minted.text
    async with database.transaction() as session:
        rpm = await session.scalar(select(ApiKey.rate_limit_rpm).where(
            ApiKey.id == uuid.UUID(minted.json()["id"])))
    assert rpm == 2, f"the minted key escaped its parent's throttle (rate_limit_rpm={rpm})"
