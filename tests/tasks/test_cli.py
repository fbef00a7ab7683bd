"""``roost tasks ...`` and ``roost worker`` argument handling, run as a user would."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.principal import OPERATOR
from roost.tasks import service
from roost.tasks.worker import reap_expired
from tests.support.cli import run_roost
from tests.support.sql import scalar
from tests.tasks import handlers  # noqa: F401  (registers the test task types)
from tests.tasks.support import REPO
from tests.tasks.test_api import _dead_letter as _dead_letter_named


def _roost(env: dict[str, str], *args: str,
           timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_roost(*args, env=env, cwd=REPO, timeout=timeout)


def _env(pg_server: Any, db_name: str, tmp_path: Path) -> dict[str, str]:
    return {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
            "ROOST_DATA_DIR": str(tmp_path / "data"), "ROOST_LOG_LEVEL": "warning"}


async def test_tasks_commands(
    pg_server: Any, db_name: str, database: Database, tmp_path: Path
) -> None:
    env = _env(pg_server, db_name, tmp_path)
    async with database.transaction() as session:
        waiting = await service.enqueue(session, "test.noop", {"who": "cli"}, priority="high")
        doomed = await service.enqueue(session, "test.record", {"label": "d"}, max_retries=0)
        await session.execute(text(
            "UPDATE background_tasks SET status = 'running', worker_id = 'w', attempts = 1,"
            " lease_expires_at = now() - interval '1 second' WHERE id = :id"), {"id": doomed.id})
    await reap_expired(database)

    ls = _roost(env, "tasks", "ls", "--priority", "high")
    assert ls.returncode == 0, ls.stderr
    assert str(waiting.id) in ls.stdout and str(doomed.id) not in ls.stdout

    listed = _roost(env, "tasks", "ls", "--status", "dead_letter", "--json")
    assert json.loads(listed.stdout)["id"] == str(doomed.id)

    show = _roost(env, "tasks", "show", str(waiting.id))
    assert show.returncode == 0 and json.loads(show.stdout)["payload"] == {"who": "cli"}

    stats = _roost(env, "tasks", "stats", "--json")
    data = json.loads(stats.stdout)
    assert data["by_status"]["pending"] == 1 and data["by_status"]["dead_letter"] == 1
    assert "oldest runnable job" in _roost(env, "tasks", "stats").stdout

    letters = _roost(env, "tasks", "dead-letters")
    assert str(doomed.id) in letters.stdout
    # `retry` takes the dead job's id (what `ls` shows) as well as the dead letter's.
    retry = _roost(env, "tasks", "retry", str(doomed.id))
    assert retry.returncode == 0 and f"requeued as task {doomed.id}" in retry.stdout
    again = _roost(env, "tasks", "retry", str(doomed.id))
    assert again.returncode == 1 and "already retried" in again.stderr

    assert "paused" in _roost(env, "tasks", "pause", str(waiting.id)).stdout
    assert "queued" in _roost(env, "tasks", "resume", str(waiting.id)).stdout
    assert "cancelled" in _roost(env, "tasks", "cancel", str(waiting.id)).stdout
    twice = _roost(env, "tasks", "cancel", str(waiting.id))
    assert twice.returncode == 1 and "already cancelled" in twice.stderr
    bad = _roost(env, "tasks", "ls", "--status", "exploded")
    assert bad.returncode == 2
    assert await scalar(database, "SELECT count(*) FROM audit_logs WHERE action LIKE 'task.%'"
                        " AND correlation_id LIKE 'cli-%'") == 4  # retry, pause, resume, cancel


async def test_tables_print_stored_text_verbatim(
    pg_server: Any, db_name: str, database: Database, tmp_path: Path
) -> None:
    """`tasks ls` and `tasks dead-letters` print an error message holding brackets as
    stored: not read as rich markup (a stray `[/]` was a MarkupError traceback); a control
    sequence in it (ESC: clear the screen) is shown as its escape, never sent to the
    terminal."""
    env = {**_env(pg_server, db_name, tmp_path), "COLUMNS": "300"}
    doomed = await _dead_letter(database)
    shown = "KeyError [/] in [bold]x[/bold] \\x1b[2J"
    message = shown.replace("\\x1b", "\x1b")
    async with database.transaction() as session:
        await session.execute(text("UPDATE background_tasks SET error_message = :m"),
                              {"m": message})
        await session.execute(text("UPDATE dead_letter_queue SET error_message = :m"),
                              {"m": message})
    for args in (["tasks", "ls"], ["tasks", "dead-letters"]):
        r = _roost(env, *args)
        assert r.returncode == 0, (args, r.stderr[-1500:])
        assert shown in r.stdout and str(doomed) in r.stdout, (args, r.stdout)
        assert "\x1b" not in r.stdout, (args, r.stdout)


async def _dead_letter(database: Database) -> uuid.UUID:
    """A test.record job (no retries) whose only attempt's lease ran out: dead-lettered."""
    async with database.transaction() as session:
        doomed = await service.enqueue(session, "test.record", {"label": "m"}, max_retries=0)
        await session.execute(text(
            "UPDATE background_tasks SET status = 'running', worker_id = 'w', attempts = 1,"
            " lease_expires_at = now() - interval '1 second' WHERE id = :id"), {"id": doomed.id})
    await reap_expired(database)
    return uuid.UUID(str(doomed.id))


