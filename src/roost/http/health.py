"""``GET /health`` and ``GET /metrics``."""

from __future__ import annotations

import asyncio
import os

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from sqlalchemy import text

from roost.db.engine import Database
from roost.db.migrate import migration_state
from roost.http.deps import get_database
from roost.http.routing import RoostRouter

router = RoostRouter(tags=["operations"])

HEALTH_TIMEOUT_S = 3.0


async def _check(db: Database) -> tuple[str, str]:
    async with db.engine.connect() as conn:
        await conn.execute(text("SELECT 1"))
    state = await migration_state(db.engine)
    return "ok", "head" if state.at_head else "newer" if state.unknown else "behind"


@router.get("/health", summary="Liveness and readiness: database reachable, schema at head")
async def health(request: Request) -> JSONResponse:
    db = get_database(request)
    try:
        database, migrations = await asyncio.wait_for(_check(db), HEALTH_TIMEOUT_S)
    except TimeoutError:
        return JSONResponse(
            {"status": "unavailable", "database": "timeout", "migrations": "unknown",
             "reason": f"database did not answer within {HEALTH_TIMEOUT_S:.0f} s"},
            status_code=503,
        )
    except Exception as exc:  # any failure to reach the database is a 503, never a 500
        return JSONResponse(
            {"status": "unavailable", "database": "unreachable", "migrations": "unknown",
             "reason": f"database unreachable: {type(exc).__name__}"},
            status_code=503,
        )
    if migrations != "head":
        reason = ("database schema is newer than this Roost's: upgrade Roost"
                  if migrations == "newer" else "database schema is behind: run 'roost db upgrade'")
        return JSONResponse(
            {"status": "unavailable", "database": database, "migrations": migrations,
             "reason": reason}, status_code=503)
    body: dict[str, object] = {"status": "ok", "database": database, "migrations": migrations}
    if db.replicas is not None:
        # Counts only: /health answers anyone, and a replica's address is not theirs to
        # know.  A replica down or lagging is not unhealth: reads go to the primary.
        body["replicas"] = await _replica_counts(db)
    return JSONResponse(body)


async def _replica_counts(db: Database) -> dict[str, int]:
    replicas = db.replicas
    assert replicas is not None
    try:
        await asyncio.wait_for(replicas.check(), HEALTH_TIMEOUT_S)
    except TimeoutError:
        pass  # the states of the last check stand
    states = [r.state for r in replicas.replicas]
    return {"configured": len(states), "usable": sum(1 for s in states if s.usable)}


@router.get("/metrics", summary="Prometheus metrics", include_in_schema=True)
async def metrics() -> Response:
    return Response(generate_latest(_registry()), media_type=CONTENT_TYPE_LATEST)


def _registry() -> CollectorRegistry:
    """This process's metrics; under ``roost serve --workers N`` (PROMETHEUS_MULTIPROC_DIR
    set by the supervisor) every API process's, added up, whichever process answers."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry
