"""Start-up of the MCP server: runs the SDK's session manager for the app's lifetime
(``app.state.mcp``, read by ``/mcp``; see :mod:`roost.mcpserver.routes`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from roost.knowledge.config import KnowledgeConfig
from roost.mcpserver.routes import McpRuntime, build_manager, build_server
from roost.mcpserver.tools import BuiltinTools


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    cfg: KnowledgeConfig | None = getattr(app.state, "knowledge_config", None)
    if cfg is None:
        cfg = app.state.knowledge_config = KnowledgeConfig.from_settings(app.state.settings)
    manager = build_manager(build_server())  # one per app: run() can be entered once
    async with manager.run():
        app.state.mcp = McpRuntime(manager=manager, builtin=BuiltinTools(cfg))
        try:
            yield
        finally:
            del app.state.mcp
