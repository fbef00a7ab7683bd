"""What streamed answers share: their headers, and giving up the wait for a model's first
chunk when the client has gone.

A streamed answer holds one of the caller's concurrent-stream slots from before it asks
the model (roost.identity.deps).  While the route waits for the first chunk (a fallback
chain, a provider that hangs), no response has started, so nothing notices a client that
gives up: the slot stayed taken until the provider's time limit (minutes).
:func:`until_disconnected` races the wait against the client's disconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from contextlib import suppress
from typing import TypeVar

from fastapi import Request

from roost.errors import RoostError

T = TypeVar("T")

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


class ClientGone(RoostError):
    """The client closed the connection before the answer began (nothing reads this
    answer; logged as 499, nginx's "client closed request")."""

    status, title, type_slug = 499, "Client closed request", "client-closed-request"


async def _disconnected(request: Request) -> None:
    """Returns when the ASGI server reports the client gone (the request's body has been
    read already, so the next message can only be the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def until_disconnected(request: Request, waiting: Awaitable[T]) -> T:
    """``waiting``'s result; cancelled, and :class:`ClientGone` raised, when the client
    disconnects first (the cancelled call records itself as failed: roost.llm.calls)."""
    work = asyncio.ensure_future(waiting)
    watch = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait((work, watch), return_when=asyncio.FIRST_COMPLETED)
        if not work.done():
            work.cancel()
            with suppress(asyncio.CancelledError):
                await work
            if work.cancelled():
                raise ClientGone("the client closed the connection before the answer began")
        return work.result()
    finally:
        watch.cancel()
        with suppress(asyncio.CancelledError):
            await watch
        if not work.done():  # this task itself was cancelled
            work.cancel()
