"""Roost behind a real PgBouncer in transaction pooling mode (ROOST_PGBOUNCER=true)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import make_url
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.pgbouncer import running_bouncer

from roost.app import create_app
from roost.audit import service as audit
from roost.config import Settings
from roost.db.engine import create_database
from roost.db.migrate import migration_state, upgrade
from roost.keyfiles import KeyMaterial


@pytest.fixture
def bouncer(pg_server: PgTestServer) -> Iterator[int]:
    """A real PgBouncer (transaction pooling, 4 server connections): its port."""
    with running_bouncer(pg_server, pool_size=4) as running:
        yield running.port


async def test_migrations_and_concurrent_requests_through_pgbouncer(
    bouncer: int, pg_server: PgTestServer, test_settings: Settings, test_keys: KeyMaterial
) -> None:
    name = unique_db_name("bouncer")
    await pg_server.create_database(name)
    settings = test_settings.model_copy(update={"pgbouncer": True, "db_pool_size": 8})
    db = create_database(
        settings, url=make_url(f"postgresql+asyncpg://postgres@127.0.0.1:{bouncer}/{name}")
    )
    try:
        await upgrade(db.engine)
        assert (await migration_state(db.engine)).at_head

        async def write(i: int) -> None:
            for j in range(5):  # the same statements again and again, on any server connection
                async with db.transaction() as session:
                    await audit.record(session, "bouncer.write", metadata={"i": i, "j": j})

        await asyncio.gather(*(write(i) for i in range(12)))

        app = create_app(settings, database=db, keys=test_keys, configure_logs=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
            replies = await asyncio.gather(*(client.get("/health") for _ in range(20)))
            assert {r.status_code for r in replies} == {200}
            headers = {"Authorization": f"Bearer {test_keys.admin_token}"}
            verify = await client.get("/api/v1/audit/verify", headers=headers)
        # Every record linked (by the verification itself: no chainer runs without the
        # app's lifespan) and the chain intact.
        report = verify.json()
        assert report.pop("head_hash") is not None
        assert report == {"ok": True, "rows_checked": 60, "broken_seq": None,
                          "broken_id": None, "reason": None, "linked_now": 60,
                          "head_chain_seq": 60}
    finally:
        await db.dispose()
        await pg_server.drop_database(name)
