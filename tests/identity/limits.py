"""Helpers of the rate-limit and stream-slot tests: settings with limits, the live stream
leases of a subject, waiting for a count, closing an app's limiter."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.identity.ratelimits import Limiter


def limit_settings(tmp_path: Path, **limits: Any) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_local_model=False,
                    **{"llm_timeout_s": 30, **limits})


async def live_leases(database: Database, subject: str) -> int:
    """The stream slots ``subject`` (``u:<user id>``, ``k:<key id>``) holds now."""
    async with database.transaction() as session:
        return int(await session.scalar(text(
            "SELECT count(*) FROM stream_leases WHERE subject = :s AND expires_at > now()"),
            {"s": subject}) or 0)


async def until(probe: Callable[[], Awaitable[int]], expected: int, attempts: int = 200) -> None:
    """Until ``probe()`` answers ``expected`` (polled every 50 ms, ``attempts`` times)."""
    for _ in range(attempts):
        if await probe() == expected:
            return
        await asyncio.sleep(0.05)
    assert await probe() == expected


async def dispose_limiter(app: FastAPI) -> None:
    """Close the app's limiter pool (an app served through ASGITransport runs no lifespan)."""
    limiter: Limiter | None = getattr(app.state, "rate_limiter", None)
    if limiter is not None:
        await limiter.dispose()
