"""The per-transaction scope is safe under PgBouncer transaction pooling: many users'
requests interleaved over four server connections never see each other's rows, and
unscoped (owner) transactions afterwards on the same connections see everything."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from fastapi import APIRouter
from sqlalchemy import make_url, text

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import create_database
from roost.http.auth import CurrentPrincipal
from roost.http.deps import DbSession
from roost.keyfiles import KeyMaterial
from tests.db.test_pgbouncer import bouncer  # noqa: F401  (the fixture)
from tests.support.identity import make_user
from tests.support.pg import PgTestServer, unique_db_name


async def test_scopes_do_not_leak_across_pooled_connections(
    bouncer: int,  # noqa: F811
    pg_server: PgTestServer, template_db: str, test_settings: Settings, test_keys: KeyMaterial,
) -> None:
    name = unique_db_name("rlsbouncer")
    await pg_server.create_database(name, template=template_db)
    settings = test_settings.model_copy(update={"pgbouncer": True, "db_pool_size": 8})
    db = create_database(
        settings, url=make_url(f"postgresql+asyncpg://postgres@127.0.0.1:{bouncer}/{name}"))
    try:
        users = [await make_user(db) for _ in range(6)]
        app = create_app(settings, database=db, keys=test_keys, configure_logs=False)
        probe = APIRouter()

        @probe.get("/_rls_probe")
        async def rls_probe(principal: CurrentPrincipal, session: DbSession) -> dict[str, object]:
            await asyncio.sleep(0.01)  # hold the server connection while others queue
            owners = (await session.execute(text("SELECT DISTINCT user_id FROM api_keys"))).all()
            return {"me": str(principal.user_id), "owners": [str(o[0]) for o in owners]}

        app.include_router(probe)

        async def unscoped_total() -> int:
            async with db.transaction() as session:
                return int((await session.execute(text("SELECT count(*) FROM api_keys"))).scalar_one())

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
            calls = [client.get("/_rls_probe", headers=h) for _, h in users for _ in range(5)]
            replies = await asyncio.gather(*calls, *(unscoped_total() for _ in range(10)))
        for reply in replies[: len(calls)]:
            assert isinstance(reply, httpx.Response) and reply.status_code == 200, reply
            body = reply.json()
            assert body["owners"] == [body["me"]]
        assert set(replies[len(calls):]) == {6}
        assert await unscoped_total() == 6
        assert all(isinstance(u, uuid.UUID) for u, _ in users)
    finally:
        await db.dispose()
        await pg_server.drop_database(name)
