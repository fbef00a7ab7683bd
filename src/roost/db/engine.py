"""Engine and session factory, for an external PostgreSQL URL or the embedded server."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, Final

import asyncpg
from sqlalchemy import event, make_url
from sqlalchemy.engine import URL
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import asbool

from roost import tracing
from roost.config import Settings
from roost.db.embedded import EmbeddedServer, start_embedded
from roost.db.jsonvalues import json_dumps
from roost.db.replicas import Replica, ReplicaSet, describe

EMBEDDED_DATABASE = "roost"


def to_async_url(raw: str) -> URL:
    """Accept ``postgres://``, ``postgresql://`` or ``postgresql+asyncpg://`` URLs."""
    url = make_url(raw.replace("postgres://", "postgresql://", 1))
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"ROOST_DATABASE_URL must be a PostgreSQL URL, got {url.drivername!r}")
    return url.set(drivername="postgresql+asyncpg")


# asyncpg's connect options that are numbers or booleans.  SQLAlchemy's dialect hands a
# URL's query on as text, and asyncpg then failed comparing it with a number
# (``?statement_cache_size=0``: a TypeError traceback from every command).
URL_NUMBER_OPTIONS: Final[dict[str, type]] = {
    "statement_cache_size": int, "max_cached_statement_lifetime": int,
    "max_cacheable_statement_size": int, "timeout": float, "command_timeout": float,
    "direct_tls": bool}


def url_number_options(url: URL) -> dict[str, Any]:
    """The URL's numeric and boolean asyncpg options as values of their types;
    ``ValueError`` naming the option whose text is not one."""
    options: dict[str, Any] = {}
    for key, kind in URL_NUMBER_OPTIONS.items():
        text = url.query.get(key)
        if text is None:
            continue
        try:
            if not isinstance(text, str):
                raise ValueError
            options[key] = asbool(text) if kind is bool else kind(text)
            if kind is float and not math.isfinite(options[key]):
                raise ValueError
        except ValueError:
            raise ValueError(f"ROOST_DATABASE_URL: {key}={text!s:.40} is not "
                             f"{'true or false' if kind is bool else 'a number'}") from None
    return options


def engine_options(settings: Settings, url: URL | None = None) -> dict[str, Any]:
    """The engine's options; ``url``'s numeric asyncpg options (``command_timeout=``...)
    as numbers, below Roost's own settings."""
    connect_args: dict[str, Any] = {
        **(url_number_options(url) if url is not None else {}),
        "timeout": settings.db_connect_timeout_s,
        "server_settings": {
            "application_name": "roost",
            "statement_timeout": str(settings.db_statement_timeout_ms),
        },
    }
    if settings.pgbouncer:
        # Transaction pooling hands each transaction to any server connection, so named
        # prepared statements from an earlier transaction may not exist there.
        connect_args["statement_cache_size"] = 0
        connect_args["prepared_statement_cache_size"] = 0
        # PgBouncer rejects unknown startup parameters unless told to ignore them.
        connect_args["server_settings"] = {"application_name": "roost"}
    return {
        # Every connection opened stays pooled, up to both settings together, opened as
        # needed: SQLAlchemy closes an overflow connection as soon as it is checked in, so
        # under steady concurrency above the pool size the server forked a backend every
        # few requests (185-219 per 3,000 history reads at 50 clients, ~0.75 ms of the
        # machine's CPU a read: docs/benchmarks.md, Chat: "connection churn").
        "pool_size": settings.db_pool_size + settings.db_max_overflow,
        "max_overflow": 0,
        # Not pool_pre_ping: for asyncpg that is BEGIN; SELECT; ROLLBACK (three round trips,
        # ~0.5 ms, a third of a small transaction) on every checkout.  discard_closed()
        # catches what it would (connections the server closed: restarts, terminated
        # backends) without a round trip.
        "pool_pre_ping": False,
        "connect_args": connect_args,
        "json_serializer": json_dumps,
        # A failed statement's message (and traceback, which the 500 handler logs) would
        # carry its parameters: a new account's password hash, a secret being stored.
        # Here, so every process (`roost serve --workers` children, commands) hides them.
        "hide_parameters": True,
    }



