"""A provider in trouble that is not the caller's fault: one trickling its answer a byte at
a time (health checks and model syncs are bounded by ROOST_LLM_TIMEOUT_S like model calls),
one refusing Roost's key (401/403) or no longer serving the model (404): the next provider
in the chain answers.  A failed call names its recorded request; an ensemble asks every
provider it names or is refused.

The providers are tiny scripted HTTP servers on 127.0.0.1 (``RawServer``)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.db.engine import Database
from roost.llm.deps import app_gateway
from roost.llm.jobs import check_all
from tests.llm.test_hostile_providers import (  # noqa: F401 (fixtures)
    CHAT,
    Handler,
    RawServer,
    chat_payload,
    json_answer,
    post,
    register,
    test_settings,
)
from tests.support.identity import make_user

Headers = dict[str, str]


@pytest.fixture
async def user(database: Database) -> tuple[uuid.UUID, Headers]:
    return await make_user(database)


def trickle(interval: float = 0.2) -> Handler:
    """Headers, then one byte of a never-ending body every ``interval`` seconds (each byte
    restarts httpx's read timeout)."""
    async def handler(path: str, body: bytes, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                     b"connection: close\r\n\r\n{\"data\": [")
        await writer.drain()
        for _ in range(10_000):
            writer.write(b" ")
            await writer.drain()
            await asyncio.sleep(interval)
    return handler


def status_answer(status: int, message: str = "x") -> Handler:
    return json_answer({"error": {"message": message}}, status)


def _roost_provider(body: str) -> str | None:
    return json.loads(body).get("roost", {}).get("provider")


async def test_a_trickling_provider_health_check_ends_unhealthy(
    client: httpx.AsyncClient, admin_headers: Headers,
) -> None:
    """A health check of a provider trickling bytes forever ends within ROOST_LLM_TIMEOUT_S
    (1.5 s here), unhealthy and saying it timed out."""
    async with RawServer(trickle()) as server:
        pid = await register(client, admin_headers, server.base_url, config={"timeout": 1.0})
        try:
            resp = await asyncio.wait_for(
                client.post(f"/api/v1/llm/providers/{pid}/health", headers=admin_headers), 15)
        except TimeoutError:
            pytest.fail("the health check of a trickling provider was still running after 15 s")
    assert resp.status_code == 200, resp.text
    assert resp.json()["health_status"] == "unhealthy"
    assert "did not answer within 1.5 s" in resp.json()["health_error"], resp.text


async def test_a_trickling_provider_model_sync_is_a_409(
    client: httpx.AsyncClient, admin_headers: Headers,
) -> None:
    """A model sync of a provider trickling bytes forever ends with a 409 saying it timed
    out, and stores nothing."""
    async with RawServer(trickle()) as server:
        pid = await register(client, admin_headers, server.base_url, config={"timeout": 1.0})
        try:
            resp = await asyncio.wait_for(
                client.post(f"/api/v1/llm/providers/{pid}/sync-models",
                            headers=admin_headers), 15)
        except TimeoutError:
            pytest.fail("the model sync of a trickling provider was still running after 15 s")
    assert resp.status_code == 409, resp.text
    assert resp.json()["provider_error"] == "timeout", resp.text
    stored = await client.get(f"/api/v1/llm/providers/{pid}", headers=admin_headers)
    assert stored.json()["last_models_sync"] is None, stored.text


async def test_the_periodic_health_check_checks_the_others_past_a_trickling_provider(
    client: httpx.AsyncClient, admin_headers: Headers, app: FastAPI,
) -> None:
    """One provider trickling its model list forever does not keep the periodic health
    check from ending and checking the other providers."""
    async with RawServer(trickle()) as bad, RawServer(json_answer({"data": [{"id": "m"}]})) as ok:
        await register(client, admin_headers, bad.base_url, name="a-trickle",
                       config={"timeout": 1.0})
        await register(client, admin_headers, ok.base_url, name="b-good")
        try:
            results = await asyncio.wait_for(check_all(app_gateway(app)), 15)
        except TimeoutError:
            pytest.fail("the periodic health check was still on its first provider after 15 s")
    assert results == {"a-trickle": "unhealthy", "b-good": "healthy"}


@pytest.mark.parametrize(("answer", "words"), [
    (status_answer(401, "bad key"), "an administrator must fix its API key"),
    (status_answer(403, "bad key"), "an administrator must fix its API key"),
    # An error on a 200 (as servers report overload; the same error as a stream event is
    # an unavailable provider): it was a 502 "unexpected shape (KeyError: 'choices')",
    # the next provider never tried.
    (json_answer({"error": {"message": "overloaded"}}), "answered with an error: overloaded"),
], ids=["401", "403", "200-error"])
async def test_a_provider_refusing_or_failing_falls_back_to_the_next(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    answer: Any, words: str,
) -> None:
    """A provider answering 401/403 (Roost's key for it is wrong, not the request) or a
    200 carrying an error lets the next provider in the chain answer; alone, the call is a
    502 naming the fix or quoting the provider's message."""
    async with RawServer(answer) as a, RawServer(json_answer(chat_payload("good"))) as b:
        await register(client, admin_headers, a.base_url, name="pa", priority=1)
        pb = await register(client, admin_headers, b.base_url, name="pb", priority=2)
        code, body = await post(client, "/v1/chat/completions", CHAT, user[1])
        assert code == 200, body
        assert _roost_provider(body) == "pb"
        await client.delete(f"/api/v1/llm/providers/{pb}", headers=admin_headers)
        code, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert code == 502, body
    assert words in json.loads(body)["error"]["message"], body


async def test_a_provider_without_the_model_falls_back_to_the_next(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
) -> None:
    """A provider answering 404 for the model lets the next provider serving it answer,
    rather than telling the caller the model does not exist; when every provider says
    so, the call is a 404 model_not_found."""
    async with RawServer(status_answer(404, "no model")) as a, \
            RawServer(json_answer(chat_payload("good"))) as b:
        await register(client, admin_headers, a.base_url, name="pa", priority=1)
        pb = await register(client, admin_headers, b.base_url, name="pb", priority=2)
        code, body = await post(client, "/v1/chat/completions", CHAT, user[1])
        assert code == 200, body
        assert _roost_provider(body) == "pb"
        await client.patch(f"/api/v1/llm/providers/{pb}", json={"base_url": a.base_url},
                           headers=admin_headers)
        code, body = await post(client, "/v1/chat/completions", CHAT, user[1])
    assert code == 404, body
    assert json.loads(body)["error"]["code"] == "model_not_found", body


async def test_a_failed_v1_call_names_its_llm_request(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """A failed /v1 call's error names the id of its recorded LLM request in
    error.roost.request_id (as a success's roost.request_id does), so its owner can read
    why with GET /api/v1/llm/requests/{id}."""
    async with RawServer(status_answer(503)) as a, RawServer(status_answer(502)) as b:
        await register(client, admin_headers, a.base_url, name="pa", priority=1)
        await register(client, admin_headers, b.base_url, name="pb", priority=2)
        resp = await client.post("/v1/chat/completions", json=CHAT, headers=user[1])
    assert resp.status_code == 502, resp.text
    async with database.transaction() as s:
        (request_id,) = (await s.scalars(text("SELECT id FROM llm_requests"))).all()
    assert resp.json()["error"]["roost"] == {"request_id": str(request_id)}, resp.text
    got = await client.get(f"/api/v1/llm/requests/{request_id}", headers=user[1])
    assert got.status_code == 200 and got.json()["status"] == "failed", got.text


async def test_an_ensemble_naming_an_unusable_provider_is_a_409(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
    database: Database,
) -> None:
    """An ensemble naming a provider that cannot be used (a row stored before base URLs
    were checked) is a 409 saying why, not an answer from fewer providers than it named;
    one that names none records only the members it asked."""
    async with RawServer(json_answer(chat_payload("ok"))) as srv:
        await register(client, admin_headers, srv.base_url, name="pa")
        pid = await register(client, admin_headers, srv.base_url, name="pbad")
        async with database.transaction() as s:
            await s.execute(text("UPDATE llm_providers SET base_url = 'http://169.254.169.254/v1',"
                                 " updated_at = now() WHERE id = :id"), {"id": pid})
        named = await client.post("/v1/chat/completions", headers=user[1], json={
            **CHAT, "ensemble": {"providers": ["pa", "pbad"]}})
        unnamed = await client.post("/v1/chat/completions", headers=user[1], json={
            **CHAT, "ensemble": {"strategy": "first_success"}})
    assert named.status_code == 409 and "pbad" in named.text, named.text
    assert unnamed.status_code == 200, unnamed.text
    rid = unnamed.json()["roost"]["request_id"]
    got = (await client.get(f"/api/v1/llm/requests/{rid}", headers=user[1])).json()
    assert got["ensemble_config"]["providers"] == ["pa"], got["ensemble_config"]
