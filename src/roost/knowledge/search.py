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
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncSession

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
_iterative: dict[str, bool] = {}


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


def vector_query_sql(model: str, dims: int, filters: list[str]) -> str:
    """The k-nearest-neighbour query; its ORDER BY and predicate match the HNSW index."""
    expr = vector_expression(dims, "c")
    # A binary ``vector`` parameter (roost.db.vector): no float formatting or parsing.
    query_vec = f"CAST(:qvec AS vector({int(dims)}))"
    where = " AND ".join([model_predicate(model, "c"), *filters])
    # Only validated pieces are interpolated: an int, a quoted model name, fixed clauses.
    # relaxed_order may yield rows slightly out of order: vector_candidates re-sorts them.
    return (
        f"SELECT c.id, {expr} <=> {query_vec} AS distance FROM document_chunks c"  # noqa: S608
        f" WHERE {where} ORDER BY {expr} <=> {query_vec} LIMIT :limit"
    )


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
    bind = session.get_bind()
    url = bind.engine.url if isinstance(bind, Connection) else bind.url
    key = url.render_as_string(hide_password=True)
    known = _iterative.get(key)
    if known is None:
        version = (await session.execute(
            text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        )).scalar_one_or_none()
        parts = tuple(int(p) for p in str(version or "0").split(".")[:2] if p.isdigit())
        known = parts >= (0, 8)
        _iterative[key] = known
    return known


def hnsw_settings(ef_search: int, iterative: bool) -> dict[str, str]:
    """The transaction-local HNSW settings a search with this ``ef_search`` needs."""
    values = {"hnsw.ef_search": str(ef_search)}
    if iterative:
        values["hnsw.iterative_scan"] = "relaxed_order"
    return values


async def configure_session(session: AsyncSession, ef_search: int) -> None:
    """Transaction-local HNSW settings (SET LOCAL: safe under PgBouncer pooling).

    Skipped when the transaction has them already: authentication sends the configured
    ``ef_search`` in its own round trip (``knowledge.startup``), and a second search in
    the same transaction finds them set."""
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
    """The hot path: run on the session's own driver connection (same transaction, same
    row-level security scope) with a positional, driver-cached prepared statement,
    skipping the ORM's per-call statement processing."""
    await configure_session(session, max(cfg.ef_search, limit))
    sql, names = _positional_vector_sql(model, dims, tuple(filters.sql))
    params = {**filters.params, "qvec": vector, "limit": limit}
    driver = await driver_connection(session)
    await ensure_vector_codec(driver)
    rows = await driver.fetch(sql, *(params[name] for name in names))
    return sorted(((row[0], float(row[1])) for row in rows), key=_by_distance)


@functools.lru_cache(maxsize=512)
def _positional_vector_sql(model: str, dims: int, filters: tuple[str, ...]) -> tuple[str, tuple[str, ...]]:
    return _positional(vector_query_sql(model, dims, list(filters)))


def _by_distance(hit: tuple[uuid.UUID, float]) -> tuple[float, uuid.UUID]:
    return hit[1], hit[0]


_PARAM_RE = re.compile(r"(?<![:\w]):([a-z_][a-z0-9_]*)")


@functools.lru_cache(maxsize=512)
def _positional(sql: str) -> tuple[str, tuple[str, ...]]:
    """``:name`` parameters -> ``$n`` (asyncpg), with the names in order."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    # Quoted literals (the model name) are left alone.
    parts = re.split(r"('(?:[^']|'')*')", sql)
    out = "".join(part if i % 2 else _PARAM_RE.sub(number, part) for i, part in enumerate(parts))
    return out, tuple(names)


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


async def search(
    session: AsyncSession, actor: Principal, cfg: KnowledgeConfig, req: SearchRequest,
    *, embedder: Embedder | None = None,
) -> SearchResponse:
    spec = cfg.spec_for(req.embedding_model)
    filters = build_filters(actor, req)
    pool = max(req.k * 4, MIN_CANDIDATES) if req.mode == "hybrid" else req.k
    vec: list[tuple[uuid.UUID, float]] = []
    txt: list[tuple[uuid.UUID, float]] = []
    if req.mode in ("vector", "hybrid"):
        emb = embedder or get_embedder(spec)
        vector = (await emb.embed([req.query]))[0]
        vec = await vector_candidates(session, cfg, spec.model, spec.dimensions, vector, filters, pool)
    if req.mode in ("text", "hybrid"):
        txt = await text_candidates(session, req.query, filters, pool,
                                    spec.model if req.mode == "hybrid" else None)
    distance = dict(vec)
    rank = dict(txt)
    if req.mode == "vector":
        ordered = [(cid, 1.0 - d) for cid, d in vec]
    elif req.mode == "text":
        ordered = txt
    else:
        ordered = reciprocal_rank_fusion([c for c, _ in vec], [c for c, _ in txt])
    ordered = ordered[: req.k]
    hits = await _hydrate(session, ordered, distance, rank)
    return SearchResponse(query=req.query, mode=req.mode, embedding_model=spec.model, results=hits)


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
    hits: list[SearchHit] = []
    for cid, score in ordered:
        row = by_id.get(cid)
        if row is None:  # deleted between the two statements
            continue
        meta = row["metadata"] or {}
        hits.append(SearchHit(
            chunk_id=cid, document_id=row["document_id"], chunk_index=row["chunk_index"],
            content=row["content"], score=score,
            vector_similarity=(1.0 - distance[cid]) if cid in distance else None,
            text_rank=rank.get(cid), page=meta.get("page"), section=meta.get("section"),
            char_start=meta.get("char_start"), char_end=meta.get("char_end"),
            is_curated=row["is_curated"], source_chunk_ids=row["source_chunk_ids"],
            document=SearchDocument(
                id=row["document_id"], name=row["name"], source=row["source"], uri=row["uri"],
                path=row["path"], collection=row["collection"], mime=row["mime"],
            ),
        ))
    return hits
