"""The bare alternative to Roost's message post: FastAPI + asyncpg, one INSERT, nothing else
(no authentication, no encryption, no audit, no model).  Run by bench/chat/run.py with
uvicorn; ``BARE_DSN`` names the database."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from fastapi import FastAPI
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


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
