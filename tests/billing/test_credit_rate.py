"""Credits computed from tokens at the highest rate an operator may set
(ROOST_LLM_CREDITS_PER_1K_TOKENS=10^6): more than a ledger row holds is refused by the
ingest with a 422 naming the event, and capped for a model call's own record."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from roost.billing.credits import MAX_RECORD_CREDITS, credits_for_tokens
from roost.config import Settings
from roost.db.engine import Database
from tests.support.identity import make_user

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_local_model=False,
                    llm_credits_per_1k_tokens=1e6)


def test_credits_from_tokens_are_capped_at_what_a_ledger_row_holds(
        test_settings: Settings) -> None:
    assert credits_for_tokens(test_settings, 1000) == 1_000_000
    assert credits_for_tokens(test_settings, 2_000_000_000) == MAX_RECORD_CREDITS
    assert credits_for_tokens(test_settings, 2_000_000_000, capped=False) == 2 * 10**12


async def test_an_event_whose_credits_from_tokens_overflow_is_a_422_naming_it(
        client: httpx.AsyncClient, admin_headers: Headers, database: Database) -> None:
    """An ingested event whose credits (from its tokens) do not fit the ledger is a 422
    naming the event and the field, not the database's anonymous 400; nothing is
    written, and the same event with its credits sent is accepted."""
    uid, _ = await make_user(database)
    key = f"k{uuid.uuid4().hex}"
    event = {"idempotency_key": key, "user_id": str(uid), "request_type": "chat",
             "tokens_input": 1_000_000_000, "tokens_output": 1_000_000_000}
    resp = await client.post("/api/v1/billing/usage-events", headers=admin_headers,
                             json={"events": [event]})
    assert resp.status_code == 422, resp.text
    assert key in resp.text and resp.json()["field"] == "credits", resp.text
    async with database.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM usage_records WHERE user_id = :u"),
                              {"u": uid}) == 0
    resp = await client.post("/api/v1/billing/usage-events", headers=admin_headers,
                             json={"events": [{**event, "credits": 1_000_000_000}]})
    assert resp.status_code == 200, resp.text
    assert resp.json()["accepted"] == 1
