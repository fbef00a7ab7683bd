"""Per-request context (correlation id, client address) carried in contextvars.

The HTTP middleware sets it; services read it (the audit log records it) without ever
seeing the ``Request`` object.  Background jobs set their own.
"""

from __future__ import annotations

import re
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class RequestContext:
    request_id: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    path: str | None = None  # the request path (errors under /v1 take OpenAI's shape)
    # The request's W3C traceparent when it carries exactly one (two are invalid): a run
    # the request starts joins the caller's trace, tracing on or off.
    traceparent: str | None = None


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


# Agents calling agents through Roost's own /mcp (docs/mcp.md, "Agents calling agents").
# A run's tool calls to streamable-HTTP MCP servers carry the run's trace id in this
# header (the runner sets ``outgoing_run_trace`` for the run's whole execution); /mcp
# reads it into ``inbound_run_trace``, and a run it starts gets a trace id under the
# caller's: how deep a chain is (its depth cap) and which runs a cancellation reaches.
RUN_TRACE_HEADER: Final = "Roost-Run-Trace"
RUN_TRACE_PATTERN: Final = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")
outgoing_run_trace: ContextVar[str | None] = ContextVar("roost_outgoing_run_trace", default=None)
inbound_run_trace: ContextVar[str | None] = ContextVar("roost_inbound_run_trace", default=None)
