"""``roost mcp add|ls|sync|check|rm`` and ``roost tools ls|call|embed|search|stats``: the operator's commands.

They act as the system (an administrator): servers added here are global (every user
sees their tools).  Servers are named by name or by id (or a unique id prefix).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text
from sqlalchemy import or_, select

from roost.clitools import (
    MAX_LIST,
    add_text_row,
    every_page,
    fail,
    id_table,
    load_json,
    parse_input,
    print_table,
    printable,
    with_database,
)
from roost.config import get_settings
from roost.db.engine import Database
from roost.db.lookup import id_starts_with
from roost.errors import NotFound, RoostError
from roost.keyfiles import load_keys
from roost.knowledge.config import KnowledgeConfig
from roost.principal import SYSTEM
from roost.security.crypto import SecretBox
from roost.tools import analytics, calls, registry, search, servers
from roost.tools.config import ToolsConfig
from roost.tools.lsp_cli import lsp_app
from roost.tools.models import McpServer
from roost.tools.schemas import NAME_PATTERN, McpServerCreate

console = Console()
err_console = Console(stderr=True)
T = TypeVar("T")

mcp_app = typer.Typer(help="MCP servers: register, discover tools, check health.",
                      no_args_is_help=True)
tools_app = typer.Typer(help="The tool registry: list and call tools.", no_args_is_help=True)


def _run(fn: Callable[[Database, ToolsConfig, SecretBox], Awaitable[T]]) -> T:
    settings = get_settings()
    cfg = ToolsConfig.from_settings(settings)
    box = SecretBox.from_keys(load_keys(settings).secrets_key)

    async def go(db: Database) -> T:
        return await fn(db, cfg, box)

    try:
        return with_database(go, settings)
    except RoostError as exc:
        raise fail(exc.title, exc.detail) from exc


def _pairs(values: list[str] | None, what: str) -> dict[str, str]:
    """``KEY=VALUE`` options as a dict; a malformed one is named by its option and, for a
    header written ``Name: value``, its name, never by its value (a secret, often)."""
    out: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        # No name holds ':' or a space: "Authorization: Bearer <base64>=" is the header
        # form, split at the token's padding, and its KEY is mostly the secret.
        if not sep or ":" in key or " " in key:
            name, colon, _ = item.partition(":")
            hint = (f" (write {name.strip()}=VALUE, not {name.strip()}: VALUE)"
                    if colon and name.strip() and " " not in name.strip() else "")
            problem = "has no '='" if not sep else "has ':' or a space in its KEY"
            raise fail("Invalid option", f"{what} must be KEY=VALUE; one {problem}{hint}")
        if not key:
            raise fail("Invalid option", f"{what} must be KEY=VALUE; one has an empty KEY")
        out[key] = value
    return out


async def _server_id(db: Database, ref: str) -> uuid.UUID:
    async with db.transaction() as session:
        rows = (await session.scalars(select(McpServer.id).where(or_(
            McpServer.name == ref, id_starts_with(McpServer.id, ref)
        )).limit(3))).all()
    if not rows:
        raise NotFound(f"no MCP server is named {ref!r} or has an id starting with it")
    if len(rows) > 1:
        raise NotFound(f"{ref!r} names several MCP servers; use the full id")
    return rows[0]


@mcp_app.command("add")
def add_command(
    name: Annotated[str, typer.Argument(help="Server name (letters, digits, . _ -)")],
    command: Annotated[str | None, typer.Option(help="stdio: the executable to run")] = None,
    arg: Annotated[list[str] | None, typer.Option("--arg", help="stdio: one argument (repeat)")] = None,
    env: Annotated[list[str] | None, typer.Option("--env", help="stdio: KEY=VALUE (repeat)")] = None,
    url: Annotated[str | None, typer.Option(help="streamable_http: the MCP endpoint")] = None,
    header: Annotated[list[str] | None, typer.Option(
        "--header", help="streamable_http: NAME=VALUE (repeat)")] = None,
    description: Annotated[str | None, typer.Option(help="What the server is for")] = None,
) -> None:
    """Register a global MCP server (give --command for stdio or --url for streamable HTTP)."""
    if (command is None) == (url is None):
        raise fail("Invalid options", "give either --command (stdio) or --url (streamable HTTP)")
    body = parse_input(McpServerCreate, dict(
        name=name, transport="stdio" if command else "streamable_http", command=command,
        args=arg or [], env=_pairs(env, "--env"), url=url, headers=_pairs(header, "--header"),
        description=description, is_global=True,
    ))

    async def go(db: Database, cfg: ToolsConfig, box: SecretBox) -> McpServer:
        async with db.transaction() as session:
            return await servers.create_server(session, SYSTEM, cfg, box, body)

    row = _run(go)
    console.print(Text(f"Registered MCP server {row.name} ({row.id}); discover its tools "
                       f"with `roost mcp sync {row.name}`"))


@mcp_app.command("ls")
def ls_command() -> None:
    """List every MCP server (all tenants)."""
    async def go(db: Database, cfg: ToolsConfig, box: SecretBox) -> list[McpServer]:
        async with db.transaction() as session:
            return await every_page(lambda cursor: servers.list_servers(
                session, SYSTEM, limit=MAX_LIST, cursor=cursor))

    table = id_table("id", "name", "owner", "transport", "endpoint", "health", "latency ms",
                     wrap=("endpoint",))
    for row in _run(go):
        add_text_row(table, str(row.id), row.name, str(row.user_id) if row.user_id else "global",
                     row.transport, row.url or " ".join([row.command or "", *map(str, row.args)]),
                     row.health_status, "" if row.latency_ms is None else str(row.latency_ms))
    print_table(console, table)


@mcp_app.command("sync")
def sync_command(server: Annotated[str, typer.Argument(help="Server name or id")]) -> None:
    """Discover the server's tools and update the registry."""
    async def go(db: Database, cfg: ToolsConfig, box: SecretBox) -> servers.SyncSummary:
        return await servers.sync_server(db, SYSTEM, cfg, box, await _server_id(db, server))

    found = _run(go)
    # Text: names and reasons come from the server, and brackets in them are not markup.
    console.print(Text(f"{printable(found.server.name)}: {len(found.added)} added, {len(found.updated)} "
                       f"updated, {len(found.unavailable)} unavailable, "
                       f"{len(found.skipped)} skipped"))
    for name, reason in found.skipped.items():
        console.print(Text(f"  skipped {printable(name)}: {printable(reason)}"))


