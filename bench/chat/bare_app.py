"""The bare alternatives to Roost's chat routes: FastAPI + asyncpg and nothing else (no
authentication, no row-level security, no audit, no model).  Posting is one INSERT of
plain text; reading the last messages of a session selects them from Roost's own
``chat_messages`` and decrypts each with Fernet (the first key of ``ROOST_MESSAGE_KEYS``),
the least a server storing encrypted conversations must do.  Run by bench/chat/run.py
with uvicorn; ``BARE_DSN`` names the database."""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from cryptography.fernet import Fernet
from fastapi import FastAPI, Query
from pydantic import BaseModel

CREATE = """
CREATE TABLE IF NOT EXISTS bare_messages (
  id uuid PRIMARY KEY, session_id uuid NOT NULL, role text NOT NULL, content text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now())
"""


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    app.state.pool = await asyncpg.create_pool(os.environ["BARE_DSN"], min_size=10, max_size=20)
    async with app.state.pool.acquire() as conn:
        await conn.execute(CREATE)
    yield
    await app.state.pool.close()


app = FastAPI(lifespan=lifespan)


class Message(BaseModel):
    content: str


@app.post("/sessions/{session_id}/messages", status_code=201)
async def post_message(session_id: uuid.UUID, body: Message) -> dict[str, str]:
    message_id = uuid.uuid4()
    async with app.state.pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO bare_messages (id, session_id, role, content) VALUES ($1, $2, 'user', $3)",
            message_id, session_id, body.content,
        )
    return {"id": str(message_id)}


@functools.cache
def _fernet() -> Fernet:
    return Fernet(os.environ["ROOST_MESSAGE_KEYS"].split(",")[0].strip())


@app.get("/sessions/{session_id}/messages")
async def read_messages(
    session_id: uuid.UUID, limit: int = Query(default=50, ge=1, le=200),
) -> dict[str, list[dict[str, object]]]:
    fernet = _fernet()
    async with app.state.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT id, seq, role, content, created_at FROM chat_messages WHERE session_id = $1 "
            "ORDER BY seq DESC LIMIT $2", session_id, limit)
    return {"items": [{"id": str(r["id"]), "seq": r["seq"], "role": r["role"],
                       "content": fernet.decrypt(r["content"]).decode(),
                       "created_at": r["created_at"].isoformat()} for r in rows]}


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
