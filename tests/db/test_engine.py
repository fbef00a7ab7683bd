"""The engine every Roost process opens (roost.db.engine.create_database)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text as sql
from sqlalchemy.exc import DBAPIError
from tests.support.pg import PgTestServer
from tests.support.server import serve_env

from roost.config import get_settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.serving import served_app


async def test_served_app_children_hide_sql_parameters_from_logs(
        pg_server: PgTestServer, db_name: str, tmp_path: Path, test_keys: KeyMaterial,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """An API process of `roost serve --workers N` (roost.serving:served_app) keeps a
    failed statement's parameters (a password hash, a secret) out of the exception its
    error log prints, as the single-process `roost serve` and every command do."""
    for name, value in serve_env(pg_server, db_name, tmp_path / "data", test_keys).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ROOST_SERVE_WORKER", "false")
    get_settings.cache_clear()
    try:
        application = served_app()  # what each --workers child runs
        async with application.router.lifespan_context(application):
            db: Database = application.state.db
            for engine in (db.engine, db.side_engine):
                assert engine is not None
                with pytest.raises(DBAPIError) as failed:
                    async with engine.connect() as conn:
                        await conn.execute(sql("SELECT CAST(:p AS text), 1 / 0"),
                                           {"p": "SEKRET-password-hash"})
                assert "division by zero" in str(failed.value)
                assert "SEKRET-password-hash" not in str(failed.value)
    finally:
        get_settings.cache_clear()
