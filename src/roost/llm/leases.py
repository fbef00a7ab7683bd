"""Provider instances in use: an instance the pool replaces (its row edited) or drops (its
row deleted) is closed only once the calls using it have ended.

Closing an instance closes its HTTP connection pool (or frees a loaded local model):
done at once, it broke every call still reading from it (a stream cut mid-answer by an
administrator's edit of the provider's weight).  So every use of an instance is held
(:func:`held`) and :func:`retire` closes it when the last use ends (an unused one after
a grace period).  A call that starts on an instance already closed (a route resolved
long before the edit, used after) fails as an unavailable provider (the gateway may fall
back), never as an internal error.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import structlog

from roost.llm.base import LLMProvider
from roost.llm.errors import ProviderUnavailable
from roost.llm.types import ChatChunk, ChatRequest, ChatResult

log = structlog.get_logger(__name__)

_uses: weakref.WeakKeyDictionary[LLMProvider, int] = weakref.WeakKeyDictionary()
_retiring: weakref.WeakSet[LLMProvider] = weakref.WeakSet()  # closed when no longer used
_closed: weakref.WeakSet[LLMProvider] = weakref.WeakSet()
_closing: set[asyncio.Task[None]] = set()
# How long a retired instance no call uses stays open (see retire).
GRACE_S = 10.0


@asynccontextmanager
async def held(provider: LLMProvider) -> AsyncIterator[LLMProvider]:
    """Use ``provider`` for one call (a whole answer, a stream until it is closed)."""
    if provider in _closed:
        raise ProviderUnavailable(
            f"provider {provider.name!r} was changed or removed while this call was being "
            "prepared; try again", provider=provider.name)
    _uses[provider] = _uses.get(provider, 0) + 1
    try:
        yield provider
    finally:
        left = _uses.get(provider, 1) - 1
        if left > 0:
            _uses[provider] = left
        else:
            _uses.pop(provider, None)
            if provider in _retiring:
                await close(provider)


async def chat(provider: LLMProvider, request: ChatRequest) -> ChatResult:
    """``provider.chat`` held for its duration."""
    async with held(provider):
        return await provider.chat(request)


async def stream_chat(provider: LLMProvider, request: ChatRequest) -> AsyncIterator[ChatChunk]:
    """``provider.stream_chat`` held until the stream is closed."""
    async with held(provider):
        chunks = provider.stream_chat(request)
        try:
            async for chunk in chunks:
                yield chunk
        finally:  # its HTTP response closed before the instance may be
            closer = getattr(chunks, "aclose", None)
            if closer is not None:
                await closer()


async def retire(provider: LLMProvider) -> None:
    """Close ``provider`` when the last call using it ends; one no call uses yet after
    :data:`GRACE_S`: a call may have been routed to it a moment ago (its route chosen, its
    request being stored), and it is closed once that call ends."""
    if provider in _closed:
        return
    _retiring.add(provider)
    if _uses.get(provider, 0) == 0:
        asyncio.get_running_loop().call_later(GRACE_S, _close_if_idle, provider)


def retired(provider: LLMProvider) -> bool:
    """Replaced or dropped by the pool (closing, or closed already)."""
    return provider in _retiring or provider in _closed


def _close_if_idle(provider: LLMProvider) -> None:
    if provider in _retiring and _uses.get(provider, 0) == 0:
        task = asyncio.ensure_future(close(provider))
        _closing.add(task)
        task.add_done_callback(_closing.discard)


async def close(provider: LLMProvider) -> None:
    """Close ``provider`` now (at shutdown), whoever uses it."""
    _retiring.discard(provider)
    if provider in _closed:
        return
    _closed.add(provider)
    try:
        await provider.aclose()
    except Exception as exc:  # closing must never take a request down
        log.warning("llm.provider.close_failed", provider=provider.name, error=type(exc).__name__)
