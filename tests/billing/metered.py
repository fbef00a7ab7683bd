"""Helpers for the tests of a metered user: a user whose subscription holds credits for each
model or tool call it makes (tests/billing/test_metering.py and test_metered_*.py)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx

from roost.config import Settings
from roost.db.engine import Database
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.sql import fetch

Headers = dict[str, str]

# Shorter than the tests' waits: a lock wait that never ends on its own (a cycle through a
# side connection, which PostgreSQL's deadlock detector cannot see) ends as an error, which
# the tests' status and ledger assertions catch.
STATEMENT_TIMEOUT_MS = 12_000


def metered_settings(tmp_path: Path, **extra: Any) -> Settings:
    """tests/agents' settings (the stub provider, hash embeddings, tools calling the
    loopback) with a statement timeout of ``STATEMENT_TIMEOUT_MS``; ``extra`` overrides."""
    values: dict[str, Any] = {
        "data_dir": tmp_path / "data", "log_json": True, "llm_timeout_s": 5.0,
        "llm_local_model": False, "knowledge_embedding_provider": "hash",
        "tools_allowed_hosts": "127.0.0.1", "tools_call_timeout_s": 5.0,
        "db_statement_timeout_ms": STATEMENT_TIMEOUT_MS}
    return Settings(**{**values, **extra})


async def subscribe(client: httpx.AsyncClient, admin_headers: Headers, user_id: uuid.UUID,
                    credits: int, **limits: Any) -> str:
    """A plan of its own including ``credits`` credits, with ``limits`` (``max_agents=1``,
    ``runs_per_day=1``...), and the user's subscription to it: the subscription's id."""
    key = f"p{uuid.uuid4().hex[:8]}"
    resp = await client.post("/api/v1/billing/plans", headers=admin_headers, json={
        "key": key, "name": "Tiny", "price": "1.00", "included_credits": credits,
        "limits": limits})
    assert resp.status_code == 201, resp.text
    resp = await client.post("/api/v1/billing/subscriptions", headers=admin_headers,
                             json={"user_id": str(user_id), "plan": key})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


async def metered_user(client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
                       database: Database, credits: int) -> tuple[uuid.UUID, Headers]:
    """A new user with an API key (``make_user``) subscribed with ``credits`` credits, and
    the stub registered as a provider: the user's id and request headers."""
    user_id, headers = await make_user(database)
    await add_provider(client, admin_headers, stub)
    await subscribe(client, admin_headers, user_id, credits)
    return user_id, headers


async def ledger(database: Database, user_id: uuid.UUID) -> dict[str, int]:
    """The user's subscription: credits ``used``, credits ``reserved`` and the number of
    its holds still ``held``."""
    [row] = await fetch(
        database,
        "SELECT s.credits_used, s.credits_reserved, "
        "(SELECT count(*) FROM credit_reservations r WHERE r.subscription_id = s.id "
        " AND r.status = 'held') AS held "
        "FROM subscriptions s WHERE s.user_id = :u", u=user_id)
    return {"used": row.credits_used, "reserved": row.credits_reserved, "held": row.held}


async def settled(database: Database, user_id: uuid.UUID, within: float = 5) -> dict[str, int]:
    """:func:`ledger` once nothing is held or reserved, else as it stands after ``within``
    seconds (a hold given back in the background may land a moment after the answer)."""
    deadline = asyncio.get_running_loop().time() + within
    while True:
        state = await ledger(database, user_id)
        if (state["held"], state["reserved"]) == (0, 0) or (
                asyncio.get_running_loop().time() > deadline):
            return state
        await asyncio.sleep(0.1)


async def assert_settled(database: Database, user_id: uuid.UUID, *,
                         used_at_least: int = 0) -> dict[str, int]:
    """Nothing of the user's is held or reserved any more (:func:`settled`), and at least
    ``used_at_least`` credits were charged: the ledger."""
    state = await settled(database, user_id)
    assert state["held"] == 0 and state["reserved"] == 0, state
    assert state["used"] >= used_at_least, state
    return state
