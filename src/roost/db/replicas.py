"""Read replicas: which streaming replica (hot standby) may answer a read, if any.

``ROOST_DATABASE_REPLICA_URLS`` names the replicas.  The routes switched to replica reads
(``roost.http.reads.ReadSession``; docs/scale.md, "Read replicas") ask :meth:`ReplicaSet.pick`
for one; everything else (writes, authentication, the access records some GETs write)
stays on the primary.

* **Health** is checked at most once per ``ROOST_REPLICA_CHECK_INTERVAL_S`` per process,
  in the background (the first pick waits for the first check): one statement on the
  primary (``pg_current_wal_lsn()``) and one per replica (in recovery?, replay LSN, time
  since the last replayed commit).  A replica that does not answer, is not in recovery
  (promoted: it no longer follows this primary) or lags more than
  ``ROOST_REPLICA_MAX_LAG_S`` is skipped until a later check finds it usable.  A replica
  that fails a request is marked down at once (:meth:`ReplicaSet.mark_failed`); the
  request retries on the primary.
* **Lag** in seconds: the primary's write position is sampled at every check; a
  replica's lag is the age of the newest sample its replay position has reached (0 when
  it has reached the current one).  So an idle primary never makes a caught-up replica
  look stale, and a replica whose replay is stuck ages however busy the primary is.
* **Read-your-writes by LSN**: after a client's write commits, its request notes the
  primary's WAL insert position (:meth:`ReplicaSet.note_write`, keyed by the client:
  the user).  That client's reads go to a replica only once a health check has seen the
  replica replay past that position; until then (typically one check interval) they go
  to the primary.  The note lives in this process's memory: see docs/scale.md for how
  that behaves with several API processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from roost.db.errors import sqlstate

log = structlog.get_logger(__name__)

# SQLSTATE classes and codes after which a read is retried on the primary: connection
# exceptions (08), operator intervention (57: shutdown, cannot connect now) and a query
# cancelled by a conflict with recovery on a hot standby (40001).
_RETRY_CLASSES = ("08", "57")
_RETRY_CODES = frozenset({"40001"})

# Which cluster and database answers: a standby's system identifier is its primary's (a
# physical copy), and WAL positions compare only within one cluster.
_PRIMARY_POSITION = (
    "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint, "
    "(SELECT system_identifier FROM pg_control_system())::text, current_database()"
)
_REPLICA_STATE = (
    "SELECT pg_is_in_recovery(), (pg_last_wal_replay_lsn() - '0/0'::pg_lsn)::bigint, "
    "extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp())::float8, "
    "(SELECT system_identifier FROM pg_control_system())::text, current_database()"
)
# Where the primary's WAL ends now: at least the end of every transaction committed before
# (the insert position, not the write position, which may lag with asynchronous commit).
WRITE_POSITION = "SELECT (pg_current_wal_insert_lsn() - '0/0'::pg_lsn)::bigint"

# How long primary positions are kept to date a replica's replay position, and the most
# clients whose last write position one process remembers.
_HISTORY_S = 600.0
_MAX_REMEMBERED = 100_000


@dataclass
class ReplicaState:
    usable: bool = False
    replay_lsn: int = 0
    lag_s: float | None = None
    reason: str = "not checked yet"
    checked_at: float = 0.0


@dataclass
class Replica:
    """One replica: its engine and what the last health check found."""

    name: str  # the URL without its password, for logs and docs
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    state: ReplicaState = field(default_factory=ReplicaState)


def describe(url: URL) -> str:
    """``url`` as it may be printed or logged: no password, neither the user info's nor a
    ``?password=`` in the query (asyncpg takes one there)."""
    return url.set(password=None).difference_update_query(["password"]) \
        .render_as_string(hide_password=True)


class ReplicaSet:
    """The process's replicas, their health, and the clients' last write positions."""

    def __init__(
        self,
        primary: AsyncEngine,
        replicas: Iterable[Replica],
        *,
        max_lag_s: float,
        check_interval_s: float,
        check_timeout_s: float,
    ) -> None:
        self.primary = primary
        self.replicas = tuple(replicas)
        self.max_lag_s = max_lag_s
        self.check_interval_s = check_interval_s
        self.check_timeout_s = check_timeout_s
        self._history: deque[tuple[float, int]] = deque()
        self._written: dict[str, int] = {}
        self._checked_at: float | None = None
        # The primary's (system identifier, database), once a check has read them.
        self._primary_identity: tuple[str, str] | None = None
        self._check: asyncio.Task[None] | None = None
        self._turn = itertools.count()

    # ------------------------------------------------------------------- choosing

    async def pick(self, client: str | None) -> Replica | None:
        """A usable replica that has replayed ``client``'s last write, else ``None``
        (read from the primary).  Starts a health check when the last one is stale."""
        await self._refresh()
        needed = self._written.get(client, 0) if client is not None else 0
        candidates = [
            replica for replica in self.replicas
            if replica.state.usable and replica.state.replay_lsn >= needed
        ]
        if not candidates:
            return None
        return candidates[next(self._turn) % len(candidates)]

    def note_write(self, client: str, lsn: int) -> None:
        """``client`` wrote; its commit ends at or before ``lsn`` on the primary."""
        self._written.pop(client, None)
        self._written[client] = lsn  # re-inserted: the dict's order is oldest write first
        if len(self._written) > _MAX_REMEMBERED:
            self._forget_replayed()
            while len(self._written) > _MAX_REMEMBERED:
                self._written.pop(next(iter(self._written)))

    def mark_failed(self, replica: Replica, error: BaseException) -> None:
        """A request found ``replica`` unusable: skip it until a check finds it back."""
        if replica.state.usable:
            log.warning("replica_failed", replica=replica.name, error=type(error).__name__)
        replica.state = ReplicaState(usable=False, replay_lsn=replica.state.replay_lsn,
                                     reason=f"failed a request: {type(error).__name__}",
                                     checked_at=time.monotonic())

    # ------------------------------------------------------------------- health

    async def _refresh(self) -> None:
        now = time.monotonic()
        if self._checked_at is not None and now - self._checked_at < self.check_interval_s:
            return
        if self._check is None or self._check.done():
            # A context of its own: the check's log lines carry no request's id.
            self._check = asyncio.create_task(self.check(), context=contextvars.Context())
        if self._checked_at is None:  # nothing known yet: wait for the first check
            with contextlib.suppress(Exception):
                await asyncio.shield(self._check)

    async def check(self) -> None:
        """Check every replica now (and sample the primary's position)."""
        self._checked_at = time.monotonic()
        primary_lsn: int | None = None
        try:
            async with self.primary.connect() as conn:
                row: Any = (await conn.exec_driver_sql(_PRIMARY_POSITION)).one()
            primary_lsn, self._primary_identity = int(row[0]), (str(row[1]), str(row[2]))
        except Exception as exc:  # the primary's own failures show on the request path
            log.warning("replica_check_primary_failed", error=type(exc).__name__)
        now = time.monotonic()
        if primary_lsn is not None:
            self._history.append((now, primary_lsn))
            while self._history and now - self._history[0][0] > _HISTORY_S:
                self._history.popleft()
        await asyncio.gather(*(self._check_one(r, primary_lsn) for r in self.replicas))
        self._checked_at = time.monotonic()
        self._forget_replayed()

    async def _check_one(self, replica: Replica, primary_lsn: int | None) -> None:
        was = replica.state.usable
        try:
            async with asyncio.timeout(self.check_timeout_s), replica.engine.connect() as conn:
                row: Any = (await conn.exec_driver_sql(_REPLICA_STATE)).one()
        except Exception as exc:
            replica.state = ReplicaState(usable=False, replay_lsn=replica.state.replay_lsn,
                                         reason=f"unreachable: {type(exc).__name__}",
                                         checked_at=time.monotonic())
        else:
            in_recovery, replay_lsn, since_commit = bool(row[0]), row[1], row[2]
            mismatch = self._not_the_primarys(str(row[3]), str(row[4]))
            if mismatch is not None:
                # A standby of another cluster answered with its own data, and one on
                # another database of the right cluster with no tables (500s): never used.
                replica.state = ReplicaState(usable=False, reason=mismatch,
                                             checked_at=time.monotonic())
            elif not in_recovery or replay_lsn is None:
                replica.state = ReplicaState(usable=False, reason="not in recovery (promoted?)",
                                             checked_at=time.monotonic())
            else:
                lag = self._lag(int(replay_lsn), primary_lsn, since_commit)
                usable = lag is not None and lag <= self.max_lag_s
                replica.state = ReplicaState(
                    usable=usable, replay_lsn=int(replay_lsn), lag_s=lag,
                    reason="ok" if usable else f"lags {lag if lag is not None else '?'} s",
                    checked_at=time.monotonic())
        if was != replica.state.usable:
            log.info("replica_state", replica=replica.name, usable=replica.state.usable,
                     reason=replica.state.reason)

    def _not_the_primarys(self, system_id: str, database: str) -> str | None:
        """Why a replica answering as ``system_id``/``database`` is not a copy of the
        primary's database (None when it is, or the primary's is not known yet)."""
        if self._primary_identity is None:
            return "the primary's identity is not known yet"
        primary_id, primary_db = self._primary_identity
        if system_id != primary_id:
            return (f"follows another cluster (system identifier {system_id}, the primary's "
                    f"is {primary_id})")
        if database != primary_db:
            return f"is the database {database!r}, the primary's is {primary_db!r}"
        return None

    def _lag(self, replay_lsn: int, primary_lsn: int | None, since_commit: float | None) -> float | None:
        """Seconds the replica is behind: the age of the newest primary position it has
        replayed; when it is behind every sample, at least the oldest sample's age and
        the age of its last replayed commit."""
        if primary_lsn is not None and replay_lsn >= primary_lsn:
            return 0.0
        now = time.monotonic()
        for sampled_at, lsn in reversed(self._history):
            if lsn <= replay_lsn:
                return now - sampled_at
        if primary_lsn is None:
            return None
        oldest = now - self._history[0][0] if self._history else 0.0
        return max(oldest, since_commit if since_commit is not None else 0.0)

    def _forget_replayed(self) -> None:
        """Drop write positions every usable replica has replayed (they no longer steer)."""
        usable = [r.state.replay_lsn for r in self.replicas if r.state.usable]
        if not usable or not self._written:
            return
        floor = min(usable)
        for client in [c for c, lsn in self._written.items() if lsn <= floor]:
            del self._written[client]

    async def dispose(self) -> None:
        if self._check is not None and not self._check.done():
            self._check.cancel()
            with contextlib.suppress(BaseException):
                await self._check
        for replica in self.replicas:
            await replica.engine.dispose()


def is_replica_failure(exc: BaseException) -> bool:
    """True when ``exc`` (or what caused it) means the replica, not the request, failed:
    the connection is lost or refused, the server is shutting down or recovering, or a
    standby cancelled the query for a conflict with recovery.  Any ``OSError`` counts
    (a Unix socket that vanished with its server is a ``FileNotFoundError``)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, DBAPIError) and current.connection_invalidated:
            return True
        if isinstance(current, OperationalError | InterfaceError | OSError):
            return True
        code = sqlstate(current)
        if code is not None and (code.startswith(_RETRY_CLASSES) or code in _RETRY_CODES):
            return True
        if type(current).__module__.startswith("asyncpg") and "Connection" in type(current).__name__:
            return True  # asyncpg's ConnectionDoesNotExistError and the like
        if isinstance(current, DBAPIError):
            current = current.orig
        else:
            current = current.__cause__ or current.__context__
    return False
