"""Start-up of the chat domain: refuse to start when the message keys cannot read the
stored messages (a wrong key, or a lost key file that made Roost generate a new one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from roost.chat.keys import verify_message_keys
from roost.llm.deps import app_gateway

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    gateway = app_gateway(app)
    try:
        await verify_message_keys(gateway.db, gateway.cipher)
    except Exception as exc:
        log.error("startup.message_keys", detail=str(exc))
        raise
    yield
