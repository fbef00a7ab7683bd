"""The MCP client: one session per operation, on the official ``mcp`` SDK.

Every operation (discovery, health check, tool call) opens a session, initializes it,
does its work and closes it, all under one deadline: for ``stdio`` that means a fresh
server process per operation (simple and isolated; long-lived per-worker processes are
not built yet).  Streamable-HTTP URLs are checked by the SSRF guard before connecting
(:func:`roost.knowledge.fetching.check_destination`); the SDK itself only follows
redirects that stay on the endpoint's origin.

Failures become :class:`McpError` subclasses whose ``detail`` is safe to show: the
server's own stderr is discarded, env values and headers are never part of a message.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from mcp.client.session import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.types import InitializeResult, PaginatedRequestParams

from roost.errors import BadGateway, GatewayTimeout
from roost.knowledge.fetching import FetchError, check_destination

MAX_PAGES = 100  # tools/list pages followed in one discovery


class McpError(BadGateway):
    status, title, type_slug = 502, "MCP server error", "mcp-error"


class McpTimeout(McpError, GatewayTimeout):
    status, title, type_slug = 504, "MCP server timed out", "mcp-timeout"


class McpOutputTooLarge(McpError):
    status, title, type_slug = 502, "Tool output too large", "tool-output-too-large"


@dataclass(frozen=True)
class ServerSpec:
    """How to reach one server, secrets decrypted (never logged, never returned)."""

    name: str
    transport: str
    url: str | None = None
    command: str | None = None
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict, repr=False)
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    allow_private: bool = False


@dataclass(frozen=True)
class Discovery:
    capabilities: dict[str, Any]
    server_info: dict[str, Any]
    tools: list[dict[str, Any]]
    latency_ms: int


@dataclass(frozen=True)
class CallOutcome:
    output: dict[str, Any]
    is_error: bool
    text: str
    size: int


def _dump(model: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = model.model_dump(mode="json", by_alias=True, exclude_none=True)
    return dumped


async def check_server_url(url: str, *, allow_private: bool) -> None:
    """Refuse a streamable-HTTP URL that points where the server must not go."""
    try:
        await check_destination(url, allow_private=allow_private)
    except FetchError as exc:
        exc.detail = exc.detail.replace(
            "only public internet addresses can be ingested",
            "only public internet addresses can be MCP servers unless an administrator "
            "lists the host in ROOST_TOOLS_ALLOWED_HOSTS",
        )
        raise


@asynccontextmanager
async def _session(spec: ServerSpec) -> AsyncIterator[tuple[ClientSession, InitializeResult]]:
    if spec.transport == "stdio":
        if not spec.command:
            raise McpError(f"MCP server {spec.name!r} has no command")
        params = StdioServerParameters(command=spec.command, args=list(spec.args),
                                       env=dict(spec.env) or None)
        # The server's stderr is discarded: it may print its secrets or tracebacks.
        with open(os.devnull, "w") as errlog:  # noqa: ASYNC230 - /dev/null never blocks
            async with stdio_client(params, errlog=errlog) as (read, write), \
                    ClientSession(read, write) as session:
                yield session, await session.initialize()
    else:
        if not spec.url:
            raise McpError(f"MCP server {spec.name!r} has no URL")
        await check_server_url(spec.url, allow_private=spec.allow_private)
        async with create_mcp_http_client(headers=dict(spec.headers)) as client, \
                streamable_http_client(spec.url, http_client=client) as (read, write), \
                ClientSession(read, write) as session:
            yield session, await session.initialize()


def _failure(spec: ServerSpec, exc: BaseException) -> McpError:
    """A safe, actionable message for whatever went wrong talking to the server."""
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    if isinstance(exc, FileNotFoundError):
        return McpError(f"MCP server {spec.name!r}: command {spec.command!r} was not found")
    if isinstance(exc, PermissionError):
        return McpError(f"MCP server {spec.name!r}: command {spec.command!r} is not executable")
    text = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    what = type(exc).__name__ + (f": {text}" if text else "")
    return McpError(f"MCP server {spec.name!r} failed: {what}")


@asynccontextmanager
async def _guarded(spec: ServerSpec, timeout_s: float, doing: str) -> AsyncIterator[None]:
    try:
        with anyio.fail_after(timeout_s):
            yield
    except McpError:
        raise
    except FetchError:
        raise
    except TimeoutError:
        raise McpTimeout(
            f"MCP server {spec.name!r} did not finish {doing} within {timeout_s:g} s"
        ) from None
    except Exception as exc:
        raise _failure(spec, exc) from None


async def discover(spec: ServerSpec, timeout_s: float) -> Discovery:
    """Initialize and list every tool (all pages)."""
    started = time.perf_counter()
    async with _guarded(spec, timeout_s, "discovery"), _session(spec) as (session, init):
        latency = int((time.perf_counter() - started) * 1000)
        tools: list[dict[str, Any]] = []
        cursor: str | None = None
        for _ in range(MAX_PAGES):
            params = PaginatedRequestParams(cursor=cursor) if cursor else None
            page = await session.list_tools(params=params)
            tools.extend(_dump(t) for t in page.tools)
            cursor = page.next_cursor
            if not cursor:
                break
        else:
            raise McpError(f"MCP server {spec.name!r} listed more than {MAX_PAGES} pages of tools")
        return Discovery(
            capabilities=_dump(init.capabilities), server_info=_dump(init.server_info),
            tools=tools, latency_ms=latency,
        )


async def call_tool(
    spec: ServerSpec, name: str, arguments: dict[str, Any], *, timeout_s: float, max_bytes: int
) -> CallOutcome:
    """Call one tool; the result's JSON must fit in ``max_bytes``."""
    async with _guarded(spec, timeout_s, f"the call of {name!r}"), _session(spec) as (session, _):
        result = await session.call_tool(name, arguments)
        output = _dump(result)
        output.pop("resultType", None)
        output.pop("result_type", None)
        size = len(json.dumps(output, ensure_ascii=False).encode("utf-8"))
        if size > max_bytes:
            raise McpOutputTooLarge(
                f"the result of {name!r} is {size} bytes; the limit is {max_bytes} bytes "
                "(ROOST_TOOLS_MAX_OUTPUT_BYTES)"
            )
        texts = [c.get("text", "") for c in output.get("content", []) if c.get("type") == "text"]
        return CallOutcome(output=output, is_error=bool(result.is_error), text="\n".join(texts),
                           size=size)
