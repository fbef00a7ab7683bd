"""A database and a data dir, as ``roost`` commands are pointed at them (the backup and
restore tests)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg

from roost.config import Settings
from roost.keyfiles import load_keys
from tests.support.cli import run_roost


@dataclass
class Place:
    """A database and a data dir, as ``roost`` is pointed at them."""

    url: str
    data_dir: Path

    @property
    def env(self) -> dict[str, str]:
        return {"ROOST_DATABASE_URL": self.url, "ROOST_DATA_DIR": str(self.data_dir)}


def public_tables(url: str) -> int:
    """How many tables the database at ``url`` has in its public schema (0: nothing was
    restored into it)."""
    async def count() -> int:
        conn = await asyncpg.connect(url)
        try:
            return int(await conn.fetchval(
                "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"))
        finally:
            await conn.close()

    return asyncio.run(count())


def execute_sql(url: str, sql: str) -> None:
    """Run ``sql`` on the database at ``url`` (a test's setup or tampering)."""
    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(go())


async def encrypted_backup(pg_server: Any, db_name: str, data_dir: Path, out: Path,
                           passphrase: str) -> dict[str, Any]:
    """``roost backup`` of the test database ``db_name`` and ``data_dir`` (its keys made
    first) into ``out``, encrypted with ``passphrase``; the backup's manifest."""
    load_keys(Settings(data_dir=data_dir))
    done = await asyncio.to_thread(run_roost, "backup", str(out), env={
        "ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(data_dir),
        "ROOST_BACKUP_PASSPHRASE": passphrase}, timeout=300)
    assert done.returncode == 0, done.stderr
    manifest: dict[str, Any] = json.loads((out / "manifest.json").read_text())
    return manifest
