"""What an authenticated request costs the database, and that the saving costs no safety:
one round trip authenticates, touches the credential when stale and scopes the
transaction (row-level security, role, HNSW settings); revocation still takes effect on
the next request, in every server process."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select, text
from sqlalchemy.exc import DBAPIError

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import Database
from roost.db.transaction import begin_with_settings, driver_fetch
from roost.identity import resolver
from roost.identity.tenancy import apply_principal, scope_lazily
from roost.keyfiles import KeyMaterial
from roost.knowledge import search as search_mod
from roost.principal import Principal
from roost.security.passwords import hash_password
from tests.support.identity import make_user
from tests.support.listening import statements
from tests.support.pg import PgTestServer
from tests.support.server import roost_server


class _FixedEmbedder:
    """The query's vector is not what this test measures: a constant one, no model."""

    model_name = "all-MiniLM-L6-v2"
    dimensions = 384

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [[1.0] + [0.0] * 383 for _ in texts]


@pytest.fixture
def served_app(tmp_path: Path, database: Database, test_keys: KeyMaterial) -> FastAPI:
    # The audit chainer's periodic statements share the engine: none while the tests count
    # a request's statements (its first pass is one interval after start-up).
    settings = Settings(data_dir=tmp_path / "data", log_json=True, llm_local_model=False,
                        audit_chain_interval_ms=60_000)
    return create_app(settings, database=database, keys=test_keys, configure_logs=False)


async def test_authentication_and_scope_take_one_round_trip(
    served_app: FastAPI, database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search_mod, "get_embedder", lambda spec: _FixedEmbedder())
    user_id, headers = await make_user(database)
    transport = httpx.ASGITransport(app=served_app, client=("127.0.0.1", 50001))
    async with served_app.router.lifespan_context(served_app), httpx.AsyncClient(
        transport=transport, base_url="http://roost.test"
    ) as client:
        chat = await client.post("/api/v1/chat/sessions", headers=headers, json={"title": "t"})
        assert chat.status_code == 201, chat.text
        body = {"query": "anything", "k": 5, "mode": "vector"}
        assert (await client.post("/api/v1/knowledge/search", headers=headers,
                                  json=body)).status_code == 200  # warm: the key's touch
        resolver._RESOLVED.clear()  # as a process that has not seen the key yet
        async with statements(database) as sent:
            found = await client.post("/api/v1/knowledge/search", headers=headers, json=body)
        assert found.status_code == 200, found.text
        # First sight of the key: BEGIN, the credential's lookup (+ touch, scope, role),
        # the vector query with its HNSW settings and hits, COMMIT: no separate SET LOCAL,
        # touch or hydration.
        assert len(sent) == 4, sent
        assert sent[0].startswith("BEGIN") and sent[-1].startswith("COMMIT")
        assert "set_config('roost.user_id'" in sent[1] and "roost_knowledge_search(" in sent[2]

        async with statements(database) as sent:
            found = await client.post("/api/v1/knowledge/search", headers=headers, json=body)
        assert found.status_code == 200, found.text
        # A caller the process knows, no read replicas: one statement with no transaction
        # around it, which confirms the caller, scopes itself, sets the HNSW settings and
        # finds the hits with their chunks and documents.
        assert len(sent) == 1 and "FROM roost_knowledge_search(" in sent[0], sent

        async with statements(database) as sent:
            history = await client.get(
                f"/api/v1/chat/sessions/{chat.json()['id']}/messages?limit=50", headers=headers)
        assert history.status_code == 200, history.text
        # A caller the process knows, no read replicas: one statement with no transaction
        # around it, which confirms the caller, scopes itself and reads the session with
        # its page.
        assert len(sent) == 1 and "FROM roost_chat_history(" in sent[0], sent
        # The session check inside that statement still hides others' sessions (404)
        # and still shows an empty page of one's own.
        _, other = await make_user(database)
        hidden = await client.get(
            f"/api/v1/chat/sessions/{chat.json()['id']}/messages", headers=other)
        assert hidden.status_code == 404, hidden.text
        assert history.json()["items"] == []

        url = f"/api/v1/chat/sessions/{chat.json()['id']}/messages"
        note = {"content": "noted", "reply": False}
        assert (await client.post(url, headers=headers, json=note)).status_code == 201  # warm
        async with statements(database) as sent:
            posted = await client.post(url, headers=headers, json=note)
        assert posted.status_code == 201 and posted.json()["user_message"]["seq"] == 2
        # A message only recorded, by a caller the process knows: one statement with no
        # transaction around it, which confirms the caller, scopes itself, takes the
        # session's lock and counters and writes the message and its audit record.
        assert len(sent) == 1, sent
        assert "FROM roost_store_chat_message(" in sent[0]

        # Any other route of a known key: BEGIN with the database's confirmation of the
        # credential and the scope in one simple query, its queries, COMMIT.
        async with statements(database) as sent:
            me = await client.get("/api/v1/auth/me", headers=headers)
        assert me.status_code == 200 and me.json()["id"] == str(user_id)
        begun = [s for s in sent if s.startswith("BEGIN; SELECT roost_confirm_principal('api_key', ")]
        assert len(begun) == 1 and "set_config('roost.user_id'" in begun[0], sent
        assert sent[-1].startswith("COMMIT"), sent


