"""Start-up and shutdown of the LLM gateway (the ``llm`` domain's start-up hook).

At start-up: build the gateway and, on a fresh install with the 'local' extra, register
the local SmolLM2 provider.  At shutdown: close every provider (HTTP pools, the loaded
model).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from roost.llm.deps import app_gateway
from roost.llm.providers import register_local_if_empty

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    gateway = app_gateway(app)
    try:
        await register_local_if_empty(gateway)
    except Exception as exc:  # a missing model must never stop the server
        log.warning("llm.local_provider_not_registered", error=f"{type(exc).__name__}: {exc}")
    try:
        yield
    finally:
        await gateway.pool.aclose()
