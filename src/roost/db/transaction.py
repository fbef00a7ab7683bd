"""What one transaction already has: its asyncpg connection and its ``SET LOCAL`` values.

Hot paths (authentication, vector search) talk to the driver connection under the
session's transaction directly, skipping the ORM's per-statement work, and send their
transaction-local settings together with another statement instead of alone.  These
helpers remember, per SQLAlchemy transaction, what has been fetched or set, so a later
step skips the round trip.  Keys are the transaction objects (weakly held): nothing
outlives the transaction, and a pooled connection never carries one request's notes
into another's.
"""

from __future__ import annotations

import asyncio
import functools
import re
import weakref
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
from sqlalchemy import event
from sqlalchemy.dialects.postgresql import asyncpg as asyncpg_dialect
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, SessionTransaction
from sqlalchemy.sql import ClauseElement

from roost.db.jsonvalues import json_dumps

_log = structlog.get_logger(__name__)
_drivers: weakref.WeakKeyDictionary[SessionTransaction, Any] = weakref.WeakKeyDictionary()
_settings: weakref.WeakKeyDictionary[SessionTransaction, dict[str, str]] = weakref.WeakKeyDictionary()
# Sessions whose transactions begin with settings (settings_on_begin), and the sessions
# begin_with_settings is beginning right now (their after_begin listeners stand aside).
_on_begin: weakref.WeakKeyDictionary[Session, dict[str, str]] = weakref.WeakKeyDictionary()
_beginning: weakref.WeakSet[Session] = weakref.WeakSet()


def settings_on_begin(session: AsyncSession, values: Mapping[str, str]) -> None:
    """Each of the session's transactions that :func:`driver_connection` begins sends
    ``values`` with its ``BEGIN`` (:func:`begin_with_settings`: one round trip).  A
    transaction begun by an ORM statement instead relies on the caller's ``after_begin``
    listener (``roost.identity.tenancy.scope_lazily``), which stands aside while
    :func:`beginning_with_settings` says so."""
    _on_begin[session.sync_session] = dict(values)


def beginning_with_settings(session: AsyncSession) -> bool:
    """Whether :func:`begin_with_settings` is beginning the session's transaction now
    (and sends its settings itself)."""
    return session.sync_session in _beginning


async def driver_connection(session: AsyncSession) -> Any:
    """The asyncpg connection under the session's transaction (begun if need be)."""
    transaction = session.sync_session.get_transaction()
    driver = _drivers.get(transaction) if transaction is not None else None
    if driver is None and transaction is not None:
        values = _on_begin.get(session.sync_session)
        noted = _settings.get(transaction, {})
        if values is not None and any(noted.get(k) != v for k, v in values.items()) \
                and await begin_with_settings(session, values):
            return _drivers[transaction]
    if driver is None:
        conn = await session.connection()
        raw = await conn.get_raw_connection()
        await _start_as_the_adapter_would(raw.dbapi_connection)
        driver = raw.driver_connection
        assert driver is not None
        transaction = session.sync_session.get_transaction()
        if transaction is not None:
            _drivers[transaction] = driver
    return driver


async def _start_as_the_adapter_would(adapted: Any) -> None:
    """SQLAlchemy's asyncpg adapter sends BEGIN lazily, with its first statement: a
    statement sent straight to the driver first would run outside the transaction (and
    its SET LOCALs vanish).  Start it as the adapter would, unless it has begun
    (SQLAlchemy < 2.2; tests/identity/test_core.py fails if this stops working)."""
    if getattr(adapted, "_transaction", True) is None:
        await adapted._start_transaction()


# Setting names and values that may be written into SQL text as literals: what scoping
# sends (uuids, booleans, comma-joined uuids, role names, numbers, a few words).
_LITERAL = re.compile(r"[A-Za-z0-9_.,:-]*")
_BEGIN = {None: "BEGIN", "read_committed": "BEGIN ISOLATION LEVEL READ COMMITTED"}


def is_literal(text: str) -> bool:
    """Whether ``text`` may be written into SQL as a quoted literal here (uuids, numbers,
    hex digests, role names, comma-joined uuids, a few words)."""
    return _LITERAL.fullmatch(text) is not None


@functools.lru_cache(maxsize=4096)
def _settings_sql(items: tuple[tuple[str, str], ...]) -> str | None:
    """``SELECT set_config(name, value, true), ...`` for ``items``, or None when a name or
    value is not a plain literal.  Cached: a caller's requests send the same settings."""
    if not all(is_literal(part) for item in items for part in item):
        return None
    return "SELECT " + ", ".join(f"set_config('{name}', '{value}', true)" for name, value in items)


