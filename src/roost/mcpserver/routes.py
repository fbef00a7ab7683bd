"""``/mcp``: the streamable-HTTP MCP endpoint (web adapter).

Every HTTP request to ``/mcp`` is authenticated *before* the MCP SDK sees it, exactly
as a REST request is: ``roost.http.auth.current_principal`` (operator token, then the
domains' resolvers: users' API keys and JWTs) in a short transaction of its own.  A
missing or invalid credential is a 401 problem answer and no MCP transport, session or
task is created.  The SDK's session manager runs stateless with JSON answers: each
POST gets a fresh transport that is torn down when the answer is sent, so the server
keeps no session state at all (nothing to leak on rejected or DELETEd sessions).
Before the SDK, the body is read and a batch, a bare value or a request id MCP does not
allow is refused as a JSON-RPC invalid request; while the SDK works, the client's
disconnect is watched for and cancels the call (and an agent run it started).

Each ``tools/list`` and ``tools/call`` then opens its own transaction, authenticates
the same bearer again in it (so a key revoked since is refused) and scopes it to the
principal with the same resolver and ``apply_principal`` as the REST API: row-level
security applies identically.  The transaction commits before the result is returned.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import anyio
import pydantic_core
import structlog
from mcp import types
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared.exceptions import MCPError
from mcp.types import INTERNAL_ERROR, INVALID_PARAMS, INVALID_REQUEST, jsonrpc_message_adapter
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import Message, Receive, Scope, Send

import roost
from roost.context import RUN_TRACE_HEADER, RUN_TRACE_PATTERN, current_context, inbound_run_trace
from roost.db.errors import RETRYABLE_SQLSTATES
from roost.db.errors import sqlstate as sqlstate_of
from roost.errors import Forbidden, RoostError, ServiceUnavailable
from roost.http.auth import current_principal
from roost.http.problems import connection_lost
from roost.http.routing import RoostRouter
from roost.http.streams import until_disconnected
from roost.mcpserver import tools
from roost.principal import Principal

PATH = "/mcp"
PAGE_SIZE = 500
"""Tools per ``tools/list`` answer; the rest follow with MCP's ``cursor``/``nextCursor``
(public agents, which any user may create, are listed to every user)."""
log = structlog.get_logger(__name__)

# The authenticated HTTP request being served; the SDK runs the handlers in tasks
# started from this request's task, which inherit it.
_request: ContextVar[Request | None] = ContextVar("roost_mcp_request", default=None)


@dataclass
class McpRuntime:
    """What ``/mcp`` needs at request time, kept on ``app.state.mcp`` by the start-up."""

    manager: StreamableHTTPSessionManager
    builtin: tools.ToolProvider


def providers(request: Request) -> list[tools.ToolProvider]:
    """The built-in tools, then those other domains registered (``app.state``)."""
    runtime: McpRuntime = request.app.state.mcp
    extra: Sequence[tools.ToolProvider] = getattr(request.app.state, "mcp_tool_providers", ())
    return [runtime.builtin, *extra]


def _check_caller(principal: Principal) -> None:
    if principal.user_id is None:  # the operator token: no user, no documents of its own
        raise Forbidden("/mcp serves a user's own capabilities: use that user's API key")


@asynccontextmanager
async def caller_transaction(request: Request) -> AsyncIterator[tuple[AsyncSession, Principal]]:
    """A transaction scoped to the request's bearer, exactly as a REST route's."""
    async with request.app.state.db.sessionmaker() as session, session.begin():
        principal = await current_principal(request, session)
        _check_caller(principal)
        yield session, principal


def _current_request() -> Request:
    request = _request.get()
    if request is None:  # only /mcp's endpoint runs the SDK, and it sets this first
        raise RuntimeError("MCP handler called outside an authenticated /mcp request")
    return request


async def _list_tools(
    ctx: ServerRequestContext[Any], params: types.PaginatedRequestParams | None,
) -> types.ListToolsResult:
    request = _current_request()
    start = _page_start(params.cursor if params is not None else None)
    try:
        async with caller_transaction(request) as (session, principal):
            found = await tools.list_all(providers(request), session, principal)
    except RoostError as exc:  # revoked since the request began, or refused
        raise MCPError(INVALID_REQUEST, exc.detail) from exc
    except Exception as exc:  # the SDK would send str(exc): the SQL, tables and all
        raise MCPError(INTERNAL_ERROR, _failure_text("tools/list", exc)) from exc
    end = start + PAGE_SIZE
    return types.ListToolsResult(tools=found[start:end],
                                 next_cursor=str(end) if end < len(found) else None)


def _page_start(cursor: str | None) -> int:
    """The offset a ``tools/list`` cursor (the offset this server gave as ``nextCursor``) names."""
    if cursor is None:
        return 0
    if not (cursor.isascii() and cursor.isdigit() and len(cursor) <= 9):
        raise MCPError(INVALID_PARAMS, "invalid cursor: pass a nextCursor from tools/list")
    return int(cursor)


async def _call_tool(
    ctx: ServerRequestContext[Any], params: types.CallToolRequestParams,
) -> types.CallToolResult:
    request = _current_request()
    try:
        async with caller_transaction(request) as (session, principal):
            result = await tools.call(
                providers(request), session, principal, params.name, params.arguments or {})
            if isinstance(result, types.CallToolResult) and result.is_error:
                await session.rollback()  # a refused call changes nothing
    except RoostError as exc:  # revoked since the request began (401, 403), or refused
        return tools.error_result(exc.detail)
    except Exception as exc:  # the caller's transaction failed (its commit, a statement)
        return _failed(params.name, exc)
    if isinstance(result, types.CallToolResult):
        return result
    try:  # the slow part, after the caller's transaction committed
        return await result()
    except RoostError as exc:
        return tools.error_result(exc.detail)
    except Exception as exc:
        return _failed(params.name, exc)


def _failed(name: str, exc: Exception) -> types.CallToolResult:
    """A tool call's unexpected error as a clean error result."""
    return tools.error_result(_failure_text(name, exc))


