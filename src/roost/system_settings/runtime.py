"""Reading runtime settings: ``await get(session, SETTING, default)``, cached per process.

Consistency: every write sends ``NOTIFY roost_settings, '<key>'`` in its own transaction
(so only on commit).  Each API server process keeps one LISTEN connection
(:class:`SettingsListener`, started by ``roost.system_settings.startup``) that drops the
key from this process's cache when the notification arrives: another process sees a
change within the NOTIFY delivery time (milliseconds on one server), without a restart.

The cache is used *only while that connection listens*.  Before it is up, after it is
lost, behind PgBouncer in transaction mode (no LISTEN) and in processes that run none
(workers, the CLI, tests' in-process apps) every read asks the database: one
``SELECT roost_runtime_setting(key)`` in the caller's transaction, so a reader is never
stale, only slower.  When the connection comes back the whole cache is dropped, since
notifications sent while it was down are lost.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Hashable, Iterable
from dataclasses import dataclass
from typing import Any, Final, Generic, TypeVar

import asyncpg
import structlog
from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import ORMExecuteState, Session

from roost.system_settings.registry import RuntimeSetting

log = structlog.get_logger(__name__)

CHANNEL: Final = "roost_settings"
_NO_ROW: Final = object()  # cached "no override": the caller's default applies
_MISS: Final = object()
K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class _Cache:
    def __init__(self) -> None:
        self.values: dict[str, Any] = {}
        self.listening = False
        # Bumped by every invalidation: a read that started before one does not store
        # what it read (it may be the value the notification just replaced).
        self.generation = 0

    def drop(self, key: str | None = None) -> None:
        self.generation += 1
        if key is None:
            self.values.clear()
        else:
            self.values.pop(key, None)


CACHE: Final = _Cache()


@dataclass(frozen=True)
class Watch:
    """Another domain's cache kept current over this process's LISTEN connection (one
    connection for every cache, not one each): ``on_notify(payload)`` for each
    notification on ``channel``; ``on_listening(True)`` once listening (drop everything:
    notifications sent while nobody listened are lost), ``on_listening(False)`` when the
    connection is lost (stop serving from the cache until it is back)."""

    channel: str
    on_notify: Callable[[str], None]
    on_listening: Callable[[bool], None]


_WATCHES: list[Watch] = []
_RUNNING: set[SettingsListener] = set()  # started and not stopped


def watch(channel: str, on_notify: Callable[[str], None],
          on_listening: Callable[[bool], None]) -> None:
    """Register a cache's channel (at import time).  A listener subscribes to every
    registered channel when it connects, and a connected one to a channel registered
    later (a module imported after start-up) as soon as it can."""
    if any(w.channel == channel for w in _WATCHES):
        return
    added = Watch(channel, on_notify, on_listening)
    _WATCHES.append(added)
    for listener in list(_RUNNING):
        listener.subscribe(added)


class NotifiedCache(Generic[K, V]):
    """A per-process key -> value cache another domain keeps current through NOTIFY on
    ``channel`` (a statement trigger on the tables its values come from sends it): every
    notification drops the whole cache, so does the listener's loss or return, and it
    answers only while this process listens (``get`` misses otherwise).  ``put`` takes the
    :attr:`generation` read *before* the lookup it stores: a value read across an
    invalidation is not kept.  At most ``max_entries``, least recently used dropped first.
    ``tables``: what the values are read from; a write to one of them through an ORM
    session of this process (a flush, or an insert/update/delete statement executed by
    the session) drops the cache when that transaction ends, so the writer reads its own
    change at once (a raw SQL write is seen on the notification only).  The triggers
    that notify are the migration's job."""

    def __init__(self, channel: str, max_entries: int, tables: Iterable[str] = ()) -> None:
        self._entries: OrderedDict[K, V] = OrderedDict()
        self.max_entries = max_entries
        self.listening = False
        self.generation = 0
        watch(channel, self.drop, self.set_listening)
        for table in tables:
            _FOLLOWERS.setdefault(table, []).append(self)

    def get(self, key: K) -> tuple[bool, V | None]:
        """(True, the value) on a hit, (False, None) on a miss or while not listening."""
        if not self.listening or key not in self._entries:
            return False, None
        self._entries.move_to_end(key)
        return True, self._entries[key]

    def put(self, key: K, value: V, generation: int) -> None:
        if not self.listening or generation != self.generation:
            return
        self._entries[key] = value
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def drop(self, _payload: str = "") -> None:
        self.generation += 1
        self._entries.clear()

    def set_listening(self, listening: bool) -> None:
        self.drop()
        self.listening = listening

    def __len__(self) -> int:
        return len(self._entries)


