"""Run the SQL of docs/scale.md's "Beyond one node" on a real, migrated database.

    .venv/bin/python bench/scale/doc_sql.py

One embedded PostgreSQL 18 in a temporary directory; Roost's migrations into a template
database.  For each partitioning block (``chat_messages``, ``tool_runs``,
``usage_records``): a fresh copy of the template with a user, a chat session, messages,
a tool run and a usage record dated before the cutover, then the block's statements one
by one as a client would send them (autocommit; the block's own ``BEGIN``/``COMMIT``
make the switch one transaction), then checks: the table is partitioned, every old row
is in the first partition, a row after the cutover lands in its month, row-level
security still scopes ``roost_app`` to the user's rows, the old partitions are not
reachable by ``roost_app`` directly; for ``usage_records``, that the ledger's
``ON CONFLICT (idempotency_key)`` fails as the page says.  The Citus block runs inside a
rolled-back transaction against the Citus stubs of ``tests/memory/test_shards.py``.
Exits non-zero at the first failure.
"""

from __future__ import annotations

import asyncio
import re
import sys
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "scale.md"
sys.path.insert(0, str(ROOT))

PARTITIONED = {
    "#### `chat_messages`, by `created_at`": ("chat_messages", "created_at"),
    "#### `tool_runs`, by `started_at`": ("tool_runs", "started_at"),
    "#### `usage_records`, by `created_at`: needs a change in Roost first":
        ("usage_records", "created_at"),
}
CITUS = "### Citus: distributing the tenant-scoped tables"
OLD = datetime(2026, 11, 15, 12, tzinfo=UTC)  # before the page's cutover (2027-01-01)
NEW = datetime(2027, 1, 15, 12, tzinfo=UTC)  # in the first monthly partition


def sql_blocks(heading: str) -> list[str]:
    from tests.memory.test_shards import doc_sql_blocks

    return doc_sql_blocks(heading)


def statements(block: str) -> list[str]:
    from tests.memory.test_shards import statements as split

    return list(split(block))


async def seed(conn: asyncpg.Connection, user_id: uuid.UUID) -> None:
    session_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO chat_sessions (id, user_id, title, message_count) VALUES ($1, $2, 't', 3)",
        session_id, user_id)
    await conn.execute(
        "INSERT INTO chat_messages (id, session_id, user_id, seq, role, content, created_at) "
        "SELECT gen_random_uuid(), $1, $2, g, 'user', '\\x00'::bytea, $3::timestamptz "
        "FROM generate_series(1, 3) g", session_id, user_id, OLD)
    await conn.execute(
        "INSERT INTO tool_runs (id, user_id, trace_id, tool_name, status, started_at) "
        "VALUES (gen_random_uuid(), $1, 't', 'bench', 'success', $2::timestamptz)",
        user_id, OLD)
    await conn.execute(
        "INSERT INTO usage_records (id, idempotency_key, user_id, request_type, created_at) "
        "VALUES (gen_random_uuid(), 'bench:1', $1, 'chat', $2::timestamptz)", user_id, OLD)


async def new_row(conn: asyncpg.Connection, table: str, user_id: uuid.UUID) -> None:
    if table == "chat_messages":
        session_id = await conn.fetchval("SELECT id FROM chat_sessions LIMIT 1")
        await conn.execute(
            "INSERT INTO chat_messages (id, session_id, user_id, seq, role, content, created_at) "
            "VALUES (gen_random_uuid(), $1, $2, 4, 'user', '\\x00'::bytea, $3::timestamptz)",
            session_id, user_id, NEW)
    elif table == "tool_runs":
        await conn.execute(
            "INSERT INTO tool_runs (id, user_id, trace_id, tool_name, status, started_at) "
            "VALUES (gen_random_uuid(), $1, 't', 'bench', 'success', $2::timestamptz)",
            user_id, NEW)
    else:
        await conn.execute(
            "INSERT INTO usage_records (id, idempotency_key, user_id, request_type, created_at) "
            "VALUES (gen_random_uuid(), 'bench:2', $1, 'chat', $2::timestamptz)", user_id, NEW)


