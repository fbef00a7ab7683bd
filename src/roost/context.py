"""Per-request context (correlation id, client address) carried in contextvars.

The HTTP middleware sets it; services read it (the audit log records it) without ever
seeing the ``Request`` object.  Background jobs set their own.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True)
class RequestContext:
    request_id: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    path: str | None = None  # the request path (errors under /v1 take OpenAI's shape)


# RequestContext is a frozen dataclass: sharing the default instance is safe.
_current: ContextVar[RequestContext] = ContextVar(
    "roost_request_context", default=RequestContext()  # noqa: B039
)


def current_context() -> RequestContext:
    return _current.get()


def set_context(ctx: RequestContext) -> object:
    return _current.set(ctx)


def reset_context(token: object) -> None:
    _current.reset(token)  # type: ignore[arg-type]
