"""Per-model HNSW indexes on ``document_chunks`` and the SQL that must match them.

pgvector's HNSW index needs one dimension, so every embedding model gets its own
partial expression index::

    CREATE INDEX CONCURRENTLY ix_document_chunks_embedding_<model> ON document_chunks
      USING hnsw ((embedding::vector(<dim>)) vector_cosine_ops)
      WITH (m = 16, ef_construction = 64)
      WHERE embedding_model = '<model>'

The planner only uses it for a query whose ORDER BY has the same expression,
``(embedding::vector(<dim>)) <=> $q``, and whose WHERE implies the same predicate.
The predicate is therefore written into the query as a literal (a bind parameter
would leave a generic plan unable to prove it); :func:`model_predicate` and
:func:`vector_expression` are the single source of both texts.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from typing import Final

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from roost.errors import Conflict, Unprocessable
from roost.knowledge.models import (
    DEFAULT_DIMENSIONS,
    DEFAULT_INDEX,
    DEFAULT_MODEL,
    HNSW_EF_CONSTRUCTION,
    HNSW_M,
)

MODEL_NAME_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/@+-]{0,127}$")
MAX_DIMENSIONS: Final = 16000
_INDEX_PREFIX: Final = "ix_document_chunks_embedding_"
# Serialises index creation across processes (session-level advisory lock).
_LOCK_KEY: Final = 7263117_0400
# How long a process waits for another's index build before giving up (the job is then
# retried), and how often it asks meanwhile.
LOCK_WAIT_S: Final = 900.0
_LOCK_POLL_S: Final = 0.2

# (database URL, model) -> dimensions, for models known to be registered there.
_registered: dict[tuple[str, str], int] = {}
# Models found not registered (check_dimensions), and when: asked again only after
# _ABSENT_RECHECK_S, so searches before a model's first ingestion do not each take a
# second pooled connection.
_absent: dict[tuple[str, str], float] = {}
_ABSENT_RECHECK_S: Final = 30.0


def check_model_name(model: str) -> str:
    if not MODEL_NAME_RE.fullmatch(model):
        raise Unprocessable(
            f"embedding model name {model[:140]!r} must be 1-128 characters of letters, digits "
            "and . _ : / @ + -"
        )
    return model


def sql_literal(value: str) -> str:
    """A PostgreSQL string literal (standard_conforming_strings is on since 9.1)."""
    return "'" + value.replace("'", "''") + "'"


def model_predicate(model: str, alias: str | None = None) -> str:
    column = f"{alias}.embedding_model" if alias else "embedding_model"
    return f"{column} = {sql_literal(check_model_name(model))}"


def vector_expression(dimensions: int, alias: str | None = None) -> str:
    dims = int(dimensions)
    if not 0 < dims <= MAX_DIMENSIONS:
        raise Unprocessable(f"embedding dimensions must be within 1..{MAX_DIMENSIONS}")
    column = f"{alias}.embedding" if alias else "embedding"
    return f"({column}::vector({dims}))"


def index_name(model: str) -> str:
    if model == DEFAULT_MODEL:
        return DEFAULT_INDEX
    slug = re.sub(r"[^a-z0-9]+", "_", model.lower()).strip("_")
    digest = hashlib.sha256(model.encode()).hexdigest()[:8]
    return f"{_INDEX_PREFIX}{slug[: 63 - len(_INDEX_PREFIX) - 9]}_{digest}"


def index_ddl(model: str, dimensions: int, *, concurrently: bool = True) -> str:
    how = "CONCURRENTLY " if concurrently else ""
    return (
        f"CREATE INDEX {how}IF NOT EXISTS {index_name(model)} ON document_chunks "
        f"USING hnsw ({vector_expression(dimensions)} vector_cosine_ops) "
        f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
        f"WHERE {model_predicate(model)}"
    )


async def ensure_model(engine: AsyncEngine, model: str, dimensions: int, provider: str, *,
                       pgbouncer: bool = False) -> None:
    """Register ``model`` and create its HNSW index if this is its first use.

    Idempotent and safe across processes.  Runs on its own autocommit connection as
    the schema owner (``CREATE INDEX CONCURRENTLY`` cannot run in a transaction), so
    call it before opening the transaction that inserts the chunks.  A model already
    registered with another dimension is refused: its vectors could not share an index.

    ``pgbouncer``: behind PgBouncer in transaction mode each autocommit statement may run
    on another server connection, so a session-level advisory lock (and ``SET``) would
    stay behind on one of them; there it all runs in one transaction, under a
    transaction-level lock, with a plain ``CREATE INDEX`` (it holds off chunk inserts
    while it builds, once per new model).
    """
    check_model_name(model)
    key = (engine.url.render_as_string(hide_password=True), model)
    known = DEFAULT_DIMENSIONS if model == DEFAULT_MODEL else _registered.get(key)
    if known == dimensions:
        return
    if known is not None:
        raise Conflict(_dimension_conflict(model, known, dimensions))
    if pgbouncer:
        await _ensure_model_in_transaction(engine, model, dimensions, provider)
        _registered[key] = dimensions
        return
    async with engine.connect() as conn:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await _take_lock(conn)
        # Building an index over a large table outlasts the per-statement timeout that
        # protects requests; this dedicated connection lifts it until it is released.
        await conn.execute(text("SET statement_timeout = 0"))
        try:
            row = (
                await conn.execute(
                    text("SELECT dimensions FROM embedding_models WHERE name = :n"), {"n": model}
                )
            ).first()
            if row is not None and int(row[0]) != dimensions:
                raise Conflict(_dimension_conflict(model, int(row[0]), dimensions))
            name = index_name(model)
            valid = (
                await conn.execute(
                    text("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                         "WHERE c.relname = :n"), {"n": name}
                )
            ).scalar_one_or_none()
            if valid is False:  # an interrupted CONCURRENTLY build leaves an invalid index
                await conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {name}"))
            if valid is not True:
                await conn.execute(text(index_ddl(model, dimensions)))
            if row is None:
                await conn.execute(
                    text("INSERT INTO embedding_models (name, dimensions, provider, index_name) "
                         "VALUES (:n, :d, :p, :i) ON CONFLICT (name) DO NOTHING"),
                    {"n": model, "d": dimensions, "p": provider, "i": name},
                )
        finally:
            await conn.execute(text("RESET statement_timeout"))
            await conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
    _registered[key] = dimensions


async def check_dimensions(engine: AsyncEngine, model: str, dimensions: int) -> None:
    """409, as :func:`ensure_model` gives, when ``model`` is registered with other
    dimensions: a search would cast its vectors to a dimension they do not have.  The
    registration is read once per process (``engine``: the schema owner's, as
    ``embedding_models`` is the administrators' under row-level security); a model not
    registered yet has no chunks to search."""
    key = (engine.url.render_as_string(hide_password=True), model)
    known = DEFAULT_DIMENSIONS if model == DEFAULT_MODEL else _registered.get(key)
    if known is None:
        if time.monotonic() - _absent.get(key, -_ABSENT_RECHECK_S) < _ABSENT_RECHECK_S:
            return
        async with engine.connect() as conn:
            found = await conn.scalar(
                text("SELECT dimensions FROM embedding_models WHERE name = :n"), {"n": model})
        if found is None:
            _absent[key] = time.monotonic()
            return
        known = _registered[key] = int(found)
    if known != dimensions:
        raise Conflict(_dimension_conflict(model, known, dimensions))


async def _take_lock(conn: AsyncConnection) -> None:
    """The session-level advisory lock, asked for again and again with
    ``pg_try_advisory_lock`` rather than waited for in ``pg_advisory_lock``: the holder's
    ``CREATE INDEX CONCURRENTLY`` waits for every statement open in the database, a
    blocked ``pg_advisory_lock`` among them, which waits for the holder (a deadlock
    PostgreSQL ends by failing one).  Between tries no statement is open."""
    deadline = time.monotonic() + LOCK_WAIT_S
    while not (await conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                  {"k": _LOCK_KEY})).scalar_one():
        if time.monotonic() > deadline:
            raise TimeoutError(
                f"another process has been creating an embedding model's index for over "
                f"{LOCK_WAIT_S:.0f} s (advisory lock {_LOCK_KEY}); the ingestion is retried "
                "later")
        await asyncio.sleep(_LOCK_POLL_S)


async def _ensure_model_in_transaction(engine: AsyncEngine, model: str, dimensions: int,
                                      provider: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
        await conn.execute(text("SET LOCAL statement_timeout = 0"))
        row = (await conn.execute(
            text("SELECT dimensions FROM embedding_models WHERE name = :n"), {"n": model})).first()
        if row is not None and int(row[0]) != dimensions:
            raise Conflict(_dimension_conflict(model, int(row[0]), dimensions))
        name = index_name(model)
        valid = (await conn.execute(
            text("SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                 "WHERE c.relname = :n"), {"n": name})).scalar_one_or_none()
        if valid is False:  # an interrupted CONCURRENTLY build (from a direct connection)
            await conn.execute(text(f"DROP INDEX IF EXISTS {name}"))
        if valid is not True:
            await conn.execute(text(index_ddl(model, dimensions, concurrently=False)))
        if row is None:
            await conn.execute(
                text("INSERT INTO embedding_models (name, dimensions, provider, index_name) "
                     "VALUES (:n, :d, :p, :i) ON CONFLICT (name) DO NOTHING"),
                {"n": model, "d": dimensions, "p": provider, "i": name})


def _dimension_conflict(model: str, known: int, asked: int) -> str:
    return (
        f"embedding model {model!r} is registered with {known} dimensions, not {asked}; "
        "a model's vectors must all have one dimension (use another model name)"
    )