async def check_partitioned(dsn: str, heading: str, table: str, user_id: uuid.UUID,
                            other_id: uuid.UUID) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        before = await conn.fetchval(f"SELECT count(*) FROM {table}")
        for stmt in statements(sql_blocks(heading)[0]):
            try:
                await conn.execute(stmt)
            except asyncpg.PostgresError as exc:
                raise SystemExit(f"{table}: {exc}\n  in: {stmt[:300]}") from None
        assert await conn.fetchval(
            "SELECT relkind::text FROM pg_class WHERE oid = $1::regclass", table) == "p", table
        assert await conn.fetchval(f"SELECT count(*) FROM {table}") == before
        places = {r[0] for r in await conn.fetch(f"SELECT tableoid::regclass::text FROM {table}")}
        assert places == {f"{table}_before_2027_01"}, places
        await new_row(conn, table, user_id)
        assert await conn.fetchval(
            f"SELECT count(*) FROM {table}_2027_01") == 1, f"{table}: the new row's month"
        async with conn.transaction():  # as a request scoped to the other user would
            await conn.execute("SELECT set_config('roost.user_id', $1, true)", str(other_id))
            await conn.execute("SET LOCAL ROLE roost_app")
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == 0, "RLS"
        async with conn.transaction():
            await conn.execute("SELECT set_config('roost.user_id', $1, true)", str(user_id))
            await conn.execute("SET LOCAL ROLE roost_app")
            assert await conn.fetchval(f"SELECT count(*) FROM {table}") == before + 1, "RLS"
            try:
                await conn.fetchval(f"SELECT count(*) FROM {table}_before_2027_01")
            except asyncpg.InsufficientPrivilegeError:
                pass
            else:
                raise AssertionError(f"{table}: roost_app reads a partition directly")
        if table == "usage_records":
            try:
                await conn.execute(
                    "INSERT INTO usage_records (id, idempotency_key, request_type) VALUES "
                    "(gen_random_uuid(), 'bench:1', 'chat') ON CONFLICT (idempotency_key) DO NOTHING")
            except asyncpg.InvalidColumnReferenceError as exc:
                assert "no unique or exclusion constraint" in str(exc)
            else:
                raise AssertionError("usage_records: ON CONFLICT (idempotency_key) still works")
        print(f"ok: {table} partitioned by its block ({before} old rows kept, RLS in force)")
    finally:
        await conn.close()


async def check_citus(dsn: str) -> None:
    from tests.memory.test_shards import CITUS_STUBS

    [block] = sql_blocks(CITUS)
    conn = await asyncpg.connect(dsn)
    tx = conn.transaction()
    await tx.start()
    try:
        await conn.execute(CITUS_STUBS)
        for stmt in statements(block):
            try:
                await conn.fetch(stmt)
            except asyncpg.PostgresError as exc:
                raise SystemExit(f"citus: {exc}\n  in: {stmt[:300]}") from None
        distributed = {r["args"][0]: r["args"][1] for r in await conn.fetch(
            "SELECT args FROM citus_stub.calls WHERE fn = 'create_distributed_table'")}
        assert distributed == dict.fromkeys(
            ("chat_sessions", "chat_messages", "documents", "document_chunks"), "user_id")
        # Citus also refuses a unique index without the distribution column, which the
        # stubs only check for constraints: check the indexes here.
        bad = await conn.fetch(
            "SELECT indexrelid::regclass::text AS name FROM pg_index i JOIN pg_attribute a "
            "ON a.attrelid = i.indrelid AND a.attname = 'user_id' WHERE i.indisunique AND "
            "i.indrelid = ANY ($1::regclass[]) AND NOT a.attnum = ANY (i.indkey::int2[])",
            list(distributed))
        assert not bad, [r["name"] for r in bad]
        print(f"ok: the Citus block distributes {', '.join(distributed)} by user_id (stubs)")
    finally:
        await tx.rollback()
        await conn.close()


async def main() -> None:
    from tests.support.identity import make_user

    from roost.config import Settings
    from roost.db.embedded import start_embedded
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade

    text = DOC.read_text()
    for heading in (*PARTITIONED, CITUS):
        assert heading in text.splitlines(), f"docs/scale.md has no {heading!r}"
        assert re.search(r"\S", "".join(sql_blocks(heading))), heading
    with tempfile.TemporaryDirectory(prefix="roost-doc-sql-") as tmp:
        server = start_embedded(Path(tmp) / "pg", delete_on_exit=True)
        try:
            ensure_database_exists(server, "template_scale")
            db = create_database(Settings(), url=to_async_url(server.libpq_url("template_scale")))
            try:
                await upgrade(db.engine)
                user_id, _ = await make_user(db, username="doc-sql")
                other_id, _ = await make_user(db, username="doc-sql-other")
            finally:
                await db.dispose()
            conn = await asyncpg.connect(server.libpq_url("template_scale"))
            await seed(conn, user_id)
            await conn.close()
            admin = await asyncpg.connect(server.libpq_url("postgres"))
            try:
                for i, (heading, (table, _)) in enumerate(PARTITIONED.items()):
                    await admin.execute(f'CREATE DATABASE "scale_{i}" TEMPLATE template_scale')
                    await check_partitioned(server.libpq_url(f"scale_{i}"), heading, table,
                                            user_id, other_id)
            finally:
                await admin.close()
            await check_citus(server.libpq_url("template_scale"))
        finally:
            server.stop()


if __name__ == "__main__":
    asyncio.run(main())
