"""The seed map names only real seed columns and real Roost columns."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import text

from roost.db.engine import Database
from roost.seedmap import coverage, load_seed_map, mapped_targets, unknown_entries
from tests.support.cli import run_roost

SHARED_COLUMNS = Path(__file__).resolve().parents[2] / "shared" / "seeds" / "columns.json"


def test_docs_copy_of_the_seed_columns_matches_the_seeds() -> None:
    docs = json.loads((Path(__file__).resolve().parents[1] / "docs/seeds/columns.json").read_text())
    tables = sum(len(t) for t in docs.values())
    columns = sum(len(c) for t in docs.values() for c in t.values())
    assert (tables, columns) == (71, 784)
    if SHARED_COLUMNS.exists():  # CI has shared/ beside the clone; a user's checkout may not
        assert docs == json.loads(SHARED_COLUMNS.read_text())


def test_every_entry_names_a_seed_column_and_a_target_or_reason() -> None:
    assert unknown_entries(load_seed_map()) == []


async def test_every_mapped_target_exists_in_the_migrated_schema(database: Database) -> None:
    async with database.transaction() as s:
        rows = (
            await s.execute(
                text("SELECT table_name, column_name FROM information_schema.columns "
                     "WHERE table_schema = 'public'")
            )
        ).all()
    existing = {(t, c) for t, c in rows}
    missing = [
        f"{seed}: {source} -> {table}.{column}"
        for seed, source, table, column in mapped_targets(load_seed_map())
        if (table, column) not in existing
    ]
    assert missing == []


def test_coverage_command_prints_per_seed_and_total() -> None:
    rows = coverage(load_seed_map())
    assert rows[-1].seed == "total" and rows[-1].total == 784
    assert rows[-1].mapped >= 32  # at least the audit tables
    out = run_roost("schema", "coverage", env={})
    assert out.returncode == 0, out.stderr
    assert "total" in out.stdout and "784" in out.stdout
