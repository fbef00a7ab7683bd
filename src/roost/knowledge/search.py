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
"""

from __future__ import annotations

import functools
import json
import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
from sqlalchemy import URL, Connection, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.engine import Database
from roost.db.transaction import driver_connection, local_settings, note_settings
from roost.db.vector import ensure_vector_codec
from roost.knowledge.config import KnowledgeConfig, get_embedder
from roost.knowledge.embeddings import Embedder
from roost.knowledge.index import model_predicate, vector_expression
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

# What a hydrated k-NN row carries besides the id and distance, and the column list
# ``roost_knowledge_knn``'s caller gives its result (migration 1070).
_CHUNK_COLUMNS: Final = ("document_id", "chunk_index", "content", "metadata", "is_curated",
                         "source_chunk_ids")
_DOCUMENT_COLUMNS: Final = ("name", "source", "uri", "path", "collection", "mime")
_CANDIDATE_COLUMNS: Final = "id uuid, distance double precision"
HIT_COLUMNS: Final = (
    f"{_CANDIDATE_COLUMNS}, document_id uuid, chunk_index integer, content text, "
    "metadata jsonb, is_curated boolean, source_chunk_ids uuid[], name text, source text, "
    "uri text, path text, collection text, mime text")
# The k-NN statement's parameters, $1..$10 in this order: roost_knowledge_knn passes its
# arguments after the statement to it so (migration 1070).
KNN_PARAMETERS: Final = ("qvec", "limit", "scope_user", "scope_groups", "owner_id",
                         "group_id", "persona_id", "collection", "tags", "document_ids")
_KNN_CALL: Final = ("SELECT * FROM roost_knowledge_knn($1, $2, $3, $4, $5, $6, $7, $8, $9, "
                    "$10, $11, $12, $13, $14, $15) AS r({columns})")


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


def vector_query_sql(model: str, dims: int, filters: list[str], *, hydrate: bool = False) -> str:
    """The k-nearest-neighbour query; its ORDER BY and predicate match the HNSW index.
    With ``hydrate``, each candidate comes with its chunk's and document's columns
    (:data:`HIT_COLUMNS`), in no particular order."""
    expr = vector_expression(dims, "c")
    # A binary ``vector`` parameter (roost.db.vector): no float formatting or parsing.
    query_vec = f"CAST(:qvec AS vector({int(dims)}))"
    where = " AND ".join([model_predicate(model, "c"), *filters])
    # Only validated pieces are interpolated: an int, a quoted model name, fixed clauses.
    # relaxed_order may yield rows slightly out of order: the caller re-sorts them.
    chunk = "".join(f", c.{name}" for name in _CHUNK_COLUMNS) if hydrate else ""
    knn = (
        f"SELECT c.id, {expr} <=> {query_vec} AS distance{chunk} FROM document_chunks c"  # noqa: S608
        f" WHERE {where} ORDER BY {expr} <=> {query_vec} LIMIT :limit"
    )
    if not hydrate:
        return knn
    # Each candidate's document looked up by its key, after the k-NN.  A plain join (or a
    # LATERAL subquery the planner flattens into one) let it, misled by row-level
    # security's estimate of one visible document (documents not analysed yet), scan the
    # documents and run the k-NN again for each: 20 ms instead of 1.  "LIMIT 1" (a key has
    # one row) keeps the subquery whole, so it can only run per candidate.
    document = ", ".join(f"d.{name}::text" for name in _DOCUMENT_COLUMNS)
    return (f"SELECT k.*, d.* FROM ({knn}) k CROSS JOIN LATERAL "  # noqa: S608
            f"(SELECT {document} FROM documents d WHERE d.id = k.document_id LIMIT 1) d")


def text_query_sql(filters: list[str], model: str | None) -> str:
    # Any of the query's stemmed terms (plainto_tsquery ANDs them; a paraphrased question
    # rarely contains every word of the passage it asks about).
    tsq = (f"to_tsquery('{TEXT_SEARCH_CONFIG}', "
           f"replace(plainto_tsquery('{TEXT_SEARCH_CONFIG}', :qtext)::text, ' & ', ' | '))")
    where = ["c.content_tsv @@ q.query", *filters]
    if model is not None:
        where.insert(0, model_predicate(model, "c"))
    return (  # only fixed clauses and a quoted model name are interpolated
        f"SELECT c.id, ts_rank_cd(c.content_tsv, q.query) AS rank FROM document_chunks c, "  # noqa: S608
        f"(SELECT {tsq} AS query) q WHERE {' AND '.join(where)} "
        "ORDER BY rank DESC, c.id LIMIT :limit"
    )


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
    its statement, ``roost_knowledge_knn``).  Skipped when the transaction has them
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


async def vector_candidates(
    session: AsyncSession, cfg: KnowledgeConfig, model: str, dims: int,
    vector: Sequence[float] | np.ndarray[Any, Any], filters: Filters, limit: int,
) -> list[tuple[uuid.UUID, float]]:
    """The ``limit`` nearest chunks' ids and distances, nearest first, in the session's
    transaction (its row-level security scope) on its own driver connection."""
    rows = await _knn(await driver_connection(session), _session_url(session), cfg, model,
                      dims, vector, filters, limit, hydrate=False)
    return sorted(((row[0], float(row[1])) for row in rows), key=_by_distance)


async def _knn(
    driver: Any, url: URL, cfg: KnowledgeConfig, model: str, dims: int,
    vector: Sequence[float] | np.ndarray[Any, Any], filters: Filters, limit: int, *,
    hydrate: bool, confirmation: str | None = None, scope: str | None = None,
) -> list[Any]:
    """The k-NN statement through ``roost_knowledge_knn`` (migration 1070): its HNSW
    settings come in the same round trip, and with ``confirmation`` and ``scope`` (a
    caller this process knows, :func:`search_confirming`) the database confirms the
    caller and scopes the statement's own implicit transaction first.  Without them the
    connection's transaction must be scoped already."""
    statement, call = _knn_statements(model, dims, tuple(filters.sql), hydrate)
    await ensure_vector_codec(driver)
    iterative = await _supports_iterative_scan(url, driver)
    params = {**filters.params, "qvec": vector, "limit": limit}
    rows: list[Any] = await driver.fetch(
        call, confirmation, scope, max(cfg.ef_search, limit), iterative, statement,
        *(params.get(name) for name in KNN_PARAMETERS))
    return rows