def settings_statement(values: Mapping[str, str]) -> str | None:
    """``SELECT set_config(name, value, true), ...`` for ``values``, or None when a name
    or value is not a plain literal (:func:`is_literal`; bind them then)."""
    return _settings_sql(tuple(values.items()))


class _BegunTransaction:
    """Ends a transaction that :func:`begin_with_settings` began: what SQLAlchemy's
    asyncpg adapter calls (``commit``/``rollback``) on the transaction it tracks."""

    def __init__(self, driver: Any) -> None:
        self._driver = driver

    async def commit(self) -> None:
        await self._driver.execute("COMMIT")

    async def rollback(self) -> None:
        if not self._driver.is_closed():
            await self._driver.execute("ROLLBACK")


async def begin_with_settings(session: AsyncSession, values: Mapping[str, str], *,
                              first: str = "") -> bool:
    """Begin the session's transaction on its connection together with ``values``
    (``SET LOCAL`` by ``set_config``): ``BEGIN; SELECT set_config(...)`` as one simple
    query, one round trip instead of two (when the transaction has begun on the
    connection already, or does not begin with a plain ``BEGIN``: the settings as a
    statement of their own).  False, and nothing sent, when the driver connection is in
    use already or a value is not a plain literal (the caller sends its settings as a
    statement of their own then).

    ``first``, when given, is a statement sent in the same simple query between the
    ``BEGIN`` and the settings (so before any role switch among them), its text built by
    the caller from checked literals only.  If it (or anything) fails, the transaction
    is rolled back on the connection and the error raised: the session can go on, its
    next statement begins a new transaction."""
    transaction = session.sync_session.get_transaction()
    if transaction is None or transaction in _drivers:
        return False
    sets = settings_statement(values)
    if sets is None:
        return False
    _beginning.add(session.sync_session)
    try:
        conn = await session.connection()
    finally:
        _beginning.discard(session.sync_session)
    raw = await conn.get_raw_connection()
    adapted = raw.dbapi_connection
    driver = raw.driver_connection
    assert driver is not None
    begin = _BEGIN.get(getattr(adapted, "isolation_level", "?"))
    statements = f"{first}; {sets}" if first else sets
    if (begin is None or getattr(adapted, "_transaction", True) is not None
            or adapted.readonly or adapted.deferrable):  # type: ignore[union-attr]
        # Begun already, or not a plain BEGIN: as driver_connection begins it, then the
        # settings (two round trips; the after_begin listeners stood aside).  Not with a
        # first statement, whose failure would leave the transaction unusable.
        if first:
            return False
        await _start_as_the_adapter_would(adapted)
        await driver.execute(statements)
        _drivers[transaction] = driver
        note_settings(session, values)
        return True
    # The adapter tracks the transaction it would have begun itself, and ends it through
    # this object (SQLAlchemy < 2.2, as driver_connection relies on; the round trips and
    # the scope's end are checked by tests/identity/test_request_overhead.py).
    adapted._transaction = _BegunTransaction(driver)  # type: ignore[union-attr]
    try:
        await driver.execute(f"{begin}; {statements}")
    except BaseException as exc:
        if isinstance(exc, asyncio.CancelledError) and not driver.is_in_transaction():
            # Cancelled in flight (a client hung up): the BEGIN's answer is not read yet
            # and the transaction may still begin.  The adapter keeps it, so the session's
            # end (or the pool's reset) sends a ROLLBACK, harmless when none is open: the
            # connection never goes back to the pool inside a transaction (the next user
            # of it got "cannot use Connection.transaction() in a manually started
            # transaction").
            raise
        adapted._transaction = None  # type: ignore[union-attr]
        if driver.is_in_transaction():
            await driver.execute("ROLLBACK")
        raise
    _drivers[transaction] = driver
    note_settings(session, values)
    return True


async def execute_before_begin(session: AsyncSession, sql: str) -> bool:
    """Send ``sql`` (a simple query, literals only) on the session's connection before
    its transaction has begun there: it runs as its own implicit transaction, committed
    as it ends, and the session's transaction still begins with its first statement (a
    session that sends nothing else ends without a round trip).  False, and nothing
    sent, when the transaction has begun on the connection already."""
    transaction = session.sync_session.get_transaction()
    if transaction is None or transaction in _drivers:
        return False
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    if getattr(raw.dbapi_connection, "_transaction", True) is not None:
        return False  # begun (or an adapter this does not know)
    driver = raw.driver_connection
    assert driver is not None
    await driver.execute(sql)
    return True


def local_settings(session: AsyncSession) -> Mapping[str, str]:
    """The ``SET LOCAL`` values this transaction has been given through :func:`note_settings`."""
    transaction = session.sync_session.get_transaction()
    return _settings.get(transaction, {}) if transaction is not None else {}


