"""Message keys: rotation (CLI, batches, resume, nothing lost) and the start-up check."""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import text

from roost.chat.keys import (
    ENCRYPTED_COLUMNS,
    MessageKeysError,
    key_fingerprint,
    rotate_messages,
    verify_message_keys,
)
from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.security.crypto import MessageCipher
from tests.chat.conftest import add_provider, new_session
from tests.support.cli import run_roost
from tests.support.openai_stub import StubServer
from tests.support.pg import PgTestServer
from tests.support.server import roost_server
from tests.support.sql import scalar


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    # These tests post real turns to fill the history they rotate; no provider hangs here,
    # so the chat tests' 1 s provider timeout only made a loaded CI machine fail them.
    return test_settings.model_copy(update={"llm_timeout_s": 15.0})

Headers = dict[str, str]


async def _fill(client: httpx.AsyncClient, headers: Headers, admin_headers: Headers,
                stub: StubServer, n: int) -> list[str]:
    """n answered messages (so requests and responses exist too) and one history event."""
    await add_provider(client, admin_headers, stub)
    sid = (await new_session(client, headers))["id"]
    sent = [f"secret message number {i}" for i in range(n)]
    for content in sent:
        resp = await client.post(f"/api/v1/chat/sessions/{sid}/messages", json={"content": content},
                                 headers=headers)
        assert resp.status_code == 201, resp.text
    await client.post(f"/api/v1/chat/sessions/{sid}/history",
                      json={"event_type": "message", "message": {"content": "event text"}},
                      headers=headers)
    return sent


async def _all_blobs(database: Database) -> list[tuple[str, bytes]]:
    out: list[tuple[str, bytes]] = []
    async with database.transaction() as s:
        for table, columns in ENCRYPTED_COLUMNS:
            for column in columns:
                rows = (await s.execute(text(
                    f"SELECT {column} FROM {table} WHERE {column} IS NOT NULL"))).scalars().all()
                out += [(f"{table}.{column}", bytes(r)) for r in rows]
    return out


def _readable_with(key: str, blobs: list[tuple[str, bytes]]) -> list[bytes]:
    """The plaintexts (bytes: a stored conversation may be compressed) ``key`` opens."""
    fernet = Fernet(key.encode())
    readable = []
    for _name, blob in blobs:
        try:
            readable.append(fernet.decrypt(blob))
        except InvalidToken:
            pass
    return readable


