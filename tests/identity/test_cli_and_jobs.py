"""``roost users ...`` / ``roost keys ...`` run as real processes (point 10), and the
periodic cleanup registered with the task queue (point 2)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

import httpx
from sqlalchemy import select, update

from roost.db.engine import Database
from roost.identity.models import Session
from tests.identity.conftest import PASSWORD, login, password_user
from tests.support.cli import run_roost
from tests.support.pg import PgTestServer


def _roost(env: dict[str, str], *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_roost(*args, env=env, stdin=stdin)


async def test_cli_users_and_keys(
    client: httpx.AsyncClient, pg_server: PgTestServer, db_name: str, tmp_path: Path
) -> None:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data")}

    def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return _roost(env, *args, stdin=stdin)

    made = await asyncio.to_thread(run, "users", "create", "chief", "--email", "chief@example.com",
                                   "--admin", "--password-stdin", stdin=PASSWORD + "\n")
    assert made.returncode == 0, made.stderr
    assert "(root)" in made.stdout and PASSWORD not in made.stdout + made.stderr
    assert (await login(client, "chief")).status_code == 200

    weak = await asyncio.to_thread(run, "users", "create", "weak", "--email", "w@example.com",
                                   "--password-stdin", stdin="password\n")
    assert weak.returncode == 1 and "at least 12 characters" in weak.stderr

    # A self-registered account waits until an operator approves it.
    await client.post("/api/v1/auth/register", json={
        "username": "waiting", "email": "waiting@example.com", "password": PASSWORD})
    assert (await login(client, "waiting")).status_code == 403
    approved = await asyncio.to_thread(run, "users", "approve", "waiting@example.com")
    assert approved.returncode == 0 and "waiting is active" in approved.stdout
    assert (await login(client, "waiting")).status_code == 200
    missing = await asyncio.to_thread(run, "users", "approve", "nobody")
    assert missing.returncode == 1 and "no account" in missing.stderr

    key = await asyncio.to_thread(run, "keys", "create", "--user", "waiting", "--name", "ci")
    assert key.returncode == 0, key.stderr
    token = key.stdout.strip()
    assert token.startswith("rst_")
    me = await client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert me.json()["username"] == "waiting"
    listed = await asyncio.to_thread(run, "keys", "list", "--user", "waiting")
    assert token.split("_")[1] in listed.stdout and token not in listed.stdout
    users = await asyncio.to_thread(run, "users", "list")
    assert "chief" in users.stdout and "waiting" in users.stdout

    cleanup = await asyncio.to_thread(run, "users", "cleanup-sessions")
    assert cleanup.returncode == 0 and "deleted 0 session(s)" in cleanup.stdout


async def test_cleanup_is_scheduled_with_the_task_queue(
    client: httpx.AsyncClient, database: Database
) -> None:
    from roost.identity.jobs import cleanup_sessions
    from roost.tasks.handlers import discover, get_task_type
    from roost.tasks.schedules import schedules

    discover()
    schedule = schedules()["identity.cleanup_sessions"]
    assert schedule.every == timedelta(hours=1)
    assert get_task_type("identity.cleanup_sessions") is not None

    await password_user(database, "ida")
    stale = (await login(client, "ida")).json()
    async with database.transaction() as session:
        await session.execute(update(Session).where(Session.id == uuid.UUID(stale["session_id"]))
                              .values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    result = await cleanup_sessions(SimpleNamespace(database=database), {})  # type: ignore[arg-type]
    assert result["sessions"] == 1
    async with database.transaction() as session:
        assert (await session.scalars(select(Session.id))).all() == []