async def test_worker_refuses_a_module_it_cannot_import(
    pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    result = _roost(_env(pg_server, db_name, tmp_path), "worker", "--import", "no_such_module_x")
    assert result.returncode == 2
    assert "cannot import" in result.stderr


@pytest.mark.parametrize(("args", "env", "message"), [
    pytest.param(("--queues", ""), {}, "no queue names given", id="empty-option"),
    pytest.param(("--queues", ",", "-q", " "), {}, "no queue names given", id="commas-only"),
    pytest.param((), {"ROOST_WORKER_QUEUES": " , "}, "no queue names given", id="commas-env"),
    pytest.param(("--queues", "ok," + "q" * 65), {}, "invalid queue name", id="too-long"),
])
async def test_worker_refuses_queues_that_name_no_queue(
    pg_server: Any, db_name: str, tmp_path: Path, args: tuple[str, ...], env: dict[str, str],
    message: str,
) -> None:
    """Queue names given that name none must not start a worker of every queue (what
    leaving them unset means), nor may a name no job could carry start one of no job."""
    result = _roost({**_env(pg_server, db_name, tmp_path), **env}, "worker", "--no-schedules",
                    *args, timeout=30)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


@pytest.mark.parametrize("queues", [",", " , ", "ok,bad\tname," + "q" * 65])
def test_serve_refuses_a_worker_queue_setting_that_names_no_queue(
    tmp_path: Path, queues: str
) -> None:
    """`roost serve` runs a worker too: ROOST_WORKER_QUEUES="," must not make it a worker
    of every queue; it is said before the database starts, as `roost worker` says it."""
    env = {"ROOST_DATABASE_URL": "postgresql://roost:pw@127.0.0.1:1/nowhere",
           "ROOST_DATA_DIR": str(tmp_path / "data"), "ROOST_WORKER_QUEUES": queues}
    result = _roost(env, "serve", "--port", "1", timeout=60)
    assert result.returncode == 2, result.stderr
    assert "ROOST_WORKER_QUEUES" in result.stderr
    assert "Traceback" not in result.stderr
    assert "every queue" in result.stderr or "invalid queue name" in result.stderr


async def test_worker_refuses_a_database_without_the_task_tables(
    pg_server: Any, tmp_path: Path
) -> None:
    from tests.support.pg import unique_db_name

    name = unique_db_name("empty")
    await pg_server.create_database(name)
    try:
        result = _roost(_env(pg_server, name, tmp_path), "worker")
        assert result.returncode == 1
        assert "roost db upgrade" in result.stderr
    finally:
        await pg_server.drop_database(name)


async def test_tasks_ls_json_is_one_object_per_line(
    pg_server: Any, db_name: str, database: Database, tmp_path: Path
) -> None:
    """`roost tasks ls --json` prints one JSON object per line, as its --help says."""
    async with database.transaction() as session:
        for _ in range(2):
            await service.enqueue(session, "test.noop", {"who": "json"})
    out = _roost(_env(pg_server, db_name, tmp_path), "tasks", "ls", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert len(lines) == 2, out.stdout
    assert all(json.loads(line)["task_type"] == "test.noop" for line in lines)


async def test_tasks_ls_json_sends_no_bidi_override_or_c1_control_to_the_terminal(
    pg_server: Any, db_name: str, database: Database, tmp_path: Path
) -> None:
    """Stored text (a payload, an error) may hold a bidi override (U+202E) or a C1 control
    (CSI, U+009B): `roost tasks ls --json` prints them escaped, ASCII-only JSON as `tasks
    show` does, so what the operator sees is what is stored; still one object a line."""
    async with database.transaction() as session:
        job = await service.enqueue(session, "test.noop", {"name": "\u202efdp.exe"})
        await session.execute(
            text("UPDATE background_tasks SET error_message = :m WHERE id = :i"),
            {"m": "KeyError: \u202eexe.txt \x9b2J", "i": job.id})
    out = _roost(_env(pg_server, db_name, tmp_path), "tasks", "ls", "--json")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "\u202e" not in out.stdout and "\x9b" not in out.stdout, out.stdout
    row = json.loads(out.stdout)
    assert row["payload"] == {"name": "\u202efdp.exe"}
    assert row["error_message"] == "KeyError: \u202eexe.txt \x9b2J"


async def test_cli_retry_by_unique_start_of_a_job_that_died_twice(
    pg_server: Any, db_name: str, database: Database, tmp_path: Path
) -> None:
    """`roost tasks retry <unique start of the dead job's id>` retries its newest dead letter."""
    job = await _dead_letter_named(database, "twice")
    async with database.transaction() as session:
        letter = await session.scalar(text("SELECT id FROM dead_letter_queue"))
        await service.retry_dead_letter(session, OPERATOR, letter)
        await session.execute(text(
            "UPDATE background_tasks SET status = 'running', worker_id = 'w', attempts = 2,"
            " lease_expires_at = now() - interval '1 second' WHERE id = :id"), {"id": job})
    await reap_expired(database)
    assert await scalar(database, "SELECT status::text FROM background_tasks WHERE id = :id",
                        id=job) == "dead_letter"
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "data"), "ROOST_LOG_LEVEL": "warning"}
    # 30 characters reach past uuid7's time bits: unique among every job and dead letter id.
    done = run_roost("tasks", "retry", str(job)[:30], env=env, cwd=REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert await scalar(database, "SELECT status::text FROM background_tasks WHERE id = :id",
                        id=job) == "queued"


async def test_cli_retry_by_a_start_shared_by_a_job_and_only_its_own_letters(
    pg_server: Any, db_name: str, database: Database, tmp_path: Path
) -> None:
    """A job dead-lettered twice in a row: its id and its two letters' ids share a start
    (uuid7's time bits).  That start names one job, whose letters are all it names
    besides: `roost tasks retry START` retries the newest letter, not "the start of
    several dead letter ids"."""
    job = await _dead_letter_named(database, "twice")
    async with database.transaction() as session:
        first = await session.scalar(text("SELECT id FROM dead_letter_queue"))
        await service.retry_dead_letter(session, OPERATOR, first)
        await session.execute(text(
            "UPDATE background_tasks SET status = 'running', worker_id = 'w', attempts = 2,"
            " lease_expires_at = now() - interval '1 second' WHERE id = :id"), {"id": job})
    await reap_expired(database)
    async with database.transaction() as session:
        letters = [str(i) for i in (await session.scalars(
            text("SELECT id FROM dead_letter_queue ORDER BY id"))).all()]
    ids = [str(job), *letters]
    shared = next(n for n in range(36) if len({i[n] for i in ids}) > 1)
    start = str(job)[:shared].rstrip("-")
    assert start, ids  # uuid7s: the time bits first (the test's rows are the only ones)
    done = _roost(_env(pg_server, db_name, tmp_path), "tasks", "retry", start)
    assert done.returncode == 0, done.stdout + done.stderr
    assert await scalar(database, "SELECT status::text FROM background_tasks WHERE id = :id",
                        id=job) == "queued"
    assert await scalar(database, "SELECT count(*) FROM dead_letter_queue "
                                  "WHERE retried_at IS NULL") == 0

