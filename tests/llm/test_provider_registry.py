"""The provider registry: admin CRUD, encrypted API keys, health checks, models sync."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.llm.jobs import check_all
from roost.llm.provider_pool import api_key_aad
from roost.security.crypto import DecryptionError, SecretBox
from tests.support.identity import make_user
from tests.support.openai_stub import Fail, Models, StubServer

Headers = dict[str, str]
KEY = "sk-test-8c1f0e4b9d2a7f6e5c3b"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", llm_timeout_s=2.0, llm_local_model=False)


async def _create(client: httpx.AsyncClient, headers: Headers, **body: Any) -> httpx.Response:
    return await client.post("/api/v1/llm/providers", json=body, headers=headers)


async def test_crud_keeps_the_api_key_encrypted_and_never_returns_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    test_keys: KeyMaterial,
) -> None:
    resp = await _create(client, admin_headers, name="openai-a", type="openai",
                         base_url=stub.base_url, api_key=KEY, model="stub-model", weight=2.5,
                         priority=10, config={"timeout": 30})
    assert resp.status_code == 201, resp.text
    provider = resp.json()
    assert KEY not in resp.text and provider["has_api_key"] is True
    assert provider["type"] == "openai" and provider["weight"] == 2.5
    assert provider["health_status"] == "unknown" and provider["models"] == {"stub-model": True}
    pid = provider["id"]
    listed = await client.get("/api/v1/llm/providers", headers=admin_headers)
    assert KEY not in listed.text and [p["id"] for p in listed.json()] == [pid]

    async with database.transaction() as s:
        stored = (await s.execute(text("SELECT api_key_encrypted FROM llm_providers")) ).scalar_one()
        audit_text = (await s.execute(text(
            "SELECT string_agg(coalesce(changes::text, ''), ' ') FROM audit_logs "
            "WHERE resource_type = 'llm_provider'"))).scalar_one()
    assert KEY not in stored and KEY not in audit_text
    box = SecretBox.from_keys(test_keys.secrets_key)
    assert box.decrypt_str(stored, api_key_aad(uuid.UUID(pid))) == KEY
    with pytest.raises(DecryptionError):  # bound to its row: useless when copied elsewhere
        box.decrypt_str(stored, api_key_aad(uuid.uuid4()))

    # The key works: the provider receives the stored key.
    health = await client.post(f"/api/v1/llm/providers/{pid}/health", headers=admin_headers)
    assert health.status_code == 200 and health.json()["health_status"] == "healthy"
    assert stub.requests()[-1].api_key == KEY
    patched = await client.patch(f"/api/v1/llm/providers/{pid}",
                                 json={"api_key": "sk-wrong", "enabled": True}, headers=admin_headers)
    assert patched.status_code == 200 and "sk-wrong" not in patched.text
    stub.script(Fail(401, "Incorrect API key provided: sk-...ng"))  # as real providers say it
    unhealthy = (await client.post(f"/api/v1/llm/providers/{pid}/health",
                                   headers=admin_headers)).json()
    assert stub.requests()[-1].api_key == "sk-wrong"
    assert unhealthy["health_status"] == "unhealthy" and "401" in unhealthy["health_error"]
    assert "sk-wrong" not in unhealthy["health_error"]
    removed = await client.patch(f"/api/v1/llm/providers/{pid}", json={"api_key": ""},
                                 headers=admin_headers)
    assert removed.json()["has_api_key"] is False

    assert (await client.delete(f"/api/v1/llm/providers/{pid}", headers=admin_headers)).status_code == 204
    assert (await client.get(f"/api/v1/llm/providers/{pid}", headers=admin_headers)).status_code == 404


async def test_validation_and_admin_only(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    _, user_headers = await make_user(database)
    body = {"name": "p1", "type": "openai", "base_url": stub.base_url, "model": "m"}
    assert (await _create(client, user_headers, **body)).status_code == 403
    assert (await client.get("/api/v1/llm/providers", headers=user_headers)).status_code == 403
    assert (await _create(client, admin_headers, **body)).status_code == 201
    assert (await _create(client, admin_headers, **{**body, "name": "P1"})).status_code == 409
    secret_in_config = await _create(client, admin_headers, **{**body, "name": "p2",
                                                                "config": {"api_key": "x"}})
    assert secret_in_config.status_code == 422
    assert (await _create(client, admin_headers, **{**body, "name": "p3", "type": "gemini"})
            ).status_code == 422
    assert (await _create(client, admin_headers, **{**body, "name": "bad name!"})).status_code == 422
    # The options a provider reads are typed when registered, not found out at its first
    # call ("timeout": "slow" made every call a 409 quoting a Python comparison).
    for config, words in [({"timeout": "slow"}, "config.timeout"),
                          ({"timeout": -1}, "config.timeout"),
                          ({"connect_timeout": 1e308}, "config.connect_timeout"),
                          ({"stream_usage": "yes"}, "config.stream_usage"),
                          ({"default_max_tokens": 0}, "config.default_max_tokens"),
                          ({"n_ctx": "big"}, "config.n_ctx")]:
        bad = await _create(client, admin_headers, **{**body, "name": "p4", "config": config})
        assert bad.status_code == 422 and words in bad.text, (config, bad.text)
    created = await _create(client, admin_headers, **{**body, "name": "p4", "config": {
        "timeout": 30, "connect_timeout": None, "stream_usage": False, "team": "kept"}})
    assert created.status_code == 201 and created.json()["config"]["team"] == "kept"
    patched = await client.patch(f"/api/v1/llm/providers/{created.json()['id']}",
                                 json={"config": {"timeout": 0}}, headers=admin_headers)
    assert patched.status_code == 422 and "config.timeout" in patched.text
    ollama = await _create(client, admin_headers, name="ollama", type="ollama", model="llama3.2")
    assert ollama.status_code == 201
    assert ollama.json()["type"] == "openai"
    assert ollama.json()["base_url"] == "http://127.0.0.1:11434/v1"


async def test_an_openai_compatible_provider_without_base_url_is_refused(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
) -> None:
    """Type 'openai_compatible' has no usual URL to fill in (docs/chat.md, "Types"): a
    create without base_url is the 400 a PATCH setting it to null is, storing nothing (it
    stored an 'openai' provider with base_url null that nothing could use)."""
    refused = await _create(client, admin_headers, name="compat", type="openai_compatible",
                            model="m-compat")
    assert refused.status_code == 400 and "base_url" in refused.json()["detail"], refused.text
    assert (await client.get("/api/v1/llm/providers", headers=admin_headers)).json() == []
    created = await _create(client, admin_headers, name="compat", type="openai_compatible",
                            base_url=stub.base_url, model="m-compat")
    assert created.status_code == 201 and created.json()["type"] == "openai", created.text
    patched = await client.patch(f"/api/v1/llm/providers/{created.json()['id']}",
                                 json={"base_url": None}, headers=admin_headers)
    assert patched.status_code == 400 and "base_url" in patched.json()["detail"], patched.text


async def test_models_sync_and_disabled_models_shape_routing(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    _, user_headers = await make_user(database)
    pid = (await _create(client, admin_headers, name="s", type="openai", base_url=stub.base_url,
                         model="stub-model")).json()["id"]
    stub.script(Models(["m-a", "m-b"], times=None))
    synced = await client.post(f"/api/v1/llm/providers/{pid}/sync-models", headers=admin_headers)
    assert synced.status_code == 200, synced.text
    data = synced.json()
    assert set(data["models"]) == {"m-a", "m-b", "stub-model"}
    assert data["total_models"] == 3 and data["enabled_models"] == 3 and data["last_models_sync"]
    patched = await client.patch(f"/api/v1/llm/providers/{pid}", json={"disabled_models": ["m-b"]},
                                 headers=admin_headers)
    assert patched.json()["enabled_models"] == 2 and patched.json()["models"]["m-b"] is False
    # A re-sync keeps the operator's choice.
    again = (await client.post(f"/api/v1/llm/providers/{pid}/sync-models",
                               headers=admin_headers)).json()
    assert again["models"]["m-b"] is False and again["enabled_models"] == 2
    models = (await client.get("/v1/models", headers=user_headers)).json()
    assert {m["id"] for m in models["data"]} == {"m-a", "stub-model"}
    ok = await client.post("/v1/chat/completions", headers=user_headers, json={
        "model": "m-a", "messages": [{"role": "user", "content": "hi"}]})
    assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"] == "echo: hi (model m-a)"
    disabled = await client.post("/v1/chat/completions", headers=user_headers, json={
        "model": "m-b", "messages": [{"role": "user", "content": "hi"}]})
    assert disabled.status_code == 404 and disabled.json()["error"]["code"] == "model_not_found"


async def test_periodic_health_check_updates_every_provider(
    client: httpx.AsyncClient, app: FastAPI, admin_headers: Headers, stub: StubServer,
    database: Database,
) -> None:
    up = (await _create(client, admin_headers, name="up", type="openai", base_url=stub.base_url,
                        model="m")).json()["id"]
    down = (await _create(client, admin_headers, name="down", type="openai",
                          base_url="http://127.0.0.1:9/v1", model="m")).json()["id"]
    await client.get("/api/v1/llm/providers", headers=admin_headers)
    from roost.llm.deps import get_gateway

    class _Req:
        def __init__(self, app: FastAPI) -> None:
            self.app = app

    gateway = get_gateway(_Req(app))  # type: ignore[arg-type]
    results = await check_all(gateway)
    assert results == {"down": "unhealthy", "up": "healthy"}
    async with database.transaction() as s:
        rows = dict((await s.execute(text(
            "SELECT id, health_status FROM llm_providers"))).all())
        audited = (await s.execute(text(
            "SELECT count(*) FROM audit_logs WHERE action = 'llm.provider.health'"))).scalar_one()
    assert rows == {uuid.UUID(up): "healthy", uuid.UUID(down): "unhealthy"}
    assert audited == 2  # status changes (unknown -> healthy/unhealthy) are audited
    await check_all(gateway)
    async with database.transaction() as s:
        assert (await s.execute(text(
            "SELECT count(*) FROM audit_logs WHERE action = 'llm.provider.health'"))).scalar_one() == 2


@pytest.mark.parametrize("bad_key", ["sk-ключ-123", "sk-test\n", "sk\x00test", "sk-tést", " sk-test"])
async def test_api_keys_that_cannot_travel_in_a_header_are_refused(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, bad_key: str,
) -> None:
    body = {"name": "hdr", "type": "openai", "base_url": stub.base_url, "model": "m"}
    created = await _create(client, admin_headers, **body, api_key=bad_key)
    assert created.status_code == 422, created.text
    assert "printable ASCII" in created.text and bad_key not in created.text
    anthropic = await _create(client, admin_headers, **{**body, "name": "hdr-a",
                                                        "type": "anthropic"}, api_key=bad_key)
    assert anthropic.status_code == 422
    pid = (await _create(client, admin_headers, **body, api_key=KEY)).json()["id"]
    patched = await client.patch(f"/api/v1/llm/providers/{pid}", json={"api_key": bad_key},
                                 headers=admin_headers)
    assert patched.status_code == 422 and "printable ASCII" in patched.text
    header = await _create(client, admin_headers, **{**body, "name": "hdr-h"},
                           config={"extra_headers": {"X-Team": "équipe"}})
    assert header.status_code == 422 and "extra_headers" in header.text


async def test_a_stored_non_ascii_key_answers_a_clear_error_not_a_500(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """A key stored before validation existed (written here behind the API's back)."""
    _, user_headers = await make_user(database)
    created = await _create(client, admin_headers, name="legacy", type="openai",
                            base_url=stub.base_url, api_key=KEY, model="stub-model")
    pid = uuid.UUID(created.json()["id"])
    bad = SecretBox.from_keys(test_keys.secrets_key).encrypt("sk-ключ-42", api_key_aad(pid))
    async with database.transaction() as s:
        await s.execute(text("UPDATE llm_providers SET api_key_encrypted = :k, "
                             "updated_at = now() WHERE id = :i"), {"k": bad.decode(), "i": pid})
    health = await client.post(f"/api/v1/llm/providers/{pid}/health", headers=admin_headers)
    assert health.status_code == 200, health.text
    assert health.json()["health_status"] == "unhealthy"
    assert "not a valid HTTP header value" in health.json()["health_error"]
    assert "ключ" not in health.text
    chat = await client.post("/v1/chat/completions", headers=user_headers, json={
        "model": "stub-model", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 409 and "set the key again" in chat.text, chat.text
    assert "ключ" not in chat.text
    synced = await client.post(f"/api/v1/llm/providers/{pid}/sync-models", headers=admin_headers)
    assert synced.status_code == 409 and "header" in synced.text


@pytest.mark.parametrize("header", ["Content-Length", "transfer-encoding", "Host", "Connection",
                                    "Upgrade", "Keep-Alive", "TE", "Trailer",
                                    "Proxy-Authorization"])
async def test_framing_and_hop_by_hop_extra_headers_are_refused(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, header: str,
) -> None:
    """extra_headers may not set what the HTTP client frames the request with
    (Content-Length: 5 made every call a 500): 422 naming the header, on create and
    update."""
    body = {"name": "framed", "type": "openai", "base_url": stub.base_url, "model": "m"}
    created = await _create(client, admin_headers, **body,
                            config={"extra_headers": {header: "5"}})
    assert created.status_code == 422, created.text
    assert "extra_headers" in created.text and header in created.text
    pid = (await _create(client, admin_headers, **body)).json()["id"]
    patched = await client.patch(f"/api/v1/llm/providers/{pid}", headers=admin_headers,
                                 json={"config": {"extra_headers": {header: "5"}}})
    assert patched.status_code == 422, patched.text


async def test_a_stored_framing_header_makes_the_provider_unusable_not_a_500(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """A framing header stored before the check (written here behind the API's back):
    calls answer a clear 409, the health check 'unhealthy', never a 500."""
    _, user_headers = await make_user(database)
    pid = (await _create(client, admin_headers, name="framed", type="openai",
                         base_url=stub.base_url, model="stub-model")).json()["id"]
    async with database.transaction() as s:
        await s.execute(text("UPDATE llm_providers SET config = :c, updated_at = now() "
                             "WHERE id = :i"),
                        {"c": '{"extra_headers": {"Content-Length": "5"}}', "i": uuid.UUID(pid)})
    chat = await client.post("/v1/chat/completions", headers=user_headers, json={
        "model": "stub-model", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 409 and "extra_headers" in chat.text, chat.text
    health = await client.post(f"/api/v1/llm/providers/{pid}/health", headers=admin_headers)
    assert health.status_code == 200 and health.json()["health_status"] == "unhealthy"


async def _refused_on_create_and_update(
    client: httpx.AsyncClient, admin_headers: Headers, base_url: str,
) -> tuple[httpx.Response, httpx.Response]:
    """``base_url`` given to a new provider, then to an existing one: both answers."""
    created = await _create(client, admin_headers, name="refused", type="openai",
                            base_url=base_url)
    pid = (await _create(client, admin_headers, name="fine", type="openai",
                         base_url="http://127.0.0.1:8000/v1")).json()["id"]
    patched = await client.patch(f"/api/v1/llm/providers/{pid}", headers=admin_headers,
                                 json={"base_url": base_url})
    return created, patched


async def test_a_base_url_too_long_for_its_column_is_a_422_naming_it(
    client: httpx.AsyncClient, admin_headers: Headers,
) -> None:
    """A base_url over the 500 stored characters is a 422 naming base_url, not a vague 400."""
    created, patched = await _refused_on_create_and_update(
        client, admin_headers, "http://127.0.0.1/" + "a" * 600)
    assert created.status_code == 422, created.text
    assert "base_url" in created.text and "500" in created.text
    assert patched.status_code == 422 and "base_url" in patched.text


async def test_credentials_in_the_base_url_are_refused(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """user:password@ in a base_url would be stored and shown in answers and the audit
    log: 422 pointing at api_key and extra_headers, nothing stored."""
    created, patched = await _refused_on_create_and_update(
        client, admin_headers, "http://admin:hunter2@127.0.0.1:8000/v1")
    assert created.status_code == 422, created.text
    assert "api_key" in created.text and "hunter2" not in created.text
    assert patched.status_code == 422 and "hunter2" not in patched.text
    async with database.transaction() as s:
        stored: int = (await s.execute(text(
            "SELECT count(*) FROM audit_logs WHERE changes::text LIKE '%hunter2%'"))).scalar_one()
    assert stored == 0


@pytest.mark.parametrize("suffix", ["?api-version=2024-06-01", "#x", "?"])
async def test_a_base_url_with_a_query_or_fragment_is_refused(
    client: httpx.AsyncClient, admin_headers: Headers, suffix: str,
) -> None:
    """Request paths are appended to the base URL: with a query or fragment they landed
    inside it (``/v1?api-version=.../models``) and every call hit ``/v1``: the provider
    was stored and never worked. A 422 naming base_url on create and update."""
    created, patched = await _refused_on_create_and_update(
        client, admin_headers, f"http://127.0.0.1:8000/v1{suffix}")
    assert created.status_code == 422 and "query" in created.text, created.text
    assert patched.status_code == 422 and "base_url" in patched.text, patched.text


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/v1", "http://169.254.0.1:8080/v1", "http://[fe80::1]/v1",
    "http://[::ffff:169.254.169.254]/v1", "http://[::ffff:a9fe:a9fe]/v1",
    "http://[2002:a9fe:a9fe::]/v1", "http://[64:ff9b::a9fe:a9fe]/v1",
    "http://2852039166/v1", "http://0xa9fea9fe/v1", "http://[fd00:ec2::254]/v1",
    "http://[64:ff9b:1::a9fe:a9fe]/v1", "http://[64:ff9b:1:a9fe:a9:fe00::]/v1",
    "http://[::ffff:0:a9fe:a9fe]/v1",
], ids=["metadata", "link-local-v4", "link-local-v6", "v4-mapped", "v4-mapped-hex", "6to4",
        "nat64", "decimal", "hex", "aws-v6-metadata", "local-use-nat64-96",
        "local-use-nat64-48", "v4-translated"])
async def test_link_local_base_urls_are_refused(
    client: httpx.AsyncClient, admin_headers: Headers, url: str,
) -> None:
    """A base_url at a link-local address (the cloud metadata service, in any spelling)
    is a 422 on create and update: the server would send its requests there."""
    created, patched = await _refused_on_create_and_update(client, admin_headers, url)
    assert created.status_code == 422, created.text
    assert "link-local" in created.text or "metadata" in created.text
    assert patched.status_code == 422, patched.text


@pytest.mark.parametrize("url", ["http://127.0.0.1:11434/v1", "http://[::1]:8000/v1",
                                 "http://10.1.2.3:8000/v1", "http://192.168.1.20/v1",
                                 "http://[fd12:3456::1]/v1", "http://gpu-box.internal:8000/v1"])
async def test_loopback_and_private_base_urls_stay_allowed(
    client: httpx.AsyncClient, admin_headers: Headers, url: str,
) -> None:
    """Self-hosted models live on loopback and private addresses (registration only: no
    call is made)."""
    created = await _create(client, admin_headers, name="local", type="openai", base_url=url)
    assert created.status_code == 201, created.text


@pytest.mark.parametrize(("field", "value"), [
    ("model", "m\u0000"), ("config", {"team": {"x": ["\u0000"]}}), ("config", {"k\u0000": 1}),
    ("modelsdev_provider_id", "\u0000"), ("disabled_models", ["m\u0000"]),
])
async def test_a_provider_field_with_nul_is_a_422_naming_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    field: str, value: Any,
) -> None:
    """A NUL (which PostgreSQL's text and jsonb refuse) in a provider's model, a config
    value or key at any depth, modelsdev_provider_id or disabled_models is a 422 naming
    the field, on create and update, not the database's anonymous 400; nothing changes."""
    body = {"name": "p", "type": "openai", "base_url": stub.base_url, "model": "m"}
    if field != "disabled_models":
        resp = await _create(client, admin_headers, **{**body, field: value})
        assert resp.status_code == 422, resp.text
        assert field in resp.text and "NUL" in resp.text, resp.text
    created = await _create(client, admin_headers, **body)
    assert created.status_code == 201, created.text
    resp = await client.patch(f"/api/v1/llm/providers/{created.json()['id']}",
                              headers=admin_headers, json={field: value})
    assert resp.status_code == 422, resp.text
    assert field in resp.text and "NUL" in resp.text, resp.text
    after = await client.get(f"/api/v1/llm/providers/{created.json()['id']}",
                             headers=admin_headers)
    assert after.json()["model"] == "m" and after.json()["models"] == {"m": True}


async def test_a_disabled_default_model_is_no_longer_routed(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """``disabled_models`` ("model ids this provider must not be routed for") holds for the
    provider's default model too: gone from /v1/models, a 404 model_not_found for chat and
    embeddings, and no default for a call that names no model; enabled again, it is back."""
    _, user_headers = await make_user(database)
    pid = (await _create(client, admin_headers, name="s", type="openai", base_url=stub.base_url,
                         model="stub-model")).json()["id"]
    patched = await client.patch(f"/api/v1/llm/providers/{pid}", headers=admin_headers,
                                 json={"disabled_models": ["stub-model"]})
    assert patched.status_code == 200, patched.text
    assert patched.json()["models"] == {"stub-model": False}
    listed = await client.get("/v1/models", headers=user_headers)
    assert listed.json()["data"] == [], listed.text
    chat = await client.post("/v1/chat/completions", headers=user_headers, json={
        "model": "stub-model", "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "model_not_found"
    emb = await client.post("/v1/embeddings", headers=user_headers,
                            json={"model": "stub-model", "input": "a"})
    assert emb.status_code == 404 and emb.json()["error"]["code"] == "model_not_found"
    session = await client.post("/api/v1/chat/sessions", headers=user_headers,
                                json={"title": "t"})
    assert session.status_code == 201, session.text
    reply = await client.post(f"/api/v1/chat/sessions/{session.json()['id']}/messages",
                              headers=user_headers, json={"content": "hi"})
    assert reply.status_code == 409 and "default model" in reply.text, reply.text
    again = await client.patch(f"/api/v1/llm/providers/{pid}", headers=admin_headers,
                               json={"disabled_models": []})
    assert again.json()["models"] == {"stub-model": True}
    listed = await client.get("/v1/models", headers=user_headers)
    assert [m["id"] for m in listed.json()["data"]] == ["stub-model"], listed.text


async def test_a_registered_provider_with_a_long_name_can_be_named_elsewhere(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
) -> None:
    """A provider's name may be up to 128 characters, and a persona's
    ``default_provider``, an agent's ``preferred_provider`` and a debate participant's
    ``provider`` take any registered one: a name of 100 was a 422 "at most 64 characters"
    in each (and the columns held 64, migration 1450)."""
    name = "p" * 100
    created = await _create(client, admin_headers, name=name, type="openai",
                            base_url=stub.base_url, model="m")
    assert created.status_code == 201, created.text
    _, headers = await make_user(database)
    persona = await client.post("/api/v1/personas",
                                json={"name": "Desk", "default_provider": name},
                                headers=headers)
    agent = await client.post("/api/v1/agents",
                              json={"name": "H", "slug": "h-long", "preferred_provider": name},
                              headers=headers)
    debate = await client.post("/api/v1/debates", json={
        "topic": "t", "positions": ["yes", "no"], "participants": [
            {"id": "a", "model": "m", "provider": name},
            {"id": "b", "model": "m", "provider": name}]}, headers=headers)
    statuses = {"persona": persona.status_code, "agent": agent.status_code,
                "debate": debate.status_code}
    assert statuses == {"persona": 201, "agent": 201, "debate": 202}, \
        (statuses, persona.text, agent.text, debate.text)
