"""The core other domains build on: make_user, bearer resolution, RLS scoping."""

from __future__ import annotations

import uuid

import httpx
from fastapi import APIRouter, FastAPI
from sqlalchemy import text

from roost.db.engine import Database
from roost.http.auth import CurrentPrincipal
from roost.http.deps import DbSession
from roost.identity.tenancy import apply_principal, current_scope
from roost.principal import Principal
from tests.support.identity import make_user


async def test_make_user_headers_authenticate(
    app: FastAPI, client: httpx.AsyncClient, database: Database
) -> None:
    probe = APIRouter()

    @probe.get("/_probe")
    async def whoami(principal: CurrentPrincipal, session: DbSession) -> dict[str, object]:
        role, user_id, admin = await current_scope(session)
        return {"user_id": str(principal.user_id), "kind": principal.kind, "db_role": role,
                "db_user": str(user_id), "db_admin": admin}

    app.include_router(probe)
    user_id, headers = await make_user(database)
    answer = await client.get("/_probe", headers=headers)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body == {"user_id": str(user_id), "kind": "api_key", "db_role": "roost_app",
                    "db_user": str(user_id), "db_admin": False}
    bad = await client.get("/_probe", headers={"Authorization": "Bearer rst_aaaaaaaa_" + "x" * 43})
    assert bad.status_code == 401


async def test_raw_cross_tenant_select_sees_nothing(database: Database) -> None:
    alice, _ = await make_user(database, username="alice")
    bob, _ = await make_user(database, username="bob")
    async with database.transaction() as session:
        await apply_principal(session, Principal(user_id=bob, is_admin=False, kind="session"))
        rows = (await session.execute(
            text("SELECT id FROM users WHERE id = :a"), {"a": alice})).all()
        keys = (await session.execute(
            text("SELECT id FROM api_keys WHERE user_id = :a"), {"a": alice})).all()
        own = (await session.execute(text("SELECT count(*) FROM api_keys"))).scalar_one()
        assert (await current_scope(session))[0] == "roost_app"
    assert rows == [] and keys == [] and own == 1
    async with database.transaction() as session:  # the owner (no principal) sees all
        total = (await session.execute(text("SELECT count(*) FROM api_keys"))).scalar_one()
    assert total == 2
    assert isinstance(uuid.UUID(str(alice)), uuid.UUID)
