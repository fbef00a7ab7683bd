"""Vector, full-text and hybrid (reciprocal rank fusion) search over document chunks.

Vector search orders by ``(embedding::vector(<dim>)) <=> query`` with the model's
predicate written as a literal, which is exactly the expression and predicate of the
model's partial HNSW index (:mod:`roost.knowledge.index`), so PostgreSQL walks the
index.  Filters (scope, owner, group, persona, collection, tags, document ids) are
applied to the rows the index yields; with pgvector >= 0.8 ``hnsw.iterative_scan``
lets the scan go on past ``ef_search`` candidates until ``k`` rows pass the filters, so a
selective filter still returns ``k`` results.  ``relaxed_order`` may return rows
slightly out of order, so the candidates are re-sorted by exact distance.

Full-text search uses the generated ``content_tsv`` column (GIN index), matching any
of the query's stemmed terms and ranking by ``ts_rank_cd`` (documents with more and
closer terms first).  Hybrid search fuses the two rankings by reciprocal rank fusion:
``score = sum(1 / (60 + rank))`` over the lists a chunk appears in.

A search is one statement (:func:`search_sql`: candidates, fusion and the hits' chunk
and document rows) run through ``roost_knowledge_search`` (migration 1070), which sets
the HNSW settings first and, for a caller the process knows, confirms the caller and
scopes the statement (:func:`search_confirming`: no transaction around it).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from sqlalchemy import URL, Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from roost.db.engine import Database
from roost.db.transaction import driver_connection, local_settings, note_settings
from roost.db.vector import ensure_vector_codec
from roost.knowledge.config import KnowledgeConfig, get_embedder
from roost.knowledge.embeddings import Embedder
from roost.knowledge.index import check_dimensions, model_predicate, vector_expression
from roost.knowledge.models import TEXT_SEARCH_CONFIG
from roost.knowledge.schemas import (
    SearchDocument,
    SearchHit,
    SearchRequest,
    SearchResponse,
)
from roost.principal import Principal

RRF_K: Final = 60
MIN_CANDIDATES: Final = 40
_iterative: dict[URL, bool] = {}  # by database URL (hashable: no rendering per search)

# A hit's row: what roost_knowledge_search's caller names its result (migration 1070).
_CHUNK_COLUMNS: Final = ("document_id", "chunk_index", "content", "metadata", "is_curated",
                         "source_chunk_ids")
_DOCUMENT_COLUMNS: Final = ("name", "source", "uri", "path", "collection", "mime")
HIT_COLUMNS: Final = (
    "id uuid, score double precision, distance double precision, text_rank double precision, "
    "document_id uuid, chunk_index integer, content text, metadata jsonb, is_curated boolean, "
    "source_chunk_ids uuid[], name text, source text, uri text, path text, collection text, "
    "mime text")
# The statements' parameters, $1..$12 in this order: roost_knowledge_search passes its
# arguments after the statement to it so (migration 1070).
STATEMENT_PARAMETERS: Final = ("qvec", "limit", "scope_user", "scope_groups", "owner_id",
                               "group_id", "persona_id", "collection", "tags",
                               "document_ids", "qtext", "pool")
_CALL: Final = ("SELECT * FROM roost_knowledge_search($1, $2, $3, $4, $5, $6, $7, $8, $9, "  # noqa: S608
                f"$10, $11, $12, $13, $14, $15, $16, $17) AS r({HIT_COLUMNS})")


@dataclass
class Filters:
    sql: list[str]
    params: dict[str, Any]


def build_filters(actor: Principal | None, req: SearchRequest) -> Filters:
    """WHERE clauses on chunk alias ``c`` (bind parameters only: no input in the SQL)."""
    sql: list[str] = []
    params: dict[str, Any] = {}
    if actor is not None and actor.user_id is not None:
        if actor.group_ids:
            sql.append("(c.user_id = :scope_user OR c.group_id = ANY(:scope_groups))")
            params["scope_groups"] = list(actor.group_ids)
        else:
            sql.append("c.user_id = :scope_user")
        params["scope_user"] = actor.user_id
    elif actor is not None and not actor.is_admin:
        sql.append("false")
    for condition, name, value in (
        ("c.user_id = :owner_id", "owner_id", req.owner_id),
        ("c.group_id = :group_id", "group_id", req.group_id),
        ("c.persona_id = :persona_id", "persona_id", req.persona_id),
        ("c.collection = :collection", "collection", req.collection),
    ):
        if value is not None:
            sql.append(condition)
            params[name] = value
    if req.tags:
        sql.append("c.tags @> CAST(:tags AS jsonb)")
        params["tags"] = json.dumps(req.tags)
    if req.document_ids is not None:
        sql.append("c.document_id = ANY(:document_ids)")
        params["document_ids"] = list(req.document_ids)
    if not req.include_curated:
        sql.append("NOT c.is_curated")
    return Filters(sql, params)


def vector_query_sql(model: str, dims: int, filters: list[str], *, limit: str = "limit",
                     columns: Sequence[str] = ()) -> str:
    """The k-nearest-neighbour query (``id``, ``distance`` and the chunk's ``columns``,
    ``:limit`` rows, not quite in order); its ORDER BY and predicate match the HNSW
    index."""
    expr = vector_expression(dims, "c")
    # A binary ``vector`` parameter (roost.db.vector): no float formatting or parsing.
    query_vec = f"CAST(:qvec AS vector({int(dims)}))"
    where = " AND ".join([model_predicate(model, "c"), *filters])
    # Only validated pieces are interpolated: an int, a quoted model name, fixed clauses.
    # relaxed_order may yield rows slightly out of order: the caller re-sorts them.
    chunk = "".join(f", c.{name}" for name in columns)
    return (
        f"SELECT c.id, {expr} <=> {query_vec} AS distance{chunk} FROM document_chunks c"  # noqa: S608
        f" WHERE {where} ORDER BY {expr} <=> {query_vec} LIMIT :{limit}"
    )


def text_query_sql(filters: list[str], model: str | None, *, limit: str = "limit") -> str:
    # Any of the query's stemmed terms (plainto_tsquery ANDs them; a paraphrased question
    # rarely contains every word of the passage it asks about).  Cast back with ::tsquery,
    # not to_tsquery: that would stem the stemmed lexemes again ('agre' -> 'agr') and
    # miss the very word searched for.
    tsq = (f"replace(plainto_tsquery('{TEXT_SEARCH_CONFIG}', :qtext)::text, ' & ', ' | ')"
           "::tsquery")
    where = ["c.content_tsv @@ q.query", *filters]
    if model is not None:
        where.insert(0, model_predicate(model, "c"))
    return (  # only fixed clauses and a quoted model name are interpolated
        f"SELECT c.id, ts_rank_cd(c.content_tsv, q.query) AS rank FROM document_chunks c, "  # noqa: S608
        f"(SELECT {tsq} AS query) q WHERE {' AND '.join(where)} "
        f"ORDER BY rank DESC, c.id LIMIT :{limit}"
    )


def search_sql(mode: str, model: str, dims: int, filters: list[str]) -> str:
    """A search's one statement: its ``:limit`` hits best first, each row
    :data:`HIT_COLUMNS` (the chunk's and its document's columns beside the scores).

    * vector: the k-NN with the chunks' columns, nearest first (``score`` = similarity);
    * text: the ``:limit`` best-ranked chunks (``score`` = the rank);
    * hybrid: ``:pool`` candidates of each, fused by reciprocal rank fusion (positions
      by distance, then by rank; ties by id, as the candidates are ordered).

    Each hit's document (and in text and hybrid mode its chunk) is looked up by key once
    the hits are known.  A plain join let the planner, misled by row-level security's
    estimate of one visible document (documents not analysed yet), scan the documents
    and run the k-NN again for each: 20 ms instead of 1.  "LIMIT 1" (a key has one row)
    keeps each lookup a subquery of its own, so it can only run per hit."""
    document = ", ".join(f"d.{name}::text" for name in _DOCUMENT_COLUMNS)
    documents = (f"CROSS JOIN LATERAL (SELECT {document} FROM documents d "  # noqa: S608
                 "WHERE d.id = h.document_id LIMIT 1) d")
    chunk = ", ".join(f"h.{name}" for name in _CHUNK_COLUMNS)
    if mode == "vector":
        knn = vector_query_sql(model, dims, filters, columns=_CHUNK_COLUMNS)
        return (f"SELECT h.id, 1 - h.distance, h.distance, NULL::float8, {chunk}, d.* "  # noqa: S608
                f"FROM ({knn}) h {documents} ORDER BY h.distance, h.id")
    if mode == "text":
        ranked = (f"SELECT t.id, t.rank::float8 AS score, NULL::float8 AS distance, "  # noqa: S608
                  f"t.rank::float8 AS text_rank FROM ({text_query_sql(filters, None)}) t")
    else:
        vector = vector_query_sql(model, dims, filters, limit="pool")
        text_ = text_query_sql(filters, model, limit="pool")
        ranked = (
            f"WITH v AS ({vector}), t AS ({text_}), "  # noqa: S608
            "vr AS (SELECT id, distance, row_number() OVER (ORDER BY distance, id) AS pos FROM v), "
            "tr AS (SELECT id, rank, row_number() OVER (ORDER BY rank DESC, id) AS pos FROM t) "
            f"SELECT coalesce(vr.id, tr.id) AS id, coalesce(1.0::float8 / ({RRF_K} + vr.pos), 0) "
            f"+ coalesce(1.0::float8 / ({RRF_K} + tr.pos), 0) AS score, vr.distance, "
            "tr.rank::float8 AS text_rank FROM vr FULL JOIN tr ON tr.id = vr.id "
            'ORDER BY score DESC, coalesce(vr.id, tr.id)::text COLLATE "C" LIMIT :limit')
    chunks = ", ".join(f"c.{name}" for name in _CHUNK_COLUMNS)
    return (f"SELECT f.id, f.score, f.distance, f.text_rank, {chunk}, d.* "  # noqa: S608
            f"FROM ({ranked}) f CROSS JOIN LATERAL (SELECT {chunks} FROM document_chunks c "
            f"WHERE c.id = f.id LIMIT 1) h {documents} "
            'ORDER BY f.score DESC, f.id::text COLLATE "C"')


async def supports_iterative_scan(session: AsyncSession) -> bool:
    """pgvector >= 0.8 (``hnsw.iterative_scan``); asked once per database URL."""
    return await _supports_iterative_scan(_session_url(session), await driver_connection(session))


async def _supports_iterative_scan(url: URL, driver: Any) -> bool:
    known = _iterative.get(url)
    if known is None:
        version = await driver.fetchval(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        parts = tuple(int(p) for p in str(version or "0").split(".")[:2] if p.isdigit())
        known = parts >= (0, 8)
        _iterative[url] = known
    return known


def hnsw_settings(ef_search: int, iterative: bool) -> dict[str, str]:
    """The transaction-local HNSW settings a search with this ``ef_search`` needs."""
    values = {"hnsw.ef_search": str(ef_search)}
    if iterative:
        values["hnsw.iterative_scan"] = "relaxed_order"
    return values


async def configure_session(session: AsyncSession, ef_search: int) -> None:
    """Transaction-local HNSW settings (SET LOCAL: safe under PgBouncer pooling), for the
    other domains' vector statements (tools, memory; knowledge's own k-NN sets them in
    its statement, ``roost_knowledge_search``).  Skipped when the transaction has them
    already (a second search in the same transaction)."""
    wanted = hnsw_settings(ef_search, await supports_iterative_scan(session))
    have = local_settings(session)
    if all(have.get(name) == value for name, value in wanted.items()):
        return
    names = list(wanted)
    await session.execute(
        text(", ".join(f"set_config(:n{i}, :v{i}, true)" for i in range(len(names))).join(
            ("SELECT ", ""))),
        {**{f"n{i}": name for i, name in enumerate(names)},
         **{f"v{i}": wanted[name] for i, name in enumerate(names)}},
    )
    note_settings(session, wanted)


async def query_vector(
    cfg: KnowledgeConfig, req: SearchRequest, embedder: Embedder | None = None,
) -> list[float]:
    """The query's embedding."""
    emb = embedder or get_embedder(cfg.spec_for(req.embedding_model))
    return (await emb.embed([req.query]))[0]


