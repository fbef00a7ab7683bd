"""Language servers (``lsp_servers``): register, list, delete, check health, and the
built-in ``lsp_diagnostics`` tool on top of them.

A language server is a command run on the Roost host, so only administrators register
one (their own, or global with ``is_global``), as for stdio MCP servers.  Users see their
own and the global ones; another tenant's is 404.

Health checks and diagnostics talk to the server outside any transaction: a short
scoped transaction reads the row, the server runs (``roost.tools.lsp``, one process per
operation), then a second transaction writes the health and the audit record.

Diagnostics read one file of the tools workspace (``ROOST_TOOLS_WORKSPACE_DIR``): the
path is relative to it, and a path that is absolute, climbs with ``..``, holds a NUL
byte or leads out through a symbolic link is refused (422) before anything is read.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import stat
import tempfile
import uuid
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Any, Final

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import record
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.errors import Conflict, Forbidden, NotFound, Unprocessable
from roost.identity.tenancy import clear_principal
from roost.inputs import json_size
from roost.pagination import DEFAULT_LIMIT, newest_first, where_equal
from roost.principal import Principal
from roost.tools import lsp
from roost.tools.builtins import BuiltinToolError
from roost.tools.config import ToolsConfig
from roost.tools.models import LspServer
from roost.tools.schemas import LspServerCreate, LspServerOut
from roost.tools.servers import scoped

MAX_FILE_BYTES: Final = 1024 * 1024
MAX_DIAGNOSTICS: Final = 200


class WorkspacePathRefused(Unprocessable):
    title, type_slug = "Path refused", "workspace-path-refused"


def lsp_out(row: LspServer) -> LspServerOut:
    return LspServerOut(
        id=row.id, user_id=row.user_id, is_global=row.user_id is None, name=row.name,
        language=row.language, command=row.command, args=row.args or [],
        file_patterns=row.file_patterns or [], enabled=row.enabled,
        health_status=row.health_status, health_error=row.health_error,
        latency_ms=row.latency_ms, capabilities=row.capabilities or {},
        server_info=row.server_info, last_checked_at=row.last_checked_at,
        created_at=row.created_at,
    )


def _visible(actor: Principal) -> Any:
    if actor.is_admin:
        return True
    return or_(LspServer.user_id.is_(None), LspServer.user_id == actor.user_id)


async def create_server(session: AsyncSession, actor: Principal, body: LspServerCreate) -> LspServer:
    if not actor.is_admin:
        raise Forbidden("only administrators register language servers: they run a command "
                        "on the Roost host")
    owner = None if body.is_global else actor.user_id
    if owner is None and not body.is_global:
        raise Forbidden("the operator token has no user: register the server with is_global")
    clash = await session.scalar(select(LspServer.id).where(
        LspServer.name == body.name,
        LspServer.user_id.is_(None) if owner is None else LspServer.user_id == owner,
    ))
    if clash is not None:
        raise Conflict(f"a language server named {body.name!r} already exists")
    row = LspServer(
        id=uuid7(), user_id=owner, name=body.name, language=body.language,
        command=body.command, args=list(body.args), file_patterns=list(body.file_patterns),
        enabled=body.enabled,
    )
    session.add(row)
    await session.flush()
    await session.refresh(row)  # created_at, set by the database
    # Arguments are left out: like an MCP server's env, they may carry a token.
    await record(
        session, "lsp_server.create", user_id=actor.user_id, resource_type="lsp_server",
        resource_id=row.id,
        changes={"name": row.name, "language": row.language, "command": row.command,
                 "file_patterns": row.file_patterns, "is_global": owner is None},
    )
    return row


async def list_servers(
    session: AsyncSession, actor: Principal, *, language: str | None = None,
    health_status: str | None = None, limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[LspServer], str | None]:
    stmt = where_equal(select(LspServer).where(_visible(actor)),
                       (LspServer.language, language), (LspServer.health_status, health_status))
    return await newest_first(session, stmt, LspServer.created_at, LspServer.id,
                              limit=limit, cursor=cursor)


async def get_server(session: AsyncSession, actor: Principal, server_id: uuid.UUID, *,
                     lock: bool = False) -> LspServer:
    """The server, if the actor sees it (else 404); ``lock``: its row locked (a deletion
    racing another then finds it gone: 404, not a second 204)."""
    statement = select(LspServer).where(LspServer.id == server_id, _visible(actor))
    row = await session.scalar(statement.with_for_update() if lock else statement)
    if row is None:
        raise NotFound(f"language server {server_id} does not exist")
    return row


async def delete_server(session: AsyncSession, actor: Principal, server_id: uuid.UUID) -> None:
    if (await get_server(session, actor, server_id)).user_id is None and not actor.is_admin:
        raise Forbidden("global language servers are managed by administrators")
    # Locked after the check (only those who may change a row may lock it): a second
    # deletion at once waits, then finds it gone (404, one record).
    row = await get_server(session, actor, server_id, lock=True)
    await session.delete(row)
    await session.flush()
    await record(session, "lsp_server.delete", user_id=actor.user_id, resource_type="lsp_server",
                 resource_id=server_id, changes={"name": row.name})


def _spec(row: LspServer, root: Path) -> lsp.LspSpec:
    return lsp.LspSpec(name=row.name, command=row.command,
                       args=tuple(str(a) for a in row.args or ()), root=root)


async def check_server(
    database: Database, actor: Principal, cfg: ToolsConfig, server_id: uuid.UUID
) -> LspServer:
    """Start the server, complete initialize/shutdown; record health, latency and
    capabilities.  A failed check is recorded, then raised (502, or 504 on timeout)."""
    async with scoped(database, actor, cfg) as session:
        row = await get_server(session, actor, server_id)
    found: lsp.Handshake | None = None
    failure: lsp.LspError | None = None
    # An empty root of its own: a health check must not index the workspace.
    root = await asyncio.to_thread(lambda: Path(tempfile.mkdtemp(prefix="roost-lsp-check-")).resolve())
    try:
        found = await lsp.handshake(_spec(row, root), cfg.call_timeout_s)
    except lsp.LspError as exc:
        failure = exc
    finally:
        await asyncio.to_thread(shutil.rmtree, root, ignore_errors=True)
    async with scoped(database, actor, cfg) as session:
        row = await get_server(session, actor, server_id)
        if row.user_id is None and not actor.is_admin:
            # Any user may check a global server; its health is the server's, not the
            # user's, data, and only the owner role may write a global row.
            await clear_principal(session)
        row.last_checked_at = utcnow()
        if found is not None:
            row.health_status, row.health_error = "healthy", None
            row.latency_ms = found.latency_ms
            row.capabilities, row.server_info = found.capabilities, found.server_info
        else:
            assert failure is not None
            row.health_status, row.health_error = "unhealthy", failure.detail
        await session.flush()
        await session.refresh(row)
        await record(
            session, "lsp_server.check", user_id=actor.user_id, resource_type="lsp_server",
            resource_id=row.id, success=failure is None,
            error_message=failure.detail if failure else None,
            metadata={"health_status": row.health_status, "latency_ms": row.latency_ms},
        )
    if failure is not None:
        failure.extra = {"lsp_server_id": str(server_id)}
        raise failure
    return row


# --------------------------------------------------------------------------- the tool


def workspace_path(workspace: Path | None, raw: str) -> tuple[Path, Path, str]:
    """The workspace's real path, the real path of ``raw`` inside it and ``raw``'s
    relative form; refuses,
    without touching the file, anything that could lead elsewhere."""
    if "\x00" in raw:
        raise WorkspacePathRefused("path must not contain NUL bytes")
    if "\\" in raw:
        raise WorkspacePathRefused("path must use / as its separator")
    relative = PurePosixPath(raw)
    if relative.is_absolute():
        raise WorkspacePathRefused("path must be relative to the tools workspace, not absolute")
    if ".." in relative.parts:
        raise WorkspacePathRefused("path must not contain '..'")
    if not relative.parts:
        raise WorkspacePathRefused("path names no file")
    if workspace is None:
        raise BuiltinToolError("this server has no tools workspace (ROOST_TOOLS_WORKSPACE_DIR)")
    try:
        root = workspace.resolve(strict=True)
    except (OSError, RuntimeError):
        raise BuiltinToolError("the tools workspace does not exist on this server; an "
                               "administrator creates it or sets ROOST_TOOLS_WORKSPACE_DIR") from None
    try:
        target = (root / relative).resolve(strict=False)
    except (OSError, RuntimeError):  # a symbolic link loop
        raise WorkspacePathRefused("path cannot be resolved (symbolic link loop)") from None
    if target == root or not target.is_relative_to(root):
        raise WorkspacePathRefused("path leads outside the tools workspace (through a "
                                   "symbolic link)")
    return root, target, relative.as_posix()


def _read_text(target: Path, shown: str) -> str:
    """The file's text; O_NOFOLLOW and the regular-file check stop a link or a FIFO put
    in its place after the path was checked."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(target, flags)
    except FileNotFoundError:
        raise BuiltinToolError(f"no file {shown!r} in the tools workspace") from None
    except IsADirectoryError:
        raise BuiltinToolError(f"{shown!r} is not a file") from None
    except OSError:
        raise WorkspacePathRefused(f"{shown!r} cannot be opened (not a plain file)") from None
    try:
        # Checked on the descriptor, before fdopen: a directory opens (O_RDONLY) but
        # fdopen refuses it, and a failed fdopen does not close the descriptor.
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BuiltinToolError(f"{shown!r} is not a file")
        with os.fdopen(fd, "rb", closefd=False) as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_FILE_BYTES:
        raise BuiltinToolError(f"{shown!r} is larger than {MAX_FILE_BYTES} bytes")
    if b"\x00" in data:
        raise BuiltinToolError(f"{shown!r} is not a text file")
    # A leading byte order mark (editors on Windows save one; Python allows it) is not
    # text: sent on, the server reported it as an invalid character on line 1.
    return data.decode("utf-8-sig", errors="replace")