class _Listened:
    """The database the process's listener watches (None while it does not listen)."""

    database: str | None = None


def serves(session: AsyncSession) -> bool:
    """Whether this process's caches may answer for ``session``: the listener is up and
    watches the session's database (one database per process in production; tests run
    several in one process, and a cache must never answer for another one)."""
    url = getattr(session.bind, "url", None)
    return serves_database(getattr(url, "database", None))


def serves_database(database: str | None) -> bool:
    """:func:`serves` for a database's name (a caller without a session)."""
    return _Listened.database is not None and database == _Listened.database


def cached(setting: RuntimeSetting, default: Any) -> tuple[bool, Any]:
    """(True, the setting's value) when this process's cache holds it (as :func:`get`
    would answer without a statement), else (False, None).  The caller checks
    :func:`serves_database` first."""
    found = CACHE.values.get(setting.key, _MISS) if CACHE.listening else _MISS
    if found is _MISS:
        return False, None
    return True, default if found is _NO_ROW else found


async def get(session: AsyncSession, setting: RuntimeSetting, default: Any) -> Any:
    """The setting's current value: the override, else ``default`` (the consumer's
    environment value).  A stored value the schema no longer accepts is ignored."""
    cached = CACHE.listening and serves(session)
    found = CACHE.values.get(setting.key, _MISS) if cached else _MISS
    if found is _MISS:
        generation = CACHE.generation
        stored = await session.scalar(text("SELECT roost_runtime_setting(:key)"),
                                      {"key": setting.key})
        found = _NO_ROW
        if stored is not None:
            try:
                found = setting.decode(stored)
            except Exception:
                log.warning("system_settings.stored_value_invalid", key=setting.key)
        if cached and CACHE.listening and CACHE.generation == generation:
            CACHE.values[setting.key] = found
    return default if found is _NO_ROW else found


async def notify(session: AsyncSession, key: str) -> None:
    """Tell every process to drop ``key`` (delivered when the transaction commits).

    This process drops it itself when the transaction ends as well: the notification
    reaches its own listener a moment after the commit, and the writer's next request
    (the sign-up page after an administrator opened registration) must already see the
    new value, not the cached old one."""
    await session.execute(text("SELECT pg_notify(:channel, :key)"),
                          {"channel": CHANNEL, "key": key})
    at_transaction_end(session, lambda: CACHE.drop(key))


_PENDING: Final = "roost.drop_at_end"  # Session.info key: what to call when it ends


def at_transaction_end(session: AsyncSession | Session, drop: Callable[[], None]) -> None:
    """Call ``drop`` when ``session``'s transaction commits or rolls back (once, however
    often it is asked): how a process invalidates its own cache for a change it writes
    (read-your-writes), since its notification comes back through the listener only a
    moment after the commit."""
    sync = session.sync_session if isinstance(session, AsyncSession) else session
    sync.info.setdefault(_PENDING, set()).add(drop)


@event.listens_for(Session, "after_commit")
@event.listens_for(Session, "after_rollback")
def _transaction_ended(session: Session) -> None:
    for drop in session.info.pop(_PENDING, ()):
        drop()


_FOLLOWERS: dict[str, list[NotifiedCache[Any, Any]]] = {}  # table -> caches built from it


def _wrote(session: Session, tables: Iterable[str]) -> None:
    for table in tables:
        for cache in _FOLLOWERS.get(table, ()):
            at_transaction_end(session, cache.drop)


@event.listens_for(Session, "after_flush")
def _flushed(session: Session, _context: Any) -> None:
    if _FOLLOWERS:
        _wrote(session, {getattr(type(obj), "__tablename__", "")
                         for objs in (session.new, session.dirty, session.deleted)
                         for obj in objs})


