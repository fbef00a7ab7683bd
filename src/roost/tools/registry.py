"""The tool registry: list and find the tools a principal may use, and the dependency
graph between tools (cycles refused)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, case, or_, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.db.lookup import same_text
from roost.errors import Conflict, NotFound
from roost.pagination import DEFAULT_LIMIT, after_time_id, page_of, time_id_cursor, where_equal
from roost.principal import Principal
from roost.tools.models import McpServer, Tool, ToolDependency


def visible(actor: Principal) -> Any:
    """Global tools and the actor's own (administrators: all)."""
    if actor.is_admin:
        return True
    return or_(Tool.user_id.is_(None), Tool.user_id == actor.user_id)


async def list_tools(
    session: AsyncSession, actor: Principal, *, kind: str | None = None,
    server_id: uuid.UUID | None = None, name: str | None = None,
    available: bool | None = None, category: str | None = None,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[Tool], str | None]:
    """Oldest first (built-ins, then tools in discovery order)."""
    stmt = where_equal(select(Tool).where(visible(actor)), (Tool.kind, kind),
                       (Tool.mcp_server_id, server_id), (Tool.category, category))
    if name is not None:
        stmt = stmt.where(same_text(Tool.name, name))
    if available is not None:
        stmt = stmt.where(Tool.available.is_(available))
    if cursor is not None:
        stmt = stmt.where(after_time_id(cursor, Tool.created_at, Tool.id))
    rows = (await session.scalars(stmt.order_by(Tool.created_at, Tool.id).limit(limit + 1))).all()
    return page_of(rows, limit, lambda t: time_id_cursor(t.created_at, t.id))


async def get_tool(session: AsyncSession, actor: Principal, tool_id: uuid.UUID) -> Tool:
    tool = await session.scalar(select(Tool).where(Tool.id == tool_id, visible(actor)))
    if tool is None:
        raise NotFound(f"tool {tool_id} does not exist")
    return tool


SHOWN_NAME_CHARS = 100
"""How much of an unknown name an answer echoes (a name is as long as the body allows)."""


def shown_name(name: str) -> str:
    """``name`` as an answer may echo it: its first :data:`SHOWN_NAME_CHARS` and ``...``."""
    return name if len(name) <= SHOWN_NAME_CHARS else name[:SHOWN_NAME_CHARS] + "..."


async def find_tool(
    session: AsyncSession, actor: Principal, name: str, server: str | None = None
) -> Tool:
    """The tool called ``name`` (on the MCP server named ``server``, if given).

    Without ``server`` a built-in wins over servers' tools of its name (``?server=``
    cannot name a built-in), and several servers' tools are a 409.  With ``server``,
    server names are unique per owner only: the caller's own server wins over a global
    one of that name (which wins over other users', seen by administrators); a 409 only
    for several of the same rank."""
    exact = await _named(session, actor, name, server, Tool.name == name)
    # A name typed in another Unicode form (an accent decomposed, as macOS keyboards may
    # send it) names the tool too; called by its stored name, as its server listed it.
    found = exact or await _named(session, actor, name, server, same_text(Tool.name, name))
    if not found:
        where = f" on server {shown_name(server)!r}" if server is not None else ""
        raise NotFound(f"no tool named {shown_name(name)!r}{where}")
    best: list[Tool] = [tool for tool, r in found if r == found[0][1]]
    if len(best) > 1:
        if server is not None:
            raise Conflict(f"{len(best)} tools named {shown_name(name)!r} are on servers "
                           f"named {shown_name(server)!r}; call it by id")
        raise Conflict(f"{len(best)} tools are named {shown_name(name)!r}; call it by id or "
                       "name its MCP server (?server= in the API, --server on the command "
                       "line)")
    return best[0]


async def _named(session: AsyncSession, actor: Principal, name: str, server: str | None,
                 condition: ColumnElement[bool]) -> Sequence[tuple[Tool, int]]:
    """The visible tools ``condition`` selects, with their rank (see :func:`find_tool`)."""
    stmt = select(Tool).where(condition, visible(actor))
    if server is None:
        rank = case((Tool.mcp_server_id.is_(None), 0), else_=1)
    else:
        stmt = stmt.join(McpServer, McpServer.id == Tool.mcp_server_id).where(
            McpServer.name == server
        )
        rank = case((Tool.user_id == actor.user_id, 0), (Tool.user_id.is_(None), 1), else_=2)
    return (await session.execute(
        stmt.add_columns(rank).order_by(rank, Tool.created_at).limit(10))).tuples().all()


