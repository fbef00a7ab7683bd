"""Writing many chunks fast: binary COPY, streamed while it is being encoded.

Chunks are encoded in PostgreSQL's binary COPY format (vectors as big-endian float4
straight from numpy, repeated values encoded once) in slices, and the slices are
streamed to the server as they are made, so PostgreSQL inserts one slice while Python
encodes the next.

Row-level security refuses ``COPY FROM`` for a role the policies apply to.  Two paths:

* **direct** (the usual one): the caller's transaction runs as ``roost_app`` for a user
  (``apply_principal``) and the connecting role owns the tables.  Every row is checked
  here against exactly what the insert policy's ``WITH CHECK`` would test
  (``roost_row_visible(user_id)``: the user's own rows, or any row for an
  administrator), then the COPY runs under the connecting role (``SET LOCAL ROLE
  NONE``) and the user's role is restored.  A row for anyone else raises
  :class:`~roost.errors.Forbidden` before anything is sent.
* **via a temporary table**, when the connecting role is itself subject to row-level
  security (a deployment that logs in as the application role): COPY into a
  transaction-local table (``ON COMMIT DROP``: safe under PgBouncer transaction
  pooling), then ``INSERT ... SELECT``, where PostgreSQL applies ``WITH CHECK`` itself.

docs/benchmarks.md ("RAG") has the measurements behind this choice.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, Final

import numpy as np
import orjson
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.errors import Forbidden

_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER: Final = struct.pack("!h", -1)
_NULL: Final = struct.pack("!i", -1)
_UUID_OID: Final = 2950
_UUID_LEN: Final = b"\x00\x00\x00\x10"
_TRUE: Final = b"\x00\x00\x00\x01\x01"
_FALSE: Final = b"\x00\x00\x00\x01\x00"
_INT: Final = struct.Struct("!ii")
_LEN: Final = struct.Struct("!i")
# Rows per streamed slice: large enough to amortise the per-slice work, small enough
# that the server starts inserting early.
SLICE_ROWS: Final = 1000

# (column, temp-table type); the order of the COPY fields.
COLUMNS: Final = (
    ("id", "uuid"), ("document_id", "uuid"), ("user_id", "uuid"), ("group_id", "uuid"),
    ("persona_id", "uuid"), ("collection", "varchar(128)"), ("tags", "jsonb"),
    ("chunk_index", "integer"), ("content", "text"), ("token_count", "integer"),
    ("embedding", "vector"), ("embedding_model", "varchar(128)"), ("embedding_dim", "integer"),
    ("is_curated", "boolean"), ("source_chunk_ids", "uuid[]"), ("metadata", "jsonb"),
)
_NAMES: Final = ", ".join(name for name, _ in COLUMNS)
_TEMP: Final = "roost_chunk_load"
_TABLE: Final = "document_chunks"
_FIELD_COUNT: Final = struct.pack("!h", len(COLUMNS))


def _memo(encode: Callable[[Any], bytes]) -> Callable[[Any], bytes]:
    """``encode`` with a small per-call cache (ids, names and numbers repeat across rows)."""
    cache: dict[Any, bytes] = {}

    def encoded(value: Any) -> bytes:
        hit = cache.get(value)
        if hit is None:
            hit = encode(value)
            if len(cache) < 4096:
                cache[value] = hit
        return hit

    return encoded


def _uuid(value: uuid.UUID | None) -> bytes:
    return _NULL if value is None else _UUID_LEN + value.bytes


def _text(value: str | None) -> bytes:
    if value is None:
        return _NULL
    data = value.encode("utf-8")
    return _LEN.pack(len(data)) + data


def _int(value: int | None) -> bytes:
    return _NULL if value is None else _INT.pack(4, value)


def _jsonb(value: Any) -> bytes:
    data = b"\x01" + orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS)
    return _LEN.pack(len(data)) + data


def _uuid_array(values: Sequence[uuid.UUID] | None) -> bytes:
    if values is None:
        return _NULL
    body = struct.pack("!iiiii", 1, 0, _UUID_OID, len(values), 1)
    body += b"".join(_UUID_LEN + v.bytes for v in values)
    return _LEN.pack(len(body)) + body


def _vectors(rows: Sequence[dict[str, Any]]) -> tuple[bytes, int]:
    """All embeddings as one big-endian float4 buffer (one numpy conversion, one check)."""
    matrix = np.asarray([row["embedding"] for row in rows], dtype=">f4")
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise ValueError("embeddings must be finite vectors of one dimension")
    return matrix.tobytes(), int(matrix.shape[1])


def _slices(rows: Sequence[dict[str, Any]], slice_rows: int = SLICE_ROWS) -> Iterator[bytes]:
    """The COPY data for ``rows``: the header, pieces of ``slice_rows`` rows, the
    trailer; values that repeat across rows are encoded once for all pieces."""
    uuid_f, text_f, int_f = _memo(_uuid), _memo(_text), _memo(_int)
    yield _HEADER
    for lo in range(0, len(rows), slice_rows):
        part = rows[lo:lo + slice_rows]
        vectors, dims = _vectors(part)
        step = dims * 4
        vec_head = struct.pack("!ihh", 4 + step, dims, 0)
        out: list[bytes] = []
        for i, row in enumerate(part):
            meta = row.get("metadata", row.get("chunk_metadata")) or {}
            content = row["content"]
            if "\x00" in content:  # PostgreSQL text cannot hold NUL
                content = content.replace("\x00", "")
            out += (
                _FIELD_COUNT, _UUID_LEN + row["id"].bytes, uuid_f(row["document_id"]),
                uuid_f(row["user_id"]), uuid_f(row.get("group_id")), uuid_f(row.get("persona_id")),
                text_f(row.get("collection")), _jsonb(row.get("tags") or []),
                int_f(row["chunk_index"]), _text(content), int_f(row.get("token_count")),
                vec_head, vectors[i * step:(i + 1) * step],
                text_f(row["embedding_model"]), int_f(row["embedding_dim"]),
                _TRUE if row.get("is_curated") else _FALSE,
                _uuid_array(row.get("source_chunk_ids")), _jsonb(meta),
            )
        yield b"".join(out)
    yield _TRAILER


def encode_rows(rows: Sequence[dict[str, Any]]) -> bytes:
    """PostgreSQL binary COPY data for ``rows`` (dicts keyed by :data:`COLUMNS` names;
    ``chunk_metadata`` is accepted for ``metadata``)."""
    return b"".join(_slices(rows))


async def _stream(rows: Sequence[dict[str, Any]]) -> AsyncIterator[bytes]:
    for piece in _slices(rows):
        yield piece


async def _scope(session: AsyncSession) -> tuple[bool, str, uuid.UUID | None, bool]:
    """(policies apply to the current role, current role setting, user id, is admin)."""
    row = (await session.execute(text(
        f"SELECT row_security_active('{_TABLE}'), current_setting('role'), "
        "roost_current_user_id(), roost_is_admin()"
    ))).one()
    return bool(row[0]), str(row[1]), row[2], bool(row[3])


def check_rows(rows: Sequence[dict[str, Any]], user_id: uuid.UUID | None, is_admin: bool) -> None:
    """What the insert policy's ``WITH CHECK (roost_row_visible(user_id))`` tests."""
    if is_admin:
        return
    if user_id is None or any(row["user_id"] != user_id for row in rows):
        raise Forbidden("chunks can only be written for the acting user's own documents")


