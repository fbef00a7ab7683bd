"""What ``roost`` prints, run as a real process (issue 10, item 7): messages keep their
square brackets, tables print ids whole, ids are taken by unique prefix, and stderr
carries only what the user needs."""

from __future__ import annotations

import asyncio
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from roost.db.engine import Database
from tests.support.cli import ROOST, command_env, run_roost
from tests.support.identity import make_user

UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def _env(pg_server: Any, db_name: str, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
            "ROOST_DATA_DIR": str(tmp_path / "data"), **extra}


async def test_error_messages_keep_square_brackets(
    pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    out = await asyncio.to_thread(run_roost, "users", "approve", "x[local]",
                                  env=_env(pg_server, db_name, tmp_path))
    assert out.returncode == 1
    assert "no account with username or email 'x[local]'" in out.stderr, out.stderr


async def test_key_ids_print_whole_at_80_columns_and_revoke_takes_a_prefix(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    await make_user(database, username="narrow-terminal-user")
    env = _env(pg_server, db_name, tmp_path, COLUMNS="80")
    for name in ("first key with a rather long descriptive name", "second"):
        made = await asyncio.to_thread(run_roost, "keys", "create", "--user",
                                       "narrow-terminal-user", "--name", name, env=env)
        assert made.returncode == 0, made.stderr
    listed = await asyncio.to_thread(run_roost, "keys", "list", "--user", "narrow-terminal-user",
                                     env=env)
    assert listed.returncode == 0, listed.stderr
    assert "…" not in listed.stdout
    ids = UUID.findall(listed.stdout)
    assert len(ids) == 3, listed.stdout  # make_user's key and the two above
    assert "descriptive" in listed.stdout  # free text wraps at word boundaries, whole

    common = next(ids[0][:i] for i in range(36, -1, -1) if ids[1].startswith(ids[0][:i]))
    assert common  # UUIDv7 ids made a moment apart share their leading timestamp digits
    ambiguous = await asyncio.to_thread(run_roost, "keys", "revoke", common, env=env)
    assert ambiguous.returncode == 1
    assert "several API key ids" in ambiguous.stderr and ids[0] in ambiguous.stderr
    unknown = await asyncio.to_thread(run_roost, "keys", "revoke", "ffffffff", env=env)
    assert unknown.returncode == 1 and "no API key id starts with 'ffffffff'" in unknown.stderr
    bad = await asyncio.to_thread(run_roost, "keys", "revoke", "not-an-id", env=env)
    assert bad.returncode == 1 and "not an id" in bad.stderr

    unique = next(ids[0][:i] for i in range(1, 37)
                  if not any(other.startswith(ids[0][:i]) for other in ids[1:]))
    revoked = await asyncio.to_thread(run_roost, "keys", "revoke", unique, env=env)
    assert revoked.returncode == 0, revoked.stderr
    for whole in ids[1:]:  # pasted from the list
        done = await asyncio.to_thread(run_roost, "keys", "revoke", whole, env=env)
        assert done.returncode == 0, done.stderr
    left = await asyncio.to_thread(run_roost, "keys", "list", "--user", "narrow-terminal-user",
                                   env=env)
    assert UUID.findall(left.stdout) == []


async def test_users_and_tasks_tables_print_ids_whole(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    user_id, _ = await make_user(database, username="a-rather-long-user-name-for-a-table")
    env = _env(pg_server, db_name, tmp_path, COLUMNS="60")
    users = await asyncio.to_thread(run_roost, "users", "list", env=env)
    assert users.returncode == 0 and str(user_id) in users.stdout, users.stdout
    from roost.tasks import service
    from roost.tasks.handlers import discover

    discover()
    async with database.transaction() as session:
        task = await service.enqueue(session, "identity.cleanup_sessions", {})
    listed = await asyncio.to_thread(run_roost, "tasks", "ls", env=env)
    assert str(task.id) in listed.stdout, listed.stdout
    shown = await asyncio.to_thread(run_roost, "tasks", "show", str(task.id)[:-4], env=env)
    assert shown.returncode == 0 and str(task.id) in shown.stdout, shown.stderr
    cancelled = await asyncio.to_thread(run_roost, "tasks", "cancel", str(task.id)[:-2], env=env)
    assert cancelled.returncode == 0 and f"task {task.id}: cancelled" in cancelled.stdout


def test_commands_log_nothing_unless_verbose(open_tmp: Path) -> None:
    """On the embedded server: no `embedded_postgres_ready` line unless asked for.  Its
    data dir is outside pytest's tree, which another pytest session may lock to 0700
    while the server's own user stops it (then stopping it logged an error)."""
    env = {"ROOST_DATA_DIR": str(open_tmp / "data")}
    quiet = run_roost("db", "current", env=env, fresh=True)  # start-up logs nothing either
    assert quiet.returncode == 0, quiet.stderr
    assert quiet.stderr == "" and "embedded_postgres" not in quiet.stdout
    loud = run_roost("-v", "db", "current", env=env)
    assert loud.returncode == 0 and "embedded_postgres_ready" in loud.stderr
    debug = run_roost("db", "current", env={**env, "ROOST_LOG_LEVEL": "debug"})
    assert debug.returncode == 0 and "embedded_postgres_ready" in debug.stderr


def test_schema_coverage_names_the_platforms() -> None:
    out = run_roost("schema", "coverage", env={})
    assert out.returncode == 0, out.stderr
    for name in ("000 YouWorker", "001 AI Workflow Engine", "002 HelixAgent",
                 "003 Persona Platform", "004 agent/RAG/billing platform"):
        assert name in out.stdout, out.stdout
    assert "_dda7ac0bfd05080e" not in out.stdout


@pytest.mark.needs_local
async def test_local_model_loading_prints_no_progress_bars(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    await make_user(database, username="quiet")
    doc = tmp_path / "note.md"
    doc.write_text("# Note\n\nA short document to embed with the local model.\n")
    env = _env(pg_server, db_name, tmp_path, ROOST_KNOWLEDGE_EMBEDDING_PROVIDER="local")
    out = await asyncio.to_thread(run_roost, "ingest", str(doc), "--user", "quiet", env=env,
                                  fresh=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "success" in out.stdout
    assert out.stderr == "", out.stderr


def test_invalid_configuration_names_the_variable_without_its_value() -> None:
    out = run_roost("users", "list", env={"ROOST_DB_POOL_SIZE": "not-a-number-s3cret"})
    assert out.returncode == 2
    assert "ROOST_DB_POOL_SIZE" in out.stderr and "s3cret" not in out.stderr + out.stdout
    assert "Traceback" not in out.stderr


@pytest.mark.parametrize("argv", [
    ("prompts", "publish", "k", "--file", "-"),
    ("calendar", "import", "-", "--calendar", "cal"),
    ("debates", "start", "--file", "-"),
    ("workflows", "validate", "-"),
    ("agents", "run", "a", "-"),
    ("secrets", "set", "p", "other", "K"),
    ("users", "create", "bob", "--email", "b@x.test", "--password-stdin"),
], ids=lambda a: " ".join(a[:2]))
def test_a_closed_stdin_is_one_line(argv: tuple[str, ...], tmp_path: Path) -> None:
    """With standard input closed (`roost ... <&-`), a command that reads it says so in
    one line, exit 1, never an AttributeError traceback."""
    env = command_env({"ROOST_DATA_DIR": str(tmp_path / "d"),
                       "ROOST_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/x"})
    out = subprocess.run(["sh", "-c", 'exec "$@" <&-', "sh", ROOST, *argv], env=env,
                         capture_output=True, text=True, timeout=120, check=False)
    assert "Traceback" not in out.stderr and "AttributeError" not in out.stderr, \
        out.stderr[-1500:]
    assert out.returncode == 1, out.stderr
