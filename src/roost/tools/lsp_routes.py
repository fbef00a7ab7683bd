"""HTTP routes: /api/v1/lsp-servers (registered language servers and their health)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Query, Response, status

from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit
from roost.http.routing import RoostRouter
from roost.llm.deps import CallerPrincipal
from roost.pagination import DEFAULT_LIMIT, Page
from roost.tools import lspservers
from roost.tools.deps import ToolsEnvDep
from roost.tools.schemas import LspServerCreate, LspServerOut

router = RoostRouter(prefix="/api/v1/lsp-servers", tags=["tools"])


@router.post("", status_code=status.HTTP_201_CREATED, response_model=LspServerOut,
             summary="Register a language server (administrators: their own, or global)")
async def create_lsp_server(
    body: LspServerCreate, principal: CurrentPrincipal, db: DbSession
) -> LspServerOut:
    return lspservers.lsp_out(await lspservers.create_server(db, principal, body))


@router.get("", response_model=Page[LspServerOut],
            summary="Language servers you own and global ones, newest first")
async def list_lsp_servers(
    principal: CurrentPrincipal, db: DbSession,
    language: Annotated[str | None, Query(max_length=100)] = None,
    health_status: Literal["unknown", "healthy", "unhealthy"] | None = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[LspServerOut]:
    rows, next_cursor = await lspservers.list_servers(
        db, principal, language=language, health_status=health_status, limit=limit, cursor=cursor
    )
    return Page[LspServerOut](items=[lspservers.lsp_out(r) for r in rows], next_cursor=next_cursor)


@router.get("/{server_id}", response_model=LspServerOut)
async def get_lsp_server(server_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> LspServerOut:
    return lspservers.lsp_out(await lspservers.get_server(db, principal, server_id))


@router.delete("/{server_id}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a language server")
async def delete_lsp_server(server_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> Response:
    await lspservers.delete_server(db, principal, server_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{server_id}/check", response_model=LspServerOut,
             summary="Health check: start the server, initialize, shut down; records latency "
             "(a failure is recorded, then answered 502, or 504 on timeout)")
async def check_lsp_server(
    server_id: uuid.UUID, principal: CallerPrincipal, env: ToolsEnvDep
) -> LspServerOut:
    row = await lspservers.check_server(env.database, principal, env.cfg, server_id)
    return lspservers.lsp_out(row)
