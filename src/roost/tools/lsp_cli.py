"""``roost lsp add|ls|check|rm``: the operator's language-server commands.

They act as the system (an administrator): servers added here are global (every user's
``lsp_diagnostics`` calls may use them).  Servers are named by name or by id (or a unique
id prefix).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from sqlalchemy import or_, select

from roost.clitools import (
    add_text_row,
    every_page,
    fail,
    id_table,
    parse_input,
    print_table,
    printable,
    with_database,
)
from roost.config import get_settings
from roost.db.engine import Database
from roost.db.lookup import id_starts_with
from roost.errors import NotFound, RoostError
from roost.principal import SYSTEM
from roost.tools import lspservers
from roost.tools.config import ToolsConfig
from roost.tools.models import LspServer
from roost.tools.schemas import LspServerCreate

console = Console()
T = TypeVar("T")

lsp_app = typer.Typer(help="Language servers for the lsp_diagnostics tool: register, check.",
                      no_args_is_help=True)


def _run(fn: Callable[[Database, ToolsConfig], Awaitable[T]]) -> T:
    settings = get_settings()
    cfg = ToolsConfig.from_settings(settings)

    async def go(db: Database) -> T:
        return await fn(db, cfg)

    try:
        return with_database(go, settings)
    except RoostError as exc:
        raise fail(exc.title, exc.detail) from exc


async def _server_id(db: Database, ref: str) -> uuid.UUID:
    async with db.transaction() as session:
        rows = (await session.scalars(select(LspServer.id).where(or_(
            LspServer.name == ref, id_starts_with(LspServer.id, ref)
        )).limit(3))).all()
    if not rows:
        raise NotFound(f"no language server is named {ref!r} or has an id starting with it")
    if len(rows) > 1:
        raise NotFound(f"{ref!r} names several language servers; use the full id")
    return rows[0]


@lsp_app.command("add")
def add_command(
    name: Annotated[str, typer.Argument(help="Server name (letters, digits, . _ -)")],
    command: Annotated[str, typer.Option(help="The executable, spoken to over stdio")],
    language: Annotated[str, typer.Option(help="LSP language id, e.g. python")],
    arg: Annotated[list[str] | None, typer.Option("--arg", help="One argument (repeat)")] = None,
    pattern: Annotated[list[str] | None, typer.Option(
        "--pattern", help="Files it serves, e.g. '*.py' (repeat)")] = None,
) -> None:
    """Register a global language server."""
    body = parse_input(LspServerCreate, dict(
        name=name, language=language, command=command, args=arg or [],
        file_patterns=pattern or [], is_global=True,
    ))

    async def go(db: Database, cfg: ToolsConfig) -> LspServer:
        async with db.transaction() as session:
            return await lspservers.create_server(session, SYSTEM, body)

    row = _run(go)
    console.print(Text(f"Registered language server {row.name} ({row.id}); check it with "
                       f"`roost lsp check {row.name}`"))


@lsp_app.command("ls")
def ls_command() -> None:
    """List every language server (all tenants)."""
    async def go(db: Database, cfg: ToolsConfig) -> list[LspServer]:
        async with db.transaction() as session:
            return await every_page(lambda cursor: lspservers.list_servers(
                session, SYSTEM, limit=500, cursor=cursor))

    table = id_table("id", "name", "owner", "language", "command", "patterns", "health",
                     "latency ms", wrap=("command",))
    for row in _run(go):
        add_text_row(table, str(row.id), row.name, str(row.user_id) if row.user_id else "global",
                     row.language, " ".join([row.command, *map(str, row.args)]),
                     " ".join(map(str, row.file_patterns)), row.health_status,
                     "" if row.latency_ms is None else str(row.latency_ms))
    print_table(console, table)


@lsp_app.command("check")
def check_command(server: Annotated[str, typer.Argument(help="Server name or id")]) -> None:
    """Health check: start the server, initialize, shut down (exit code 1 when it fails)."""
    async def go(db: Database, cfg: ToolsConfig) -> LspServer:
        return await lspservers.check_server(db, SYSTEM, cfg, await _server_id(db, server))

    row = _run(go)
    info = row.server_info or {}
    about = " ".join(str(info[k]) for k in ("name", "version") if info.get(k))
    # Text: the server's own name and version (serverInfo) are not rich markup.
    console.print(Text(printable(f"{row.name}: {row.health_status} in {row.latency_ms} ms"
                                 + (f" ({about})" if about else ""))))


@lsp_app.command("rm")
def rm_command(server: Annotated[str, typer.Argument(help="Server name or id")]) -> None:
    """Delete a language server."""
    async def go(db: Database, cfg: ToolsConfig) -> None:
        server_id = await _server_id(db, server)
        async with db.transaction() as session:
            await lspservers.delete_server(session, SYSTEM, server_id)

    _run(go)
    console.print(Text(f"Deleted language server {server}"))
