"""Helpers every ``roost`` sub-command shares (kept apart from ``roost.cli`` so domain
CLI modules can import them without importing the whole command tree).

Failures a user can fix are one line on stderr and a non-zero exit, never a traceback:
a domain error (:func:`run_in_transaction`, ``identity.cliscope.run_as``), a database
that cannot be used (:func:`explain_failure`, which ``roost.cli.main`` applies to every
command), a file an option names (:func:`read_text` and its siblings, from
``roost.db.cliio``), a number out of its bounds (the ``MAX_*`` below, as typer's
``min``/``max``: a usage error, exit 2)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, TypeVar

import structlog
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, SettingsError
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from sqlalchemy import select, text
from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from roost.config import Settings, get_settings
from roost.context import RequestContext, set_context
from roost.db.cliio import fail as fail
from roost.db.cliio import load_json as load_json
from roost.db.cliio import os_reason
from roost.db.cliio import printable as printable
from roost.db.cliio import read_bytes as read_bytes
from roost.db.cliio import read_text as read_text
from roost.db.cliio import run_stoppable as run_stoppable
from roost.db.cliio import stdin as stdin
from roost.db.cliio import write_bytes as write_bytes
from roost.db.embedded import EmbeddedServerError
from roost.db.engine import Database, create_database, to_async_url, url_number_options
from roost.db.lookup import id_starts_with, is_id_prefix
from roost.db.replicas import describe
from roost.errors import BadRequest, NotFound, RoostError
from roost.keyfiles import KeyConfigError

T = TypeVar("T")
err = Console(stderr=True)
log = structlog.get_logger(__name__)

# --- bounds of numeric options (typer's min/max: out of bounds is a usage error) ---------
MAX_DAYS: Final = 36_500  # a hundred years: expiries, retention, ages
MAX_SECONDS: Final = 86_400.0  # a day: leases, timeouts, waits
MAX_INT32: Final = 2**31 - 1  # a PostgreSQL integer column (version numbers)
MAX_PORT: Final = 65_535
MAX_LIST: Final = 500  # rows a listing prints (the API's page size)


# --- logging ------------------------------------------------------------------------------

_cli_log = {"level": "warning", "json": True}  # what roost.cli's callback configured


def configure_cli_logging(level: str, json: bool) -> None:
    """Commands log warnings and errors only, unless -v or ROOST_LOG_LEVEL=debug."""
    from roost.logging import configure_logging

    _cli_log.update(level=level, json=json)
    configure_logging(level, json)


@contextmanager
def reported_here() -> Iterator[None]:
    """For work whose failures the command prints itself, in words: no JSON error line
    saying the same (unless the user asked for the logs with -v or a debug level)."""
    from roost.logging import configure_logging

    level, json = str(_cli_log["level"]), bool(_cli_log["json"])
    if level in ("debug", "info"):
        yield
        return
    configure_logging("critical", json)
    try:
        yield
    finally:
        configure_logging(level, json)


# --- the database -------------------------------------------------------------------------


async def every_page(
    page: Callable[[str | None], Awaitable[tuple[list[T], str | None]]],
) -> list[T]:
    """Every row of a listing, page after page (``page(cursor)``) until its last: a
    listing command prints all, not the first page."""
    rows: list[T] = []
    cursor: str | None = None
    while True:
        found, cursor = await page(cursor)
        rows.extend(found)
        if cursor is None:
            return rows


def with_database(fn: Callable[[Database], Awaitable[T]], settings: Settings | None = None,
                  *, create_schema: bool = True) -> T:
    """Open the configured database (see :func:`open_database`), run ``fn``."""

    async def run() -> T:
        db = await open_database(settings or get_settings(), create_schema=create_schema)
        try:
            return await fn(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


async def open_database(settings: Settings, *, create_schema: bool = True) -> Database:
    """The configured database (starting the embedded one if needed), connected once so
    that one that cannot be used fails here, before any work (:func:`explain_failure`
    says why in one line).

    ``create_schema``: an embedded database that was never migrated (a new data dir used
    before ``roost serve``) gets its tables now, as ``roost serve`` would; an external
    one, or one at an older revision, is left to ``roost db upgrade``."""
    db = create_database(settings)  # (its engines hide a failed statement's parameters)
    try:
        if create_schema and db.embedded is not None:
            await _create_embedded_schema(db)
        else:
            async with db.engine.connect():
                pass
    except BaseException:
        await db.dispose()
        raise
    return db


async def prepare_schema(db: Database, *, migrate: bool) -> None:
    """For ``roost serve`` (one process, or the supervisor of several): apply the pending
    migrations, or with ``--no-migrate`` refuse a database not at this Roost's head (it
    would fail request by request on a missing table or column).  A database a newer
    Roost migrated is refused either way, in one line (Alembic's traceback otherwise)."""
    from roost.db.migrate import migration_state, upgrade

    state = await migration_state(db.engine)
    if state.unknown:
        raise fail("cannot use the database", state.unknown_reason())
    if migrate:
        await upgrade(db.engine)
        return
    if not state.current:
        raise fail("the database is not migrated", "it has no Roost tables: run "
                   "`roost db upgrade`, or `roost serve` without --no-migrate")
    if not state.at_head:
        raise fail("the database is not at this Roost's schema",
                   f"database at {', '.join(state.current)}, head is {', '.join(state.heads)}: "
                   "run `roost db upgrade`, or `roost serve` without --no-migrate")


async def _create_embedded_schema(db: Database) -> None:
    from roost.db.migrate import upgrade

    async with db.engine.connect() as conn:
        never_migrated = await conn.scalar(text("SELECT to_regclass('alembic_version') IS NULL"))
    if never_migrated:  # (upgrade serialises migrators: one creates, the others wait)
        log.info("embedded_database_schema_creating",
                 pgdata=str(db.embedded.pgdata if db.embedded else ""))
        await upgrade(db.engine)


def run_in_transaction(fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """``fn(session)`` in one transaction, as the operator, with a CLI correlation id;
    a domain error, or a statement the database refused (a value too long for its
    column), becomes one red line and exit code 1."""

    async def in_tx(db: Database) -> T:
        set_context(RequestContext(request_id=f"cli-{uuid.uuid4().hex[:12]}",
                                   user_agent="roost-cli"))
        async with db.transaction() as session:
            return await fn(session)

    try:
        return with_database(in_tx)
    except RoostError as exc:
        raise fail(exc.title, exc.detail) from exc
    except DBAPIError as exc:
        if describe_database_problem(exc, get_settings()) is not None:
            raise  # a database that cannot be used: explain_failure says so
        # The database's reason only ("<class 'asyncpg…'>: value too long for …"), never
        # the statement or its parameters.
        reason = (str(exc.orig).strip().splitlines() or [type(exc.orig).__name__])[0]
        raise fail("the database refused the change", reason.split("'>: ", 1)[-1]) from None


def settings_problem(exc: BaseException) -> str | None:
    """What is wrong with the ROOST_* settings when ``exc`` says so (pydantic's validation,
    pydantic-settings' parsing of a JSON value, a key Roost cannot use), naming the
    variables, never their values (they may be secrets); None for any other error."""
    prefix = _env_prefix(exc.title) if isinstance(exc, ValidationError) else None
    if isinstance(exc, ValidationError) and prefix is not None:
        return "; ".join(
            f"{prefix}{str(e['loc'][0]).upper() if e['loc'] else 'SETTINGS'}: {e['msg']}"
            for e in exc.errors(include_url=False))
    if isinstance(exc, SettingsError):  # 'error parsing value for field "x" from source ...'
        field = re.search(r'field "([^"]+)"', str(exc))
        name = f"ROOST_{field.group(1).upper()}" if field else "a ROOST_ setting"
        cause = exc.__cause__
        if isinstance(cause, json.JSONDecodeError):  # its message has no part of the value
            return f"{name}: not valid JSON ({cause.msg} at character {cause.pos})"
        return f"{name}: cannot be parsed"
    if isinstance(exc, KeyConfigError):
        return str(exc)
    return None


def _env_prefix(title: str) -> str | None:
    """The variables' prefix of the settings class a ValidationError is titled after
    (Settings: ROOST_, a domain's own, such as the worker's: ROOST_WORKER_); None when
    the error is not about settings (a request body, a file's contents)."""
    todo: list[type[BaseSettings]] = [BaseSettings]
    while todo:
        cls = todo.pop()
        prefix = cls.model_config.get("env_prefix") or ""
        if cls.__name__ == title and prefix.startswith("ROOST_"):
            return prefix
        todo.extend(cls.__subclasses__())
    return None


def database_url_problem(settings: Settings) -> str | None:
    """What is wrong with ROOST_DATABASE_URL (or ROOST_DATABASE_REPLICA_URLS), without
    echoing it (it holds a password); None when they are PostgreSQL URLs."""
    expected = "expected postgresql://USER:PASSWORD@HOST:PORT/DATABASE"
    for name, value in (("ROOST_DATABASE_URL", settings.database_url),
                        ("ROOST_DATABASE_REPLICA_URLS", settings.database_replica_urls)):
        if value is None:
            continue
        raw = value.get_secret_value()
        for part in raw.split(",") if name.endswith("URLS") else [raw]:
            if not part.strip() and name.endswith("URLS"):
                continue
            try:
                scheme = make_url(part.strip()).drivername
            except Exception:  # sqlalchemy's ArgumentError, or a ValueError from a port
                return f"{name}: not a URL ({expected})"
            try:
                url = to_async_url(part.strip())
            except ValueError:
                return f"{name}: not a PostgreSQL URL (scheme {scheme!r}; {expected})"
            if url.port is not None and not 0 < url.port <= MAX_PORT:
                # (0 would quietly be 5432, 99999 a "connection refused")
                return f"{name}: the port must be 1-{MAX_PORT} ({expected})"
            unknown = sorted(set(url.query) - _DRIVER_OPTIONS)
            if unknown:  # a replica's would only show as an unusable replica, at run time
                return _no_driver_option(name, unknown[0])
            try:
                url_number_options(url)
            except ValueError as exc:  # its message names ROOST_DATABASE_URL
                return str(exc).replace("ROOST_DATABASE_URL", name, 1)
            problem = _connect_arguments_problem(url)
            if problem is not None:
                return f"{name}: {problem} ({expected})"
    return None


def _connect_arguments_problem(url: URL) -> str | None:
    """What the driver would refuse in ``url``'s ``host``/``port`` query options (a port
    that is no number, several hosts written two ways...), found before any engine is
    made: creating one raised it as a traceback at start (``roost doctor`` blamed the
    primary for a replica's)."""
    try:
        dialect = PGDialect_asyncpg()  # type: ignore[no-untyped-call]
        _, arguments = dialect.create_connect_args(url)  # type: ignore[no-untyped-call]
    except ArgumentError as exc:
        return f"host and port options the driver refuses: {exc}"
    port = arguments.get("port")
    ports = port if isinstance(port, list) else [port]
    if any(p is not None and not 0 < p <= MAX_PORT for p in ports):
        return f"the port must be 1-{MAX_PORT}"
    return None


# What a URL's query may set: asyncpg.connect's keywords, and SQLAlchemy's asyncpg
# dialect's own (libpq's sslmode, application_name... are not among them).
_DRIVER_OPTIONS: Final = frozenset({
    "host", "port", "passfile", "service", "servicefile", "timeout", "statement_cache_size",
    "max_cached_statement_lifetime", "max_cacheable_statement_size", "command_timeout",
    "ssl", "direct_tls", "server_settings", "target_session_attrs", "krbsrvname", "gsslib",
    "prepared_statement_cache_size", "prepared_statement_name_func",
    # asyncpg.connect takes these too (never printed).  Not database=: `roost backup`'s
    # client programs read the URL's path, and would copy another database than Roost's.
    "user", "password",
})


def _no_driver_option(name: str, option: str) -> str:
    hint = ("; for SSL write ssl=require, not sslmode=" if option.startswith("ssl") else
            "; name the database in the URL's path (/name)" if option == "database" else "")
    return f"{name}: the driver (asyncpg) has no option {option}{hint}"


def _database_url(settings: Settings) -> URL | None:
    if settings.database_url is None:
        return None
    try:
        return make_url(settings.database_url.get_secret_value())
    except Exception:
        return None


def database_where(settings: Settings) -> str:
    """The database a command uses, for a message: ``host:port``, a socket, or the
    embedded server's directory; never the password."""
    url = _database_url(settings)
    if settings.database_url is None:
        return f"the embedded database in {settings.pg_dir}"
    if url is None:
        return "ROOST_DATABASE_URL"
    host = url.host or str(url.query.get("host") or "") or "localhost"
    port = 5432 if url.port is None else url.port  # as given, even out of range
    return f"{host}:{port}" if not host.startswith("/") else f"the socket in {host}"


def _sets_ssl(settings: Settings) -> bool:
    """ROOST_DATABASE_URL asks for SSL itself (without: asyncpg only tries it)."""
    url = _database_url(settings)
    return url is not None and bool({"ssl", "direct_tls"} & set(url.query))


def database_display_url(settings: Settings) -> str:
    """The external database's URL without its password, or where the embedded one lives."""
    url = _database_url(settings)
    if url is None:
        return f"embedded PostgreSQL in {settings.pg_dir}"
    return describe(url)


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps (SQLAlchemy's ``orig``, ``__cause__``, ``__context__``)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop(0)
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        orig = getattr(e, "orig", None)
        todo.extend([orig if isinstance(orig, BaseException) else None,
                     e.__cause__, e.__context__])


def _while_connecting(exc: BaseException, module: str = "asyncpg.") -> bool:
    """Raised while the PostgreSQL driver was connecting (its frames are in the way)."""
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(module):
            return True
        tb = tb.tb_next
    return False


def describe_database_problem(exc: BaseException, settings: Settings | None = None
                              ) -> tuple[str, str, int] | None:
    """``(title, message, exit code)`` when ``exc`` says the database cannot be used
    (unreachable, refusing the connection, the sign-in or SSL, missing, not migrated,
    read-only, the user without a right it needs, its URL's options wrong); None
    otherwise.  The message is the database's first line, never the statement."""
    settings = settings or get_settings()
    where = database_where(settings)
    embedded = settings.database_url is None
    check = ("check ROOST_DATA_DIR, or run `roost doctor`" if embedded
             else "is it running? check ROOST_DATABASE_URL")
    reach = where if embedded else f"the database at {where}"
    errors = list(_causes(exc))
    coded = [e for e in errors if isinstance(getattr(e, "sqlstate", None), str)]
    if coded:
        found = coded[-1]  # the driver's own error, not SQLAlchemy's wrapping of it
        state: str = found.sqlstate  # type: ignore[attr-defined]
        said = str(found).splitlines()[0] if str(found) else state
        # Undefined table / schema, or one of the functions Roost's migrations create
        # (roost_audit_link...): any other undefined function or operator is a bug.
        if state in ("42P01", "3F000") or (state == "42883" and "roost_" in said):
            return ("the database is not migrated",
                    f"{said} in {reach}: run `roost db upgrade`"
                    + ("" if not embedded else " (or `roost serve`, which applies migrations)"),
                    1)
        if state.startswith("28"):  # invalid authorization
            return (f"{reach} refused the sign-in",
                    f"{said}; check the user and password in ROOST_DATABASE_URL", 1)
        if state == "3D000":  # invalid catalog name
            return (f"cannot use {reach}",
                    f"{said}; create it, or check the database name in ROOST_DATABASE_URL", 1)
        if state.startswith("08") or state in ("53300", "57P01", "57P02", "57P03"):
            return f"cannot reach {reach}", f"{said}; {check}", 1
        if state == "25006":  # read_only_sql_transaction: a standby, or a read-only default
            return (f"{reach} is read-only", f"{said}; "
                    + ("check ROOST_DATA_DIR" if embedded else "point ROOST_DATABASE_URL at "
                       "the primary, or turn off default_transaction_read_only"), 1)
        if state == "42501" and said.startswith("permission denied"):  # not an RLS refusal
            return (f"{reach} refused", f"{said}; the user of ROOST_DATABASE_URL lacks the "
                    "right (migrations need the database's owner)", 1)
        return None
    for e in errors:
        if type(e).__name__ == "ClientConfigurationError" and _while_connecting(e):
            return "invalid configuration", f"ROOST_DATABASE_URL: {e}", 2  # its options
        if isinstance(e, TypeError) and "unexpected keyword argument" in str(e) \
                and _while_connecting(e, "sqlalchemy.dialects.postgresql.asyncpg"):
            option = str(e).rpartition("argument")[2].strip()
            return "invalid configuration", _no_driver_option("ROOST_DATABASE_URL", option), 2
        if isinstance(e, OSError) and _while_connecting(e):
            if isinstance(e, TimeoutError):
                reason = f"no answer within {settings.db_connect_timeout_s:g} s"
            elif "SSL" in str(e) and _sets_ssl(settings):
                return (f"cannot reach {reach}", "the server refused SSL; enable SSL on the "
                        "server, or drop the ssl option of ROOST_DATABASE_URL", 1)
            elif "SSL" in str(e):  # asyncpg's SSL request (ssl=prefer) got no PostgreSQL reply
                return (f"cannot reach {reach}", f"no PostgreSQL server answered at {where} "
                        "(is this the right port?)", 1)
            elif isinstance(e, ConnectionRefusedError):
                reason = "connection refused"
            elif isinstance(e, FileNotFoundError):
                reason = "no server socket there"
            else:
                reason = os_reason(e) if e.strerror else str(e)
            return f"cannot reach {reach}", f"{reason}; {check}", 1
    return None


def explain_failure(exc: BaseException) -> int | None:
    """For an exception no command caught: when it is a problem the user can fix (the
    database cannot be used, the data dir cannot be), print it as one line and return
    the exit code; None for anything else (a bug: its traceback is what helps)."""
    for e in _causes(exc):
        problem = settings_problem(e)
        if problem is not None:
            fail("invalid configuration", problem, code=2)
            return 2
    try:
        settings = get_settings()
    except (ValidationError, SettingsError, UnicodeDecodeError):
        return None
    for e in _causes(exc):
        if isinstance(e, EmbeddedServerError):
            fail("cannot start the embedded database", e)
            return 1
    found = describe_database_problem(exc, settings)
    if found is not None:
        title, message, code = found
        fail(title, message, code=code)
        return code
    data_dir = settings.data_dir.absolute()
    for e in _causes(exc):
        if isinstance(e, OSError) and e.filename is not None:
            path = Path(str(e.filename)).absolute()
            if path == data_dir or data_dir in path.parents:
                what = (f"{data_dir} is not a directory" if data_dir.exists()
                        and not data_dir.is_dir() else f"{path}: {os_reason(e)}")
                fail("cannot use the data dir", f"{what} (ROOST_DATA_DIR must be a directory "
                     "Roost can write, or where one can be created)")
                return 1
    return None


def id_table(*columns: str, wrap: Sequence[str] = ()) -> Table:
    """A table that loses nothing: ids, times and names are never cut or ellipsed; only
    the free-text ``wrap`` columns wrap (folding long words) to fit (see print_table)."""
    table = Table()
    for name in columns:
        if name in wrap:
            table.add_column(name, overflow="fold")
        else:
            table.add_column(name, no_wrap=True, overflow="ignore")
    return table


def add_text_row(table: Table, *cells: str) -> None:
    """Add a row whose cells print as they are: rich reads brackets in a plain string as
    markup (``[bold]`` styles, a stray ``[/]`` is a MarkupError), and stored text (an
    error message, a name) must neither crash the table nor change its look, nor reach
    the terminal as a control sequence (:func:`printable`)."""
    table.add_row(*(Text(printable(cell)) for cell in cells))


def print_table(console: Console, table: Table) -> None:
    """Print ``table``; when it does not fit the terminal, only its wrapping columns shrink
    and, if that is not enough, the lines are printed wider than the terminal."""
    # Measured without the terminal's limit: the narrowest the table can be with every
    # no-wrap cell whole and no word cut, wider than the terminal if it must.
    unlimited = console.options.update_width(10_000)
    for column in table.columns:
        if column.no_wrap:
            column.min_width = max(Measurement.get(console, unlimited, cell).maximum
                                   for cell in [column.header, *column.cells])
    needed = Measurement.get(console, unlimited, table).minimum
    if needed <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = needed  # print(width=) is capped at the console's width
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


async def resolve_id(session: AsyncSession, column: Any, text: str, what: str,
                     *, where: Any = None) -> uuid.UUID:
    """The id in ``column`` that ``text`` (a full id or a unique prefix of one, as the
    tables print them) names, among the rows ``where`` selects (a persona's secrets: not
    another persona's with the same start); a clear error when none or several do."""
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    if not is_id_prefix(text):
        raise BadRequest(f"{text!r} is not an id or the start of one (hex digits and dashes)")
    rows: Sequence[Any] = (await session.scalars(
        # distinct: a column may repeat an id (a job dead-lettered twice has two letters)
        select(column).where(id_starts_with(column, text),
                             *(() if where is None else (where,)))
        .distinct().order_by(column).limit(6)
    )).all()
    if not rows:
        raise NotFound(f"no {what} id starts with {text!r}")
    if len(rows) > 1:
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise BadRequest(f"{text!r} is the start of several {what} ids ({shown}); "
                         "give more characters")
    return uuid.UUID(str(rows[0]))


M = TypeVar("M", bound=BaseModel)


def parse_input(model: type[M], values: dict[str, Any]) -> M:
    """The options given (None: not given) validated by the API's own body model, so the
    CLI refuses what the API refuses; the first problems as one red line, exit code 1."""
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'input'}: {e['msg']}"
                             for e in exc.errors(include_url=False)[:5])
        raise fail("Invalid input", problems) from None


def when(value: datetime | None, *, seconds: bool = False) -> str:
    """A stored time for a table, in UTC ("-" for none)."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
