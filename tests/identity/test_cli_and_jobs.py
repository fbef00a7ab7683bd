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
from tests.support.identity import make_user
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

    # A name the API refuses (empty, 101 characters) is refused here too, naming it.
    for bad in ("", "n" * 101):
        refused = await asyncio.to_thread(run, "keys", "create", "--user", "waiting",
                                          "--name", bad)
        assert refused.returncode == 1 and "name:" in refused.stderr, refused.stderr
        assert "database" not in refused.stderr, refused.stderr
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


def _cli_env(pg_server: PgTestServer, db_name: str, tmp_path: Path) -> dict[str, str]:
    return {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path)}


async def test_cli_users_create_refuses_a_too_long_full_name_in_one_line(
    tmp_path: Path, pg_server: PgTestServer, db_name: str
) -> None:
    """`roost users create --full-name <300 characters>` is one clear error line: no
    traceback, and never the new account's password hash on stderr."""
    answer = await asyncio.to_thread(
        run_roost, "users", "create", "longname", "--email", "longname@example.test",
        "--full-name", "N" * 300, "--password-stdin",
        env=_cli_env(pg_server, db_name, tmp_path), stdin=PASSWORD + "\n")
    assert "$argon2id$" not in answer.stdout + answer.stderr, "the password hash is printed"
    assert "Traceback" not in answer.stderr, answer.stderr[-2000:]
    assert answer.returncode == 1
    assert "full name must be at most 255 characters" in answer.stderr


async def test_cli_lists_print_names_like_markup_as_typed(
    client: httpx.AsyncClient, tmp_path: Path, pg_server: PgTestServer, db_name: str,
    database: Database, admin_headers: dict[str, str]
) -> None:
    """`roost keys list`, `roost limits show` and `roost limits set` print keys a user named '[/]' or
    '[bold red]…' as typed, without crashing (rich markup in stored text)."""
    _, headers = await make_user(database, username="markup")
    keys = []
    for name in ("[/]", "[bold red]look[/bold red]"):
        made = await client.post("/api/v1/api-keys", headers=headers, json={"name": name})
        assert made.status_code == 201
        keys.append(made.json()["id"])
    env = _cli_env(pg_server, db_name, tmp_path)
    listed = await asyncio.to_thread(run_roost, "keys", "list", "--user", "markup", env=env)
    assert listed.returncode == 0, listed.stderr[-1500:]
    assert "[/]" in listed.stdout and "[bold red]look[/bold red]" in listed.stdout, listed.stdout
    put = await client.put(f"/api/v1/admin/limits/api-keys/{keys[0]}", headers=admin_headers,
                           json={"requests_per_minute": 5})
    assert put.status_code == 200, put.text
    shown = await asyncio.to_thread(run_roost, "limits", "show", env=env)
    assert shown.returncode == 0, shown.stderr[-1500:]
    assert "[/]" in shown.stdout, shown.stdout
    changed = await asyncio.to_thread(run_roost, "limits", "set", "--key", keys[1],
                                      "--streams", "2", env=env)
    assert changed.returncode == 0, changed.stderr[-1500:]
    assert "[bold red]look[/bold red]" in changed.stdout, changed.stdout
