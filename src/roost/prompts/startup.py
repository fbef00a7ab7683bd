"""Start-up of the prompts domain: the factory defaults Roost itself uses (``agent.system``,
``chat.system`` from ROOST_CHAT_SYSTEM_PROMPT), published when missing or changed."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog
from fastapi import FastAPI

from roost.prompts.render import InvalidVariables, check_definitions
from roost.prompts.service import factory_defaults, seed_factory

log = structlog.get_logger(__name__)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    defaults = []
    for default in factory_defaults(app.state.settings.chat_system_prompt):
        try:
            check_definitions(default.text, default.variables)
        except InvalidVariables as exc:
            # ROOST_CHAT_SYSTEM_PROMPT with a {{name}} chat does not offer: not published
            # (the model would get the braces), said once; the other defaults still are.
            log.error("prompts.factory_refused", key=default.key,
                      setting="ROOST_CHAT_SYSTEM_PROMPT", reason=exc.detail)
            continue
        defaults.append(default)
    async with app.state.db.transaction() as session:  # as the owner: factory rows
        published = await seed_factory(session, defaults)
    if published:
        log.info("prompts.factory_published", keys=published)
    yield
