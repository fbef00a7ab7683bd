"""The ``roost`` command line (typer + rich)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
import typer.main
from rich.console import Console
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

import roost
from roost import domains, tracing
from roost.clitools import (
    MAX_PORT,
    configure_cli_logging,
    database_display_url,
    database_url_problem,
    describe_database_problem,
    explain_failure,
    fail,
    open_database,
    prepare_schema,
    settings_problem,
    with_database,
)
from roost.config import Settings, bind_host_problem, get_settings
from roost.db import backup_cli
from roost.db.engine import Database

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
    from pydantic_settings import SettingsError

    try:
        settings = get_settings()
    except (ValidationError, SettingsError) as exc:  # names the variables, never the values
        raise fail("invalid configuration", settings_problem(exc), code=2) from None
    except UnicodeDecodeError:  # pydantic-settings reads the .env file as UTF-8
        raise fail("invalid configuration", f"{Settings.model_config.get('env_file')} (in "
                   "the working directory) is not UTF-8 text", code=2) from None
    _warn_unknown_variables()
    url_problem = database_url_problem(settings) or tracing.settings_problem(settings)
    if url_problem is not None:
        raise fail("invalid configuration", url_problem, code=2)
    configured = logging.getLevelNamesMapping()[settings.log_level.upper()]
    if configured <= logging.DEBUG:
        level = "debug"
    elif verbose:
        level = "info"
    else:
        level = logging.getLevelName(max(configured, logging.WARNING)).lower()
    configure_cli_logging(level, settings.log_json)


# ROOST_ variables that are not settings: read by the docs' loader and the test harness.
_OTHER_VARIABLES = ("ROOST_DOCS_DIR", "ROOST_TEST_")


def _warn_unknown_variables() -> None:
    """A misspelt ROOST_ variable (ROOST_DATABSE_URL) would be silently ignored: named on
    stderr with the setting it may mean.  A warning, not a refusal (another version's
    setting, a wrapper script's own variable)."""
    import difflib
    import os
    import sys

    from roost.tasks.config import WorkerSettings

    known = [f"{cls.model_config.get('env_prefix', '')}{name}".upper()
             for cls in (Settings, WorkerSettings) for name in cls.model_fields]
    env_file = str(Settings.model_config.get("env_file") or "")
    sources = [(name, "") for name in sorted(os.environ)] + [
        (name, f" (in {env_file})") for name in _env_file_names(env_file)]
    for name, where in sources:
        # Settings are read whatever the case (roost_data_dir is ROOST_DATA_DIR): so are
        # misspellings looked for.
        upper = name.upper()
        if not upper.startswith("ROOST_") or upper in known \
                or upper.startswith(_OTHER_VARIABLES):
            continue
        close = difflib.get_close_matches(upper, known, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        print(f"warning: {name}{where} is not a Roost setting{hint}; it is ignored",
              file=sys.stderr)


def _env_file_names(env_file: str) -> list[str]:
    """The variable names the settings' ``.env`` file (in the working directory) sets, as
    pydantic-settings reads it: ``NAME=value`` lines, ``export`` allowed, ``#`` comments.
    A misspelt name there (ROOST_DATABSE_URL=...) was ignored without a word."""
    from pathlib import Path

    path = Path(env_file)
    if not env_file or not path.is_file():
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):  # reported by the settings' own reading
        return []
    names = []
    for line in lines:
        line = line.strip().removeprefix("export ").lstrip()
        name, equals, _ = line.partition("=")
        if equals and name.strip() and not line.startswith("#"):
            names.append(name.strip())
    return sorted(set(names))


def _graceful_server_class() -> type:
    """``roost serve`` exits 0 on SIGTERM and stops PostgreSQL (roost.serving.GracefulServer)."""
    from roost.serving import GracefulServer

    return GracefulServer


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (ROOST_HOST).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=MAX_PORT, help="Port (ROOST_PORT).")
                    ] = None,
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
    from roost.keyfiles import load_keys
    from roost.logging import configure_logging
    from roost.serving import (
        HeadLimitedHttpTools,
        connection_limit,
        listening_socket,
        smtp_socket,
        stopping_on_sigterm,
    )
    from roost.tasks.cli import worker_config
    from roost.tasks.worker import Worker

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    with_worker = settings.serve_worker if worker is None else worker
    processes = settings.serve_workers if workers is None else workers
    bind_host, bind_port = host or settings.host, port or settings.port
    if host is not None and bind_host_problem(host) is not None:  # as ROOST_HOST is checked
        raise fail("invalid argument", f"--host: {bind_host_problem(host)}", code=2)
    if with_worker:
        worker_config(settings)  # ROOST_WORKER_* read now: a mistake is said before any start
    if processes > 1:
        from roost.serving import serve_processes

        with stopping_on_sigterm():
            serve_processes(settings, host=bind_host, port=bind_port,
                            processes=processes, migrate=migrate, with_worker=with_worker,
                            announce=lambda: _print_start_up(settings, bind_host, bind_port,
                                                             starting=True))
        return

    # A key it cannot use, a port in use: said before the database is started or migrated.
    keys = load_keys(settings)
    sock = listening_socket(bind_host, bind_port)
    smtp = smtp_socket(settings)  # handed to the mail listener (agents.mail_startup)

    async def run() -> None:
        db = await open_database(settings, create_schema=False)
        try:
            await prepare_schema(db, migrate=migrate)
            application = create_app(settings, database=db, keys=keys, configure_logs=False)
            application.state.smtp_socket = smtp
            config = uvicorn.Config(
                application, host=bind_host, port=bind_port,
                log_config=None, proxy_headers=settings.forwarded_allow_ips is not None,
                forwarded_allow_ips=settings.forwarded_allow_ips, lifespan="on",
                timeout_graceful_shutdown=settings.serve_shutdown_grace_s,
                http=HeadLimitedHttpTools, limit_concurrency=connection_limit(settings),
            )
            queue_worker = (Worker(db, worker_config(settings),
                                   statement_timeout_ms=settings.db_statement_timeout_ms)
                            if with_worker else None)
            worker_task = asyncio.create_task(queue_worker.run()) if queue_worker else None
            try:
                server = _graceful_server_class()(config)
                serving = asyncio.create_task(server.serve(sockets=[sock]))
                while not server.started and not serving.done():
                    await asyncio.wait({serving}, timeout=0.05)
                if server.started:
                    _print_start_up(settings, bind_host, bind_port)
                await serving
            finally:
                if queue_worker is not None and worker_task is not None:
                    # In-flight jobs get the worker's shutdown time, then are released.
                    queue_worker.stop()
                    await worker_task
        finally:
            await db.dispose()

    # Server.serve() runs on the caller's loop (only uvicorn.run() picks uvloop itself).
    with stopping_on_sigterm(), sock, smtp or contextlib.nullcontext(), \
            asyncio.Runner(loop_factory=_server_loop_factory()) as runner:
        runner.run(run())