def _failure_text(name: str, exc: Exception) -> str:
    """An unexpected error's message for the client, as the REST API words it
    (http/problems.py): never the database's message, which names tables and
    constraints; the exception goes to the log."""
    state = sqlstate_of(exc) or ""
    if state == "23503":  # the user, tool or run it was for was deleted while it ran
        log.warning("mcp_tool_target_deleted", tool=name, error=type(exc).__name__)
        return ("what this call was for was deleted meanwhile (the account, the tool or its "
                "server): its result was not kept")
    if state in RETRYABLE_SQLSTATES:
        log.warning("mcp_tool_conflict", tool=name, sqlstate=state)
        return "the call collided with a concurrent change; try again"
    if state == "57014":
        log.warning("mcp_tool_timeout", tool=name)
        return "the database took too long to answer; try again shortly"
    if state.startswith("22"):  # data exceptions: a NUL, a number out of range (a 400 on REST)
        log.warning("mcp_tool_bad_value", tool=name, sqlstate=state)
        return "a value is out of range or malformed for its field"
    if connection_lost(exc):
        log.error("database_unavailable", tool=name, error=type(exc).__name__)
        return "the database is unavailable; try again shortly"
    log.error("mcp_tool_failed", tool=name, error=type(exc).__name__, exc_info=exc)
    request_id = current_context().request_id
    return ("an unexpected error occurred; quote the request id "
            f"{request_id} when reporting it" if request_id else "an unexpected error occurred")


def build_server() -> Server[Any]:
    return Server(
        "roost", version=roost.__version__,
        instructions="Roost: your documents and tools, scoped to your API key.",
        on_list_tools=_list_tools, on_call_tool=_call_tool,
    )


def build_manager(server: Server[Any]) -> StreamableHTTPSessionManager:
    """Stateless, JSON answers: no session map, no SSE stream, nothing kept between
    requests.  Body size is capped by Roost's own middleware first."""
    return StreamableHTTPSessionManager(app=server, stateless=True, json_response=True)


def _is_json(content_type: str | None) -> bool:
    """The media type ``application/json`` exactly, as the SDK takes it (a ``+json`` type or
    another case it refuses)."""
    return (content_type or "").split(";", 1)[0].strip() == "application/json"


