"""Where the analytics outbox goes: ClickHouse, embedded (chDB) or a server by URL.

One interface, :class:`Sink`, two implementations:

* :class:`ChdbSink`: chDB (the ClickHouse engine in-process, the ``chdb`` package) with a
  persistent database in ``DATA_DIR/analytics/chdb``.  chDB calls block, so they run in
  a thread (:func:`asyncio.to_thread`); a process uses one chDB session at a time, behind
  a lock, opened per operation (the API server and a worker share the directory).
* :class:`ServerSink`: a ClickHouse server by URL through ``clickhouse-connect``
  (``ROOST_ANALYTICS_CLICKHOUSE_URL``); its blocking client runs in a thread too.

Both write and read the same table, ``roost_events``: a ReplacingMergeTree whose sorting
key ends with the event id, so a row shipped twice (a crash between ship and mark) is
one row in every query, which reads it ``FINAL``.  The typed columns the usage queries
group by (model, provider, tokens, credits, cost...) are MATERIALIZED from the event's
JSON by ClickHouse itself, so the export ships only the outbox's own columns.

``chdb`` and ``clickhouse_connect`` (the ``clickhouse`` extra) are imported on first use.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlsplit

from roost.config import Settings
from roost.errors import ServiceUnavailable

TABLE: Final = "roost_events"
INSTALL_HINT: Final = "pip install -e '.[clickhouse]'"


def _number(key: str, ch_type: str) -> str:
    """A number from the event's JSON whether it was written as a number or a string."""
    raw = (f"if(JSONType(event_data, '{key}') = 'String', JSONExtractString(event_data, "
           f"'{key}'), JSONExtractRaw(event_data, '{key}'))")
    return f"{ch_type}({raw})" if "Decimal" not in ch_type else f"toDecimal64OrZero({raw}, 6)"


# The columns the export writes, in this order (JSONEachRow keys).
SHIPPED_COLUMNS: Final = ("id", "event_type", "event_data", "user_id", "session_id", "timestamp")