async def test_rotate_messages_cli_re_encrypts_everything_under_the_new_key(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, user: tuple[uuid.UUID, Headers],
    database: Database, test_keys: KeyMaterial, pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    _, headers = user
    sent = await _fill(client, headers, admin_headers, stub, 4)
    before = await _all_blobs(database)
    old = test_keys.message_keys[0]
    plain_before = sorted(_readable_with(old, before))
    assert len(before) >= 4 * 2 + 4 * 2 + 4 + 1  # messages, request prompt+messages, responses, event
    new = Fernet.generate_key().decode()
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_MESSAGE_KEYS": f"{new},{old}"}
    out = run_roost("keys", "rotate-messages", "--batch-size", "3", env=env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "chat_messages" in out.stdout
    assert re.search(r"re-encrypted (\d+) of \1 rows", out.stdout), out.stdout
    assert "old keys can now be removed" in out.stdout
    after = await _all_blobs(database)
    assert len(after) == len(before)
    assert sorted(_readable_with(new, after)) == plain_before  # nothing lost, nothing changed
    assert _readable_with(old, after) == []
    assert {text.encode() for text in sent} <= set(plain_before)
    # A second run finds nothing left to do.
    again = run_roost("keys", "rotate-messages", env=env)
    assert again.returncode == 0 and "re-encrypted 0 of" in again.stdout


async def test_rotation_resumes_after_an_interruption(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, user: tuple[uuid.UUID, Headers],
    database: Database, test_keys: KeyMaterial, tmp_path: Path,
) -> None:
    _, headers = user
    await _fill(client, headers, admin_headers, stub, 5)
    before = await _all_blobs(database)
    old, new = test_keys.message_keys[0], Fernet.generate_key().decode()
    keys = (new, old)
    cipher = MessageCipher(list(keys))
    checkpoint = tmp_path / "rotate.json"
    first = await rotate_messages(database, cipher, keys, batch_size=2, checkpoint=checkpoint,
                                  stop_after_batches=2)
    assert first.batches == 2 and first.rows_rotated == 4 and checkpoint.exists()
    # Interrupted half-way: every row still reads with the key list.
    middle = await _all_blobs(database)
    opened = sorted(cipher.decrypt_bytes(b) for _, b in middle)
    assert opened == sorted(cipher.decrypt_bytes(b) for _, b in before)
    assert 0 < len(_readable_with(new, middle)) < len(middle)
    second = await rotate_messages(database, cipher, keys, batch_size=2, checkpoint=checkpoint)
    assert second.resumed_from == {"table": "chat_messages", "last_id": second.resumed_from["last_id"]}
    assert second.rows_seen == len(await _rows_total(database)) - 4
    assert not checkpoint.exists() and second.ok
    after = await _all_blobs(database)
    assert sorted(_readable_with(new, after)) == sorted(cipher.decrypt_bytes(b) for _, b in before)


async def _rows_total(database: Database) -> list[int]:
    rows: list[int] = []
    async with database.transaction() as s:
        for table, _ in ENCRYPTED_COLUMNS:
            n = (await s.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
            rows += [1] * int(n)
    return rows


async def test_an_undecryptable_row_is_reported_and_left_alone(
    database: Database, test_keys: KeyMaterial, user: tuple[uuid.UUID, Headers],
    client: httpx.AsyncClient,
) -> None:
    _, headers = user
    sid = (await new_session(client, headers))["id"]
    await client.post(f"/api/v1/chat/sessions/{sid}/messages", json={"content": "ok", "reply": False},
                      headers=headers)
    stranger = Fernet(Fernet.generate_key()).encrypt(b"from elsewhere")
    async with database.transaction() as s:
        await s.execute(text("UPDATE chat_messages SET content = :c"), {"c": stranger})
    keys = (Fernet.generate_key().decode(), test_keys.message_keys[0])
    report = await rotate_messages(database, MessageCipher(list(keys)), keys)
    assert not report.ok and report.undecryptable[0][0] == "chat_messages"
    async with database.transaction() as s:
        assert bytes((await s.execute(text("SELECT content FROM chat_messages"))).scalar_one()) == stranger


@pytest.mark.parametrize("case", ["wrong", "malformed"])
async def test_a_wrong_or_malformed_key_stops_the_server_with_a_clear_error(
    case: str, client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], pg_server: PgTestServer,
    db_name: str, tmp_path: Path,
) -> None:
    _, headers = user
    sid = (await new_session(client, headers))["id"]
    await client.post(f"/api/v1/chat/sessions/{sid}/messages",
                      json={"content": "stored", "reply": False}, headers=headers)
    key = Fernet.generate_key().decode() if case == "wrong" else "not-a-fernet-key"
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_MESSAGE_KEYS": key, "ROOST_LOG_JSON": "false"}
    with pytest.raises(RuntimeError) as info, roost_server(env, timeout_s=60):
        pass
    message = str(info.value)
    if case == "wrong":
        assert "ROOST_MESSAGE_KEYS cannot decrypt the data already stored (chat_messages" in message
    else:
        assert "ROOST_MESSAGE_KEYS entry 1 is not a valid Fernet key" in message
    assert "not-a-fernet-key" not in message  # the key itself is never printed


async def test_rotate_messages_with_a_corrupt_checkpoint_starts_over_without_a_traceback(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], test_keys: KeyMaterial,
    tmp_path: Path, pg_server: PgTestServer, db_name: str,
) -> None:
    """A checkpoint that is not the command's JSON object is ignored, as unparsable JSON is."""
    _, headers = user
    sid = (await new_session(client, headers))["id"]
    resp = await client.post(f"/api/v1/chat/sessions/{sid}/messages",
                             json={"content": "hello", "reply": False}, headers=headers)
    assert resp.status_code == 201
    data_dir = tmp_path / "d"
    (data_dir / "keys").mkdir(parents=True)
    (data_dir / "keys" / "rotate-messages.checkpoint.json").write_text("[]")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(data_dir),
           "ROOST_MESSAGE_KEYS": test_keys.message_keys[0]}
    out = run_roost("keys", "rotate-messages", env=env)
    assert "Traceback" not in out.stdout + out.stderr, out.stderr[-2000:]
    assert out.returncode == 0


