"""Start-up of the tools domain: offers the caller's tools at ``/mcp`` by appending a
:class:`roost.tools.mcpserving.ToolsProvider` to ``app.state.mcp_tool_providers``
(the hook ``roost.mcpserver`` reads; see docs/mcp.md).  At shutdown it stops the
long-lived stdio MCP server processes this server started (``roost.tools.stdiopool``)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from roost.knowledge.config import KnowledgeConfig
from roost.security.crypto import SecretBox
from roost.tools import stdiopool
from roost.tools.config import ToolsConfig
from roost.tools.mcpserving import ToolsProvider


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings = app.state.settings
    knowledge: KnowledgeConfig | None = getattr(app.state, "knowledge_config", None)
    if knowledge is None:
        try:
            knowledge = KnowledgeConfig.from_settings(settings)
        except Exception:  # a misconfigured embedder only disables the search tool
            knowledge = None
    provider = ToolsProvider(
        app.state.db, ToolsConfig.from_settings(settings),
        SecretBox.from_keys(app.state.keys.secrets_key), knowledge,
    )
    before = list(getattr(app.state, "mcp_tool_providers", ()))
    app.state.mcp_tool_providers = [*before, provider]
    try:
        yield
    finally:
        app.state.mcp_tool_providers = [
            p for p in getattr(app.state, "mcp_tool_providers", ()) if p is not provider]
        await stdiopool.close_default()