CREATE_TABLE: Final = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    id UUID,
    event_type LowCardinality(String),
    event_data String,
    user_id Nullable(UUID),
    session_id Nullable(UUID),
    timestamp DateTime64(6, 'UTC'),
    model LowCardinality(String) MATERIALIZED JSONExtractString(event_data, 'model'),
    provider LowCardinality(String) MATERIALIZED JSONExtractString(event_data, 'provider'),
    provider_id String MATERIALIZED JSONExtractString(event_data, 'provider_id'),
    request_type LowCardinality(String) MATERIALIZED JSONExtractString(event_data, 'request_type'),
    agent_id String MATERIALIZED JSONExtractString(event_data, 'agent_id'),
    run_id String MATERIALIZED JSONExtractString(event_data, 'run_id'),
    api_key_id String MATERIALIZED JSONExtractString(event_data, 'api_key_id'),
    tokens_input UInt64 MATERIALIZED {_number('tokens_input', 'toUInt64OrZero')},
    tokens_output UInt64 MATERIALIZED {_number('tokens_output', 'toUInt64OrZero')},
    credits Int64 MATERIALIZED {_number('credits', 'toInt64OrZero')},
    cost Decimal(18, 6) MATERIALIZED {_number('cost', 'Decimal')},
    latency_ms UInt64 MATERIALIZED {_number('latency_ms', 'toUInt64OrZero')},
    success Bool MATERIALIZED JSONExtractBool(event_data, 'success')
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(timestamp)
ORDER BY (event_type, toDate(timestamp), id)
"""
# A table created by an older Roost gets the columns added since (idempotent; ClickHouse
# computes a MATERIALIZED column added later from the JSON of the rows already stored).
UPGRADE_TABLE: Final = (
    f"ALTER TABLE {TABLE} ADD COLUMN IF NOT EXISTS provider_id String "
    "MATERIALIZED JSONExtractString(event_data, 'provider_id') AFTER provider",
)
SCHEMA: Final = (CREATE_TABLE, *UPGRADE_TABLE)


@dataclass(frozen=True)
class EventRow:
    """One outbox row as shipped (plain values: the ORM row stays in its session)."""

    id: uuid.UUID
    event_type: str
    event_data: dict[str, Any]
    user_id: uuid.UUID | None
    session_id: uuid.UUID | None
    timestamp: datetime

    def json_line(self) -> str:
        ts = self.timestamp.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
        return json.dumps({
            "id": str(self.id), "event_type": self.event_type,
            "event_data": json.dumps(self.event_data, separators=(",", ":"), default=str),
            "user_id": str(self.user_id) if self.user_id else None,
            "session_id": str(self.session_id) if self.session_id else None,
            "timestamp": ts,
        }, separators=(",", ":"))


def _jsoneachrow(rows: Sequence[EventRow]) -> str:
    # json.dumps escapes control characters: one event is always one line.
    return "\n".join(r.json_line() for r in rows)


class Sink(ABC):
    """Where events are shipped and queried.  ``kind`` is ``chdb`` or ``clickhouse``;
    ``location`` names it without credentials (a path, or scheme://host:port/database)."""

    kind: str
    location: str

    @abstractmethod
    async def insert(self, rows: Sequence[EventRow]) -> None:
        """Write ``rows`` (creating the table on first use); raises on any failure."""

    @abstractmethod
    async def select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Rows of ``sql`` as dicts; ``{name:Type}`` placeholders bound from ``params``
        (str, int, uuid.UUID or an aware datetime)."""


def _chdb_param(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, uuid.UUID):
        return str(value)
    return value


class _ChdbEngine:
    """The process's chDB session, used under a lock and closed after each operation.

    chDB lets one process at a time hold a data directory (its ``status`` file lock), and
    the API server and a worker share ``DATA_DIR/analytics/chdb``: each operation opens
    the session, runs, and closes it, and an open that finds the directory held by the
    other process is retried for up to :data:`OPEN_WAIT_S` (operations last milliseconds
    to a few seconds).
    """

    OPEN_WAIT_S: Final = 15.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ready: set[str] = set()  # paths whose table exists

    def run(self, path: str, sql: str, params: Mapping[str, Any] | None = None,
            fmt: str = "JSONEachRow") -> str:
        with self.lock:
            session = self._open(path)
            try:
                if path not in self.ready:
                    for statement in SCHEMA:
                        session.query(statement)
                    self.ready.add(path)
                result = session.query(sql, fmt, params=dict(params) if params else None)
                return str(result.data()) if result is not None else ""
            finally:
                session.close()

    def _open(self, path: str) -> Any:
        try:
            from chdb.session import Session
        except ImportError as exc:
            raise ServiceUnavailable(
                f"the embedded ClickHouse (chDB) is not installed: {INSTALL_HINT}") from exc
        Path(path).mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.OPEN_WAIT_S
        pause = 0.02
        while True:
            try:
                return Session(path)  # type: ignore[no-untyped-call]
            except RuntimeError:  # held by another process for the moment
                if time.monotonic() >= deadline:
                    raise
                time.sleep(pause)
                pause = min(pause * 2, 0.5)

    def close(self) -> None:
        with self.lock:
            self.ready.clear()


_chdb = _ChdbEngine()


class ChdbSink(Sink):
    kind = "chdb"

    def __init__(self, path: Path) -> None:
        self.location = str(path)

    async def insert(self, rows: Sequence[EventRow]) -> None:
        if not rows:
            return
        sql = f"INSERT INTO {TABLE} ({', '.join(SHIPPED_COLUMNS)}) FORMAT JSONEachRow\n"
        await asyncio.to_thread(_chdb.run, self.location, sql + _jsoneachrow(rows))

    async def select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        bound = {k: _chdb_param(v) for k, v in params.items()}
        text = await asyncio.to_thread(_chdb.run, self.location, sql, bound)
        return [json.loads(line) for line in text.splitlines() if line.strip()]


def close_chdb() -> None:
    """Forget what this process knows of chDB directories (a worker's shutdown, tests);
    sessions are closed after each operation already."""
    _chdb.close()


def public_location(url: str) -> str:
    """``url`` without user, password or query: scheme://host:port/database (never
    raises: a URL that does not parse is shown without its host)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        host = f"[{host}]" if ":" in host else host  # an IPv6 literal keeps its brackets
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a port out of range, an unclosed IPv6 bracket
        return f"{url.split(':', 1)[0][:20]}://<unparseable>"
    return f"{parts.scheme}://{host}{port}{parts.path}"


class ServerSink(Sink):
    """A ClickHouse server (22.x or later) by URL, through clickhouse-connect."""

    kind = "clickhouse"
    _clients: dict[str, Any] = {}
    _clients_lock = threading.Lock()
    _ready: set[str] = set()

    def __init__(self, url: str) -> None:
        self.url = url
        self.location = public_location(url)

    def _client(self) -> Any:
        with self._clients_lock:
            client = self._clients.get(self.url)
            if client is None:
                try:
                    import clickhouse_connect
                except ImportError as exc:
                    raise ServiceUnavailable(
                        f"clickhouse-connect is not installed: {INSTALL_HINT}") from exc
                # A chdb:// DSN is clickhouse-connect's in-process chDB backend (one
                # engine per process; the tests use it for this code path).
                http: dict[str, Any] = {} if self.url.startswith("chdb:") else {
                    "connect_timeout": 5, "send_receive_timeout": 60,
                    "autogenerate_session_id": False}
                client = clickhouse_connect.get_client(dsn=self.url, **http)
                self._clients[self.url] = client
            if self.url not in self._ready:
                for statement in SCHEMA:
                    client.command(statement)
                self._ready.add(self.url)
            return client

    def _insert(self, payload: str) -> None:
        self._client().raw_insert(TABLE, list(SHIPPED_COLUMNS), payload.encode(),
                                  fmt="JSONEachRow")

    def _select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        result = self._client().query(sql, parameters=dict(params))
        return list(result.named_results())

    async def insert(self, rows: Sequence[EventRow]) -> None:
        if rows:
            await asyncio.to_thread(self._insert, _jsoneachrow(rows))

    async def select(self, sql: str, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        return await asyncio.to_thread(self._select, sql, params)

    @classmethod
    def forget_clients(cls) -> None:
        """Drop the cached clients (tests; a worker's shutdown)."""
        with cls._clients_lock:
            for client in cls._clients.values():
                with contextlib.suppress(Exception):  # a dead client must not stop the rest
                    client.close()
            cls._clients.clear()
            cls._ready.clear()


def chdb_path(settings: Settings) -> Path:
    return settings.data_dir / "analytics" / "chdb"


def sink_for(settings: Settings) -> Sink:
    """The configured sink: the server when ``analytics_clickhouse_url`` is set, else chDB."""
    if settings.analytics_clickhouse_url:
        return ServerSink(settings.analytics_clickhouse_url)
    return ChdbSink(chdb_path(settings))


# user:password@ in any URL of a message (the client may quote its own form of the URL).
_USERINFO: Final = re.compile(r"(://[^/@\s:]*):[^/@\s]*@")
# A password this long is masked wherever it appears; a shorter one only in a URL's
# user:password@ (masking every "1" of a password "1" would garble hosts and ports).
_MASK_ANYWHERE_LEN: Final = 6


def safe_error(exc: BaseException, settings: Settings) -> str:
    """``exc`` as one line for logs and answers, with the URL's password masked."""
    message = f"{type(exc).__name__}: {exc}".replace("\n", " ").strip()
    url = settings.analytics_clickhouse_url
    if url:
        message = message.replace(url, public_location(url))
        message = _USERINFO.sub(r"\1:***@", message)
        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        # As written in the URL and percent-decoded (how the client sends it).
        for form in {password, unquote(password)} if password else ():
            if len(form) >= _MASK_ANYWHERE_LEN:
                message = message.replace(form, "***")
    return message[:500]
