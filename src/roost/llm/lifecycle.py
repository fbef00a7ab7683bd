"""Start-up and shutdown of the chat/LLM runtime (a router lifespan, merged into the app's).

At start-up: build the runtime, refuse to start when the message keys cannot read the
stored messages, and on a fresh install with the 'local' extra register the local
SmolLM2 provider.  At shutdown: close every provider (HTTP pools, the loaded model).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from roost.chat.keys import verify_message_keys
from roost.llm import service
from roost.llm.runtime import Runtime

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    runtime: Runtime | None = getattr(app.state, "llm_runtime", None)
    if runtime is None:
        runtime = Runtime.build(app.state.db, app.state.settings, app.state.keys)
        app.state.llm_runtime = runtime
    try:
        await verify_message_keys(runtime.db, runtime.cipher)
    except Exception as exc:
        log.error("startup.message_keys", detail=str(exc))
        raise
    try:
        await service.register_local_if_empty(runtime)
    except Exception as exc:  # a missing model must never stop the server
        log.warning("llm.local_provider_not_registered", error=f"{type(exc).__name__}: {exc}")
    try:
        yield
    finally:
        await runtime.pool.aclose()