async def add_dependency(
    session: AsyncSession, actor: Principal, tool_id: uuid.UUID, depends_on: uuid.UUID,
    dependency_type: str,
) -> ToolDependency:
    """``tool_id`` depends on ``depends_on``; refused (409) when it would close a cycle."""
    tool = await get_tool(session, actor, tool_id)
    target = await get_tool(session, actor, depends_on)
    if tool.id == target.id:
        raise Conflict("a tool cannot depend on itself")
    await _lock_graph(session, actor.user_id)  # "no path back, then insert" as one step
    path = await _path(session, target.id, tool.id, actor.user_id)
    if path is not None:
        names = dict((await session.execute(
            select(Tool.id, Tool.name).where(Tool.id.in_(path))
        )).tuples().all())
        shown = " -> ".join(names.get(p, str(p)) for p in [tool.id, *path])
        raise Conflict(f"this dependency would create a cycle: {shown}")
    exists = await session.scalar(select(ToolDependency.id).where(
        ToolDependency.tool_id == tool.id, ToolDependency.depends_on_tool_id == target.id,
        _in_graph_of(actor.user_id)))
    if exists is not None:
        raise Conflict(f"{tool.name!r} already depends on {target.name!r}")
    edge = ToolDependency(tool_id=tool.id, depends_on_tool_id=target.id,
                          dependency_type=dependency_type, user_id=actor.user_id)
    session.add(edge)
    await session.flush()
    await record(session, "tool.dependency.add", user_id=actor.user_id, resource_type="tool",
                 resource_id=tool.id,
                 changes={"depends_on_tool_id": str(target.id), "dependency_type": dependency_type})
    return edge


async def _lock_graph(session: AsyncSession, user_id: uuid.UUID | None) -> None:
    """Serialise the writers of ``user_id``'s dependency graph until the transaction ends:
    otherwise ``a -> b`` and ``b -> a`` added at once each find no path back and together
    close a cycle.  The system's edges (no owner) are in every user's graph: a user holds
    the system's lock shared, a writer of system edges holds it alone."""
    system = {"k": "roost.tools.dependencies:system"}
    if user_id is None:
        await session.execute(
            text("SELECT pg_advisory_xact_lock(7263117, hashtext(:k))"), system)
        return
    await session.execute(
        text("SELECT pg_advisory_xact_lock_shared(7263117, hashtext(:k))"), system)
    await session.execute(text("SELECT pg_advisory_xact_lock(7263117, hashtext(:k))"),
                          {"k": f"roost.tools.dependencies:{user_id}"})


def _in_graph_of(user_id: uuid.UUID | None) -> Any:
    """An edge of ``user_id``'s dependency graph: their own, or the system's (no owner).
    Each user's graph is their own (an admin sees every user's edges, but their cycles
    and duplicates are not the admin's); the runner follows the same edges."""
    return or_(ToolDependency.user_id.is_(None), ToolDependency.user_id == user_id)


async def _path(session: AsyncSession, start: uuid.UUID, goal: uuid.UUID,
                user_id: uuid.UUID | None) -> list[uuid.UUID] | None:
    """A dependency path ``start -> ... -> goal`` in ``user_id``'s graph, or None."""
    parents: dict[uuid.UUID, uuid.UUID | None] = {start: None}
    frontier = [start]
    while frontier:
        edges = (await session.execute(
            select(ToolDependency.tool_id, ToolDependency.depends_on_tool_id)
            .where(ToolDependency.tool_id.in_(frontier), _in_graph_of(user_id))
        )).tuples().all()
        frontier = []
        for source, dest in edges:
            if dest in parents:
                continue
            parents[dest] = source
            if dest == goal:
                path: list[uuid.UUID] = [dest]
                node: uuid.UUID | None = source
                while node is not None:
                    path.append(node)
                    node = parents[node]
                return list(reversed(path))
            frontier.append(dest)
    return None


async def list_dependencies(
    session: AsyncSession, actor: Principal, tool_id: uuid.UUID
) -> list[ToolDependency]:
    await get_tool(session, actor, tool_id)
    return list((await session.scalars(
        select(ToolDependency).where(ToolDependency.tool_id == tool_id,
                                     _in_graph_of(actor.user_id))
        .order_by(ToolDependency.created_at)
    )).all())
