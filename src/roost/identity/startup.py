"""Start-up of the identity domain: closes the rate limiter's pool at shutdown
(roost.identity.ratelimits; it opens on the first limited request)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from roost.identity.ratelimits import Limiter


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    try:
        yield
    finally:
        limiter: Limiter | None = getattr(app.state, "rate_limiter", None)
        if limiter is not None:
            await limiter.dispose()