def note_settings(session: AsyncSession, values: Mapping[str, str]) -> None:
    """Record ``SET LOCAL`` values just sent in this transaction."""
    transaction = session.sync_session.get_transaction()
    if transaction is not None:
        _settings.setdefault(transaction, {}).update(values)


# Compiles Core statements to asyncpg's own SQL ($1, $2 ... in the order of positiontup).
_DRIVER_DIALECT = asyncpg_dialect.dialect(  # type: ignore[no-untyped-call]
    paramstyle="numeric_dollar", json_serializer=json_dumps)


@functools.lru_cache(maxsize=256)
def driver_sql(statement: ClauseElement) -> tuple[str, tuple[str, ...]]:
    """``statement`` (a Core statement built once, with named bound parameters) as the
    driver's SQL and its parameters' names in order.  Cached per statement object: pass
    statements that are built once (``functools.cache``), not per call."""
    sql, names, _ = driver_statement(statement)
    return sql, names


@functools.lru_cache(maxsize=256)
def driver_statement(statement: ClauseElement) -> tuple[str, tuple[str, ...], tuple[Any, ...]]:
    """The SQL, the parameters' names in order and each one's bind processor (the
    dialect's own: JSON is serialised as SQLAlchemy would, ``None`` for none needed)."""
    compiled = statement.compile(dialect=_DRIVER_DIALECT)
    names: list[str] = getattr(compiled, "positiontup", None) or []  # SQLCompiler's
    processors = compiled._bind_processors  # type: ignore[attr-defined]  # SQLAlchemy 2.x
    return compiled.string, tuple(names), tuple(processors.get(name) for name in names)


async def driver_fetch(session: AsyncSession, statement: ClauseElement,
                       params: Mapping[str, Any]) -> list[Any]:
    """Run ``statement`` on the session's transaction's driver connection (same
    transaction, same row-level-security scope), skipping the ORM's per-statement work:
    asyncpg records, with the column types the driver decodes (no SQLAlchemy result
    processing: use it for plain column types).  Every parameter must be given (column
    defaults are not applied); values go through the dialect's bind processors (JSON).
    Pending ORM objects are not flushed first: use it for rows nothing pending refers to."""
    return await fetch_on(await driver_connection(session), statement, params)


async def fetch_on(driver: Any, statement: ClauseElement, params: Mapping[str, Any]) -> list[Any]:
    """:func:`driver_fetch` on an asyncpg connection the caller holds (a transaction's, or
    ``Database.autocommit``'s)."""
    sql, names, processors = driver_statement(statement)
    return list(await driver.fetch(sql, *driver_args(names, processors, params)))


def driver_args(names: tuple[str, ...], processors: tuple[Any, ...],
                params: Mapping[str, Any]) -> list[Any]:
    """``params`` in the order of :func:`driver_statement`'s names, each through its
    bind processor."""
    return [params[name] if process is None else process(params[name])
            for name, process in zip(names, processors, strict=True)]


# --------------------------------------------------------------------------- on rollback

RollbackHook = Callable[[], Awaitable[None]]
# Per root transaction, what to run if it does not commit (on_rollback).
_on_rollback: weakref.WeakKeyDictionary[SessionTransaction, list[RollbackHook]] = \
    weakref.WeakKeyDictionary()
_background: set[asyncio.Task[None]] = set()


def on_rollback(session: AsyncSession, hook: RollbackHook) -> None:
    """Run ``hook()`` in the background if the session's transaction ends without
    committing (rolled back, or closed unfinished): for work committed on its own that
    belongs to this transaction, such as a credit hold taken on the side pool for a
    request this transaction stores.  A hook that fails is logged; whatever it undoes
    needs a backstop that does not depend on it (a hold's expiry)."""
    transaction = session.sync_session.get_transaction()
    if transaction is None:
        raise RuntimeError("on_rollback needs a transaction in progress")
    _on_rollback.setdefault(transaction, []).append(hook)


@event.listens_for(Session, "after_commit")
def _committed(session: Session) -> None:
    if _on_rollback and not session.in_nested_transaction():
        transaction = session.get_transaction()
        if transaction is not None:
            _on_rollback.pop(transaction, None)


@event.listens_for(Session, "after_transaction_end")
def _ended(session: Session, transaction: SessionTransaction) -> None:
    if not _on_rollback or transaction.parent is not None:
        return
    hooks = _on_rollback.pop(transaction, None)
    if hooks:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # ended outside an event loop: the backstop undoes it
            _log.warning("rollback_hooks_skipped", hooks=len(hooks))
            return
        for hook in hooks:
            task = loop.create_task(_run_hook(hook))
            _background.add(task)
            task.add_done_callback(_background.discard)


async def _run_hook(hook: RollbackHook) -> None:
    try:
        await hook()
    except Exception:
        _log.exception("rollback_hook_failed")
