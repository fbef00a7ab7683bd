"""The ``roost`` command line (typer + rich)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
import typer.main
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

import roost
from roost import domains
from roost.clitools import fail, with_database
from roost.config import get_settings
from roost.db import backup_cli
from roost.db.engine import Database, create_database

T = TypeVar("T")


class DomainCommands(TyperGroup):
    """The top-level ``roost`` group: a domain's command module is imported only when one
    of its commands runs (``roost users list`` never imports the MCP SDK or the PDF
    writer: about half the start-up time; docs/benchmarks.md, "CLI start-up").

    Contexts and commands are typed ``Any``: recent typer vendors its own click, older
    ones use the click package, and ``typer>=0.12`` allows both."""

    def list_commands(self, ctx: Any) -> list[str]:
        return sorted({*self.commands, *domains.cli_commands()})

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = self.commands.get(cmd_name)
        if command is None and cmd_name in domains.cli_commands():
            command = self._load(cmd_name)
        if command is not None:
            # Every table known before any command runs: an ORM flush resolves foreign
            # keys into any domain's tables.
            domains.import_models()
        return command

    def resolve_command(
        self, ctx: Any, args: list[str],
    ) -> tuple[str | None, Any, list[str]]:
        if args and args[0] not in self.list_commands(ctx):
            for name in domains.cli_commands():  # a typo: suggest from every command
                self.get_command(ctx, name)
        return super().resolve_command(ctx, args)

    def _load(self, cmd_name: str) -> Any:
        providers = domains.cli_commands()
        loaded_from = providers[cmd_name]
        scratch = typer.Typer()
        scratch.callback()(lambda: None)  # a group, even when one command is added
        domains.register_cli(scratch, loaded_from)
        group = typer.main.get_command(scratch)
        assert isinstance(group, TyperGroup)
        loaded = group.commands
        for name, command in loaded.items():
            # The domain's other commands come along, unless another domain adds to them
            # too (identity's `keys` without chat's `rotate-messages` would be incomplete).
            if set(providers[name]) <= set(loaded_from):
                self.commands.setdefault(name, command)
        return loaded[cmd_name]


app = typer.Typer(help="Roost: a self-hosted backend for AI agents.", no_args_is_help=True,
                  cls=DomainCommands)
db_app = typer.Typer(help="Database migrations.", no_args_is_help=True)
schema_app = typer.Typer(help="The schema and the seed designs it implements.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(schema_app, name="schema")
backup_cli.register(app)  # roost backup, roost restore (docs/operations.md)
domains.use_task_handlers()  # commands that enqueue, and the worker, know every task type

console = Console()
err = Console(stderr=True)




def _version(value: bool) -> None:
    if value:
        console.print(f"roost {roost.__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show info log lines (e.g. the embedded "
                           "PostgreSQL starting) on stderr; ROOST_LOG_LEVEL=debug shows all.")
    ] = False,
) -> None:
    """Roost: a self-hosted backend for AI agents."""
    _configure_cli_logging(verbose)


def _configure_cli_logging(verbose: bool) -> None:
    """Commands keep stderr for what the user needs: warnings and errors only, unless
    --verbose or ROOST_LOG_LEVEL=debug.  ``serve`` and ``worker`` log at ROOST_LOG_LEVEL."""
    import logging

    from pydantic import ValidationError

    from roost.logging import configure_logging

    try:
        settings = get_settings()
    except ValidationError as exc:  # name the variables, never echo values (may be secrets)
        problems = "; ".join(
            f"ROOST_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors())
        raise fail("invalid configuration", problems, code=2) from None
    configured = logging.getLevelNamesMapping().get(settings.log_level.upper(), logging.INFO)
    if configured <= logging.DEBUG:
        level = "debug"
    elif verbose:
        level = "info"
    else:
        level = logging.getLevelName(max(configured, logging.WARNING)).lower()
    configure_logging(level, settings.log_json)


def _graceful_server_class() -> type:
    """``roost serve`` exits 0 on SIGTERM and stops PostgreSQL (roost.serving.GracefulServer)."""
    from roost.serving import GracefulServer

    return GracefulServer


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (ROOST_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (ROOST_PORT).")] = None,
    migrate: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Apply pending migrations first.")
    ] = True,
    worker: Annotated[bool | None, typer.Option(
        "--worker/--no-worker", help="Also run a queue worker in this process "
        "(ROOST_SERVE_WORKER, default on): ingestion, agent runs, summaries and schedules "
        "work with this one command. Use --no-worker beside separate `roost worker`s. "
        "With --workers N, each API process runs one.")] = None,
    workers: Annotated[int | None, typer.Option(
        "--workers", min=1, max=64, help="API processes on the one port (ROOST_SERVE_WORKERS, "
        "default 1); above 1 a supervisor runs them and replaces any that dies "
        "(docs/scale.md, \"Many processes\").")] = None,
) -> None:
    """Run the HTTP server (on the embedded PostgreSQL unless ROOST_DATABASE_URL is set)."""
    import uvicorn

    from roost.app import create_app
    from roost.db.migrate import upgrade
    from roost.logging import configure_logging
    from roost.tasks.cli import worker_config
    from roost.tasks.worker import Worker

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    with_worker = settings.serve_worker if worker is None else worker
    processes = settings.serve_workers if workers is None else workers
    if processes > 1:
        from roost.serving import serve_processes

        serve_processes(settings, host=host or settings.host, port=port or settings.port,
                        processes=processes, migrate=migrate, with_worker=with_worker)
        return

    async def run() -> None:
        db = create_database(settings)
        try:
            if migrate:
                await upgrade(db.engine)
            application = create_app(settings, database=db, configure_logs=False)
            config = uvicorn.Config(
                application, host=host or settings.host, port=port or settings.port,
                log_config=None, proxy_headers=settings.forwarded_allow_ips is not None,
                forwarded_allow_ips=settings.forwarded_allow_ips, lifespan="on",
                timeout_graceful_shutdown=settings.serve_shutdown_grace_s,
            )
            queue_worker = (Worker(db, worker_config(settings),
                                   statement_timeout_ms=settings.db_statement_timeout_ms)
                            if with_worker else None)
            worker_task = asyncio.create_task(queue_worker.run()) if queue_worker else None
            try:
                await _graceful_server_class()(config).serve()
            finally:
                if queue_worker is not None and worker_task is not None:
                    # In-flight jobs get the worker's shutdown time, then are released.
                    queue_worker.stop()
                    await worker_task
        finally:
            await db.dispose()

    # Server.serve() runs on the caller's loop (only uvicorn.run() picks uvloop itself).
    with asyncio.Runner(loop_factory=_server_loop_factory()) as runner:
        runner.run(run())


def _server_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# --- db ---------------------------------------------------------------------------------


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "heads") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    from roost.db.migrate import current_revisions, upgrade

    async def run(db: Database) -> tuple[str, ...]:
        await upgrade(db.engine, revision)
        return await current_revisions(db.engine)

    console.print(f"database at: {', '.join(with_database(run)) or 'base'}")


@db_app.command("downgrade")
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")]) -> None:
    """Revert migrations down to REVISION."""
    from roost.db.migrate import current_revisions, downgrade

    async def run(db: Database) -> tuple[str, ...]:
        await downgrade(db.engine, revision)
        return await current_revisions(db.engine)

    console.print(f"database at: {', '.join(with_database(run)) or 'base'}")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and whether it is at head."""
    from roost.db.migrate import migration_state

    state = with_database(lambda db: migration_state(db.engine))
    status = "head" if state.at_head else f"behind (head is {', '.join(state.heads)})"
    console.print(f"{', '.join(state.current) or 'base'} — {status}")


