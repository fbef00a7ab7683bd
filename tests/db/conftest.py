"""Fixtures shared by the backup and restore tests of this directory."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.places import Place

from roost.config import Settings
from roost.keyfiles import load_keys


@pytest.fixture(scope="module")
def source(pg_server: PgTestServer, template_db: str,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Place]:
    """A copy of the migrated template with a data dir holding its keys: what a backup
    is taken of (one per test module)."""
    name = unique_db_name("backup_src")
    asyncio.run(pg_server.create_database(name, template=template_db))
    data_dir = tmp_path_factory.mktemp("backup-source")
    load_keys(Settings(data_dir=data_dir))
    try:
        yield Place(pg_server.libpq_url(name), data_dir)
    finally:
        asyncio.run(pg_server.drop_database(name))