def matches(patterns: list[Any], relative: str) -> bool:
    """``*.py`` matches a file name anywhere; a pattern with ``/`` matches the whole
    relative path (``**/`` also matching no directory at all)."""
    name = relative.rsplit("/", 1)[-1]
    for pattern in patterns:
        if not isinstance(pattern, str):
            continue
        if "/" not in pattern:
            if fnmatchcase(name, pattern):
                return True
        elif fnmatchcase(relative, pattern) or (
            pattern.startswith("**/") and fnmatchcase(relative, pattern[3:])
        ):
            return True
    return False


@dataclass(frozen=True)
class _Chosen:
    name: str
    language: str
    spec: lsp.LspSpec


async def _choose(
    database: Database, actor: Principal, cfg: ToolsConfig, root: Path, relative: str,
    language: str | None, server: str | None,
) -> _Chosen:
    async with scoped(database, actor, cfg) as session:
        # The caller's own servers and global ones (even an administrator's call does
        # not borrow another user's server).
        owners: ColumnElement[bool] = LspServer.user_id.is_(None)
        if actor.user_id is not None:
            owners = or_(owners, LspServer.user_id == actor.user_id)
        stmt = select(LspServer).where(owners, LspServer.enabled.is_(True))
        if server is not None:
            stmt = stmt.where(LspServer.name == server)
        if language is not None:
            stmt = stmt.where(func.lower(LspServer.language) == language.lower())
        rows = (await session.scalars(stmt)).all()
    # Own before global, then by name: the same file always goes to the same server.
    candidates = sorted(rows, key=lambda r: (r.user_id is None, r.name))
    if server is None:
        candidates = [r for r in candidates if matches(r.file_patterns or [], relative)]
    if not candidates:
        wanted = (f"named {server!r}" if server else f"for {relative!r}") + (
            f" (language {language!r})" if language else "")
        raise BuiltinToolError(f"no enabled language server {wanted}; an administrator "
                               "registers one with `roost lsp add`")
    row = candidates[0]
    return _Chosen(row.name, row.language, _spec(row, root))


