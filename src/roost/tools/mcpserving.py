"""The caller's tools offered at Roost's own MCP endpoint ``/mcp``.

:class:`ToolsProvider` is a tool provider in the sense of ``roost.mcpserver.tools``
(this domain sits below ``mcpserver`` and never imports it; ``roost.tools.startup``
registers the provider on ``app.state.mcp_tool_providers``).  It lists every enabled,
available tool the principal owns plus the global ones, and calls one through
:func:`roost.tools.calls.call_tool`: the same validation, permission check,
``tool_runs`` row and ``tool.call`` audit record as ``POST /api/v1/tools/{id}/call``.

MCP names: a built-in keeps its name; an MCP server's tool is ``<server>__<tool>``.
Characters an MCP tool name may not hold become ``_``; a name already taken (another
owner's server of the same name, or ``/mcp``'s own tools) gets ``_2``, ``_3``... in
creation order; one that would start with ``agent__`` (the agents' tools) takes ``mcp_``
before it.  A built-in that ``/mcp`` already offers itself (``knowledge_search``)
is left out, and so are the built-ins other domains run inside agent runs only
(``send_email``, the memory, task-board and calendar tools: they need the calling run)
and the tools of a server that references a persona's secret (``${secret:...}``: only
an agent run of that persona can call them), so every tool listed can be called.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mcp import types
from pydantic import ValidationError
from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.engine import Database
from roost.errors import RoostError
from roost.knowledge.config import KnowledgeConfig
from roost.principal import Principal
from roost.security.crypto import SecretBox
from roost.tools import builtins, calls
from roost.tools.config import ToolsConfig
from roost.tools.models import McpServer, Tool

MAX_NAME = 128
"""The longest MCP tool name (the specification's 1-128 characters of [A-Za-z0-9_.-])."""
SEPARATOR = "__"
RESERVED = frozenset({"whoami", "knowledge_search"})
"""Names ``/mcp`` answers itself (``roost.mcpserver.tools``); never listed by this provider."""
AGENTS_PREFIX = "agent__"
"""The agents domain's names at ``/mcp`` (``agent__<slug>``): a server's tool whose name
would start so (a server called ``agent``) takes :data:`OWN_PREFIX` before it, or it
would hide the caller's agent of that slug (the first provider to name a tool wins)."""
OWN_PREFIX = "mcp_"
_INVALID = re.compile(r"[^A-Za-z0-9_.-]")


def mcp_name(base: str, taken: set[str]) -> str:
    """``base`` made a valid MCP tool name, distinct from every name in ``taken``."""
    valid = _INVALID.sub("_", base)
    if valid.startswith(AGENTS_PREFIX):
        valid = OWN_PREFIX + valid
    name = valid[:MAX_NAME] or "tool"
    n = 1
    while name in taken:
        n += 1
        suffix = f"_{n}"
        name = valid[: MAX_NAME - len(suffix)] + suffix
    return name


@dataclass(frozen=True)
class Offered:
    """One tool as offered at ``/mcp``."""

    name: str
    tool_id: uuid.UUID
    kind: str
    tool: types.Tool


def _annotations(value: dict[str, Any] | None) -> types.ToolAnnotations | None:
    if not value:
        return None
    try:
        return types.ToolAnnotations.model_validate(value)
    except ValidationError:  # a server's odd annotations do not hide its tool
        return None


def _object_schema(value: dict[str, Any] | None, *,
                   typed_only: bool = False) -> dict[str, Any] | None:
    """``value`` as the protocol version /mcp speaks lists a schema: an object's (a server
    may advertise any JSON Schema, and one that is not made the SDK refuse the whole
    tools/list answer, every tool of every caller).  Without a ``type`` it is typed
    ``object`` (``typed_only``: left out); of another type, None."""
    if not isinstance(value, dict) or not value:
        return None
    if value.get("type") == "object":
        return dict(value)
    if "type" not in value and not typed_only:
        return {"type": "object", **value}
    return None


async def offered_tools(session: AsyncSession, principal: Principal) -> list[Offered]:
    """The principal's own and the global tools that may be called now, in a stable
    order (creation) so the same rows always get the same names.  Names are handed out
    over the disabled and unavailable tools too: a tool its server stopped listing (or
    that is switched off) keeps its name, so a client still calling it gets "unknown
    tool" instead of its arguments sent to the next tool in line for that name, another
    server's."""
    callable_now = and_(Tool.enabled.is_(True), Tool.available.is_(True),
                        or_(Tool.mcp_server_id.is_(None), McpServer.enabled.is_(True)))
    stmt = (
        select(Tool, McpServer.name, McpServer.config, callable_now.label("callable"))
        .outerjoin(McpServer, McpServer.id == Tool.mcp_server_id)
        .where(or_(Tool.user_id.is_(None), Tool.user_id == principal.user_id))
        .order_by(Tool.created_at, Tool.id)
    )
    taken = set(RESERVED)
    found: list[Offered] = []
    for tool, server, config, callable_ in (await session.execute(stmt)).tuples().all():
        if tool.kind != "mcp" and tool.name in RESERVED:
            continue  # /mcp offers it itself
        if tool.kind == "builtin" and tool.id not in builtins.OWN_IDS:
            continue  # run by its domain inside agent runs only
        if (config or {}).get("secret_refs"):
            continue  # needs a persona's secret: callable from its agent runs only
        base = tool.name if server is None else f"{server}{SEPARATOR}{tool.name}"
        name = mcp_name(base, taken)
        taken.add(name)
        if not callable_:
            continue
        description = tool.description or ""
        if server is not None:
            description = f"[{server}] {description}".strip()
        input_schema = _object_schema(tool.input_schema or {"type": "object"})
        if input_schema is None:
            continue  # arguments no MCP client can send as an object: not listed here
        found.append(Offered(name=name, tool_id=tool.id, kind=tool.kind, tool=types.Tool(
            name=name, title=tool.title, description=description or None,
            input_schema=input_schema,
            output_schema=_object_schema(tool.output_schema, typed_only=True),
            annotations=_annotations(tool.annotations),
        )))
    return found


def _result(kind: str, output: dict[str, Any]) -> types.CallToolResult:
    if kind == "mcp":  # the server's own result, passed through
        try:
            return types.CallToolResult.model_validate({**output, "isError": False})
        except ValidationError:
            pass
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=json.dumps(output, default=str))],
        structured_content=output, is_error=False,
    )


