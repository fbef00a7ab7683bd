"""FastAPI dependencies of the identity domain that other domains' routes use.

:data:`StreamSlots`: a route that answers with a stream takes one of the caller's
concurrent-stream slots (roost.identity.ratelimits) before it starts any work, and the
slot is given back when the response has been sent, the client has gone, or the route
failed.  A route that streams only sometimes (``stream: true``) calls ``acquire()`` only
then.  Costs nothing when no stream limit applies to the caller.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request

from roost.identity.ratelimits import RequestLimits, StreamLease
from roost.identity.resolver import app_limiter


class StreamSlot:
    """The request's stream slot, taken on :meth:`acquire` (429 when none is free)."""

    def __init__(self, request: Request) -> None:
        self._request = request
        self._lease: StreamLease | None = None

    @property
    def held(self) -> bool:
        return self._lease is not None

    async def acquire(self) -> None:
        limits: RequestLimits | None = getattr(self._request.state, "rate_limits", None)
        if limits is None or not limits.streams or self._lease is not None:
            return
        self._lease = await app_limiter(self._request.app).acquire_stream(limits)

    async def release(self) -> None:
        lease, self._lease = self._lease, None
        if lease is not None:  # also when the client went away, or the server stops
            await lease.release_whatever_happens()


async def stream_slot(request: Request) -> AsyncIterator[StreamSlot]:
    slot = StreamSlot(request)
    try:
        yield slot
    finally:  # after the response was sent (a yield dependency's default scope)
        await slot.release()


StreamSlots = Annotated[StreamSlot, Depends(stream_slot)]
