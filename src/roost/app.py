"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager

from fastapi import APIRouter, FastAPI

import roost
from roost import domains
from roost.config import Settings, get_settings
from roost.db.engine import Database, create_database
from roost.http import health
from roost.http.auth import Authentication, install_authentication
from roost.http.docs import install_docs
from roost.http.middleware import RequestContextMiddleware
from roost.http.openapi import install_openapi
from roost.http.problems import install_problem_handlers
from roost.http.reads import ReadYourWritesMiddleware
from roost.http.routing import RoostRoute
from roost.identity.tenancy import apply_principal
from roost.keyfiles import KeyMaterial, load_keys
from roost.logging import configure_logging


def routers() -> list[APIRouter]:
    """Every router: the health probes, then each domain's (``roost.domains``)."""
    return [health.router, *domains.routers()]


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

    domains.use_task_handlers()  # routes enqueue jobs: the task types must be known
    domains.declare_runtime_settings()  # /api/v1/admin/settings lists every one
    mounted = routers()
    startup = domains.startup_hooks()  # not router lifespans: every start-up in one list

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = database is None
        app.state.db = database or create_database(settings)
        try:
            async with AsyncExitStack() as stack:
                for hook in startup:  # each domain's start-up, in the domains' order
                    await stack.enter_async_context(hook(app))
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
    # Bearer credentials: the operator token, then each domain's resolvers; the request's
    # transaction then acts for the principal (row-level security).
    install_authentication(app, Authentication(
        resolvers=tuple(domains.resolvers()), scope=apply_principal))
    install_problem_handlers(app)
    app.add_middleware(ReadYourWritesMiddleware)  # with read replicas (docs/scale.md)
    # Added last = outermost: it answers whatever escapes the app, request id bound.
    app.add_middleware(RequestContextMiddleware, max_body_bytes=settings.max_request_bytes)
    for router in mounted:
        app.include_router(router)
    install_openapi(app)  # error responses declared once for every operation; 405 Allow
    install_docs(app)
    return app