@event.listens_for(Session, "do_orm_execute")
def _executed(state: ORMExecuteState) -> None:
    if _FOLLOWERS and (state.is_insert or state.is_update or state.is_delete):
        table = getattr(state.statement, "table", None)
        _wrote(state.session, (getattr(table, "name", ""),))


class SettingsListener:
    """The process's LISTEN connection on ``roost_settings`` and the channels other
    domains' caches registered with :func:`watch`; reconnects with back-off."""

    def __init__(self, dsn: str | None, cache: _Cache = CACHE) -> None:
        self._dsn = dsn
        self._cache = cache
        self._task: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self.connected = asyncio.Event()
        self._late: set[asyncio.Task[None]] = set()  # late subscriptions (held till done)

    async def start(self) -> None:
        if self._dsn is not None and self._task is None:
            self._task = asyncio.create_task(self._loop(), name="roost-settings-listen")
            _RUNNING.add(self)

    def subscribe(self, w: Watch) -> None:
        """Listen on a channel registered after this listener connected."""
        conn = self._conn
        if conn is None or not self.connected.is_set():
            return  # the next connection subscribes to it

        async def add() -> None:
            with contextlib.suppress(Exception):  # lost meanwhile: the reconnect does it
                await conn.add_listener(w.channel, _relay(w))
                if self._conn is conn and self.connected.is_set():
                    w.on_listening(True)

        with contextlib.suppress(RuntimeError):  # no running loop: nothing is connected
            task = asyncio.get_running_loop().create_task(add())
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    async def stop(self) -> None:
        _RUNNING.discard(self)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        self._cache.listening = False
        _Listened.database = None
        self._cache.drop()
        for w in _WATCHES:
            w.on_listening(False)

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        self._cache.drop(payload)

    async def _loop(self) -> None:
        pause = 0.5
        assert self._dsn is not None
        while True:
            try:
                self._conn = await asyncpg.connect(
                    self._dsn, server_settings={"application_name": "roost-settings"})
                closed = asyncio.Event()
                self._conn.add_termination_listener(lambda _c, ev=closed: ev.set())
                await self._conn.add_listener(CHANNEL, self._on_notify)
                subscribed: set[str] = set()
                await _subscribe_all(self._conn, subscribed)
                _Listened.database = await self._conn.fetchval("SELECT current_database()")
                # A cache registered during that wait (a module imported meanwhile) was
                # left to this connection by subscribe(): listen on it before any cache
                # answers, with no await between the last check and "connected".
                await _subscribe_all(self._conn, subscribed)
                self._cache.drop()  # whatever changed while nobody listened
                self._cache.listening, pause = True, 0.5
                for w in _WATCHES:
                    w.on_listening(True)
                self.connected.set()
                await closed.wait()
                log.warning("system_settings.listen_connection_lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("system_settings.listen_failed", error=type(exc).__name__,
                            retry_in_s=pause)
            finally:
                self._cache.listening = False
                _Listened.database = None
                self._cache.drop()
                for w in _WATCHES:
                    w.on_listening(False)
                self.connected.clear()
                conn, self._conn = self._conn, None
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)


@contextlib.asynccontextmanager
async def worker_listener(database: Any, settings: Any) -> AsyncIterator[SettingsListener]:
    """The LISTEN connection of a standalone ``roost worker`` (``roost.domains`` names it
    as the domain's ``worker_startup``): the same caches as the API server's, kept the
    same way.  Behind PgBouncer in transaction mode it does not connect, and every read
    asks the database."""
    from roost.tasks.worker import asyncpg_dsn

    listener = SettingsListener(None if settings.pgbouncer else asyncpg_dsn(database))
    await listener.start()
    try:
        yield listener
    finally:
        await listener.stop()


async def _subscribe_all(conn: asyncpg.Connection, subscribed: set[str]) -> None:
    """LISTEN on every registered channel not in ``subscribed`` yet (those registered
    while it awaits included)."""
    while missing := [w for w in _WATCHES if w.channel not in subscribed]:
        for w in missing:
            await conn.add_listener(w.channel, _relay(w))
            subscribed.add(w.channel)


def _relay(w: Watch) -> Callable[[object, int, str, str], None]:
    def relay(_conn: object, _pid: int, _channel: str, payload: str) -> None:
        w.on_notify(payload)
    return relay
