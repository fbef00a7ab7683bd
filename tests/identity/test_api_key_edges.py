"""API keys at their edges: how long the list gets, and what the operator's terminal is
shown."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
from sqlalchemy import text, update

from roost.db.engine import Database
from roost.identity.apikeys import MAX_KEYS_PER_USER, MAX_REVOKED_LISTED
from roost.identity.models import ApiKey
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer

KEYS = "/api/v1/api-keys"


async def test_expired_keys_do_not_grow_the_list_without_end(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Expired keys do not count against the cap of live keys, and were all listed: a loop
    creating short-lived keys grew `GET /api/v1/api-keys` without end until the 30-day
    clean-up.  Now every live key and the MAX_REVOKED_LISTED most recently expired."""
    user_id, headers = await make_user(database)
    for wave in range(3):
        for i in range(MAX_KEYS_PER_USER - 1):
            made = await client.post(KEYS, headers=headers, json={
                "name": f"w{wave}-{i}", "expires_at": "2099-01-01T00:00:00Z"})
            assert made.status_code == 201, made.text
        async with database.transaction() as session:  # time passes: they expire
            await session.execute(
                update(ApiKey).where(ApiKey.user_id == user_id, ApiKey.name != "test helper",
                                     ApiKey.expires_at > text("now()"))
                .values(expires_at=text(f"now() - interval '{3 - wave} hours'")))
    for i in range(MAX_KEYS_PER_USER - 1):
        made = await client.post(KEYS, headers=headers, json={"name": f"live-{i}"})
        assert made.status_code == 201, made.text
    listed = await client.get(KEYS, headers=headers)
    assert listed.status_code == 200, listed.text
    names = [k["name"] for k in listed.json()]
    assert len(names) == MAX_KEYS_PER_USER + MAX_REVOKED_LISTED, len(names)
    assert {f"live-{i}" for i in range(MAX_KEYS_PER_USER - 1)} | {"test helper"} <= set(names)
    assert not [n for n in names if n.startswith("w0-")]  # the longest expired are left out


async def test_cli_keys_revoke_does_not_print_terminal_escapes_from_the_name(
    client: httpx.AsyncClient, tmp_path: Path, pg_server: PgTestServer, db_name: str,
    database: Database,
) -> None:
    """A key named with control characters (the API accepts them) is shown escaped by
    `roost keys revoke <id>`, as by `roost keys list`: the confirmation line printed the
    name raw, ESC sequences (clear screen, window title) into the operator's terminal."""
    _, headers = await make_user(database, username="escapes")
    made = await client.post(KEYS, headers=headers,
                             json={"name": "ok\x1b]0;pwned\x07\x1b[2Jfake"})
    assert made.status_code == 201, made.text
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data")}
    listed = await asyncio.to_thread(run_roost, "keys", "list", "--user", "escapes", env=env)
    assert listed.returncode == 0, listed.stderr[-1500:]
    assert "\x1b" not in listed.stdout, repr(listed.stdout)  # the list is safe
    revoked = await asyncio.to_thread(run_roost, "keys", "revoke", made.json()["id"], env=env)
    assert revoked.returncode == 0, revoked.stderr[-1500:]
    assert "\x1b" not in revoked.stdout, repr(revoked.stdout)
