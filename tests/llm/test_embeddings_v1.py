"""``POST /v1/embeddings`` beyond the provider's vectors: billing when the provider reports
no usage, a model without an embeddings API, and the caller's field errors (``param``).
Malformed vectors are in test_hostile_providers.py."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from tests.billing.metered import settled, subscribe
from tests.chat.conftest import add_provider
from tests.llm.test_hostile_providers import RawServer, json_answer, register
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.sql import fetch

Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=3.0, llm_local_model=False,
                    chat_max_message_chars=1000, max_request_bytes=256 * 1024,
                    llm_credits_per_1k_tokens=1000.0)  # a credit a token


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


async def test_embeddings_without_provider_usage_are_estimated_and_billed(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """A provider that reports no usage (many self-hosted embedding servers) does not make
    embeddings free: the tokens are estimated (about four characters a token) as for a
    chat answer without usage, answered, recorded as estimated and charged."""
    await subscribe(client, admin_headers, user[0], 100_000)
    text = "several words of text to embed here " * 10
    async with RawServer(json_answer(None, raw=b'{"data":[{"index":0,"embedding":[1.0,0.5]}]}')
                         ) as server:
        await register(client, admin_headers, server.base_url)
        resp = await client.post("/v1/embeddings", headers=user[1],
                                 json={"model": "raw-model", "input": text})
    assert resp.status_code == 200, resp.text
    estimate = -(-len(text) // 4)
    assert resp.json()["usage"] == {"prompt_tokens": estimate, "total_tokens": estimate}
    [row] = await fetch(database, "SELECT tokens_input, credits_used FROM usage_records")
    assert row.tokens_input == estimate and row.credits_used > 0, row
    [raw] = await fetch(database, "SELECT raw_response FROM llm_responses")
    assert raw.raw_response["usage_estimated"] == ["tokens_in"], raw
    state = await settled(database, user[0])
    assert state["used"] == row.credits_used, state


async def test_embeddings_of_a_model_without_an_embeddings_api_are_a_400_naming_model(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """Embeddings asked of a model only an Anthropic provider serves (no embeddings API)
    is the caller's mistake: a 400 invalid_request_error with param "model", refused before
    anything is recorded, not a 502 provider_error the SDKs retry."""
    resp = await client.post("/api/v1/llm/providers", headers=admin_headers, json={
        "name": "claude", "type": "anthropic", "base_url": stub.base_url, "model": "claude-x",
        "api_key": "k"})
    assert resp.status_code == 201, resp.text
    resp = await client.post("/v1/embeddings", headers=user[1],
                             json={"model": "claude-x", "input": "a"})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "model", error
    assert error["code"] == "model_without_embeddings", error
    assert "embeddings API" in error["message"], error
    assert await fetch(database, "SELECT id FROM llm_requests") == []
    # A model an OpenAI-compatible provider serves as well is embedded by that one.
    await add_provider(client, admin_headers, stub, model="claude-x", priority=200)
    resp = await client.post("/v1/embeddings", headers=user[1],
                             json={"model": "claude-x", "input": "a"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["roost"]["provider"] == "stub"


@pytest.mark.parametrize(("field", "value", "param"), [
    ("input", True, "input"),
    ("input", [1, 2, 3], "input.0"),  # the list's first item that is not a string
    ("input", ["a", 2], "input.1"),
    ("input", "", "input"),  # an empty text (OpenAI refuses it; it was embedded as 0 tokens)
    ("input", ["a", ""], "input.1"),
    ("dimensions", "8", "dimensions"),
    ("dimensions", True, "dimensions"),
    ("dimensions", 8.0, "dimensions"),  # a whole float was read as 8
    ("encoding_format", "hex", "encoding_format"),
])
async def test_an_invalid_embeddings_field_is_named_as_param(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], field: str, value: Any, param: str,
) -> None:
    """A wrong type (a bool, token ids, a number as a string) is invalid_value with param
    naming the field (and a list's item) as the caller wrote it, not the validator's
    union branch ("input.str", "input.list[str].0"), and never coerced (``dimensions:
    true`` is not 1)."""
    await add_provider(client, admin_headers, stub)
    resp = await client.post("/v1/embeddings", headers=user[1],
                             json={"model": "stub-model", "input": "a", field: value})
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert error["code"] == "invalid_value" and error["param"] == param, error


@pytest.mark.parametrize("texts", [[], ["x"] * 2049], ids=["empty", "over-2048"])
async def test_an_embeddings_input_refused_for_its_length_names_input(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], texts: list[str],
) -> None:
    """`input: []` or more than 2,048 inputs is a 400 for the field, as every other bad
    `input` is: `invalid_value` with `param: "input"` (it was `bad_request` with no
    `param`, a code docs/chat.md does not list)."""
    resp = await client.post("/api/v1/llm/providers", headers=admin_headers, json={
        "name": "stub", "type": "openai", "base_url": stub.base_url, "model": "stub-model"})
    assert resp.status_code == 201, resp.text
    resp = await client.post("/v1/embeddings", headers=user[1],
                             json={"model": "stub-model", "input": texts})
    assert resp.status_code == 400, resp.text
    error: dict[str, Any] = resp.json()["error"]
    assert error["type"] == "invalid_request_error", error
    assert (error["code"], error["param"]) == ("invalid_value", "input"), error
