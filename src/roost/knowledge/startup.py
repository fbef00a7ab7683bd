"""Start-up of the knowledge domain: the HNSW settings every request's transaction gets
in authentication's round trip (``roost.http.deps.transaction_settings``), so a search
with the configured ``ef_search`` sends none of its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.search import hnsw_settings, supports_iterative_scan


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    cfg: KnowledgeConfig | None = getattr(app.state, "knowledge_config", None)
    if cfg is None:
        cfg = app.state.knowledge_config = KnowledgeConfig.from_settings(app.state.settings)
    async with app.state.db.transaction() as session:
        iterative = await supports_iterative_scan(session)
    current = dict(getattr(app.state, "transaction_settings", {}))
    app.state.transaction_settings = {**current, **hnsw_settings(cfg.ef_search, iterative)}
    yield