async def test_a_model_route_confirms_a_known_caller_with_one_statement(
    served_app: FastAPI, database: Database
) -> None:
    """Routes that wait for a model resolve the caller in a transaction of their own
    (``CallerPrincipal``): a caller the process knows costs one statement there, the
    confirmation alone, with no BEGIN or COMMIT around it."""
    _, headers = await make_user(database)
    transport = httpx.ASGITransport(app=served_app, client=("127.0.0.1", 50003))
    async with served_app.router.lifespan_context(served_app), httpx.AsyncClient(
        transport=transport, base_url="http://roost.test"
    ) as client:
        assert (await client.get("/v1/models", headers=headers)).status_code == 200  # warm
        counts = []
        for _ in range(2):  # first sight (as a new process), then known
            if not counts:
                resolver._RESOLVED.clear()
            async with statements(database) as sent:
                assert (await client.get("/v1/models", headers=headers)).status_code == 200
            counts.append(len(sent))
        confirmations = [s for s in sent if "roost_confirm_principal" in s]
        assert [s[:31] for s in confirmations] == ["SELECT roost_confirm_principal("], sent
        assert counts[0] - counts[1] == 2, (counts, sent)  # BEGIN, lookup, COMMIT -> 1


async def test_credential_use_is_recorded_at_most_once_an_interval(
    served_app: FastAPI, database: Database
) -> None:
    _, headers = await make_user(database)
    transport = httpx.ASGITransport(app=served_app, client=("127.0.0.1", 50002))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
        async with database.transaction() as s:
            await s.execute(text("UPDATE api_keys SET last_used_at = NULL"))
        assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 200
        async with database.transaction() as s:
            first = (await s.execute(text("SELECT last_used_at FROM api_keys"))).scalar_one()
        assert first is not None
        for _ in range(3):
            assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 200
        async with database.transaction() as s:
            again = (await s.execute(text("SELECT last_used_at FROM api_keys"))).scalar_one()
        assert again == first  # within the interval: no further writes
        async with database.transaction() as s:  # an hour later, as far as the key knows
            await s.execute(text("UPDATE api_keys SET last_used_at = now() - interval '1 hour'"))
        assert (await client.get("/api/v1/auth/me", headers=headers)).status_code == 200
        async with database.transaction() as s:
            later = (await s.execute(text("SELECT last_used_at FROM api_keys"))).scalar_one()
        assert later > first


async def test_revocation_is_immediate_in_every_server_process(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
    test_keys: KeyMaterial,
) -> None:
    """Two ``roost serve`` processes on one database: a key revoked through one, and a
    session ended through one, are refused by the other on the very next request."""
    user_id, headers = await make_user(database, username="revoker")
    async with database.transaction() as s:  # a password to sign in with
        await s.execute(text("UPDATE users SET hashed_password = :h WHERE id = :u"),
                        {"h": hash_password("plum-quartz-river-kettle"), "u": user_id})

    def env(name: str) -> dict[str, str]:
        return {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
                "ROOST_DATA_DIR": str(tmp_path / name), "ROOST_ADMIN_TOKEN": test_keys.admin_token,
                "ROOST_SECRET_KEY": test_keys.secret_key,
                "ROOST_MESSAGE_KEYS": ",".join(test_keys.message_keys),
                "ROOST_LLM_LOCAL_MODEL": "false"}

    def run() -> None:
        with roost_server(env("a")) as a, roost_server(env("b")) as b:
            key_id = uuid.UUID(httpx.get(f"{a.base_url}/api/v1/api-keys", headers=headers)
                               .json()[0]["id"])
            assert httpx.get(f"{b.base_url}/api/v1/auth/me", headers=headers).status_code == 200
            gone = httpx.delete(f"{a.base_url}/api/v1/api-keys/{key_id}", headers=headers)
            assert gone.status_code in (200, 204), gone.text
            assert httpx.get(f"{b.base_url}/api/v1/auth/me", headers=headers).status_code == 401

            login = httpx.post(f"{a.base_url}/api/v1/auth/login", json={
                "login": "revoker", "password": "plum-quartz-river-kettle"})
            assert login.status_code == 200, login.text
            bearer = {"Authorization": f"Bearer {login.json()['access_token']}"}
            assert httpx.get(f"{b.base_url}/api/v1/auth/me", headers=bearer).status_code == 200
            assert httpx.post(f"{b.base_url}/api/v1/auth/logout", headers=bearer).status_code in (200, 204)
            assert httpx.get(f"{a.base_url}/api/v1/auth/me", headers=bearer).status_code == 401

    await asyncio.to_thread(run)


