"""The task admin API and CLI against hostile stored text and forged cursors."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from tests.support.cli import run_roost
from tests.tasks import handlers  # noqa: F401  (registers the test task types)
from tests.tasks.support import REPO, enqueue

API = "/api/v1/tasks"


@pytest.mark.parametrize("path", [API, f"{API}/dead-letters"])
async def test_a_deeply_nested_forged_cursor_is_a_400(
    client: httpx.AsyncClient, admin_headers: dict[str, str], path: str
) -> None:
    """A forged cursor (valid base64 of 1,500 nested JSON arrays, under the 2,048-character
    limit) is a malformed cursor: 400, not a 500 from a RecursionError."""
    cursor = base64.urlsafe_b64encode(b"[" * 1500).decode().rstrip("=")
    assert len(cursor) <= 2048
    r = await client.get(path, params={"cursor": cursor}, headers=admin_headers)
    assert r.status_code == 400, (r.status_code, r.text)
    assert r.headers["content-type"].startswith("application/problem+json")


async def test_tasks_show_does_not_send_bidi_or_c1_controls_to_the_terminal(
    pg_server: Any, db_name: str, database: Database, tmp_path: Path
) -> None:
    """`roost tasks show` prints a job's stored text (error, result) without letting a
    bidirectional override (U+202E) or a C1 control (U+009B, CSI) reach the terminal, as
    `tasks ls` and `tasks dead-letters` escape them."""
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "data"), "ROOST_LOG_LEVEL": "warning"}
    job = (await enqueue(database, "test.noop")).id
    async with database.transaction() as session:
        await session.execute(
            text("UPDATE background_tasks SET error_message = :m,"
                 " result = CAST(:r AS jsonb) WHERE id = :i"),
            {"m": "KeyError: \u202eexe.txt \x9b2J", "r": json.dumps({"name": "\u202efdp.exe"}),
             "i": job})
    r = run_roost("tasks", "show", str(job), env=env, cwd=REPO)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["id"] == str(job)
    assert "\u202e" not in r.stdout, r.stdout
    assert "\x9b" not in r.stdout, r.stdout
