"""Queue jobs of the tools domain: the periodic health check of every enabled MCP server,
and the embedding of tool descriptions for semantic search (enqueued by discovery, and
periodically to catch built-ins and anything else)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import select

from roost.config import get_settings
from roost.db.engine import Database
from roost.keyfiles import load_keys
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.embeddings import local_model_problem
from roost.principal import SYSTEM
from roost.security.crypto import SecretBox
from roost.tasks.handlers import TaskContext, on_worker_shutdown
from roost.tasks.schedules import periodic
from roost.tools import search, servers, stdiopool
from roost.tools.config import ToolsConfig
from roost.tools.models import McpServer

log = structlog.get_logger(__name__)


@on_worker_shutdown
async def stop_stdio_servers() -> None:
    """A worker that stops takes its long-lived stdio MCP server processes with it."""
    await stdiopool.close_default()


async def check_all(database: Database, cfg: ToolsConfig, box: SecretBox) -> dict[str, str]:
    """Check every enabled server (as the system: all tenants); one failure never stops
    the others."""
    async with database.transaction() as session:
        rows = (await session.execute(
            select(McpServer.id, McpServer.name).where(McpServer.enabled)
            .order_by(McpServer.created_at)
        )).tuples().all()
    results: dict[str, str] = {}
    for server_id, name in rows:
        key = f"{name} ({server_id})"
        try:
            row = await servers.check_server(database, SYSTEM, cfg, box, server_id)
            results[key] = row.health_status
        except Exception as exc:
            log.warning("tools.health_check_failed", server=str(server_id), error=type(exc).__name__)
            results[key] = f"error: {type(exc).__name__}"
    return results


@periodic("tools.health_check", every=timedelta(seconds=get_settings().tools_health_interval_s),
          queue="maintenance", priority="background", max_retries=0, timeout_s=900)
async def health_check(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Fill health_status, latency_ms, last_seen and capabilities of every enabled server."""
    settings = get_settings()
    box = SecretBox.from_keys(load_keys(settings).secrets_key)
    return {"servers": await check_all(ctx.database, ToolsConfig.from_settings(settings), box)}


@periodic(search.EMBED_TASK, every=timedelta(hours=1), queue="maintenance",
          priority="background", max_retries=3, timeout_s=3600)
async def embed_descriptions(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Embed the descriptions of tools that have no vector or a stale one (idempotent).

    Without a usable local model it does nothing and says why (no retries, no dead
    letters on a server deliberately run without the roost[local] extra)."""
    cfg = KnowledgeConfig.from_settings(get_settings())
    if cfg.embedder.provider == "local":
        problem = local_model_problem()
        if problem is not None:
            log.warning("tools.embed_skipped", reason=problem)
            return {"skipped": problem}
    report = await search.embed_descriptions(ctx.database, cfg.embedder)
    return {"model": report.model, "stale": report.stale, "embedded": report.embedded,
            "neighbours": report.neighbours}