async def search(
    session: AsyncSession, actor: Principal, cfg: KnowledgeConfig, req: SearchRequest,
    *, embedder: Embedder | None = None, vector: Sequence[float] | None = None,
) -> SearchResponse:
    """``req`` in the session's transaction (scoped to ``actor``), one statement.
    ``vector``: the query's embedding when the caller has it already."""
    if req.mode != "text":
        bind = session.bind
        assert bind is not None  # the process's sessions are bound to an engine
        await _check_model(bind if isinstance(bind, AsyncEngine) else bind.engine, cfg, req)
    if vector is None and req.mode != "text":
        vector = await query_vector(cfg, req, embedder)
    return await _search(await driver_connection(session), _session_url(session), actor, cfg,
                         req, vector)


async def search_confirming(
    database: Database, actor: Principal, cfg: KnowledgeConfig, req: SearchRequest,
    vector: Sequence[float] | None, *, confirmation: str, scope: str,
) -> SearchResponse:
    """:func:`search` for a caller this process knows, in one round trip and no
    transaction around it: ``roost_knowledge_search`` (migration 1070) has the database
    confirm the caller (``confirmation``, JSON; SQLSTATE 28000 when the credential no
    longer resolves to ``actor``) and scope the statement's implicit transaction
    (``scope``) before it searches (roost.identity.resolver.KnownCaller).  ``vector``:
    the query's embedding (None in text mode)."""
    if req.mode != "text":
        await _check_model(database.engine, cfg, req)
    async with database.autocommit() as driver:
        return await _search(driver, database.url, actor, cfg, req, vector,
                             confirmation=confirmation, scope=scope)


