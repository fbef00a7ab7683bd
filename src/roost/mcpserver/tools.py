"""The MCP tools Roost offers a caller, and the hook other domains use to add theirs.

A *tool provider* lists the tools a principal may use and calls them, inside a database
transaction already scoped to that principal (row-level security applies exactly as
for the REST API).  Providers take plain values and return the SDK's ``mcp_types``
objects, so a domain that offers tools needs nothing from this package: its start-up
hook appends its provider to ``app.state.mcp_tool_providers`` (see docs/mcp.md), and
``/mcp`` asks every provider on every ``tools/list`` and ``tools/call``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from typing import Any, Protocol

from mcp import types
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.errors import RoostError
from roost.knowledge import search as search_mod
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.schemas import MAX_QUERY_CHARS, SearchRequest
from roost.principal import Principal
from roost.tools.calls import argument_names
from roost.tools.registry import shown_name

Deferred = Callable[[], Awaitable[types.CallToolResult]]
"""Work a provider's ``call_tool`` hands back to run after the caller's transaction has
committed: anything slow (a tool server, an agent run), so no connection sits idle in a
transaction while it works.  It opens its own transactions if it needs any."""


class ToolProvider(Protocol):
    """Tools for one caller.  Both methods run inside the caller's scoped transaction,
    which commits after ``call_tool`` returns and before the answer is sent; slow work
    comes back as a :data:`Deferred`, awaited after that commit."""

    async def list_tools(self, session: AsyncSession, principal: Principal) -> Sequence[types.Tool]:
        """The tools this principal may call (none is fine)."""
        ...

    async def call_tool(
        self, session: AsyncSession, principal: Principal, name: str, arguments: Mapping[str, Any],
    ) -> types.CallToolResult | Deferred | None:
        """The result (or the work that will make it, :data:`Deferred`), or ``None`` when
        ``name`` is not one of this provider's tools for this principal.  Raise
        ``roost.errors.RoostError`` for a refusal the caller may see (it becomes an error
        result)."""
        ...


def text_result(payload: Mapping[str, Any], *, is_error: bool = False) -> types.CallToolResult:
    """A result carrying ``payload`` both as structured content and as JSON text (for
    clients that read only text)."""
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(payload, default=str))],
        structured_content=dict(payload), is_error=is_error,
    )


def error_result(message: str) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=message)], is_error=True)


def unknown_arguments(arguments: Mapping[str, Any], known: Iterable[str]) -> types.CallToolResult | None:
    """The error result for arguments a tool's schema forbids (``additionalProperties:
    false``), naming them; None when there are none."""
    unknown = set(arguments) - set(known)
    return error_result(f"unknown arguments: {argument_names(unknown)}") if unknown else None


WHOAMI = types.Tool(
    name="whoami",
    description="Who Roost thinks you are: your user id, role and credential.",
    input_schema={"type": "object", "properties": {}, "additionalProperties": False},
)

KNOWLEDGE_SEARCH = types.Tool(
    name="knowledge_search",
    description=(
        "Search the documents you can see in Roost's knowledge base (yours and your "
        "groups'). mode: 'text' (full-text), 'vector' (embeddings) or 'hybrid' (both)."
    ),
    input_schema={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": MAX_QUERY_CHARS},
            "k": {"type": "integer", "minimum": 1, "maximum": 100, "default": 10},
            "mode": {"type": "string", "enum": ["hybrid", "vector", "text"], "default": "hybrid"},
            "collection": {"type": "string", "maxLength": 128},
        },
        "required": ["query"],
        "additionalProperties": False,
    },
)

SEARCH_FIELDS = ("query", "k", "mode", "collection")


class BuiltinTools:
    """``whoami`` and ``knowledge_search``, for every user."""

    def __init__(self, knowledge: KnowledgeConfig) -> None:
        self.knowledge = knowledge

    async def list_tools(self, session: AsyncSession, principal: Principal) -> Sequence[types.Tool]:
        return (WHOAMI, KNOWLEDGE_SEARCH)

    async def call_tool(
        self, session: AsyncSession, principal: Principal, name: str, arguments: Mapping[str, Any],
    ) -> types.CallToolResult | None:
        if name == WHOAMI.name:
            return unknown_arguments(arguments, ()) or text_result(whoami(principal))
        if name == KNOWLEDGE_SEARCH.name:
            return await self._search(session, principal, arguments)
        return None

    async def _search(
        self, session: AsyncSession, principal: Principal, arguments: Mapping[str, Any],
    ) -> types.CallToolResult:
        refused = unknown_arguments(arguments, SEARCH_FIELDS)
        if refused is not None:
            return refused
        try:
            req = SearchRequest.model_validate({k: v for k, v in arguments.items() if v is not None})
        except ValidationError as exc:  # name the fields, never echo their values
            fields = sorted({".".join(str(p) for p in e["loc"]) or "arguments" for e in exc.errors()})
            return error_result(f"invalid arguments: {', '.join(fields)}")
        response = await search_mod.search(session, principal, self.knowledge, req)
        return text_result(response.model_dump(mode="json"))


def whoami(principal: Principal) -> dict[str, Any]:
    return {
        "user_id": str(principal.user_id) if principal.user_id else None,
        "is_admin": principal.is_admin,
        "credential": principal.kind,
        "api_key_id": str(principal.api_key_id) if principal.api_key_id else None,
        "group_ids": sorted(str(g) for g in principal.group_ids),
    }


async def list_all(
    providers: Sequence[ToolProvider], session: AsyncSession, principal: Principal,
) -> list[types.Tool]:
    """Every provider's tools for this principal; the first provider to name a tool wins."""
    seen: set[str] = set()
    tools: list[types.Tool] = []
    for provider in providers:
        for tool in await provider.list_tools(session, principal):
            if tool.name not in seen:
                seen.add(tool.name)
                tools.append(tool)
    return tools


async def call(
    providers: Sequence[ToolProvider], session: AsyncSession, principal: Principal,
    name: str, arguments: Mapping[str, Any],
) -> types.CallToolResult | Deferred:
    """Ask each provider in turn; a refusal (``RoostError``) is an error result."""
    try:
        for provider in providers:
            result = await provider.call_tool(session, principal, name, arguments)
            if result is not None:
                return result
    except RoostError as exc:
        return error_result(exc.detail)
    return error_result(f"unknown tool: {shown_name(name)}")  # not the whole body back
