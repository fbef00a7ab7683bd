"""Queue jobs of the LLM domain: the periodic provider health check and the sweep of
requests orphaned by a crashed process."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any, Final

import structlog
from sqlalchemy import select

from roost.config import get_settings
from roost.db.engine import Database
from roost.keyfiles import load_keys
from roost.llm import orphans, providers
from roost.llm.gateway import LLMGateway
from roost.llm.local import find_smollm2_gguf, llama_cpp_available
from roost.llm.models import LLMProviderRow
from roost.tasks.handlers import TaskContext
from roost.tasks.schedules import periodic

log = structlog.get_logger(__name__)

_gateways: dict[int, LLMGateway] = {}
gateway_override: LLMGateway | None = None  # tests: the gateway (keys) jobs must use


def job_gateway(database: Database) -> LLMGateway:
    """The gateway of a worker process: its own keys from settings, one per database."""
    if gateway_override is not None:
        return gateway_override
    gateway = _gateways.get(id(database))
    if gateway is None:
        settings = get_settings()
        gateway = _gateways[id(database)] = LLMGateway.build(database, settings, load_keys(settings))
    return gateway


# Providers probed at once by the periodic check: each probe is bounded
# (ROOST_LLM_TIMEOUT_S), so one slow provider delays only its own result.
HEALTH_CHECK_CONCURRENCY: Final = 8


async def check_all(gateway: LLMGateway) -> dict[str, Any]:
    """Probe every enabled provider, several at once; a local model is checked without
    loading it."""
    async with gateway.db.transaction() as session:
        rows = list((await session.scalars(
            select(LLMProviderRow).where(LLMProviderRow.enabled).order_by(LLMProviderRow.name)
        )).all())
    slots = asyncio.Semaphore(HEALTH_CHECK_CONCURRENCY)

    async def check(row: LLMProviderRow) -> str:
        if row.type == "local" and not (row.config or {}).get("model_path"):
            # Loading a model into the worker just to probe it would cost its memory.
            return "healthy" if llama_cpp_available() and find_smollm2_gguf() else "unhealthy"
        try:
            async with slots:
                checked = await providers.check_health(gateway, None, row.id, always_audit=False)
            return checked.health_status
        except Exception as exc:  # one broken provider must not stop the others
            log.warning("llm.health_check_failed", provider=row.name, error=type(exc).__name__)
            return f"error: {type(exc).__name__}"

    statuses = await asyncio.gather(*(check(row) for row in rows))
    return {row.name: status for row, status in zip(rows, statuses, strict=True)}


@periodic("llm.health_check", every=timedelta(seconds=get_settings().llm_health_interval_s),
          queue="maintenance", priority="background", max_retries=0, timeout_s=300)
async def health_check(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Update health_status and response_time of every enabled provider."""
    return {"providers": await check_all(job_gateway(ctx.database))}


@periodic("llm.sweep_orphans", every=timedelta(minutes=5), queue="maintenance",
          priority="background", max_retries=2, timeout_s=300)
async def sweep_orphans(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Fail the ``llm_requests`` left pending/running by a process that died mid-call."""
    settings = get_settings()
    failed: list[str] = []
    while True:
        async with ctx.database.transaction() as session:
            threshold = await orphans.orphan_threshold_s(session, settings)
            ids = await orphans.fail_orphaned_requests(session, threshold)
        failed.extend(str(i) for i in ids)
        if len(ids) < orphans.ORPHAN_BATCH:
            break
    if failed:
        log.warning("llm.orphaned_requests_failed", count=len(failed), older_than_s=threshold)
    return {"failed": len(failed), "older_than_s": threshold, "request_ids": failed[:100]}
