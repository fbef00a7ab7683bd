"""A client that goes away mid-stream: the message stays, the request ends ``failed``
(a real ``roost serve`` process, so the disconnect is a real closed socket)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer
from tests.support.pg import PgTestServer
from tests.support.server import roost_server


def _walk_away(base: str, stub: StubServer, admin_token: str, headers: dict[str, str]) -> str:
    admin = {"Authorization": f"Bearer {admin_token}"}
    assert httpx.post(f"{base}/api/v1/llm/providers", headers=admin, json={
        "name": "slow", "type": "openai", "base_url": stub.base_url, "model": "stub-model",
    }).status_code == 201
    sid = httpx.post(f"{base}/api/v1/chat/sessions", json={}, headers=headers).json()["id"]
    stub.script(Reply("one two three four five six seven eight nine ten", chunk_delay_ms=300))
    with httpx.stream("POST", f"{base}/api/v1/chat/sessions/{sid}/messages", headers=headers,
                      json={"content": "tell me a long story", "stream": True}, timeout=30) as resp:
        assert resp.status_code == 201
        for line in resp.iter_lines():
            if line.startswith("event: delta"):
                break  # one chunk seen: hang up
    return str(sid)


async def test_a_client_hanging_up_mid_stream_fails_the_request_and_keeps_the_message(
    stub: StubServer, database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
    test_keys: KeyMaterial,
) -> None:
    _, headers = await make_user(database)
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_ADMIN_TOKEN": test_keys.admin_token, "ROOST_LLM_LOCAL_MODEL": "false"}

    def run() -> str:
        with roost_server(env) as server:
            sid = _walk_away(server.base_url, stub, test_keys.admin_token, headers)
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:  # the server notices and records the failure
                status = asyncio.run(_status(pg_server.libpq_url(db_name), sid))
                if status == "failed":
                    break
                time.sleep(0.2)
        return sid

    sid = await asyncio.to_thread(run)
    async with database.transaction() as s:
        req = (await s.execute(text(
            "SELECT status, error_message, completed_at FROM llm_requests WHERE session_id = :s"),
            {"s": sid})).one()
        roles = (await s.execute(text(
            "SELECT role FROM chat_messages WHERE session_id = :s"), {"s": sid})).scalars().all()
        attempt = (await s.execute(text(
            "SELECT outcome FROM llm_responses r JOIN llm_requests q ON q.id = r.request_id "
            "WHERE q.session_id = :s"), {"s": sid})).scalars().all()
    assert req.status == "failed" and "client went away" in req.error_message and req.completed_at
    assert list(roles) == ["user"]
    assert list(attempt) == ["cancelled"]


async def _status(url: str, sid: str) -> str | None:
    import asyncpg

    conn = await asyncpg.connect(url)
    try:
        value = await conn.fetchval("SELECT status FROM llm_requests WHERE session_id = $1::uuid", sid)
        return str(value) if value is not None else None
    finally:
        await conn.close()
