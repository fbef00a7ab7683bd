"""HTTP routes: /api/v1/mcp-servers, /api/v1/tools, /api/v1/tool-runs."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Query, Response, status

from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit
from roost.http.reads import ReadSession, replica_fallback
from roost.http.routing import RoostRouter
from roost.llm.deps import CallerPrincipal
from roost.pagination import DEFAULT_LIMIT, Page
from roost.tools import analytics, calls, registry, search, servers
from roost.tools.deps import ToolsEnvDep
from roost.tools.schemas import (
    NAME_PATTERN,
    DependencyCreate,
    DependencyOut,
    McpServerCreate,
    McpServerOut,
    SyncResult,
    ToolAnalyticsBucket,
    ToolAnalyticsDetailOut,
    ToolAnalyticsOut,
    ToolCallRequest,
    ToolErrorCount,
    ToolOut,
    ToolRunOut,
    ToolSearchHit,
    ToolSearchOut,
    ToolStatsOut,
)

router = RoostRouter(prefix="/api/v1", tags=["tools"])


@router.post("/mcp-servers", status_code=status.HTTP_201_CREATED, response_model=McpServerOut,
             summary="Register an MCP server (yours, or global for administrators)")
async def create_server(
    body: McpServerCreate, principal: CurrentPrincipal, db: DbSession, env: ToolsEnvDep
) -> McpServerOut:
    row = await servers.create_server(db, principal, env.cfg, env.box, body)
    return servers.server_out(row, env.box)


@router.get("/mcp-servers", response_model=Page[McpServerOut],
            summary="MCP servers you own and global ones, newest first")
async def list_servers(
    principal: CurrentPrincipal, db: DbSession, env: ToolsEnvDep,
    transport: Literal["stdio", "streamable_http"] | None = None,
    health_status: Literal["unknown", "healthy", "unhealthy"] | None = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[McpServerOut]:
    rows, next_cursor = await servers.list_servers(
        db, principal, transport=transport, health_status=health_status, limit=limit, cursor=cursor
    )
    return Page[McpServerOut](items=[servers.server_out(r, env.box) for r in rows],
                              next_cursor=next_cursor)


@router.get("/mcp-servers/{server_id}", response_model=McpServerOut)
async def get_server(
    server_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession, env: ToolsEnvDep
) -> McpServerOut:
    return servers.server_out(await servers.get_server(db, principal, server_id), env.box)


@router.delete("/mcp-servers/{server_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a server and its tools (their tool runs stay)")
async def delete_server(server_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> Response:
    await servers.delete_server(db, principal, server_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/mcp-servers/{server_id}/sync", response_model=SyncResult,
             summary="Discover the server's tools (tools/list) and update the registry")
async def sync_server(server_id: uuid.UUID, principal: CallerPrincipal, env: ToolsEnvDep) -> SyncResult:
    found = await servers.sync_server(env.database, principal, env.cfg, env.box, server_id)
    return SyncResult(server=servers.server_out(found.server, env.box), added=found.added,
                      updated=found.updated, unavailable=found.unavailable, skipped=found.skipped)


@router.post("/mcp-servers/{server_id}/check", response_model=McpServerOut,
             summary="Health check: connect, initialize, list tools; records latency")
async def check_server(server_id: uuid.UUID, principal: CallerPrincipal, env: ToolsEnvDep) -> McpServerOut:
    row = await servers.check_server(env.database, principal, env.cfg, env.box, server_id)
    return servers.server_out(row, env.box)


@router.get("/tools", response_model=Page[ToolOut],
            summary="Tools you may call: built-ins, global ones and your servers' tools")
@replica_fallback
async def list_tools(
    principal: CurrentPrincipal, db: ReadSession,
    kind: Literal["mcp", "builtin"] | None = None, server_id: uuid.UUID | None = None,
    name: Annotated[str | None, Query(max_length=256)] = None,
    available: bool | None = None,
    category: Annotated[str | None, Query(max_length=100)] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[ToolOut]:
    rows, next_cursor = await registry.list_tools(
        db, principal, kind=kind, server_id=server_id, name=name, available=available,
        category=category, limit=limit, cursor=cursor,
    )
    return Page[ToolOut](items=[ToolOut.model_validate(r) for r in rows], next_cursor=next_cursor)


# Declared before /tools/{tool_id}, which would otherwise take "analytics" for an id.
@router.get("/tools/analytics", response_model=ToolAnalyticsOut,
            summary="Per tool: calls, error rate, p50/p95 duration over a window (your runs; "
                    "administrators: everyone's)")
@replica_fallback
async def tool_analytics(
    principal: CurrentPrincipal, db: ReadSession,
    window: Annotated[str | None, Query(max_length=16, description="e.g. 90m, 24h (default), "
                                        "7d, 2w; at most 31d")] = None,
    since: Annotated[str | None, Query(max_length=64, description="Instead of window: an ISO "
                                       "8601 timestamp with its UTC offset")] = None,
    sort: analytics.Sort = "calls",
    tool_id: uuid.UUID | None = None,
    name: Annotated[str | None, Query(max_length=256, description="Tool name")] = None,
    user_id: Annotated[uuid.UUID | None, Query(description="Administrators: one user's runs")] = None,
    limit: Annotated[int, Query(ge=1, le=analytics.MAX_LIMIT)] = analytics.DEFAULT_LIMIT,
) -> ToolAnalyticsOut:
    report = await analytics.tool_report(
        db, principal, analytics.resolve_window(window, since), user_id=user_id,
        tool_id=tool_id, tool_name=name, sort=sort, limit=limit,
    )
    return ToolAnalyticsOut(since=report.window.since, until=report.window.until,
                            user_id=report.user_id, sort=sort,
                            items=[ToolStatsOut.model_validate(i) for i in report.items])


@router.get("/tools/search", response_model=ToolSearchOut,
            summary="Tools you may call, ranked by how well their description matches q")
@replica_fallback
async def search_tools(
    principal: CurrentPrincipal, db: ReadSession, env: ToolsEnvDep,
    q: Annotated[str, Query(min_length=1, max_length=search.MAX_QUERY_CHARS)],
    k: Annotated[int, Query(ge=1, le=search.MAX_K)] = search.DEFAULT_K,
) -> ToolSearchOut:
    hits = await search.search_tools(db, principal, env.knowledge, q, k)
    assert env.knowledge is not None  # search_tools answered 409 otherwise
    return ToolSearchOut(model=env.knowledge.embedder.model, items=[
        ToolSearchHit(tool=ToolOut.model_validate(h.tool), score=h.score) for h in hits
    ])


@router.get("/tools/{tool_id}", response_model=ToolOut)
async def get_tool(tool_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> ToolOut:
    return ToolOut.model_validate(await registry.get_tool(db, principal, tool_id))


@router.get("/tools/{tool_id}/analytics", response_model=ToolAnalyticsDetailOut,
            summary="One tool over a window: the statistics, p99, a series and its top errors")
async def tool_analytics_detail(
    tool_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
    window: Annotated[str | None, Query(max_length=16)] = None,
    since: Annotated[str | None, Query(max_length=64)] = None,
    user_id: Annotated[uuid.UUID | None, Query(description="Administrators: one user's runs")] = None,
) -> ToolAnalyticsDetailOut:
    span = analytics.resolve_window(window, since)
    detail, scope = await analytics.tool_detail(db, principal, tool_id, span, user_id=user_id)
    return ToolAnalyticsDetailOut(
        since=span.since, until=span.until, user_id=scope,
        stats=ToolStatsOut.model_validate(detail.stats), p99_ms=detail.p99_ms,
        mean_ms=detail.mean_ms, max_ms=detail.max_ms, bucket=detail.bucket,
        series=[ToolAnalyticsBucket.model_validate(b) for b in detail.series],
        top_errors=[ToolErrorCount(message=m, count=n) for m, n in detail.top_errors],
    )


@router.post("/tools/{tool_id}/call", response_model=ToolRunOut,
             summary="Call a tool: arguments checked against its input schema, run recorded")
async def call_tool(
    tool_id: uuid.UUID, body: ToolCallRequest, principal: CallerPrincipal, env: ToolsEnvDep
) -> ToolRunOut:
    run = await calls.call_tool(
        env.database, principal, env.cfg, env.box, tool_id=tool_id, arguments=body.arguments,
        trace_id=body.trace_id, session_id=body.session_id, message_id=body.message_id,
        knowledge=env.knowledge,
    )
    return ToolRunOut.model_validate(run)


# {name:path}: MCP tool names may hold "/" (``github/issues``), sent as %2F, which the
# server decodes before routing: a plain segment would never match such a name.
@router.post("/tools/by-name/{name:path}/call", response_model=ToolRunOut,
             summary="Call a tool by name (?server= when several servers offer it)")
async def call_tool_by_name(
    name: str, body: ToolCallRequest, principal: CallerPrincipal, env: ToolsEnvDep,
    # A server's name (blank or spaces name none: 422, as an empty one).
    server: Annotated[str | None, Query(pattern=NAME_PATTERN)] = None,
) -> ToolRunOut:
    run = await calls.call_tool(
        env.database, principal, env.cfg, env.box, name=name, server=server,
        arguments=body.arguments, trace_id=body.trace_id, session_id=body.session_id,
        message_id=body.message_id, knowledge=env.knowledge,
    )
    return ToolRunOut.model_validate(run)


@router.get("/tools/{tool_id}/dependencies", response_model=list[DependencyOut])
async def list_dependencies(
    tool_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession
) -> list[DependencyOut]:
    return [DependencyOut.model_validate(d)
            for d in await registry.list_dependencies(db, principal, tool_id)]


@router.post("/tools/{tool_id}/dependencies", status_code=status.HTTP_201_CREATED,
             response_model=DependencyOut, summary="Add a dependency edge (cycles refused, 409)")
async def add_dependency(
    tool_id: uuid.UUID, body: DependencyCreate, principal: CurrentPrincipal, db: DbSession
) -> DependencyOut:
    edge = await registry.add_dependency(db, principal, tool_id, body.depends_on_tool_id,
                                         body.dependency_type)
    return DependencyOut.model_validate(edge)


@router.get("/tool-runs", response_model=Page[ToolRunOut], summary="Your tool runs, newest first")
@replica_fallback
async def list_runs(
    principal: CurrentPrincipal, db: ReadSession, tool_id: uuid.UUID | None = None,
    tool_name: Annotated[str | None, Query(max_length=256)] = None,
    status_: Annotated[Literal["running", "success", "error", "timeout"] | None,
                       Query(alias="status")] = None,
    trace_id: Annotated[str | None, Query(max_length=255)] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[ToolRunOut]:
    rows, next_cursor = await calls.list_runs(
        db, principal, tool_id=tool_id, tool_name=tool_name, status=status_, trace_id=trace_id,
        limit=limit, cursor=cursor,
    )
    return Page[ToolRunOut](items=[ToolRunOut.model_validate(r) for r in rows],
                            next_cursor=next_cursor)


@router.get("/tool-runs/{run_id}", response_model=ToolRunOut)
async def get_run(run_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> ToolRunOut:
    return ToolRunOut.model_validate(await calls.get_run(db, principal, run_id))
