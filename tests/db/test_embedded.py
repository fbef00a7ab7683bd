"""The embedded server as a user meets it: first start, reuse across restarts, clean stop."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg
import httpx
import psutil
from sqlalchemy import text
from tests.support.cli import run_roost
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.server import roost_server

from roost.db.engine import Database


def _postgres_running_on(pgdata: Path) -> bool:
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == "postgres" and any(str(pgdata) in part for part in cmdline):
            return True
    return False


def test_serve_on_an_empty_data_dir_then_reuse_it(open_tmp: Path) -> None:
    data_dir = open_tmp / "data"
    with roost_server({"ROOST_DATA_DIR": str(data_dir), "ROOST_LOG_JSON": "true"}) as server:
        body = httpx.get(f"{server.base_url}/health", timeout=5).json()
        assert body == {"status": "ok", "database": "ok", "migrations": "head"}
    output = server.output
    assert server.process.returncode == 0, output
    pgdata = data_dir / "pg"
    assert (pgdata / "PG_VERSION").read_text().strip() == "18"
    assert not _postgres_running_on(pgdata), "the embedded server outlived roost serve"

    # keys were generated on first run, private to the owner, and never printed
    keys = sorted(p.name for p in (data_dir / "keys").iterdir())
    assert keys == ["admin_token", "message_keys", "secret_key", "secrets_key"]
    for key_file in (data_dir / "keys").iterdir():
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert key_file.read_text().strip() not in output

    # a second start reuses the data dir: same cluster, schema already at head
    initialised_at = (pgdata / "PG_VERSION").stat().st_mtime_ns
    again = run_roost("db", "current", env={"ROOST_DATA_DIR": str(data_dir)})
    assert again.returncode == 0, again.stderr
    assert "head" in again.stdout and "behind" not in again.stdout
    assert (pgdata / "PG_VERSION").stat().st_mtime_ns == initialised_at, "data dir was re-created"
    assert not _postgres_running_on(pgdata)


def test_external_database_url_is_used_instead_of_the_embedded_server(
    tmp_path: Path, pg_server: PgTestServer
) -> None:
    import asyncio

    name = unique_db_name("ext")
    asyncio.run(pg_server.create_database(name))
    try:
        env = {"ROOST_DATA_DIR": str(tmp_path / "data"),
               "ROOST_DATABASE_URL": pg_server.libpq_url(name)}
        upgraded = run_roost("db", "upgrade", env=env)
        assert upgraded.returncode == 0, upgraded.stderr
        doctor = run_roost("doctor", env=env)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "external PostgreSQL 18" in doctor.stdout
        assert "at head" in doctor.stdout
        assert not (tmp_path / "data" / "pg").exists(), "an embedded server was started anyway"
    finally:
        asyncio.run(pg_server.drop_database(name))


def test_doctor_reports_an_unreachable_database(tmp_path: Path) -> None:
    env = {"ROOST_DATA_DIR": str(tmp_path / "data"),
           "ROOST_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
           "ROOST_DB_CONNECT_TIMEOUT_S": "2"}
    doctor = run_roost("doctor", env=env, timeout=60)
    assert doctor.returncode == 1
    assert "unreachable" in doctor.stdout


def test_version() -> None:
    import roost

    out = run_roost("--version", env={})
    assert out.returncode == 0 and out.stdout.strip() == f"roost {roost.__version__}"


async def test_pooled_connections_the_server_closed_are_replaced_at_checkout(
    database: Database,
) -> None:
    """No pre-ping round trip: a connection the server terminated (restart, idle kill,
    pg_terminate_backend) is dropped at checkout and the transaction runs on a new one."""
    async with database.transaction() as s:
        first_pid = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    # Idle in the pool now; terminated from outside it.
    outside = await asyncpg.connect(
        database.url.set(drivername="postgresql").render_as_string(hide_password=False))
    assert await outside.fetchval("SELECT pg_terminate_backend($1)", first_pid) is True
    await outside.close()
    await asyncio.sleep(0.2)  # the event loop reads the server's goodbye
    for _ in range(3):
        async with database.transaction() as s:
            pid = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert pid != first_pid
