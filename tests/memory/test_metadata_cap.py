"""A memory's metadata is capped (64 KiB as compact JSON, a project's cap): every list
page and search answer carries it, so one blob must not inflate them."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.memory.schemas import MAX_METADATA_BYTES
from tests.support.identity import make_user

API = "/api/v1/memories"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_local_model=False,
                    knowledge_embedding_provider="hash")


async def test_memory_metadata_is_size_capped(client: httpx.AsyncClient, database: Database) -> None:
    """Over the cap is a 422 naming metadata on POST and PATCH; nothing is stored or
    changed.  Exactly at the cap is accepted (counted as compact UTF-8 JSON)."""
    _, headers = await make_user(database)
    over = {"blob": "m" * 2_000_000}
    at_cap = {"b": "é" * ((MAX_METADATA_BYTES - len('{"b":""}')) // 2)}
    posted = await client.post(API, headers=headers, json={"content": "big", "metadata": over})
    fact = (await client.post(API, headers=headers,
                              json={"content": "small", "metadata": at_cap})).json()
    assert fact["metadata"] == at_cap
    patched = await client.patch(f"{API}/{fact['id']}", headers=headers, json={"metadata": over})
    for answer in (posted, patched):
        assert answer.status_code == 422, (answer.status_code, answer.text[:200])
        assert "metadata" in answer.text and str(MAX_METADATA_BYTES) in answer.text
    listed = (await client.get(API, headers=headers)).json()["items"]
    assert [(m["content"], m["metadata"]) for m in listed] == [("small", at_cap)]