@mcp_app.command("check")
def check_command(server: Annotated[str, typer.Argument(help="Server name or id")]) -> None:
    """Health check: connect, initialize, list tools."""
    async def go(db: Database, cfg: ToolsConfig, box: SecretBox) -> McpServer:
        return await servers.check_server(db, SYSTEM, cfg, box, await _server_id(db, server))

    row = _run(go)
    console.print(Text(f"{printable(row.name)}: {row.health_status}"
                       + (f" in {row.latency_ms} ms" if row.health_status == "healthy" else
                          f": {printable(row.health_error or '')}")))
    if row.health_status != "healthy":
        raise typer.Exit(1)


@mcp_app.command("rm")
def rm_command(server: Annotated[str, typer.Argument(help="Server name or id")]) -> None:
    """Delete a server and its tools (their tool runs stay)."""
    async def go(db: Database, cfg: ToolsConfig, box: SecretBox) -> None:
        server_id = await _server_id(db, server)
        async with db.transaction() as session:
            await servers.delete_server(session, SYSTEM, server_id)

    _run(go)
    console.print(Text(f"Deleted MCP server {server}"))


def _first_line(description: str | None) -> str:
    """A tool description's first line, for a table cell."""
    lines = (description or "").strip().splitlines()
    return lines[0] if lines else ""


@tools_app.command("ls")
def tools_ls_command(
    server: Annotated[str | None, typer.Option(help="Only this MCP server's tools")] = None,
) -> None:
    """List tools (built-ins and every server's)."""
    async def go(db: Database, cfg: ToolsConfig, box: SecretBox) -> list[Any]:
        server_id = await _server_id(db, server) if server else None
        async with db.transaction() as session:
            return await every_page(lambda cursor: registry.list_tools(
                session, SYSTEM, server_id=server_id, limit=MAX_LIST, cursor=cursor))

    table = id_table("id", "name", "kind", "available", "description", wrap=("description",))
    for tool in _run(go):
        add_text_row(table, str(tool.id), tool.name, tool.kind,
                     "yes" if tool.available else "no", _first_line(tool.description))
    print_table(console, table)


def _full_id(text: str) -> uuid.UUID | None:
    """``text`` as a tool id when it is a whole id as the tables print it (what the "call
    it by id" error asks for); anything else is a tool name."""
    try:
        value = uuid.UUID(text)
    except ValueError:
        return None
    return value if str(value) == text.lower() else None


@tools_app.command("call")
def tools_call_command(
    name: Annotated[str, typer.Argument(help="Tool name, or its full id")],
    arguments: Annotated[str, typer.Option("--args", help="Arguments as a JSON object")] = "{}",
    server: Annotated[str | None, typer.Option(help="The MCP server, when several offer it")] = None,
) -> None:
    """Call a tool (by name, or by id when several have the name) as the operator and
    print its result (the run is recorded)."""
    tool_id = _full_id(name)
    if tool_id is not None and server is not None:
        raise fail("Invalid options", "a tool id names one tool: give it without --server")
    # Blank, or no server's name at all: it would match no server ("no tool named ...").
    if server is not None and re.fullmatch(NAME_PATTERN, server) is None:
        raise fail("Invalid --server", "must name an MCP server (letters, digits, . _ -)")
    parsed = load_json(arguments, "Invalid --args")
    if not isinstance(parsed, dict):
        raise fail("Invalid --args", "must be a JSON object")

    try:
        knowledge: KnowledgeConfig | None = KnowledgeConfig.from_settings(get_settings())
    except RoostError:
        knowledge = None  # only the knowledge_search tool needs it

    async def go(db: Database, cfg: ToolsConfig, box: SecretBox) -> Any:
        return await calls.call_tool(db, SYSTEM, cfg, box, tool_id=tool_id,
                                     name=None if tool_id else name, server=server,
                                     arguments=parsed, knowledge=knowledge)

    run = _run(go)
    console.print_json(json.dumps(run.output), ensure_ascii=True)