def _print_start_up(settings: Settings, host: str, port: int, *, starting: bool = False) -> None:
    """Once, on stderr, for the person who started it: where Roost listens, where its data
    lives, how to sign in the first time (the JSON log lines say the same for machines)."""
    from roost.keyfiles import KEY_DIR_NAME

    shown = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host  # noqa: S104
    base = f"http://{'[' + shown + ']' if ':' in shown else shown}:{port}"
    everywhere = " (all interfaces)" if shown != host else ""
    token = ("ROOST_ADMIN_TOKEN" if settings.admin_token is not None
             else str(settings.data_dir / KEY_DIR_NAME / "admin_token"))
    lines = [
        f"Roost {roost.__version__} {'is starting on' if starting else 'is listening on'} "
        f"{base}{everywhere}",
        f"  console:   {base}/console  (a new install: create the first account there; "
        "it becomes the administrator)",
        f"  API docs:  {base}/docs",
        f"  data dir:  {settings.data_dir}",
        f"  database:  {database_display_url(settings)}",
        f"  operator token (admin rights, for scripts): {token}",
    ]
    err.print(Text("\n".join(lines)), soft_wrap=True, highlight=False)


def _server_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop when installed (uvicorn[standard] brings it on Linux and macOS)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# --- db ---------------------------------------------------------------------------------


def _migrate_to(revision: str, direction: str) -> None:
    """``roost db upgrade|downgrade REVISION``: a revision Alembic cannot go to (unknown,
    not in that direction, a relative step past the end) is one line, exit 1."""
    from alembic.util import CommandError

    from roost.db.migrate import current_revisions, downgrade, migration_state, upgrade

    if not revision.strip():
        raise typer.BadParameter("empty: give a revision (`roost db history` lists them), "
                                 "heads, base or a relative step such as -1",
                                 param_hint="'REVISION'")
    migrate = upgrade if direction == "upgrade" else downgrade

    async def run(db: Database) -> tuple[str, ...]:
        state = await migration_state(db.engine)
        if state.unknown:  # no revision of this Roost is reachable from there
            raise fail(f"cannot {direction} to {revision!r}", state.unknown_reason())
        await migrate(db.engine, revision)
        return await current_revisions(db.engine)

    try:
        at = with_database(run, create_schema=False)
    except CommandError as exc:
        raise fail(f"cannot {direction} to {revision!r}",
                   f"{exc}; `roost db history` lists the revisions") from None
    console.print(f"database at: {', '.join(at) or 'base'}")


