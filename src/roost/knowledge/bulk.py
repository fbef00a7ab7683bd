"""Writing many chunks fast: binary COPY into a temporary table, then one INSERT.

Row-level security refuses ``COPY FROM`` into ``document_chunks`` for the application
role, and row-by-row INSERTs with text-formatted vectors are an order of magnitude
slower than COPY (Python formats every float, PostgreSQL parses it back).  So chunks
are encoded here in PostgreSQL's binary COPY format (vectors as big-endian float4
straight from numpy), copied into a transaction-local temporary table (no RLS there;
``ON COMMIT DROP``, so it is safe under PgBouncer transaction pooling), and moved with
``INSERT ... SELECT``, where the policies' ``WITH CHECK`` still applies to every row.
"""

from __future__ import annotations

import io
import json
import struct
import uuid
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

_HEADER: Final = b"PGCOPY\n\xff\r\n\x00" + struct.pack("!ii", 0, 0)
_TRAILER: Final = struct.pack("!h", -1)
_NULL: Final = struct.pack("!i", -1)
_UUID_OID: Final = 2950

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


def _field(data: bytes) -> bytes:
    return struct.pack("!i", len(data)) + data


def _uuid(value: uuid.UUID | None) -> bytes:
    return _NULL if value is None else b"\x00\x00\x00\x10" + value.bytes


def _text(value: str | None) -> bytes:
    return _NULL if value is None else _field(value.encode("utf-8"))


def _int(value: int | None) -> bytes:
    return _NULL if value is None else b"\x00\x00\x00\x04" + struct.pack("!i", value)


def _jsonb(value: Any) -> bytes:
    return _field(b"\x01" + json.dumps(value, separators=(",", ":")).encode("utf-8"))


def _uuid_array(values: Sequence[uuid.UUID] | None) -> bytes:
    if values is None:
        return _NULL
    body = struct.pack("!iiiii", 1, 0, _UUID_OID, len(values), 1)
    body += b"".join(b"\x00\x00\x00\x10" + v.bytes for v in values)
    return _field(body)


def _vectors(rows: Sequence[dict[str, Any]]) -> tuple[bytes, int]:
    """All embeddings as one big-endian float4 buffer (one numpy conversion, one check)."""
    matrix = np.asarray([row["embedding"] for row in rows], dtype=">f4")
    if matrix.ndim != 2 or not np.isfinite(matrix).all():
        raise ValueError("embeddings must be finite vectors of one dimension")
    return matrix.tobytes(), int(matrix.shape[1])


def encode_rows(rows: Sequence[dict[str, Any]]) -> bytes:
    """PostgreSQL binary COPY data for ``rows`` (dicts keyed by :data:`COLUMNS` names;
    ``chunk_metadata`` is accepted for ``metadata``)."""
    vectors, dims = _vectors(rows)
    step = dims * 4
    vec_head = struct.pack("!ihh", 4 + step, dims, 0)
    count = struct.pack("!h", len(COLUMNS))
    json_cache: dict[str, bytes] = {}

    def jsonb(value: Any) -> bytes:
        raw = json.dumps(value, separators=(",", ":"))
        cached = json_cache.get(raw)
        if cached is None:
            cached = _field(b"\x01" + raw.encode("utf-8"))
            if len(json_cache) < 1024:
                json_cache[raw] = cached
        return cached

    parts: list[bytes] = [_HEADER]
    for i, row in enumerate(rows):
        meta = row.get("metadata", row.get("chunk_metadata")) or {}
        parts += (
            count, _uuid(row["id"]), _uuid(row["document_id"]), _uuid(row["user_id"]),
            _uuid(row.get("group_id")), _uuid(row.get("persona_id")),
            _text(row.get("collection")), jsonb(row.get("tags") or []),
            _int(row["chunk_index"]), _text(row["content"].replace("\x00", "")),
            _int(row.get("token_count")), vec_head, vectors[i * step:(i + 1) * step],
            _text(row["embedding_model"]), _int(row["embedding_dim"]),
            b"\x00\x00\x00\x01\x01" if row.get("is_curated") else b"\x00\x00\x00\x01\x00",
            _uuid_array(row.get("source_chunk_ids")), jsonb(meta),
        )
    parts.append(_TRAILER)
    return b"".join(parts)


async def insert_chunks(session: AsyncSession, rows: Sequence[dict[str, Any]]) -> int:
    """Insert ``rows`` into ``document_chunks`` in the session's transaction."""
    if not rows:
        return 0
    payload = encode_rows(rows)
    conn = await session.connection()
    raw = await conn.get_raw_connection()
    driver = raw.driver_connection
    assert driver is not None
    await session.execute(text(
        f"CREATE TEMPORARY TABLE IF NOT EXISTS {_TEMP} ("
        + ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
        + ") ON COMMIT DROP"
    ))
    await driver.copy_to_table(_TEMP, source=io.BytesIO(payload), columns=[n for n, _ in COLUMNS],
                               format="binary")
    await session.execute(text(
        f"INSERT INTO document_chunks ({_NAMES}) SELECT {_NAMES} FROM {_TEMP}"  # noqa: S608
    ))
    await session.execute(text(f"TRUNCATE {_TEMP}"))
    return len(rows)
