"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import APIRouter, FastAPI

import roost
from roost.audit.routes import router as audit_router
from roost.chat.routes import router as chat_router
from roost.config import Settings, get_settings
from roost.db.engine import Database, create_database
from roost.http import health
from roost.http.docs import install_docs
from roost.http.middleware import RequestContextMiddleware
from roost.http.openapi import install_openapi
from roost.http.problems import install_problem_handlers
from roost.http.routing import RoostRoute
from roost.identity.routes import router as identity_router
from roost.keyfiles import KeyMaterial, load_keys
from roost.knowledge.routes import router as knowledge_router
from roost.llm.openai_routes import router as openai_router
from roost.llm.routes import router as llm_router
from roost.logging import configure_logging
from roost.tasks.routes import router as tasks_router

# Every domain's router; a new domain adds its router here.
ROUTERS: list[APIRouter] = [
    health.router, audit_router, identity_router, tasks_router, knowledge_router,
    chat_router, llm_router, openai_router,
]


def create_app(
    settings: Settings | None = None,
    *,
    database: Database | None = None,
    keys: KeyMaterial | None = None,
    configure_logs: bool = True,
) -> FastAPI:
    """Build the app.  Without ``database`` the lifespan opens one from settings (and
    starts the embedded server when no URL is configured) and disposes it on shutdown."""
    settings = settings or get_settings()
    if configure_logs:
        configure_logging(settings.log_level, settings.log_json)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = database is None
        app.state.db = database or create_database(settings)
        try:
            yield
        finally:
            if owned:
                await app.state.db.dispose()

    app = FastAPI(
        title="Roost",
        version=roost.__version__,
        summary="Self-hosted backend for AI agents on PostgreSQL + pgvector",
        lifespan=lifespan,
        docs_url=None,  # served from local assets by install_docs (no CDN)
        redoc_url=None,
    )
    app.router.route_class = RoostRoute  # strict JSON bodies on routes added to the app too
    app.state.settings = settings
    app.state.keys = keys or load_keys(settings)
    if database is not None:
        app.state.db = database
    install_problem_handlers(app)
    # Added last = outermost: it answers whatever escapes the app, request id bound.
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_request_bytes)
    for router in ROUTERS:
        app.include_router(router)
    install_openapi(app)  # error responses declared once for every operation; 405 Allow
    install_docs(app)
    return app