@db_app.command("history")
def db_history() -> None:
    """List migrations, newest first."""
    from roost.db.migrate import history_lines

    for line in history_lines():
        typer.echo(line)


# --- doctor -----------------------------------------------------------------------------


@app.command()
def doctor() -> None:
    """Check configuration, database reachability, pgvector and migrations."""
    from sqlalchemy import text

    from roost.db.migrate import migration_state
    from roost.keyfiles import load_keys

    settings = get_settings()
    table = Table("check", "result", "detail")
    failures = 0

    def row(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        table.add_row(name, "[green]ok[/green]" if ok else "[red]FAIL[/red]", Text(detail))

    row("data dir", True, str(settings.data_dir))
    try:
        load_keys(settings)
        row("keys", True, "present (values never shown)")
    except (OSError, ValueError) as exc:
        row("keys", False, str(exc))

    async def probe(db: Database) -> None:
        source = "embedded" if db.embedded else "external"
        async with db.engine.connect() as conn:
            version: str = (await conn.execute(text("SHOW server_version"))).scalar_one()
            row("database", True, f"{source} PostgreSQL {version}")
            vector = (
                await conn.execute(
                    text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
                )
            ).scalar_one_or_none()
            if vector is None:
                available = (
                    await conn.execute(
                        text("SELECT default_version FROM pg_available_extensions "
                             "WHERE name = 'vector'")
                    )
                ).scalar_one_or_none()
                row("pgvector", available is not None,
                    f"available {available}, not yet created (run 'roost db upgrade')"
                    if available else "not installed on this server")
            else:
                row("pgvector", True, f"version {vector}")
        state = await migration_state(db.engine)
        row("migrations", state.at_head,
            "at head" if state.at_head else
            f"at {', '.join(state.current) or 'base'}, head is {', '.join(state.heads)}: "
            "run 'roost db upgrade'")
        if db.replicas is not None:  # ROOST_DATABASE_REPLICA_URLS: each one's health
            await db.replicas.check()
            for replica in db.replicas.replicas:
                lag = replica.state.lag_s
                row(f"replica {replica.name}", replica.state.usable,
                    replica.state.reason + (f" (lag {lag:.1f} s)" if lag is not None else ""))

    try:
        with_database(probe, settings)
    except Exception as exc:  # report, never crash: that is the point of doctor
        row("database", False, f"unreachable: {type(exc).__name__}: {exc}")
    console.print(table)
    if failures:
        raise typer.Exit(1)


# --- schema -----------------------------------------------------------------------------


@schema_app.command("coverage")
def schema_coverage() -> None:
    """Per seed design: how many of its columns Roost maps (or omits with a reason)."""
    from roost.seedmap import coverage, load_seed_map

    seed_map = load_seed_map()
    rows = coverage(seed_map)
    labels = [seed_map.label(r.seed) for r in rows]
    width = max(len(label) for label in [*labels, "seed"])
    # Plain aligned text: seed names must never be truncated, whatever the width.
    typer.echo(
        f"{'seed':<{width}} {'tables':>6} {'mapped':>7} {'omitted':>8} {'missing':>8} "
        f"{'columns':>8} {'covered':>8}"
    )
    for label, r in zip(labels, rows, strict=True):
        typer.echo(
            f"{label:<{width}} {r.tables:>6} {r.mapped:>7} {r.omitted:>8} {r.missing:>8} "
            f"{r.total:>8} {r.covered_pct:>7.1f}%"
        )


def main() -> None:
    app()