def discard_closed(engine: AsyncEngine) -> None:
    """Replace a pooled connection the server has closed at checkout, before it is used.

    asyncpg marks a connection closed as soon as the event loop reads the server's
    goodbye, so this needs no round trip; a connection dropped silently by the network
    is found by its first query instead (that request answers 503 and the pool
    replaces the connection)."""

    @event.listens_for(engine.sync_engine, "checkout")
    def _check(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        driver = getattr(dbapi_connection, "driver_connection", None)
        if driver is not None and driver.is_closed():
            raise DisconnectionError("the server closed this pooled connection")


@dataclass
class Database:
    """The process's one engine and session factory."""

    url: URL
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    embedded: EmbeddedServer | None = field(default=None)
    # ROOST_DATABASE_REPLICA_URLS: where ReadSession's routes read (roost.db.replicas).
    replicas: ReplicaSet | None = field(default=None)
    # ROOST_DB_SIDE_POOL_SIZE connections for a statement sent while the caller holds a
    # connection of the main pool in an open transaction (autocommit(side=True)).  From
    # the main pool, N requests each holding one and waiting for a second would wait on
    # each other once the pool is exhausted.
    side_engine: AsyncEngine | None = field(default=None)
    # The process's group commits on this database, by name (roost.db.groupcommit): one
    # per kind of write, so concurrent requests of the kind share statements.
    group_commits: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @asynccontextmanager
    async def transaction(self, *, side: bool = False) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error.
        ``side``: on a connection of the side pool (see :meth:`autocommit`)."""
        session = AsyncSession(self.side_engine, expire_on_commit=False) \
            if side and self.side_engine is not None else self.sessionmaker()
        try:
            async with session.begin():
                yield session
        finally:
            await close_session(session)

    @asynccontextmanager
    async def autocommit(self, *, side: bool = False) -> AsyncIterator[Any]:
        """A pooled connection's asyncpg connection outside any transaction: each
        statement is its own implicit transaction, committed as it ends.  For work whose
        statements need no snapshot shared between them: the system's own reads, and a
        statement that scopes itself (``roost_record_tool_call``, migration 1010: a tool
        call's record in one round trip, its ``BEGIN`` and ``COMMIT`` two fewer).  Nothing
        may be left open on it (no ``SET``, no ``BEGIN``): it goes back to the pool.

        A statement the server answered with an error has ended its implicit transaction:
        that connection is pooled again.  Anything else that leaves the block (a
        cancellation, possibly mid-statement) closes the connection, which may still be
        busy: the server ends whatever ran, and the pool replaces it at the next checkout
        (:func:`discard_closed`).

        ``side``: a connection of the side pool (``side_engine``), for a caller that has
        a transaction of the main pool open meanwhile."""
        # The pool's connection itself, not an AsyncConnection around it (a greenlet and
        # its bookkeeping each way: ~80 us of a ~1 ms call).  Giving it back is
        # synchronous: the adapter began no transaction, so its reset sends nothing.
        engine = self.side_engine if side and self.side_engine is not None else self.engine
        fairy = await engine.raw_connection()
        driver: Any = fairy.driver_connection
        # The engine's events that trace a session's transactions do not see this.
        span = tracing.start("db.transaction", kind="client", attributes={
            "db.system.name": "postgresql", "db.namespace": self.url.database,
            "roost.db.driver": True, "roost.db.autocommit": True}) \
            if tracing.enabled() else tracing.NOOP
        outcome = "error"
        try:
            yield driver
            outcome = "commit"
        except asyncpg.PostgresError:
            raise
        except BaseException:
            if not driver.is_closed():
                driver.terminate()
            raise
        finally:
            fairy.close()
            span.update({"roost.db.outcome": outcome})
            span.end()

    async def dispose(self) -> None:
        if self.replicas is not None:
            await self.replicas.dispose()
        if self.side_engine is not None:
            await self.side_engine.dispose()
        await self.engine.dispose()


async def close_session(session: AsyncSession) -> None:
    """Close ``session`` as ``async with session`` would, for less when it holds nothing.

    ``AsyncSession``'s own exit runs ``close()`` in a task of its own, shielded from
    cancellation (a connection half returned to its pool must not be abandoned): a task
    and a greenlet per request, ~70 µs here.  A session whose transaction has ended (it
    was committed or rolled back) holds no connection, and closing it is bookkeeping
    without I/O, done synchronously; one still in a transaction is closed the shielded
    way (it rolls back and returns its connection)."""
    if session.sync_session.get_transaction() is None:
        session.sync_session.close()
        return
    closing = asyncio.ensure_future(session.close())
    try:
        await asyncio.shield(closing)
    except asyncio.CancelledError:
        if not closing.done():  # finish returning the connection, then be cancelled
            await asyncio.wait([closing])
        raise


def resolve_database_url(settings: Settings) -> tuple[URL, EmbeddedServer | None]:
    """The URL to use, starting the embedded server (and its database) when none is set."""
    if settings.database_url is not None:
        return to_async_url(settings.database_url.get_secret_value()), None
    server = start_embedded(settings.pg_dir)
    ensure_database_exists(server, EMBEDDED_DATABASE)
    return make_url(server.url(EMBEDDED_DATABASE)), server


def ensure_database_exists(server: EmbeddedServer, name: str) -> None:
    """Create ``name`` on the embedded server if missing (psql, synchronously, at start-up)."""
    # ``name`` is a constant of this module, never user input.
    out = server.handle.psql(f"SELECT 1 FROM pg_database WHERE datname = '{name}';")  # noqa: S608
    if "(1 row)" not in out:
        server.handle.psql(f'CREATE DATABASE "{name}";')


def create_database(settings: Settings, url: URL | None = None) -> Database:
    embedded = None
    if url is None:
        url, embedded = resolve_database_url(settings)
    engine = create_async_engine(url, **engine_options(settings, url))
    discard_closed(engine)
    side_engine = create_async_engine(
        url, **{**engine_options(settings, url), "pool_size": settings.db_side_pool_size})
    discard_closed(side_engine)
    tracing.configure(settings)  # ROOST_OTEL_ENABLED: every process that opens the database
    tracing.instrument_engine(engine.sync_engine)
    tracing.instrument_engine(side_engine.sync_engine)
    return Database(
        url=url,
        engine=engine,
        sessionmaker=async_sessionmaker(engine, expire_on_commit=False),
        embedded=embedded,
        replicas=create_replicas(settings, engine),
        side_engine=side_engine,
    )


def replica_urls(settings: Settings) -> list[URL]:
    """ROOST_DATABASE_REPLICA_URLS, parsed (empty entries ignored)."""
    if settings.database_replica_urls is None:
        return []
    raw = settings.database_replica_urls.get_secret_value()
    return [to_async_url(part.strip()) for part in raw.split(",") if part.strip()]


def create_replicas(settings: Settings, primary: AsyncEngine) -> ReplicaSet | None:
    """The replicas' engines (connecting on first use), or ``None`` when none is set."""
    urls = replica_urls(settings)
    if not urls:
        return None
    replicas = []
    for replica_url in urls:
        options = engine_options(settings, replica_url)
        connect_args = options["connect_args"]
        connect_args["server_settings"] = {
            **connect_args["server_settings"], "application_name": "roost-replica-read"}
        engine = create_async_engine(replica_url, **options)
        discard_closed(engine)
        tracing.instrument_engine(engine.sync_engine)  # its SQL spans too (roost.tracing)
        replicas.append(Replica(
            name=describe(replica_url), engine=engine,
            sessionmaker=async_sessionmaker(engine, expire_on_commit=False)))
    return ReplicaSet(
        primary, replicas, max_lag_s=settings.replica_max_lag_s,
        check_interval_s=settings.replica_check_interval_s,
        check_timeout_s=min(settings.db_connect_timeout_s, max(1.0, 2 * settings.replica_check_interval_s)),
    )