@functools.lru_cache(maxsize=512)
def _knn_statements(model: str, dims: int, filters: tuple[str, ...], hydrate: bool) -> tuple[str, str]:
    """The k-NN statement with its parameters numbered as :data:`KNN_PARAMETERS`, and the
    function call that runs it."""
    sql = vector_query_sql(model, dims, list(filters), hydrate=hydrate)
    parts = re.split(r"('(?:[^']|'')*')", sql)  # quoted literals (the model) left alone
    numbered = "".join(
        part if i % 2 else _PARAM_RE.sub(lambda m: f"${KNN_PARAMETERS.index(m.group(1)) + 1}", part)
        for i, part in enumerate(parts))
    return numbered, _KNN_CALL.format(columns=HIT_COLUMNS if hydrate else _CANDIDATE_COLUMNS)


def _session_url(session: AsyncSession) -> URL:
    bind = session.get_bind()
    return bind.engine.url if isinstance(bind, Connection) else bind.url


def _by_distance(hit: tuple[uuid.UUID, float]) -> tuple[float, uuid.UUID]:
    return hit[1], hit[0]


_PARAM_RE = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


async def text_candidates(
    session: AsyncSession, query: str, filters: Filters, limit: int, model: str | None,
) -> list[tuple[uuid.UUID, float]]:
    rows = (await session.execute(
        text(text_query_sql(filters.sql, model)),
        {**filters.params, "qtext": query, "limit": limit},
    )).all()
    return [(row[0], float(row[1])) for row in rows]