async def _check_model(engine: AsyncEngine, cfg: KnowledgeConfig, req: SearchRequest) -> None:
    """409 for a model registered with other dimensions than the configured ones (a
    misconfigured server), not the vector cast's failure; text search has no vectors."""
    spec = cfg.spec_for(req.embedding_model)
    await check_dimensions(engine, spec.model, spec.dimensions)


async def _search(
    driver: Any, url: URL, actor: Principal, cfg: KnowledgeConfig, req: SearchRequest,
    vector: Sequence[float] | None, *, confirmation: str | None = None,
    scope: str | None = None,
) -> SearchResponse:
    spec = cfg.spec_for(req.embedding_model)
    filters = build_filters(actor, req)
    pool = max(req.k * 4, MIN_CANDIDATES) if req.mode == "hybrid" else req.k
    statement = _search_statement(req.mode, spec.model, spec.dimensions, tuple(filters.sql))
    rows = await _run(driver, url, cfg, statement, {
        **filters.params, "qvec": vector, "limit": req.k, "qtext": req.query, "pool": pool,
    }, ef_search=pool, confirmation=confirmation, scope=scope)
    return SearchResponse(query=req.query, mode=req.mode, embedding_model=spec.model,
                          results=[_hit(row) for row in rows])


async def _run(
    driver: Any, url: URL, cfg: KnowledgeConfig, statement: str, params: dict[str, Any], *,
    ef_search: int, confirmation: str | None = None,
    scope: str | None = None,
) -> list[Any]:
    """``statement`` through ``roost_knowledge_search`` (migration 1070): the HNSW
    settings come in the same round trip, and with ``confirmation`` and ``scope`` (a
    caller this process knows, :func:`search_confirming`) the database confirms the
    caller and scopes the statement's own implicit transaction first.  Without them the
    connection's transaction must be scoped already."""
    await ensure_vector_codec(driver)
    iterative = await _supports_iterative_scan(url, driver)
    rows: list[Any] = await driver.fetch(
        _CALL, confirmation, scope, max(cfg.ef_search, ef_search),
        iterative, statement, *(params.get(name) for name in STATEMENT_PARAMETERS))
    return rows


