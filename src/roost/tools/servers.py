"""MCP server registry: register, list, delete, discover tools (sync), check health.

Discovery and health checks talk to the server outside any transaction: a short
scoped transaction reads the server, the MCP session runs, then a second one writes
what it found (tools, health) and the audit record.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.errors import Conflict, Forbidden, NotFound, Unprocessable
from roost.identity.tenancy import scope_lazily
from roost.inputs import json_size
from roost.knowledge.fetching import FetchError, url_host
from roost.pagination import DEFAULT_LIMIT, newest_first, where_equal
from roost.principal import Principal
from roost.security.crypto import SecretBox
from roost.tasks.payloads import PayloadError, dump_json_object
from roost.tasks.service import enqueue
from roost.tools import mcpclient, secretrefs, stdiopool
from roost.tools.config import ToolsConfig
from roost.tools.models import MAX_DESCRIPTION_CHARS, MAX_SCHEMA_BYTES, McpServer, Tool
from roost.tools.schemas import McpServerCreate, McpServerOut
from roost.tools.search import EMBED_TASK


@asynccontextmanager
async def scoped(database: Database, actor: Principal, cfg: ToolsConfig) -> AsyncIterator[AsyncSession]:
    """A transaction in ``actor``'s row-level-security scope, sent with its first
    statement (none when a call's checks are all answered by the process's caches)."""
    async with database.transaction() as session:
        scope_lazily(session, actor, app_role=cfg.app_role)
        yield session


def _aad(server_id: uuid.UUID, what: str) -> bytes:
    return f"mcp_servers:{server_id}:{what}".encode()


def _seal(box: SecretBox, server_id: uuid.UUID, what: str, values: dict[str, str]) -> str | None:
    if not values:
        return None
    return box.encrypt(json.dumps(values), _aad(server_id, what)).decode("ascii")


def _open(box: SecretBox, server_id: uuid.UUID, what: str, blob: str | None) -> dict[str, str]:
    if not blob:
        return {}
    value: dict[str, str] = json.loads(box.decrypt_str(blob, _aad(server_id, what)))
    return value


def server_out(row: McpServer, box: SecretBox) -> McpServerOut:
    return McpServerOut(
        id=row.id, user_id=row.user_id, is_global=row.user_id is None, name=row.name,
        description=row.description, transport=row.transport, url=row.url, command=row.command,
        args=row.args or [], env_names=sorted(_open(box, row.id, "env", row.env_encrypted)),
        header_names=sorted(_open(box, row.id, "headers", row.headers_encrypted)),
        enabled=row.enabled, health_status=row.health_status, health_error=row.health_error,
        latency_ms=row.latency_ms, capabilities=row.capabilities or {},
        server_info=row.server_info, last_seen=row.last_seen,
        last_health_check_at=row.last_health_check_at, last_synced_at=row.last_synced_at,
        created_at=row.created_at, updated_at=row.updated_at,
    )


def spec_for(row: McpServer, box: SecretBox, cfg: ToolsConfig) -> mcpclient.ServerSpec:
    host = url_host(row.url) if row.url else None
    return mcpclient.ServerSpec(
        name=row.name, transport=row.transport, url=row.url, command=row.command,
        args=tuple(str(a) for a in row.args or ()), env=_open(box, row.id, "env", row.env_encrypted),
        headers=_open(box, row.id, "headers", row.headers_encrypted),
        allow_private=cfg.host_allowed(host),
        # A discovery moves the revision: every Roost process then replaces its long-lived
        # stdio process, so calls see the tools the discovery saw.
        server_id=row.id,
        revision=row.last_synced_at.isoformat() if row.last_synced_at else "",
        owner_id=row.user_id,
    )


def _visible(actor: Principal) -> Any:
    if actor.is_admin:
        return True
    return or_(McpServer.user_id.is_(None), McpServer.user_id == actor.user_id)


async def create_server(
    session: AsyncSession, actor: Principal, cfg: ToolsConfig, box: SecretBox, body: McpServerCreate
) -> McpServer:
    if body.is_global and not actor.is_admin:
        raise Forbidden("only administrators register global MCP servers")
    if body.transport == "stdio" and not actor.is_admin:
        raise Forbidden("only administrators register stdio MCP servers: they run a command "
                        "on the Roost host; register a streamable_http server instead")
    owner = None if body.is_global else actor.user_id
    if owner is None and not body.is_global:
        raise Forbidden("the operator token has no user: register the server with is_global")
    if body.url is not None:
        # The URL parsers disagree on them (the field's check drops leading spaces and
        # control characters, the SSRF guard's sees no scheme): refused as every URL
        # field of Roost refuses them, not guessed at.
        if body.url[0] <= " " or body.url[-1] <= " " or body.url != body.url.strip():
            raise Unprocessable("url: the URL has leading or trailing spaces (or control "
                                "characters): remove them")
        await mcpclient.check_server_url(
            body.url, allow_private=cfg.host_allowed(url_host(body.url))
        )
    clash = await session.scalar(select(McpServer.id).where(
        McpServer.name == body.name,
        McpServer.user_id.is_(None) if owner is None else McpServer.user_id == owner,
    ))
    if clash is not None:
        raise Conflict(f"an MCP server named {body.name!r} already exists")
    row = McpServer(
        id=uuid7(), user_id=owner, name=body.name, description=body.description,
        transport=body.transport, url=body.url, command=body.command, args=list(body.args),
        enabled=body.enabled,
        # The persona secrets its values name (not the values): checked when an agent of a
        # persona is given this server's tools (roost.tools.secretrefs).
        config={"secret_refs": [secretrefs.label(r) for r in
                                secretrefs.references({**body.env, **body.headers})]},
    )
    row.env_encrypted = _seal(box, row.id, "env", body.env)
    row.headers_encrypted = _seal(box, row.id, "headers", body.headers)
    session.add(row)
    await session.flush()
    await record(
        session, "mcp_server.create", user_id=actor.user_id, resource_type="mcp_server",
        resource_id=row.id,
        changes={"name": row.name, "transport": row.transport, "url": row.url,
                 "command": row.command, "is_global": owner is None,
                 "env_names": sorted(body.env), "header_names": sorted(body.headers)},
    )
    return row


async def list_servers(
    session: AsyncSession, actor: Principal, *, transport: str | None = None,
    health_status: str | None = None, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[McpServer], str | None]:
    stmt = where_equal(select(McpServer).where(_visible(actor)),
                       (McpServer.transport, transport), (McpServer.health_status, health_status))
    return await newest_first(session, stmt, McpServer.created_at, McpServer.id,
                              limit=limit, cursor=cursor)


async def get_server(session: AsyncSession, actor: Principal, server_id: uuid.UUID, *,
                     lock: bool = False) -> McpServer:
    """The server, if the actor sees it (else 404).  ``lock``: its row locked for this
    transaction (a change that must not race a deletion: a deleted row is then a 404,
    not a failed ``UPDATE`` of nothing)."""
    statement = select(McpServer).where(McpServer.id == server_id, _visible(actor))
    row = await session.scalar(statement.with_for_update() if lock else statement)
    if row is None:
        raise NotFound(f"MCP server {server_id} does not exist")
    return row


def _check_write(actor: Principal, row: McpServer) -> None:
    if row.user_id is None and not actor.is_admin:
        raise Forbidden("global MCP servers are managed by administrators")


async def delete_server(session: AsyncSession, actor: Principal, server_id: uuid.UUID) -> None:
    """Delete the server and its tools; their tool runs stay as written (their tool_id
    then names a deleted tool: history ids have no foreign keys, migration 1090)."""
    _check_write(actor, await get_server(session, actor, server_id))  # 403 before the lock
    # Locked: a second deletion at once waits, then finds it gone (404, one record).  (Row
    # security lets only those who may change a row lock it: hence the check first.)
    row = await get_server(session, actor, server_id, lock=True)
    await session.delete(row)
    await session.flush()
    await record(session, "mcp_server.delete", user_id=actor.user_id, resource_type="mcp_server",
                 resource_id=server_id, changes={"name": row.name})
    # Its stdio process in this Roost process (harmless if the transaction rolls back:
    # the next call starts another).
    stdiopool.retire_server(server_id)


@dataclass
class SyncSummary:
    server: McpServer
    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unavailable: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    # A tool was added or its title or description changed: embed it off the request.
    to_embed: bool = False


def _health(row: McpServer, found: mcpclient.Discovery | None, error: str | None) -> None:
    now = utcnow()
    row.last_health_check_at = now
    if found is not None:
        row.health_status, row.health_error = "healthy", None
        row.latency_ms = found.latency_ms
        row.last_seen = now
        row.capabilities = found.capabilities
        row.server_info = found.server_info
    else:
        row.health_status, row.health_error = "unhealthy", error


async def _discover(
    database: Database, actor: Principal, cfg: ToolsConfig, box: SecretBox, server_id: uuid.UUID,
    *, write: bool,
) -> tuple[McpServer, mcpclient.Discovery | None, mcpclient.McpError | Exception | None]:
    async with scoped(database, actor, cfg) as session:
        row = await get_server(session, actor, server_id)
        if write:
            _check_write(actor, row)
        spec = spec_for(row, box, cfg)
    # Secret references resolve only in an agent run of a persona: discovery goes
    # without the entries holding them, never sending a literal `${secret:..}`.
    spec, left_out = secretrefs.without_references(spec)
    try:
        return row, await mcpclient.discover(spec, cfg.call_timeout_s), None
    except (mcpclient.McpError, FetchError) as exc:
        if left_out and isinstance(exc, mcpclient.McpError):
            exc.detail += (f" (sent without {', '.join(left_out)}: they reference persona "
                           "secrets, which only an agent run of the persona resolves)")
        return row, None, exc


async def check_server(
    database: Database, actor: Principal, cfg: ToolsConfig, box: SecretBox, server_id: uuid.UUID
) -> McpServer:
    """Connect, initialize and list tools; record health, latency, capabilities."""
    _, found, error = await _discover(database, actor, cfg, box, server_id, write=False)
    async with scoped(database, actor, cfg) as session:
        row = await get_server(session, actor, server_id)
        _health(row, found, getattr(error, "detail", None) or (str(error) if error else None))
        await session.flush()
        await session.refresh(row)
    return row


async def sync_server(
    database: Database, actor: Principal, cfg: ToolsConfig, box: SecretBox, server_id: uuid.UUID
) -> SyncSummary:
    """Discover the server's tools (every page) and upsert them; tools it no longer
    lists are marked unavailable (never deleted: their runs keep pointing at them)."""
    _, found, error = await _discover(database, actor, cfg, box, server_id, write=True)
    async with scoped(database, actor, cfg) as session:
        row = await get_server(session, actor, server_id, lock=True)  # deleted since: 404
        detail = getattr(error, "detail", None) or (str(error) if error else None)
        _health(row, found, detail)
        summary = SyncSummary(server=row)
        if found is not None:
            await _upsert_tools(session, row, found, summary)
            row.last_synced_at = utcnow()
            if summary.to_embed:  # runs only if this transaction commits
                await enqueue(session, EMBED_TASK, {}, priority="background")
        await session.flush()
        await record(
            session, "mcp_server.sync", user_id=actor.user_id, resource_type="mcp_server",
            resource_id=row.id, success=found is not None, error_message=detail,
            metadata={"added": summary.added, "updated": summary.updated,
                      "unavailable": summary.unavailable, "skipped": sorted(summary.skipped)},
        )
        await session.refresh(row)
    if error is not None:
        assert detail is not None
        if isinstance(error, mcpclient.McpError | FetchError):
            raise error
        raise mcpclient.McpError(detail)
    return summary


def _printable(name: str) -> str:
    """A listed name as ``skipped`` can name it (recorded: no NUL, no lone surrogate)."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")