def _knowledge() -> KnowledgeConfig | None:
    try:
        return KnowledgeConfig.from_settings(get_settings())
    except RoostError:
        return None


@tools_app.command("embed")
def tools_embed_command() -> None:
    """Embed now the descriptions of every tool not embedded yet or changed since."""
    try:
        spec = search.require_embedder(_knowledge())
    except RoostError as exc:
        raise fail(exc.title, exc.detail) from exc

    async def go(db: Database, cfg: ToolsConfig, box: SecretBox) -> search.EmbedReport:
        with Progress(TextColumn("embedding tool descriptions"), BarColumn(),
                      MofNCompleteColumn(), TimeElapsedColumn(), console=err_console,
                      transient=True) as bar:
            job = bar.add_task("embed", total=None)

            def progress(done: int, total: int) -> None:
                bar.update(job, completed=done, total=total)

            return await search.embed_descriptions(db, spec, progress=progress)

    report = _run(go)
    console.print(f"Embedded {report.embedded} tool description(s) with {report.model}; "
                  f"neighbour similarity of {report.neighbours} tool(s) updated")


@tools_app.command("search")
def tools_search_command(
    query: Annotated[str, typer.Argument(help="What the tool should do")],
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=search.MAX_K,
                                   help="How many tools")] = search.DEFAULT_K,
) -> None:
    """Tools whose description best matches QUERY (embedded tools only, best first)."""
    knowledge = _knowledge()
    try:
        search.require_embedder(knowledge)
    except RoostError as exc:
        raise fail(exc.title, exc.detail) from exc

    async def go(db: Database, cfg: ToolsConfig, box: SecretBox) -> list[search.ToolHit]:
        async with db.transaction() as session:
            return await search.search_tools(session, SYSTEM, knowledge, query, k)

    table = id_table("id", "name", "score", "description", wrap=("description",))
    for hit in _run(go):
        tool = hit.tool
        add_text_row(table, str(tool.id), tool.name, f"{hit.score:.3f}",
                     _first_line(tool.description))
    print_table(console, table)


@tools_app.command("stats")
def tools_stats_command(
    window: Annotated[str | None, typer.Option(help="e.g. 90m, 24h (default), 7d; at most 31d")] = None,
    since: Annotated[str | None, typer.Option(help="Instead of --window: an ISO 8601 "
                                              "timestamp with its UTC offset")] = None,
    sort: Annotated[str, typer.Option(help="calls, error_rate or p95 (descending)")] = "calls",
    tool: Annotated[str | None, typer.Option(help="Only this tool (by name)")] = None,
    user: Annotated[str | None, typer.Option(help="Only this user's runs (user id)")] = None,
    limit: Annotated[int, typer.Option(min=1, max=analytics.MAX_LIMIT)] = analytics.DEFAULT_LIMIT,
) -> None:
    """Per tool over a window: calls, errors, timeouts, error rate, p50/p95 duration (all users)."""
    try:
        user_id = uuid.UUID(user) if user else None
    except ValueError:
        raise fail("Invalid --user", f"{user!r} is not a user id") from None

    async def go(db: Database, cfg: ToolsConfig, box: SecretBox) -> analytics.Report:
        order = analytics.check_sort(sort)
        span = analytics.resolve_window(window, since)
        async with db.transaction() as session:
            return await analytics.tool_report(session, SYSTEM, span, user_id=user_id,
                                               tool_name=tool, sort=order, limit=limit)

    report = _run(go)
    table = id_table("tool", "tool id", "calls", "ok", "errors", "timeouts", "error rate",
                     "p50 ms", "p95 ms", "last call")

    def ms(value: float | None) -> str:
        return "" if value is None else f"{value:.0f}"

    for row in report.items:
        add_text_row(table, row.tool_name, str(row.tool_id) if row.tool_id else "(deleted)",
                     str(row.calls), str(row.successes), str(row.errors), str(row.timeouts),
                     "" if row.error_rate is None else f"{row.error_rate:.1%}",
                     ms(row.p50_ms), ms(row.p95_ms),
                     row.last_called_at.strftime("%Y-%m-%d %H:%M:%S") if row.last_called_at else "")
    console.print(f"Tool runs from {report.window.since:%Y-%m-%d %H:%M:%S} to "
                  f"{report.window.until:%Y-%m-%d %H:%M:%S} UTC"
                  + (f", user {report.user_id}" if report.user_id else ", all users"))
    print_table(console, table)
    if not report.items:
        console.print("No tool runs in this window.")


def register(app: typer.Typer) -> None:
    """Add ``roost mcp``, ``roost tools`` and ``roost lsp`` (``roost.domains`` calls this)."""
    app.add_typer(mcp_app, name="mcp")
    app.add_typer(tools_app, name="tools")
    app.add_typer(lsp_app, name="lsp")
