"""Migrations: a full round trip, no drift between the models and the migrations, and
the state a database is in against this Roost's scripts (at head, behind, or migrated by
a newer Roost)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest_asyncio
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, inspect, text
from tests.support.cli import run_roost
from tests.support.pg import PgTestServer, unique_db_name

from roost.config import Settings
from roost.db.engine import Database, create_database
from roost.db.migrate import (
    MigrationState,
    current_revisions,
    downgrade,
    head_revisions,
    known_revisions,
    migration_state,
    skip_partitions,
    upgrade,
)
from roost.domains import import_models

target_metadata = import_models()


@pytest_asyncio.fixture(loop_scope="session")
async def empty_db(pg_server: PgTestServer) -> AsyncIterator[Database]:
    name = unique_db_name("empty")
    await pg_server.create_database(name)
    db = create_database(Settings(), url=pg_server.url_for(name))
    yield db
    await db.dispose()
    await pg_server.drop_database(name)


async def _tables(db: Database) -> set[str]:
    async with db.engine.connect() as conn:
        return set(await conn.run_sync(lambda c: inspect(c).get_table_names()))


async def test_base_head_base_head(empty_db: Database) -> None:
    assert await current_revisions(empty_db.engine) == ()
    await upgrade(empty_db.engine)
    assert set(await current_revisions(empty_db.engine)) == set(head_revisions())
    model_tables = set(target_metadata.tables)
    assert model_tables <= await _tables(empty_db)

    await downgrade(empty_db.engine, "base")
    assert await current_revisions(empty_db.engine) == ()
    assert not (model_tables & await _tables(empty_db))

    await upgrade(empty_db.engine)
    state = await migration_state(empty_db.engine)
    assert state.at_head
    assert model_tables <= await _tables(empty_db)


async def test_models_and_migrations_do_not_drift(database: Database) -> None:
    def diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True,
                                                     "include_object": skip_partitions(target_metadata)})
        return list(compare_metadata(ctx, target_metadata))

    async with database.engine.connect() as conn:
        changes = await conn.run_sync(diff)
    assert changes == [], f"models and migrations differ; write a migration for: {changes}"


async def test_pgvector_is_installed_by_the_first_migration(database: Database) -> None:
    async with database.engine.connect() as conn:
        version = (
            await conn.execute(text("SELECT extversion FROM pg_extension WHERE extname='vector'"))
        ).scalar_one_or_none()
    assert version is not None and version.startswith("0.")


def test_every_relationship_refuses_implicit_lazy_loading() -> None:
    from sqlalchemy.orm import configure_mappers

    from roost.db.base import Base

    configure_mappers()
    lazy_loading = [
        f"{mapper.class_.__name__}.{rel.key} (lazy={rel.lazy!r})"
        for mapper in Base.registry.mappers
        for rel in mapper.relationships
        if rel.lazy not in ("raise", "raise_on_sql", "selectin", "joined", "noload", "write_only")
    ]
    assert lazy_loading == [], "implicit lazy loads are N+1 queries: " + ", ".join(lazy_loading)


def test_history_is_one_line() -> None:
    """One head: `roost db downgrade -1` is unambiguous and every domain's migration
    runs after the ones it builds on (a new domain chains after the current head)."""
    from roost.db.migrate import script_directory

    assert len(head_revisions()) == 1, f"migration history branches: heads {head_revisions()}"
    revisions = list(script_directory().walk_revisions())
    assert [r.down_revision for r in revisions][-1] is None
    assert all(isinstance(r.down_revision, str | None) for r in revisions), "merge revisions"


def test_a_revision_the_scripts_do_not_hold_is_unknown_not_behind() -> None:
    heads = head_revisions()
    older = next(iter(known_revisions() - set(heads)))
    assert MigrationState(current=(older,), heads=heads).unknown == ()
    newer = MigrationState(current=("9999",), heads=heads)
    assert newer.pending and newer.unknown == ("9999",)
    assert "newer Roost (revision 9999 unknown" in newer.unknown_reason()


async def test_doctor_and_db_current_say_a_newer_roost_migrated_the_database(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """A database at a revision this Roost does not know is not "behind": doctor and
    `roost db current` said to run `roost db upgrade` (which then fails: "Can't locate
    revision '9999'"); they say the revision is unknown to this Roost: upgrade Roost."""
    conn = await asyncpg.connect(pg_server.libpq_url(db_name))
    try:
        await conn.execute("UPDATE alembic_version SET version_num = '9999'")
    finally:
        await conn.close()
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "data")}
    doctor = await asyncio.to_thread(run_roost, "doctor", env=env, timeout=120)
    row = " ".join(x for x in doctor.stdout.splitlines() if "migrations" in x or "9999" in x)
    assert doctor.returncode == 1 and "newer Roost" in row and "9999" in row, doctor.stdout
    assert "roost db upgrade" not in row, row
    current = await asyncio.to_thread(run_roost, "db", "current", env=env, timeout=120)
    assert current.returncode == 0, current.stderr
    assert current.stdout.startswith("9999 — migrated by a newer Roost"), current.stdout
    assert "behind" not in current.stdout and "upgrade Roost" in current.stdout, current.stdout