def _refusal(body: bytes) -> str | None:
    """Why a JSON body is not one request the SDK answers properly, or None.  The SDK took
    a batch (or a bare value) as invalid *params* and quoted the body back in a pydantic
    dump (argument values included), and a request whose id is null or an object as a
    notification: a 202 with no answer ever.  Malformed JSON stays the SDK's -32700."""
    try:
        message = pydantic_core.from_json(body)  # the SDK's own parser
    except ValueError:
        return None
    if not isinstance(message, dict):
        return "a request is one JSON-RPC object; batches are not accepted"
    if "method" in message and "id" in message:
        id_ = message["id"]
        if isinstance(id_, bool) or not isinstance(id_, str | int):
            return "invalid request: id must be a string or an integer"
    try:  # the shape the SDK checks next, whose refusal quoted the body back
        jsonrpc_message_adapter.validate_python(message, by_name=False)
    except ValidationError:
        return ('invalid request: not a JSON-RPC 2.0 message ("jsonrpc": "2.0", a string '
                '"method", "params" an object when given)')
    return None


def _invalid_request(message: str) -> JSONResponse:
    return JSONResponse({"jsonrpc": "2.0", "id": None,
                         "error": {"code": INVALID_REQUEST, "message": message}}, status_code=400)


class McpEndpoint:
    """The raw ASGI app behind ``/mcp``: authenticate, then hand over to the SDK."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Named in the scope as FastAPI's own routes are (a plain Starlette route is not),
        # so the request's metrics and trace span say "/mcp", not "unmatched".
        scope.setdefault("route", MCP_ROUTE)
        request = Request(scope, receive)
        runtime: McpRuntime | None = getattr(request.app.state, "mcp", None)
        if runtime is None:
            raise ServiceUnavailable("the MCP server is not running (the app's lifespan starts it)")
        async with caller_transaction(request):  # 401/403 before the SDK sees anything
            pass
        if not _is_json(request.headers.get("content-type")):  # the SDK's is a text/plain 400
            raise HTTPException(415, "an MCP request is JSON-RPC, sent with "
                                     "'Content-Type: application/json'")
        body = await request.body()  # capped by the middleware (a 413 beyond the limit)
        refusal = _refusal(body)
        if refusal is not None:
            await _invalid_request(refusal)(scope, receive, send)
            return
        sent = False

        async def buffered() -> Message:
            # The SDK reads the body read above; the real receive is left to the watch for
            # the client's disconnect (the SDK, answering JSON, never watches for it), which
            # cancels the SDK, a wait here for more included.
            nonlocal sent
            if sent:
                await anyio.sleep_forever()
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        token = _request.set(request)
        # A run's tool call names its run (docs/mcp.md, "Agents calling agents"); a value
        # that is not a trace id is ignored, as no header would be.
        calling = request.headers.get(RUN_TRACE_HEADER)
        trace_token = inbound_run_trace.set(
            calling if calling is not None and RUN_TRACE_PATTERN.match(calling) else None)
        try:
            # A client that goes away cancels its call (an agent__<slug> call then cancels
            # its run): ClientGone, logged as 499.
            await until_disconnected(
                request, runtime.manager.handle_request(scope, buffered, send))
        finally:
            inbound_run_trace.reset(trace_token)
            _request.reset(token)


router = RoostRouter()
# A plain Starlette route (raw ASGI, outside the OpenAPI document): the MCP transport
# speaks JSON-RPC, not Roost's REST conventions.
# POST only: stateless, no session to DELETE and no server-initiated messages, so no
# GET stream (the MCP specification lets such a server answer GET with 405); an open
# GET stream would hold a connection and tasks forever, outside the stream quota.
MCP_ROUTE = Route(PATH, McpEndpoint(), methods=["POST"], include_in_schema=False)
router.routes.append(MCP_ROUTE)
# "/mcp/" is served as "/mcp" (counted under it too), not a 307 redirect: a client
# configured with the slash would otherwise depend on following a redirect of a POST.
router.routes.append(Route(f"{PATH}/", MCP_ROUTE.endpoint, methods=["POST"],
                           include_in_schema=False))
