"""The official openai SDK against a real ``roost serve`` process (and a real stub
provider process), all on loopback."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer
from tests.support.pg import PgTestServer
from tests.support.server import roost_server


def _use_the_gateway(base: str, stub: StubServer, admin_token: str, api_key: str) -> str:
    """Blocking SDK calls (run in a thread): plain, streamed, embeddings, unknown model."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    resp = httpx.post(f"{base}/api/v1/llm/providers", headers=admin, json={
        "name": "stub", "type": "openai", "base_url": stub.base_url, "model": "stub-model"})
    assert resp.status_code == 201, resp.text
    client = openai.OpenAI(base_url=f"{base}/v1", api_key=api_key, max_retries=0)

    done = client.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "over a real socket"}])
    assert done.choices[0].message.content == "echo: over a real socket (model stub-model)"

    stub.script(Reply(chunk_delay_ms=20))
    chunks = list(client.chat.completions.create(
        model="stub-model", messages=[{"role": "user", "content": "one two three"}], stream=True))
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) >= 4 and "".join(deltas) == "echo: one two three (model stub-model)"
    assert chunks[-1].choices[0].finish_reason == "stop"

    emb = client.embeddings.create(model="stub-model", input=["a", "b", "c"])
    assert [d.index for d in emb.data] == [0, 1, 2] and len(emb.data[2].embedding) == 8

    with pytest.raises(openai.NotFoundError) as missing:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert missing.value.code == "model_not_found"
    return done.id


async def test_openai_sdk_against_roost_serve(
    stub: StubServer, database: Database, pg_server: PgTestServer, db_name: str,
    tmp_path: Path, test_keys: KeyMaterial,
) -> None:
    _, headers = await make_user(database)
    api_key = headers["Authorization"].removeprefix("Bearer ")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_ADMIN_TOKEN": test_keys.admin_token, "ROOST_LLM_LOCAL_MODEL": "false"}

    def run() -> tuple[str, str]:
        with roost_server(env) as server:
            completion_id = _use_the_gateway(server.base_url, stub, test_keys.admin_token, api_key)
        return completion_id, server.output

    completion_id, output = await asyncio.to_thread(run)
    assert "Traceback" not in output
    assert uuid.UUID(completion_id.removeprefix("chatcmpl-"))