def reciprocal_rank_fusion(*rankings: list[uuid.UUID], k: int = RRF_K) -> list[tuple[uuid.UUID, float]]:
    scores: dict[uuid.UUID, float] = {}
    for ranking in rankings:
        for rank, chunk_id in enumerate(ranking, start=1):
            scores[chunk_id] = scores.get(chunk_id, 0.0) + 1.0 / (k + rank)
    return sorted(scores.items(), key=lambda item: (-item[1], str(item[0])))


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
    """``req`` in the session's transaction (scoped to ``actor``).  ``vector``: the
    query's embedding when the caller has it already (else :func:`query_vector`)."""
    spec = cfg.spec_for(req.embedding_model)
    filters = build_filters(actor, req)
    if vector is None and req.mode != "text":
        vector = await query_vector(cfg, req, embedder)
    if req.mode == "vector":  # the hits come with the k-NN statement's rows
        assert vector is not None
        rows = await _knn(await driver_connection(session), _session_url(session), cfg,
                          spec.model, spec.dimensions, vector, filters, req.k, hydrate=True)
        return _vector_response(req, spec.model, rows)
    vec: list[tuple[uuid.UUID, float]] = []
    if req.mode == "hybrid":
        assert vector is not None
        vec = await vector_candidates(session, cfg, spec.model, spec.dimensions, vector,
                                      filters, max(req.k * 4, MIN_CANDIDATES))
    pool = max(req.k * 4, MIN_CANDIDATES) if req.mode == "hybrid" else req.k
    txt = await text_candidates(session, req.query, filters, pool,
                                spec.model if req.mode == "hybrid" else None)
    rank = dict(txt)
    if req.mode == "text":
        ordered = txt
    else:
        ordered = reciprocal_rank_fusion([c for c, _ in vec], [c for c, _ in txt])
    ordered = ordered[: req.k]
    hits = await _hydrate(session, ordered, dict(vec), rank)
    return SearchResponse(query=req.query, mode=req.mode, embedding_model=spec.model, results=hits)


async def search_confirming(
    database: Database, actor: Principal, cfg: KnowledgeConfig, req: SearchRequest,
    vector: Sequence[float], *, confirmation: str, scope: str,
) -> SearchResponse:
    """A vector-mode :func:`search` for a caller this process knows, in one round trip
    and no transaction around it: ``roost_knowledge_knn`` (migration 1070) has the
    database confirm the caller (``confirmation``, JSON; SQLSTATE 28000 when the
    credential no longer resolves to ``actor``), scope the statement's implicit
    transaction (``scope``), set the HNSW settings and return the hits with their chunk
    and document (roost.identity.resolver.KnownCaller)."""
    if req.mode != "vector":
        raise ValueError("only a vector search is one statement")
    spec = cfg.spec_for(req.embedding_model)
    filters = build_filters(actor, req)
    async with database.autocommit() as driver:
        rows = await _knn(driver, database.url, cfg, spec.model, spec.dimensions, vector,
                          filters, req.k, hydrate=True, confirmation=confirmation, scope=scope)
    return _vector_response(req, spec.model, rows)


def _vector_response(req: SearchRequest, model: str, rows: Sequence[Any]) -> SearchResponse:
    ordered = sorted(rows, key=lambda row: (row["distance"], row["id"]))
    hits = [_hit(row, 1.0 - row["distance"], row["distance"], None) for row in ordered]
    return SearchResponse(query=req.query, mode=req.mode, embedding_model=model, results=hits)


async def _hydrate(
    session: AsyncSession, ordered: list[tuple[uuid.UUID, float]],
    distance: dict[uuid.UUID, float], rank: dict[uuid.UUID, float],
) -> list[SearchHit]:
    if not ordered:
        return []
    rows = (await session.execute(
        text("SELECT c.id, c.document_id, c.chunk_index, c.content, c.metadata, c.is_curated, "
             "c.source_chunk_ids, d.name, d.source, d.uri, d.path, d.collection, d.mime "
             "FROM document_chunks c JOIN documents d ON d.id = c.document_id "
             "WHERE c.id = ANY(:ids)"),
        {"ids": [cid for cid, _ in ordered]},
    )).mappings().all()
    by_id = {row["id"]: row for row in rows}
    return [_hit(by_id[cid], score, distance.get(cid), rank.get(cid))
            for cid, score in ordered
            if cid in by_id]  # else deleted between the two statements


def _hit(row: Any, score: float, distance: float | None, rank: float | None) -> SearchHit:
    """A hit from a row with the chunk's and its document's columns (:data:`HIT_COLUMNS`)."""
    meta = row["metadata"] or {}
    return SearchHit(
        chunk_id=row["id"], document_id=row["document_id"], chunk_index=row["chunk_index"],
        content=row["content"], score=score,
        vector_similarity=None if distance is None else 1.0 - distance,
        text_rank=rank, page=meta.get("page"), section=meta.get("section"),
        char_start=meta.get("char_start"), char_end=meta.get("char_end"),
        is_curated=row["is_curated"], source_chunk_ids=row["source_chunk_ids"],
        document=SearchDocument(
            id=row["document_id"], name=row["name"], source=row["source"], uri=row["uri"],
            path=row["path"], collection=row["collection"], mime=row["mime"],
        ),
    )