@db_app.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument(help="Target revision.")] = "heads") -> None:
    """Apply migrations up to REVISION (default: the latest)."""
    _migrate_to(revision, "upgrade")


# -1 (a relative step) is a revision, not an option.
@db_app.command("downgrade", context_settings={"ignore_unknown_options": True})
def db_downgrade(revision: Annotated[str, typer.Argument(help="Target revision, e.g. -1 or base.")]) -> None:
    """Revert migrations down to REVISION."""
    _migrate_to(revision, "downgrade")


@db_app.command("current")
def db_current() -> None:
    """Show the database's revision and whether it is at head."""
    from roost.db.migrate import migration_state

    state = with_database(lambda db: migration_state(db.engine), create_schema=False)
    status = ("head" if state.at_head else state.unknown_reason() if state.unknown
              else f"behind (head is {', '.join(state.heads)})")
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
    from roost.keyfiles import MissingKeyFile, load_keys

    settings = get_settings()
    table = Table("check", "result", "detail")
    failures = 0

    def row(name: str, ok: bool, detail: str) -> None:
        nonlocal failures
        failures += 0 if ok else 1
        table.add_row(name, "[green]ok[/green]" if ok else "[red]FAIL[/red]", Text(detail))

    data_problem = _data_dir_problem(settings.data_dir)
    row("data dir", data_problem is None, str(settings.data_dir) + (
        f": {data_problem}" if data_problem else ""))
    # Doctor only reports: on a mistyped data dir (or a disk not mounted yet) it must
    # neither generate keys nor initialise an empty cluster, as `roost serve` would.
    has_cluster = (settings.pg_dir / "PG_VERSION").exists()
    no_cluster = settings.uses_embedded_db and not has_cluster
    if data_problem is None:
        try:
            load_keys(settings, create=False)
            row("keys", True, "present (values never shown)")
        except MissingKeyFile as exc:  # fine before the first `roost serve`, not after
            lost = settings.uses_embedded_db and has_cluster
            row("keys", not lost, f"{exc}: restore it from a backup (a new key could not "
                "read what the old one encrypted)" if lost else
                "not generated yet (`roost serve` will)")
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
        where = ", ".join(state.current) or "base"
        row("migrations", state.at_head,
            "at head" if state.at_head else
            f"at {where}: {state.unknown_reason()}" if state.unknown else
            f"at {where}, head is {', '.join(state.heads)}: run 'roost db upgrade'")
        if db.replicas is not None:  # ROOST_DATABASE_REPLICA_URLS: each one's health
            await db.replicas.check()
            for replica in db.replicas.replicas:
                lag = replica.state.lag_s
                row(f"replica {replica.name}", replica.state.usable,
                    replica.state.reason + (f" (lag {lag:.1f} s)" if lag is not None else ""))

    try:
        if no_cluster:
            row("database", False, f"no Roost database in {settings.data_dir} (run "
                "`roost serve` to create one, or check ROOST_DATA_DIR)")
        else:
            with_database(probe, settings, create_schema=False)
    except Exception as exc:  # report, never crash: that is the point of doctor
        found = describe_database_problem(exc, settings)
        if found is None:
            row("database", False, f"{type(exc).__name__}: {exc}")
        elif found[0].startswith("cannot reach "):
            row("database", False, f"unreachable: {found[0].removeprefix('cannot reach ')}: "
                f"{found[1]}")
        else:
            row("database", False, f"{found[0]}: {found[1]}")
    console.print(table)
    if failures:
        raise typer.Exit(1)


def _data_dir_problem(data_dir: Path) -> str | None:
    """Why Roost could not keep its data in ``data_dir``; None when it can (it is a
    writable directory, or one can be created there)."""
    import os

    if data_dir.exists():
        if not data_dir.is_dir():
            return "not a directory"
        return None if os.access(data_dir, os.W_OK | os.X_OK) else "not writable"
    parent = next((p for p in data_dir.parents if p.exists()), None)
    if parent is None or not parent.is_dir():
        return f"cannot be created ({parent} is not a directory)"
    return None if os.access(parent, os.W_OK | os.X_OK) else \
        f"cannot be created ({parent} is not writable)"


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
    """The console script: every command, with the failures a user can fix (the database
    or the data dir cannot be used) as one line instead of a traceback."""
    import os
    import sys

    for arg in sys.argv[1:]:
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:  # bytes the locale could not decode (surrogateescape)
            shown = os.fsencode(arg).decode("utf-8", "backslashreplace")
            fail("invalid argument", f"'{shown}' is not UTF-8 text")
            raise SystemExit(2) from None
    try:
        app()
    except Exception as exc:
        code = explain_failure(exc)
        if code is None:
            raise
        raise SystemExit(code) from None