async def test_a_scoped_transaction_sends_its_scope_with_its_begin(database: Database) -> None:
    """A transaction acting for a user outside a request (``apply_principal`` on a fresh
    session: jobs, the agent runner, model calls, tool calls) sends its BEGIN and its
    row-level-security scope as one round trip; the scope holds for that transaction
    only, also when it fails."""
    alice, _ = await make_user(database, username="alice-begin")
    bob, _ = await make_user(database, username="bob-begin")
    bob_job = Principal(user_id=bob, is_admin=False, kind="job")
    async with statements(database) as sent:
        async with database.transaction() as session:
            await apply_principal(session, bob_job)
            owners = (await session.execute(text("SELECT user_id FROM api_keys"))).scalars().all()
            scope = (await session.execute(text(
                "SELECT current_user, current_setting('roost.user_id')"))).one()
        await asyncio.sleep(0.05)  # asyncpg's query logger reports through call_soon
    assert owners == [bob] and tuple(scope) == ("roost_app", str(bob))
    # BEGIN with the scope, the two queries, COMMIT (the driver's log arrives late: any order)
    assert len(sent) == 4, sent
    assert sum(s.startswith("BEGIN; SELECT set_config('roost.user_id', '") for s in sent) == 1

    with pytest.raises(DBAPIError):
        async with database.transaction() as session:
            await apply_principal(session, bob_job)
            await session.execute(text("SELECT 1 / 0"))
    for _ in range(3):  # whichever pooled connection: nothing of bob's scope is left
        async with database.transaction() as session:
            seen = set((await session.execute(text("SELECT user_id FROM api_keys"))).scalars())
            role = (await session.execute(text("SELECT current_user"))).scalar_one()
        assert {alice, bob} <= seen and role != "roost_app"

    # A value that is not a plain literal is never written into SQL: the scope is then
    # sent as a statement with bound parameters.
    async with database.transaction() as session:
        assert not await begin_with_settings(session, {"roost.user_id": "x'; SELECT 1; --"})
        await apply_principal(session, bob_job)
        assert (await session.execute(text("SELECT count(*) FROM api_keys"))).scalar_one() == 1


async def test_a_lazily_scoped_transaction_sends_its_scope_with_its_first_statement(
    database: Database,
) -> None:
    """``scope_lazily`` (the tool-call paths): a transaction whose first statement goes
    straight to the driver (a prebuilt record) sends BEGIN and the scope as one round
    trip; one whose first statement is an ORM query sends the scope before it; either
    way row-level security holds, and a transaction that sends nothing sends nothing."""
    alice, _ = await make_user(database, username="alice-lazy")
    bob, _ = await make_user(database, username="bob-lazy")
    bob_job = Principal(user_id=bob, is_admin=False, kind="job")
    owners_sql = select(text("user_id")).select_from(text("api_keys"))
    async with statements(database) as sent:
        async with database.transaction() as session:
            scope_lazily(session, bob_job)
            owners = [row[0] for row in await driver_fetch(session, owners_sql, {})]
        await asyncio.sleep(0.05)  # asyncpg's query logger reports through call_soon
    assert owners == [bob]
    # BEGIN with the scope, the query, COMMIT (the driver's log arrives late: any order)
    assert len(sent) == 3, sent
    assert sum(s.startswith("BEGIN; SELECT set_config('roost.user_id', '") for s in sent) == 1

    async with statements(database) as sent:
        async with database.transaction() as session:
            scope_lazily(session, bob_job)
            orm_owners = (await session.execute(owners_sql)).scalars().all()
            again = [row[0] for row in await driver_fetch(session, owners_sql, {})]
        async with database.transaction() as session:
            scope_lazily(session, bob_job)  # nothing asked: nothing sent
        await asyncio.sleep(0.05)
    assert orm_owners == again == [bob]
    # BEGIN, the scope, the ORM query, the driver's query (not the scope again), COMMIT
    assert len(sent) == 5, sent
    assert sum("set_config('roost.user_id'" in s for s in sent) == 1

    async with database.transaction() as session:  # unscoped: every owner
        seen = {row[0] for row in await driver_fetch(session, owners_sql, {})}
    assert {alice, bob} <= seen