@functools.lru_cache(maxsize=512)
def _search_statement(mode: str, model: str, dims: int, filters: tuple[str, ...]) -> str:
    return _statement(search_sql(mode, model, dims, list(filters)))


_PARAM_RE = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


def _statement(sql: str) -> str:
    """``sql``'s ``:name`` parameters numbered as :data:`STATEMENT_PARAMETERS` (``$n``);
    quoted literals (the model's name) left alone."""
    parts = re.split(r"('(?:[^']|'')*')", sql)
    return "".join(
        part if i % 2 else _PARAM_RE.sub(
            lambda m: f"${STATEMENT_PARAMETERS.index(m.group(1)) + 1}", part)
        for i, part in enumerate(parts))


def _session_url(session: AsyncSession) -> URL:
    bind = session.get_bind()
    return bind.engine.url if isinstance(bind, Connection) else bind.url


def _hit(row: Any) -> SearchHit:
    """A hit from a row of :data:`HIT_COLUMNS`."""
    meta = row["metadata"] or {}
    distance = row["distance"]
    return SearchHit(
        chunk_id=row["id"], document_id=row["document_id"], chunk_index=row["chunk_index"],
        content=row["content"], score=row["score"],
        vector_similarity=None if distance is None else 1.0 - distance,
        text_rank=row["text_rank"], page=meta.get("page"), section=meta.get("section"),
        char_start=meta.get("char_start"), char_end=meta.get("char_end"),
        is_curated=row["is_curated"], source_chunk_ids=row["source_chunk_ids"],
        document=SearchDocument(
            id=row["document_id"], name=row["name"], source=row["source"], uri=row["uri"],
            path=row["path"], collection=row["collection"], mime=row["mime"],
        ),
    )
