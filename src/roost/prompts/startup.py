"""Start-up of the prompts domain: the factory defaults Roost itself uses (``agent.system``,
``chat.system`` from ROOST_CHAT_SYSTEM_PROMPT), published when missing or changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from roost.prompts.service import factory_defaults, seed_factory

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with app.state.db.transaction() as session:  # as the owner: factory rows
        published = await seed_factory(
            session, factory_defaults(app.state.settings.chat_system_prompt))
    if published:
        log.info("prompts.factory_published", keys=published)
    yield
