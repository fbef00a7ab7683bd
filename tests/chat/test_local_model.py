"""Out of the box: a fresh Roost with the 'local' extra chats with SmolLM2-135M-Instruct
(llama.cpp in process), no network and no key, and stores the exchange encrypted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import openai
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.support.identity import make_user
from tests.support.pg import PgTestServer
from tests.support.server import roost_server


@pytest.mark.needs_local
async def test_fresh_install_registers_and_chats_with_the_local_model(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
    test_keys: KeyMaterial,
) -> None:
    # scripts/test installs the 'local' extra and makes a skip of this test an error there.
    _, headers = await make_user(database)
    message_key = Fernet.generate_key().decode()
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_ADMIN_TOKEN": test_keys.admin_token, "ROOST_MESSAGE_KEYS": message_key,
           "ROOST_LLM_LOCAL_THREADS": "2"}
    def run() -> str:
        with roost_server(env) as server:
            return _chat_offline(server.base_url, headers, test_keys.admin_token)

    answer = await asyncio.to_thread(run)
    async with database.transaction() as s:
        rows = (await s.execute(text(
            "SELECT role, content FROM chat_messages ORDER BY seq"))).all()
    assert [r.role for r in rows] == ["user", "assistant"]
    assert b"France" not in bytes(rows[0].content)
    fernet = Fernet(message_key.encode())
    assert fernet.decrypt(bytes(rows[0].content)).decode() == "What is the capital of France?"
    assert fernet.decrypt(bytes(rows[1].content)).decode() == answer


def _chat_offline(base: str, headers: dict[str, str], admin_token: str) -> str:
    """Blocking calls (run in a thread): the auto-registered provider, a chat, a stream."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    [provider] = httpx.get(f"{base}/api/v1/llm/providers", headers=admin).json()
    assert (provider["name"], provider["type"], provider["model"]) == (
        "local", "local", "SmolLM2-135M-Instruct")
    session = httpx.post(f"{base}/api/v1/chat/sessions", json={"title": "offline"},
                         headers=headers).json()
    resp = httpx.post(f"{base}/api/v1/chat/sessions/{session['id']}/messages", headers=headers,
                      json={"content": "What is the capital of France?", "max_tokens": 24,
                            "temperature": 0}, timeout=120)
    assert resp.status_code == 201, resp.text
    answer = resp.json()["assistant_message"]
    assert answer["content"].strip() and answer["model"] == "SmolLM2-135M-Instruct"
    assert 0 < answer["tokens_out"] <= 24 and answer["tokens_in"] > 0
    # The same model through the OpenAI-compatible gateway, streamed.
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=headers["Authorization"][7:],
                           max_retries=0, timeout=120)
    chunks = list(client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=[{"role": "user", "content": "Say hi."}],
        max_tokens=8, temperature=0, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    content: str = answer["content"]
    return content
