"""The migrated schema matches seed 002 and the models."""

from __future__ import annotations

import json
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection

from roost.db.engine import Database
from roost.domains import import_models
from tests.support.sql import fetch

target_metadata = import_models()

SEED = "002_ca47bcec2517d7ff.txt"
COLUMNS = json.loads((Path(__file__).resolve().parents[2] / "docs" / "seeds" / "columns.json")
                     .read_text(encoding="utf-8"))
MINE = ("background_tasks", "dead_letter_queue", "task_schedules")


async def test_enums_keep_the_seeds_values_in_order(database: Database) -> None:
    rows = await fetch(database, "SELECT t.typname, array_agg(e.enumlabel ORDER BY e.enumsortorder)"
                       " FROM pg_type t JOIN pg_enum e ON e.enumtypid = t.oid"
                       " WHERE t.typname IN ('task_status', 'task_priority') GROUP BY t.typname")
    enums = dict(rows)
    assert enums["task_status"] == ["pending", "queued", "running", "paused", "completed",
                                    "failed", "stuck", "cancelled", "dead_letter"]
    assert enums["task_priority"] == ["critical", "high", "normal", "low", "background"]


async def test_every_seed_column_exists(database: Database) -> None:
    for table in ("background_tasks", "dead_letter_queue"):
        present = {r[0] for r in await fetch(
            database, "SELECT column_name FROM information_schema.columns"
            " WHERE table_name = :t", t=table)}
        missing = set(COLUMNS[SEED][table]) - present
        assert not missing, f"{table} lacks seed columns {missing}"


async def test_the_seeds_indexes_exist(database: Database) -> None:
    rows = await fetch(database, "SELECT indexname, indexdef FROM pg_indexes"
                       " WHERE tablename = 'background_tasks'")
    defs = dict(rows)
    for name, column in (("idx_tasks_status", "status"), ("idx_tasks_priority", "priority"),
                         ("idx_tasks_scheduled_at", "scheduled_at"),
                         ("idx_tasks_worker_id", "worker_id")):
        assert name in defs and f"({column})" in defs[name]


async def test_models_match_the_migration(database: Database) -> None:
    def diff(conn: Connection) -> list[object]:
        ctx = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True})
        return [d for d in compare_metadata(ctx, target_metadata)
                if any(t in repr(d)[:300] for t in MINE)]

    async with database.engine.connect() as conn:
        assert await conn.run_sync(diff) == []