async def insert_chunks(
    session: AsyncSession, rows: Sequence[dict[str, Any]], *, direct: bool = True,
) -> int:
    """Insert ``rows`` into ``document_chunks`` in the session's transaction.

    ``direct=False`` forces the temporary-table path (tests; it is chosen anyway when
    the connecting role cannot leave row-level security)."""
    if not rows:
        return 0
    conn = await session.connection()
    driver = (await conn.get_raw_connection()).driver_connection
    assert driver is not None
    active, role, user_id, is_admin = await _scope(session)
    if not active:  # the owner, or a role that bypasses row-level security
        await _copy(driver, _TABLE, rows)
        return len(rows)
    check_rows(rows, user_id, is_admin)
    if direct:
        # Leave the user's role for the COPY only (the rows were checked above).  A failed
        # COPY aborts the transaction, whose rollback (or the savepoint's) restores the
        # role; restoring it here would only mask the error.
        still_active = (await session.execute(text(
            f"SELECT set_config('role', 'none', true), row_security_active('{_TABLE}')"
        ))).one()[1]
        if not still_active:
            await _copy(driver, _TABLE, rows)
        await session.execute(text("SELECT set_config('role', :r, true)"), {"r": role})
        if not still_active:
            return len(rows)
    await session.execute(text(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {_TEMP} ("
        + ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
        + ") ON COMMIT DROP"
    ))
    await _copy(driver, _TEMP, rows)
    await session.execute(text(
        f"INSERT INTO {_TABLE} ({_NAMES}) SELECT {_NAMES} FROM {_TEMP}"  # noqa: S608
    ))
    await session.execute(text(f"TRUNCATE {_TEMP}"))
    return len(rows)


async def _copy(driver: Any, table: str, rows: Sequence[dict[str, Any]]) -> None:
    await driver.copy_to_table(table, source=_stream(rows), columns=[n for n, _ in COLUMNS],
                               format="binary")
