"""`roost keys rotate-messages` run as people do: several at once, and resumed after an
interruption (its progress)."""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken
from sqlalchemy import text

from roost.chat.keys import ENCRYPTED_COLUMNS, rotate_messages
from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.security.crypto import MessageCipher
from tests.chat.conftest import new_session
from tests.support.cli import ROOST, command_env, run_roost
from tests.support.pg import PgTestServer

Headers = dict[str, str]


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    return test_settings.model_copy(update={"llm_timeout_s": 15.0})


async def _all_blobs(database: Database) -> list[bytes]:
    out: list[bytes] = []
    async with database.transaction() as s:
        for table, columns in ENCRYPTED_COLUMNS:
            for column in columns:
                rows: list[bytes] = list((await s.execute(text(
                    f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"))).scalars().all())
                out += [bytes(r) for r in rows]
    return out


def _readable_with(key: str, blobs: list[bytes]) -> list[bytes]:
    fernet = Fernet(key.encode())
    readable: list[bytes] = []
    for blob in blobs:
        try:
            readable.append(fernet.decrypt(blob))
        except InvalidToken:
            pass
    return readable


async def _store(client: httpx.AsyncClient, headers: Headers, n: int) -> None:
    sid = (await new_session(client, headers))["id"]
    for i in range(n):
        resp = await client.post(f"/api/v1/chat/sessions/{sid}/messages",
                                 json={"content": f"m{i}", "reply": False}, headers=headers)
        assert resp.status_code == 201, resp.text


def _env(pg_server: PgTestServer, db_name: str, data_dir: Path, keys: str | None) -> dict[str, str]:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(data_dir)}
    if keys is not None:
        env["ROOST_MESSAGE_KEYS"] = keys
    return command_env(env)


async def test_two_rotations_at_once(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
    test_keys: KeyMaterial, pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """Three rotations started at once (two terminals, a cron overlapping a manual run): one
    rotates, the others refuse in one line (exit 1) while it runs; then every row opens
    with the new key. One died with "cannot use the data dir: ...checkpoint.tmp: no such
    file or directory" (they shared the checkpoint's temporary file)."""
    await _store(client, user[1], 200)
    before = await _all_blobs(database)
    old, new = test_keys.message_keys[0], Fernet.generate_key().decode()
    env = _env(pg_server, db_name, tmp_path / "d", f"{new},{old}")

    def run_both() -> list[tuple[int, str, str]]:
        procs = [subprocess.Popen([ROOST, "keys", "rotate-messages", "--batch-size", "1"],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(3)]
        # Read all three at once: an unread pipe that fills would stop its process,
        # perhaps while it holds what another one waits for.
        with ThreadPoolExecutor(len(procs)) as pool:
            outputs = list(pool.map(lambda proc: proc.communicate(timeout=180), procs))
        return [(proc.returncode, out, err) for proc, (out, err) in zip(procs, outputs, strict=True)]

    results = await asyncio.to_thread(run_both)
    for code, out, err in results:
        assert "Traceback" not in out + err, err[-3000:]
        assert code == 0 or (code == 1 and "another rotation of these keys is running" in err
                             and err.count("\n") == 1), (code, out, err)
    assert any(code == 0 for code, _, _ in results), results
    again = await asyncio.to_thread(run_roost, "keys", "rotate-messages", env=env)
    assert again.returncode == 0, again.stderr  # nothing left to do, and no lock left behind
    after = await _all_blobs(database)
    assert sorted(_readable_with(new, after)) == sorted(_readable_with(old, before))


async def test_progress_after_resume(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
    test_keys: KeyMaterial, pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """A resumed run's progress bar ends full (10/10 for a 10-message table): it ended at
    6/10, the rows done before the interruption never counted, a finished run looking stuck."""
    await _store(client, user[1], 10)
    old, new = test_keys.message_keys[0], Fernet.generate_key().decode()
    keys = (new, old)
    data_dir = tmp_path / "d"
    cp = data_dir / "keys" / "rotate-messages.checkpoint.json"
    await rotate_messages(database, MessageCipher(list(keys)), keys, batch_size=2,
                          checkpoint=cp, stop_after_batches=2)
    env = {k: v for k, v in _env(pg_server, db_name, data_dir, f"{new},{old}").items()
           if k.startswith("ROOST_")}
    out = run_roost("keys", "rotate-messages", "--batch-size", "2", env=env)
    assert out.returncode == 0
    assert "chat_messages" in out.stdout and "10/10" in out.stdout, out.stdout
