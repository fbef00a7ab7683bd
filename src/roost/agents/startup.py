"""Start-up of the agents domain: the process's LISTEN connection for run events
(``app.state.run_listener``, read by ``GET /api/v1/runs/{id}/events``), agents as models
on ``/v1/chat/completions`` (``model: "agent:<slug>"``) and as tools at ``/mcp``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from roost.agents.chat_routes import chat_agent_handler
from roost.agents.events import RunListener
from roost.agents.mcpserving import AgentsProvider
from roost.agents.run_routes import openai_agent_describer, openai_agent_handler
from roost.tasks.worker import asyncpg_dsn


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    # Behind PgBouncer in transaction mode a LISTEN cannot hold: subscribers poll instead.
    dsn = None if app.state.settings.pgbouncer else asyncpg_dsn(app.state.db)
    listener = RunListener(dsn)
    await listener.start()
    app.state.run_listener = listener
    # model "agent:<slug>" on /v1/chat/completions (the llm domain's hook)
    handlers = dict(getattr(app.state, "openai_model_handlers", {}))
    app.state.openai_model_handlers = {**handlers, "agent": openai_agent_handler(app)}
    describers = dict(getattr(app.state, "openai_model_describers", {}))
    app.state.openai_model_describers = {**describers, "agent": openai_agent_describer(app)}
    # model "agent:<slug>" on a chat session's messages (the chat domain's hook)
    chat_handlers = dict(getattr(app.state, "chat_model_handlers", {}))
    app.state.chat_model_handlers = {**chat_handlers, "agent": chat_agent_handler(app)}
    # the caller's agents as tools at /mcp (the mcpserver domain's hook)
    provider = AgentsProvider(app.state.db, app.state.settings.db_app_role,
                              app.state.settings.agents_max_nesting)
    app.state.mcp_tool_providers = [*getattr(app.state, "mcp_tool_providers", ()), provider]
    try:
        yield
    finally:
        app.state.mcp_tool_providers = [
            p for p in getattr(app.state, "mcp_tool_providers", ()) if p is not provider]
        await listener.stop()