async def _upsert_tools(
    session: AsyncSession, server: McpServer, found: mcpclient.Discovery, summary: SyncSummary
) -> None:
    existing = {t.name: t for t in (await session.scalars(
        select(Tool).where(Tool.mcp_server_id == server.id)
    )).all()}
    now = utcnow()
    seen: set[str] = set()  # stored (or kept) by this sync
    listed: set[str] = set()  # listed so far, stored or skipped
    for item in found.tools:
        name = str(item.get("name", ""))
        schema = item.get("inputSchema") or {"type": "object"}
        if not name:
            summary.skipped[""] = "no name: no call could reach it"
            continue
        if len(name) > 256:  # a cut name is not the tool's: calling it would reach another
            summary.skipped[_printable(name[:256]) + "..."] = "name longer than 256 characters"
            continue
        if name in listed:  # listed twice: the first one counts, even when it was skipped
            # (the server sends a call of that name to its first listing, not this one)
            summary.skipped.setdefault(_printable(name), "listed more than once")
            continue
        listed.add(name)
        # Measured as every "N bytes of JSON" in Roost is (compact UTF-8): json.dumps'
        # default escapes each non-ASCII character into six bytes.
        too_large = next((what for what, value in (
            ("input schema", schema), ("output schema", item.get("outputSchema")),
            ("annotations", item.get("annotations")),
        ) if json_size(value) > MAX_SCHEMA_BYTES), None)
        if too_large is not None:
            summary.skipped[_printable(name)] = f"{too_large} larger than {MAX_SCHEMA_BYTES} bytes"
            continue
        # A title or description is only shown and embedded: cut to what is kept.
        title, description = item.get("title"), item.get("description")
        stored: dict[str, Any] = {
            "title": title[:256] if isinstance(title, str) else title,
            "description": (description[:MAX_DESCRIPTION_CHARS]
                            if isinstance(description, str) else description),
            "input_schema": schema, "output_schema": item.get("outputSchema"),
            "annotations": item.get("annotations"),
        }
        try:  # a NUL (or a lone surrogate): no text or jsonb column can hold it
            dump_json_object({"name": name, **stored}, what="the tool")
        except PayloadError as exc:
            summary.skipped[_printable(name)] = f"cannot be stored: {exc}"
            continue
        seen.add(name)
        values: dict[str, Any] = {**stored, "available": True, "last_discovered_at": now}
        tool = existing.get(name)
        if tool is None:
            session.add(Tool(mcp_server_id=server.id, user_id=server.user_id, kind="mcp",
                             name=name, **values))
            summary.added.append(name)
            summary.to_embed = True
        else:
            if (tool.title, tool.description) != (values["title"], values["description"]):
                summary.to_embed = True
            for key, value in values.items():
                setattr(tool, key, value)
            summary.updated.append(name)
    for name, tool in existing.items():
        if name not in seen and tool.available:
            tool.available = False
            summary.unavailable.append(name)