@pytest.mark.parametrize("saved", [
    '"x"', "null", "[]",
    {"table": "chat_messages", "last_id": "zzz"},
    {"table": "chat_messages", "last_id": 7},
    {"table": "users", "last_id": None},
    {"table": None, "last_id": None, "done_tables": 5},
    {"table": None, "last_id": None, "done_tables": [["chat_messages"]]},
])
async def test_a_checkpoint_of_the_wrong_shape_is_ignored(
    database: Database, test_keys: KeyMaterial, tmp_path: Path, saved: str | dict[str, object],
) -> None:
    """A damaged or hand-edited checkpoint of this rotation does not crash the run: it
    starts over (re-encrypting is idempotent)."""
    keys = (Fernet.generate_key().decode(), test_keys.message_keys[0])
    checkpoint = tmp_path / "cp.json"
    if isinstance(saved, dict):
        saved = json.dumps({"fingerprint": key_fingerprint(keys), **saved})
    checkpoint.write_text(saved)
    report = await rotate_messages(database, MessageCipher(list(keys)), keys,
                                   checkpoint=checkpoint)
    assert report.ok and report.resumed_from is None


def test_rotate_messages_without_any_message_key_refuses(tmp_path: Path) -> None:
    """Pointed at a data directory without key files, the command names it and makes no
    fresh key (nothing stored would open with it)."""
    data_dir = tmp_path / "empty"
    env = {"ROOST_DATABASE_URL": "postgresql://nobody@127.0.0.1:1/none",
           "ROOST_DATA_DIR": str(data_dir)}
    out = run_roost("keys", "rotate-messages", env=env)
    assert out.returncode == 2, out.stdout + out.stderr
    assert str(data_dir / "keys" / "message_keys") in " ".join(out.stderr.split())
    assert "Traceback" not in out.stderr
    assert not (data_dir / "keys" / "message_keys").exists()


async def _rewrap_everything(database: Database, src: str, dst: str) -> None:
    """Every stored ciphertext moved from key ``src`` to ``dst``: what ``dst`` would have
    written, as if the key that wrote it were removed from the configuration."""
    to = MultiFernet([Fernet(dst.encode()), Fernet(src.encode())])
    async with database.transaction() as s:
        for table, columns in ENCRYPTED_COLUMNS:
            for column in columns:
                rows = (await s.execute(text(
                    f"SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL"))).all()
                for row_id, blob in rows:
                    await s.execute(text(f"UPDATE {table} SET {column} = :v WHERE id = :id"),
                                    {"v": to.rotate(bytes(blob)), "id": row_id})


async def test_an_llm_request_no_key_opens_is_the_message_keys_problem(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database, test_keys: KeyMaterial,
) -> None:
    """A stored model call no configured key opens answers what a chat message does: the
    500 "Message keys do not match" naming ROOST_MESSAGE_KEYS (it was the anonymous
    internal error)."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    sid = (await new_session(client, headers))["id"]
    posted = await client.post(f"/api/v1/chat/sessions/{sid}/messages",
                               json={"content": "hello"}, headers=headers)
    assert posted.status_code == 201, posted.text
    await _rewrap_everything(database, test_keys.message_keys[0], Fernet.generate_key().decode())
    for path in (f"/api/v1/chat/sessions/{sid}/messages",
                 f"/api/v1/llm/requests/{posted.json()['request_id']}"):
        answer = await client.get(path, headers=headers)
        assert answer.status_code == 500, answer.text
        assert answer.json()["type"].endswith("message-keys-mismatch"), answer.text
        assert "ROOST_MESSAGE_KEYS" in answer.json()["detail"]


async def test_the_start_up_check_reads_model_calls_when_no_message_is_stored(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """A deployment that serves only /v1 stores model calls and no chat message: a new key
    (the key file lost) is refused at start-up, naming the table, instead of starting and
    mixing new ciphertexts with ones nothing reads (only chat_messages was sampled)."""
    _, headers = user
    await add_provider(client, admin_headers, stub)
    answer = await client.post("/v1/chat/completions", headers=headers, json={
        "model": "stub-model", "messages": [{"role": "user", "content": "hello"}]})
    assert answer.status_code == 200, answer.text
    assert await scalar(database, "SELECT count(*) FROM chat_messages") == 0
    with pytest.raises(MessageKeysError, match=r"\(llm_requests row "):
        await verify_message_keys(database, MessageCipher([Fernet.generate_key().decode()]))
