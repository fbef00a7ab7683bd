"""Recall: hybrid search over a scope's memories, and their embeddings.

:func:`search` ranks a scope's memories for a query by three signals, each a ranked list
of candidates computed in one SQL statement:

* **vector**: cosine similarity between the query's embedding and each memory's, among
  the memories embedded by the *same model* (``embedding_model``).  The default model
  (all-MiniLM-L6-v2, 384 dimensions) walks the partial HNSW index of migration 0700
  (same expression ``(embedding::vector(384))`` and predicate) for a user with more than
  ``EXACT_VECTORS_MAX`` memories, and otherwise compares the user's vectors exactly in
  ``ix_memories_user_minilm`` (migration 0830: an index-only scan of that user's
  entries); any other model is scanned exactly.
* **text**: PostgreSQL full-text search on the generated ``content_tsv`` column: the
  memories matching every term of ``websearch_to_tsquery`` or, when none does, any of
  them (quotes, ``or`` and ``-word`` keep their web-search meaning), ranked by
  ``ts_rank_cd`` over the query's terms; at most ``TEXT_MATCHES_MAX`` matches are
  ranked, so a query made of very common words stays cheap on a large memory.  Under
  row-level security ``@@`` cannot use the GIN index (it is not leakproof), so the match
  reads the user's entries of ``ix_memories_user_text`` (index-only; migration 0830) and
  the rows of their few long memories.
* **graph**: the entities the query names (``memory_entities.normalized_name`` equal to
  one of the query's words or phrases), the entities one relation away from them, and
  the memories whose relations touch either: 1.0 for a relation touching a named
  entity, 0.5 for one touching only a neighbour.

The lists are fused by reciprocal rank fusion (``sum(1 / (60 + rank))``, added in a fixed
order so equal ranks give equal sums, scaled so rank 1 in one list is 1.0), then
multiplied by the memory's ``confidence`` and a recency weight
``floor + (1 - floor) * 0.5 ** min(age / half_life, MAX_HALF_LIVES)``, where age runs
from the memory's last creation, change or recall (``ROOST_MEMORY_RECENCY_HALF_LIFE_DAYS``,
``ROOST_MEMORY_RECENCY_FLOOR``).  Equal scores go to the stronger text match, then the
closer vector, then the memory that became true last (``valid_from``).  By default only
current, active memories are found (valid from now or earlier, not closed); ``as_of``
finds what was true (and not yet archived) then.  ``touch`` counts the returned memories
as accessed, in one ``UPDATE`` that also returns them (without their vectors); the count
is best-effort: a memory another transaction has locked (a concurrent recall counting it,
an edit) is returned uncounted rather than waited for (``FOR NO KEY UPDATE SKIP LOCKED``),
so concurrent recalls of overlapping memories never deadlock.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import structlog
from sqlalchemy import bindparam, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased, defer

from roost.config import Settings, get_settings
from roost.db.engine import Database
from roost.db.vector import VectorType
from roost.errors import NotFound, Unprocessable
from roost.inputs import strip_invisible
from roost.knowledge.config import EmbedderNotReady, KnowledgeConfig, check_embedder, get_embedder
from roost.knowledge.embeddings import Embedder, EmbedderUnavailable, EmbeddingError
from roost.knowledge.index import check_model_name, sql_literal
from roost.knowledge.search import configure_session
from roost.memory.graph import clean, normalize
from roost.memory.models import (
    DEFAULT_DIMENSIONS,
    DEFAULT_MODEL,
    LONG_TEXT,
    SHORT_TEXT,
    TEXT_SEARCH_CONFIG,
    Memory,
)
from roost.memory.service import Scope
from roost.principal import Principal

log = structlog.get_logger(__name__)

__all__ = [
    "MAX_K",
    "MAX_QUERY_CHARS",
    "EmbedReport",
    "Recalled",
    "embed_memories",
    "embed_missing",
    "query_phrases",
    "search",
    "usable_embedder",
]

DEFAULT_K: Final = 10
MAX_K: Final = 50
MAX_QUERY_CHARS: Final = 1000
RRF_K: Final = 60
MAX_ACCESS_COUNT: Final = 2**31 - 1  # memories.access_count is an integer
#: Candidates each signal contributes (at least): a few times ``k``.
MIN_CANDIDATES: Final = 40
CANDIDATES_PER_HIT: Final = 4
#: ``hnsw.ef_search`` for the default model's index (at least the candidate count).
EF_SEARCH: Final = 100
#: Users with at most this many memories have their default-model vectors compared
#: exactly (an index-only scan of their entries) rather than by the HNSW walk.
EXACT_VECTORS_MAX: Final = 20_000
#: Full-text matches ranked at most (a common word can match most of a large memory:
#: ranking them all would cost more than everything else together).
TEXT_MATCHES_MAX: Final = 1000
#: Entity names are matched against the query's phrases of up to this many words.
MAX_PHRASE_WORDS: Final = 5
MAX_PHRASES: Final = 300
#: The recency weight's exponent is capped here: 0.5 ** 1000 (about 1e-301) is nothing
#: already, and beyond about 1074 half-lives PostgreSQL's power() underflows float8 and
#: fails the statement (a year-old memory with a one-day half-life, or ``as_of`` 2200).
MAX_HALF_LIVES: Final = 1000
GRAPH_NAMED: Final = 1.0
GRAPH_NEIGHBOUR: Final = 0.5
EMBED_BATCH: Final = 64

_WORD_EDGES = re.compile(r"^[^\w]+|[^\w]+$")
_POSSESSIVE = re.compile("['\u2019]s$")
_WEB_SYNTAX = re.compile(r'"|(^|\s)-\w|\s(or|OR)\s')


@dataclass(frozen=True)
class Recalled:
    """A memory found by :func:`search`: the final ``score`` and each signal's raw value
    (cosine similarity, ``ts_rank_cd``, graph weight; None: not found by that signal)."""

    memory: Memory
    score: float
    vector: float | None
    text: float | None
    graph: float | None


# --------------------------------------------------------------------------- embedders


def usable_embedder(settings: Settings | None = None,
                    knowledge: KnowledgeConfig | None = None) -> Embedder | None:
    """The configured (knowledge) embedder if it can run in this process, else None:
    memory then works without vectors (full-text and graph recall only)."""
    try:
        cfg = knowledge or KnowledgeConfig.from_settings(settings or get_settings())
        check_embedder(cfg.embedder)
        return get_embedder(cfg.embedder)
    except (EmbedderNotReady, EmbedderUnavailable):
        return None


async def embed_memories(session: AsyncSession, memories: list[Memory], embedder: Embedder) -> None:
    """Embed each memory's content with ``embedder`` and fill its embedding columns
    (flushed).  The embedder does its CPU or network work off the event loop."""
    if not memories:
        return
    vectors = await embedder.embed([m.content for m in memories])
    _check_vectors(vectors, len(memories), embedder)
    model = check_model_name(embedder.model_name)
    for memory, vector in zip(memories, vectors, strict=True):
        memory.embedding = vector
        memory.embedding_model = model
        memory.embedding_dim = embedder.dimensions
    await session.flush()


def _check_vectors(vectors: Sequence[Sequence[float]], expected: int, embedder: Embedder) -> None:
    if len(vectors) != expected or any(len(v) != embedder.dimensions for v in vectors):
        raise EmbeddingError(
            f"the embedder did not return {expected} vectors of {embedder.dimensions} dimensions")


@dataclass
class EmbedReport:
    model: str
    missing: int = 0
    embedded: int = 0


async def embed_missing(
    database: Database, embedder: Embedder, *, user_id: uuid.UUID | None = None,
    batch: int = EMBED_BATCH, progress: Callable[[int, int], None] | None = None,
) -> EmbedReport:
    """Embed every memory (all users, or one) that has no vector of ``embedder``'s model:
    added without an embedder, changed since, or embedded by another model.

    System work (the owner's view).  The model runs with no transaction open; each batch
    is written in its own short transaction, and a memory whose content changed meanwhile
    is left for the next run."""
    model = check_model_name(embedder.model_name)
    report = EmbedReport(model=model)
    stmt = (select(Memory.id, Memory.content, Memory.content_sha256)
            .where(Memory.embedding_model.is_distinct_from(model)).order_by(Memory.id))
    if user_id is not None:
        stmt = stmt.where(Memory.user_id == user_id)
    async with database.transaction() as session:
        todo = (await session.execute(stmt)).tuples().all()
    report.missing = len(todo)
    if progress is not None:
        progress(0, len(todo))
    for start in range(0, len(todo), batch):
        part = todo[start:start + batch]
        vectors = await embedder.embed([content for _, content, _ in part])
        _check_vectors(vectors, len(part), embedder)
        async with database.transaction() as session:
            for (memory_id, _, digest), vector in zip(part, vectors, strict=True):
                result = await session.execute(
                    update(Memory).where(Memory.id == memory_id, Memory.content_sha256 == digest)
                    .values(embedding=vector, embedding_model=model,
                            embedding_dim=embedder.dimensions, updated_at=Memory.updated_at))
                report.embedded += int(getattr(result, "rowcount", 0) or 0)
        if progress is not None:
            progress(min(start + batch, len(todo)), len(todo))
    return report


# --------------------------------------------------------------------------- search


def query_phrases(query: str) -> list[str]:
    """The query's words and phrases (up to ``MAX_PHRASE_WORDS`` words), normalised as
    entity names are, possessive ``'s`` dropped: what an entity name is matched against."""
    # Composed first (graph.clean): a decomposed accent ending a word is no word character.
    words = [w for w in (_WORD_EDGES.sub("", raw) for raw in clean(query).split()) if w]
    found: dict[str, None] = {}
    for size in range(1, MAX_PHRASE_WORDS + 1):
        for start in range(len(words) - size + 1):
            chunk = words[start:start + size]
            for variant in (chunk, [*chunk[:-1], _POSSESSIVE.sub("", chunk[-1])]):
                phrase = normalize(" ".join(variant))
                if phrase:
                    found[phrase] = None
    whole = normalize(query)
    if whole:
        found[whole] = None
    return list(found)[:MAX_PHRASES]


def _tsqueries(query: str) -> tuple[str, str]:
    """SQL for the query's two tsqueries: every term (``websearch_to_tsquery``) and any
    term (its implicit ANDs made ORs: a question rarely contains every word of the fact
    it asks about).  A query using quotes, ``or`` or ``-word`` means what it means on
    the web, both times."""
    web = f"websearch_to_tsquery('{TEXT_SEARCH_CONFIG}', :qtext)"
    if _WEB_SYNTAX.search(query):
        return web, web
    return web, f"replace({web}::text, ' & ', ' | ')::tsquery"


@dataclass(frozen=True)
class _Plan:
    sql: str
    params: dict[str, Any]


def _memory_filters(scope: Scope, as_of: datetime | None, alias: str = "m") -> list[str]:
    where = [f"{alias}.user_id = :uid"]
    for column, name, value in (("persona_id", "pid", scope.persona_id),
                                ("agent_id", "aid", scope.agent_id),
                                ("session_id", "sid", scope.session_id)):
        if value is not None:
            where.append(f"{alias}.{column} = :{name}")
    if as_of is None:
        where.append(f"{alias}.status = 'active'")
        where.append(f"{alias}.valid_from <= now()")
        where.append(f"({alias}.valid_to IS NULL OR {alias}.valid_to > now())")
    else:
        where.append(f"{alias}.valid_from <= :as_of")
        where.append(f"({alias}.valid_to IS NULL OR {alias}.valid_to > :as_of)")
        where.append(f"({alias}.archived_at IS NULL OR {alias}.archived_at > :as_of)")
    return where


def _relation_filters(scope: Scope, as_of: datetime | None, alias: str = "r") -> list[str]:
    where = [f"{alias}.user_id = :uid"]
    if scope.persona_id is not None:
        where.append(f"{alias}.persona_id = :pid")
    if as_of is None:
        where.append(f"{alias}.valid_from <= now()")
        where.append(f"({alias}.valid_to IS NULL OR {alias}.valid_to > now())")
    else:
        where.append(f"{alias}.valid_from <= :as_of")
        where.append(f"({alias}.valid_to IS NULL OR {alias}.valid_to > :as_of)")
    return where


def _plan(scope: Scope, query: str, *, model: str | None, dims: int | None,
          vector: list[float] | None, k: int, as_of: datetime | None,
          half_life_days: float, floor: float) -> _Plan:
    """One statement: the three candidate lists, their fusion and the weighting.  Only
    fixed clauses, a checked model name and ints are interpolated; input is bound."""
    n = max(k * CANDIDATES_PER_HIT, MIN_CANDIDATES)
    mem = " AND ".join(_memory_filters(scope, as_of))
    rel = " AND ".join(_relation_filters(scope, as_of))
    params: dict[str, Any] = {
        "uid": scope.user_id, "qtext": query, "names": query_phrases(query), "n": n, "k": k,
        "rrf": float(RRF_K), "half_life": float(half_life_days), "floor": float(floor),
    }
    for name, value in (("pid", scope.persona_id), ("aid", scope.agent_id),
                        ("sid", scope.session_id), ("as_of", as_of)):
        if value is not None:
            params[name] = value
    size_cte = ""
    if vector is not None and model is not None and dims is not None:
        params["qvec"] = vector
        if model == DEFAULT_MODEL and dims == DEFAULT_DIMENSIONS:
            # Exactly the partial HNSW index's expression and predicate.
            expr = f"(m.embedding::vector({DEFAULT_DIMENSIONS}))"
            qvec = f"CAST(:qvec AS vector({DEFAULT_DIMENSIONS}))"
            model_where = f"m.embedding_model = {sql_literal(DEFAULT_MODEL)}"
        else:
            expr, qvec = "m.embedding", "CAST(:qvec AS vector)"
            model_where = f"m.embedding_model = {sql_literal(check_model_name(model))} " \
                          f"AND m.embedding_dim = {int(dims)}"
        # The distance once per memory (the ordering and the similarity share it).
        nearest = (f"SELECT m.id, {expr} <=> {qvec} AS dist FROM memories m "  # noqa: S608
                   f"WHERE {model_where} AND {mem}")
        vector_cte = f"SELECT x.id, 1 - x.dist AS sim FROM ({nearest} ORDER BY dist LIMIT :n) x"  # noqa: S608
        if model == DEFAULT_MODEL and dims == DEFAULT_DIMENSIONS:
            # Up to EXACT_VECTORS_MAX memories, compare them all (ix_memories_user_minilm:
            # an index-only scan of the user's entries, 1 ms per 1,000): the planner would
            # often walk the HNSW index instead, which costs far more than it estimates
            # when it must skip other users' neighbours.  Beyond, the walk.  (OFFSET 0
            # keeps the ordering from being taken from the HNSW index.)
            size_cte = ("size AS (SELECT count(*) AS n FROM (SELECT 1 FROM memories m "  # noqa: S608
                        f"WHERE m.user_id = :uid LIMIT {EXACT_VECTORS_MAX + 1}) c),")
            small = f"(SELECT n FROM size) <= {EXACT_VECTORS_MAX}"  # noqa: S608
            vector_cte = (f"(SELECT x.id, 1 - x.dist AS sim FROM ({nearest} OFFSET 0) x "  # noqa: S608
                          f"WHERE {small} ORDER BY x.dist LIMIT :n) UNION ALL "
                          f"(SELECT * FROM ({vector_cte}) y WHERE NOT {small})")
    else:
        vector_cte = "SELECT NULL::uuid AS id, NULL::float8 AS sim WHERE false"
    graph_part = f"""
seeds AS (
  SELECT e.id FROM memory_entities e
  WHERE e.user_id = :uid {"AND e.persona_id = :pid" if scope.persona_id else ""}
    AND e.normalized_name = ANY(CAST(:names AS text[]))
),
near AS (
  SELECT id, min(d) AS d FROM (
    SELECT id, 0 AS d FROM seeds
    UNION ALL
    SELECT x.other, 1 FROM seeds s, LATERAL (
      SELECT r.target_entity_id AS other FROM memory_relations r
      WHERE r.source_entity_id = s.id AND {rel}
      UNION ALL
      SELECT r.source_entity_id FROM memory_relations r
      WHERE r.target_entity_id = s.id AND {rel}) x
  ) x GROUP BY id
),
g AS (
  SELECT x.memory_id AS id,
         max(CASE WHEN n.d = 0 THEN {GRAPH_NAMED} ELSE {GRAPH_NEIGHBOUR} END) AS score
  FROM near n, LATERAL (
    SELECT r.memory_id FROM memory_relations r WHERE r.source_entity_id = n.id AND {rel}
    UNION ALL
    SELECT r.memory_id FROM memory_relations r WHERE r.target_entity_id = n.id AND {rel}) x,
  LATERAL (SELECT 1 FROM memories m WHERE m.id = x.memory_id AND {mem}) found
  GROUP BY x.memory_id ORDER BY score DESC, x.memory_id LIMIT :n
)"""  # noqa: S608 (fixed clauses only)
    reference = "CAST(:as_of AS timestamptz)" if as_of is not None else "now()"
    every_term, any_term = _tsqueries(query)
    # The text signal.  Short memories' tsvectors come from ix_memories_user_text (an
    # index-only scan of the user's entries, row-level security included: its only qual is
    # on user_id), the few longer ones' from their rows (migration 0830).
    def matches(tsquery: str) -> str:
        return " UNION ALL ".join(
            f"SELECT m.id, m.content_tsv FROM memories m "  # noqa: S608 (fixed clauses)
            f"WHERE {size} AND m.content_tsv @@ {tsquery} AND {mem}"
            for size in (SHORT_TEXT.replace("content_tsv", "m.content_tsv"),
                         LONG_TEXT.replace("content_tsv", "m.content_tsv")))

    sql = f"""
WITH {size_cte}
v AS ({vector_cte}),
t_every AS (
  SELECT * FROM ({matches(every_term)}) x LIMIT {TEXT_MATCHES_MAX}
),
t_any AS (
  SELECT * FROM ({matches(any_term)}) x
  WHERE NOT EXISTS (SELECT 1 FROM t_every) LIMIT {TEXT_MATCHES_MAX}
),
t AS (
  SELECT x.id, ts_rank_cd(x.content_tsv, {any_term})::float8 AS trank
  FROM (SELECT * FROM t_every UNION ALL SELECT * FROM t_any) x
  ORDER BY trank DESC, x.id LIMIT :n
),
{graph_part},
fused AS (
  SELECT id, max(sim) AS sim, max(trank) AS trank, max(gscore) AS gscore,
         sum(rrf ORDER BY rrf) AS rrf
  FROM (
    SELECT id, sim::float8 AS sim, NULL::float8 AS trank, NULL::float8 AS gscore,
           1.0::float8 / (CAST(:rrf AS float8) + rank() OVER (ORDER BY sim DESC)) AS rrf
      FROM v WHERE sim > 0
    UNION ALL
    SELECT id, NULL, trank, NULL,
           1.0::float8 / (CAST(:rrf AS float8) + rank() OVER (ORDER BY trank DESC)) FROM t
    UNION ALL
    SELECT id, NULL, NULL, score::float8,
           1.0::float8 / (CAST(:rrf AS float8) + rank() OVER (ORDER BY score DESC)) FROM g
  ) u GROUP BY id
)
SELECT f.id, f.sim, f.trank, f.gscore,
       f.rrf * (CAST(:rrf AS float8) + 1) * m.confidence::float8
       * (CAST(:floor AS float8) + (1 - CAST(:floor AS float8)) * power(0.5::float8,
          least(greatest(extract(epoch FROM ({reference} - greatest(m.created_at, m.updated_at,
                                                                    m.last_accessed)))::float8, 0)
                / 86400.0 / CAST(:half_life AS float8), {MAX_HALF_LIVES}))) AS score
FROM fused f JOIN memories m ON m.id = f.id
ORDER BY score DESC, f.trank DESC NULLS LAST, f.sim DESC NULLS LAST, m.valid_from DESC, f.id
LIMIT :k"""  # noqa: S608 (only fixed clauses, a checked model name and ints)
    return _Plan(sql, params)


async def search(
    session: AsyncSession, actor: Principal, scope: Scope, query: str, *,
    embedder: Embedder | None, k: int = DEFAULT_K, as_of: datetime | None = None,
    touch: bool = True, settings: Settings | None = None,
) -> list[Recalled]:
    """The ``k`` memories of ``scope`` (and its narrower scopes) that best answer
    ``query``, best first (see the module docstring).  ``embedder`` None, or one that
    fails: full-text and graph only.  ``scope`` comes from ``service.resolve_scope``
    (the actor's right to it checked); row-level security stands behind it."""
    query = strip_invisible(query)  # white space and zero-width characters around it
    if not query:
        raise Unprocessable("q must not be empty", extra={"field": "q"})
    if len(query) > MAX_QUERY_CHARS:
        raise Unprocessable(f"q must be at most {MAX_QUERY_CHARS} characters",
                            extra={"field": "q"})
    if not 1 <= k <= MAX_K:
        raise Unprocessable(f"k must be within 1..{MAX_K}", extra={"field": "k"})
    if not (actor.is_admin or actor.user_id == scope.user_id):
        raise NotFound(f"no user with id {scope.user_id}")
    cfg = settings or get_settings()
    vector: list[float] | None = None
    if embedder is not None:
        try:
            [vector] = await embedder.embed([query])
            _check_vectors([vector], 1, embedder)
        except (EmbeddingError, EmbedderUnavailable) as exc:
            log.warning("memory.search.embedding_failed", error=str(exc.detail))
            vector = None
    model = embedder.model_name if embedder is not None and vector is not None else None
    dims = embedder.dimensions if embedder is not None and vector is not None else None
    plan = _plan(scope, query, model=model, dims=dims, vector=vector, k=k, as_of=as_of,
                 half_life_days=cfg.memory_recency_half_life_days,
                 floor=cfg.memory_recency_floor)
    if model == DEFAULT_MODEL and dims == DEFAULT_DIMENSIONS:
        await configure_session(session, max(EF_SEARCH, plan.params["n"]))
    stmt = text(plan.sql)
    if "qvec" in plan.params:
        stmt = stmt.bindparams(bindparam("qvec", type_=VectorType()))
    rows = (await session.execute(stmt, plan.params)).all()
    if not rows:
        return []
    ids = [row.id for row in rows]
    # The memories without their vectors (a TOAST read each; recall's callers show text).
    no_vector = defer(Memory.embedding, raiseload=True)
    found: list[Memory] = []
    if touch:
        # Counting is best-effort: a memory another transaction holds (a concurrent
        # recall's count, an edit) is skipped, not waited for.  Waiting would make
        # overlapping recalls lock their rows in different orders and deadlock.
        held = aliased(Memory)
        free = (select(held.id).where(held.id.in_(ids))
                .with_for_update(key_share=True, skip_locked=True))
        found = list((await session.scalars(
            update(Memory).where(Memory.id.in_(free.scalar_subquery()))
            # Stops at the column's largest value: an overflow failed every recall of it.
            .values(access_count=func.least(Memory.access_count, MAX_ACCESS_COUNT - 1) + 1,
                    last_accessed=func.now(),
                    updated_at=Memory.updated_at)
            .returning(Memory).options(no_vector),
            execution_options={"synchronize_session": False, "populate_existing": True},
        )).all())
    rest = set(ids) - {m.id for m in found}
    if rest:  # not counted (skipped, or touch=False): read as they are
        found += (await session.scalars(
            select(Memory).where(Memory.id.in_(rest)).options(no_vector))).all()
    by_id = {m.id: m for m in found}
    return [Recalled(by_id[row.id], float(row.score), _opt(row.sim), _opt(row.trank),
                     _opt(row.gscore))
            for row in rows if row.id in by_id]


def _opt(value: Any) -> float | None:
    return None if value is None else float(value)