async def diagnostics_tool(
    database: Database, actor: Principal, cfg: ToolsConfig, arguments: dict[str, Any]
) -> dict[str, Any]:
    """``lsp_diagnostics``: a workspace file's diagnostics from a matching server."""
    root, target, relative = await asyncio.to_thread(
        workspace_path, cfg.workspace_dir, str(arguments["path"]))
    chosen = await _choose(database, actor, cfg, root, relative, arguments.get("language"),
                           arguments.get("server"))
    text = await asyncio.to_thread(_read_text, target, relative)
    found = await lsp.diagnostics(chosen.spec, target, text, chosen.language.lower(),
                                  cfg.call_timeout_s)
    result: dict[str, Any] = {"path": relative, "server": chosen.name,
                              "language": chosen.language, "diagnostics": [],
                              "count": len(found), "truncated": False}
    kept = _fitting(found[:MAX_DIAGNOSTICS], cfg.max_output_bytes - json_size(result))
    result["diagnostics"] = kept
    result["truncated"] = len(kept) < len(found)
    return result


def _fitting(diagnostics: list[Any], budget: int) -> list[Any]:
    """The first diagnostics that fit in ``budget`` bytes of JSON: a tool's result is at
    most ``ROOST_TOOLS_MAX_OUTPUT_BYTES``, and 200 messages of 2,000 characters are ~450 KB
    (returned whole, past the limit every MCP tool's result keeps)."""
    kept: list[Any] = []
    for diagnostic in diagnostics:
        budget -= json_size(diagnostic) + 1  # and its comma
        if budget < 0:
            break
        kept.append(diagnostic)
    return kept