def _failure(exc: RoostError) -> types.CallToolResult:
    text = exc.detail
    run_id = exc.extra.get("tool_run_id") if isinstance(exc.extra, dict) else None
    if run_id:
        text = f"{text} (tool run {run_id})"
    return types.CallToolResult(content=[types.TextContent(type="text", text=text)], is_error=True)


class ToolsProvider:
    """The tools domain's tools at ``/mcp`` (a ``roost.mcpserver.tools.ToolProvider``)."""

    def __init__(self, database: Database, cfg: ToolsConfig, box: SecretBox,
                 knowledge: KnowledgeConfig | None) -> None:
        self.database, self.cfg, self.box, self.knowledge = database, cfg, box, knowledge

    async def list_tools(self, session: AsyncSession, principal: Principal) -> Sequence[types.Tool]:
        return [o.tool for o in await offered_tools(session, principal)]

    async def call_tool(
        self, session: AsyncSession, principal: Principal, name: str, arguments: Mapping[str, Any],
    ) -> Callable[[], Awaitable[types.CallToolResult]] | None:
        match = next((o for o in await offered_tools(session, principal) if o.name == name), None)
        if match is None:
            return None  # not one of this principal's tools

        async def run_it() -> types.CallToolResult:
            # After /mcp's transaction committed (a deferred call: nothing waits on the
            # tool server in a transaction): the REST call path, unchanged, with its own
            # short transactions before and after the run.
            try:
                run = await calls.call_tool(
                    self.database, principal, self.cfg, self.box, tool_id=match.tool_id,
                    arguments=dict(arguments), knowledge=self.knowledge,
                )
            except RoostError as exc:
                return _failure(exc)
            return _result(match.kind, run.output or {})

        return run_it
