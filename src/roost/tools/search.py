"""Semantic tool search: tool descriptions embedded by the knowledge embedder, ranked by
a centred cosine similarity less a share of each tool's neighbour similarity, by an
exact scan of the caller's tools.

Embedding happens off the request path: discovery enqueues ``tools.embed_descriptions``
(``roost.tools.jobs``), a periodic run of the same job catches anything else (built-ins,
tools written by hand), and ``roost tools embed`` does it at once.  A tool is (re)embedded
when it has no vector, when its vector is another model's, or when the text it was made
from (name, title, description) changed: ``embedding_text_sha256`` is that text's hash.

A search embeds the query with the same embedder and scores the caller's visible,
enabled and available tools by ``cos(t - c, q - c)``: the cosine of the tool's and the
query's vectors after subtracting ``c``, the mean of the caller's tool vectors (shrunk
towards zero for small catalogues).  Why both choices (docs/benchmarks.md, "Tool search"):

- *Exact, not HNSW.*  A catalogue of thousands of near-identical descriptions ("Archive
  an invoice in Salesforce", "... in Jira") makes a poorly navigable HNSW graph: at the
  default ``ef_search`` the index lost almost half of the right answers that an exact
  scan of the same 6,700 vectors (a few milliseconds more) finds.  Catalogues over ``EXACT_SCAN_MAX``
  tools still go through the default model's partial HNSW index (migration 0510), with a
  wide candidate pool re-scored the same way.
- *Centred.*  The mean is what the catalogue's tools have in common; without it a
  query drifts to whichever big family of look-alike tools shares one of its words
  ("order" -> every "purchase order" tool).  Computed per caller from what row-level
  security lets them see, it never mixes tenants.
- *Neighbours.*  A tool close to a whole family of others is near any query about that
  family (a hub); its mean similarity to its 10 nearest, among the tools its owner sees
  (:func:`refresh_neighbours`), is subtracted in part (CSLS), so the one tool a query
  describes is not crowded out.  Measured per owner, it never mixes tenants either.

Tools not embedded yet are not found.  There is no text fallback: without a working
embedder the search answers 409 ``embedder-unavailable`` (``GET /api/v1/tools?name=``
still lists).
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import structlog
from sqlalchemy import Connection, Integer, Uuid, bindparam, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.engine import Database
from roost.db.vector import VectorType
from roost.errors import Unprocessable
from roost.knowledge.config import (
    EmbedderNotReady,
    EmbedderSpec,
    KnowledgeConfig,
    check_embedder,
    get_embedder,
)
from roost.knowledge.embeddings import Embedder, EmbeddingError, local_model_problem
from roost.knowledge.index import check_model_name, sql_literal
from roost.knowledge.search import configure_session
from roost.principal import Principal
from roost.tools.models import Tool

log = structlog.get_logger(__name__)

EMBED_TASK: Final = "tools.embed_descriptions"
DEFAULT_K: Final = 5
MAX_K: Final = 50
MAX_QUERY_CHARS: Final = 1000
BATCH: Final = 64
#: Catalogues up to this many embedded tools are scanned exactly (measured at 6,700
#: tools: a few ms; the cost grows linearly); larger ones go through the HNSW index.
EXACT_SCAN_MAX: Final = 20_000
#: The HNSW fallback's candidates: re-scored, so it needs more than ``k`` of them, and
#: the index needs an ``ef_search`` at least that wide (64 lost right answers at 10k).
CANDIDATES_PER_HIT: Final = 8
MIN_CANDIDATES: Final = 100
HNSW_MIN_EF_SEARCH: Final = 400
#: The centre is the mean of n vectors scaled by n / (n + CENTRE_PRIOR): a catalogue of a
#: few tools is barely centred, one of thousands fully.
CENTRE_PRIOR: Final = 100
#: The ranking subtracts this much of a tool's neighbour similarity (its mean cosine to
#: its ``NEIGHBOURS`` nearest among what its owner sees) from twice its centred cosine
#: (CSLS-style hubness correction), scaled by n / (n + CENTRE_PRIOR) as the centre is.
NEIGHBOUR_WEIGHT: Final = 0.5
NEIGHBOURS: Final = 10
#: Catalogues this large have their count and mean kept per process for a while.
CATALOGUE_CACHE_MIN: Final = 1_000
CATALOGUE_TTL_S: Final = 300.0
CATALOGUE_CACHE_SIZE: Final = 1_024


class ToolSearchUnavailable(EmbedderNotReady):
    """409 ``embedder-unavailable``: no embedder can run here, so no semantic search."""


def embedding_text(name: str, title: str | None, description: str | None) -> str:
    """What is embedded for a tool: its name (underscores as spaces), title, description."""
    head = name.replace("_", " ").replace("-", " ")
    parts = [head, title or "", (description or "").strip()]
    return "\n".join(p for p in parts if p)


def text_sha256(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def require_embedder(knowledge: KnowledgeConfig | None) -> EmbedderSpec:
    """The configured embedder's spec, or 409 saying what to install or set."""
    if knowledge is None:
        raise ToolSearchUnavailable(
            "the knowledge embedder is misconfigured (see ROOST_KNOWLEDGE_EMBEDDING_*); "
            "semantic tool search needs it"
        )
    try:
        check_embedder(knowledge.embedder)
    except EmbedderNotReady:
        problem = local_model_problem() or "the local embedding model cannot run here"
        raise ToolSearchUnavailable(
            f"{problem}; or set ROOST_KNOWLEDGE_EMBEDDING_PROVIDER=openai with an embeddings "
            "server. Semantic tool search needs an embedder; GET /api/v1/tools?name= still lists tools"
        ) from None
    return knowledge.embedder


@dataclass
class EmbedReport:
    stale: int = 0
    embedded: int = 0
    model: str = ""
    neighbours: int = 0  # tools whose neighbour similarity was (re)computed


async def embed_descriptions(
    database: Database, spec: EmbedderSpec, *, embedder: Embedder | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> EmbedReport:
    """Embed every tool (all tenants: system work) whose vector is missing or stale.

    The model runs with no transaction open; each batch is written in its own short one.
    A description changed meanwhile keeps the old text's hash, so the next run redoes it."""
    embedder = embedder or get_embedder(spec)
    async with database.transaction() as session:
        rows = (await session.execute(
            select(Tool.id, Tool.name, Tool.title, Tool.description, Tool.embedding_model,
                   Tool.embedding_text_sha256).order_by(Tool.id)
        )).tuples().all()
    todo: list[tuple[uuid.UUID, str, str]] = []
    for tool_id, name, title, description, model, digest in rows:
        body = embedding_text(name, title, description)
        body_hash = text_sha256(body)
        if model != spec.model or digest != body_hash:
            todo.append((tool_id, body, body_hash))
    report = EmbedReport(stale=len(todo), model=spec.model)
    if progress is not None:
        progress(0, len(todo))
    for start in range(0, len(todo), BATCH):
        batch = todo[start:start + BATCH]
        vectors = await embedder.embed([body for _, body, _ in batch])
        if len(vectors) != len(batch) or any(len(v) != spec.dimensions for v in vectors):
            raise EmbeddingError(
                f"the embedder did not return {len(batch)} vectors of {spec.dimensions} dimensions"
            )
        async with database.transaction() as session:
            await session.execute(update(Tool), [
                {"id": tool_id, "description_embedding": vector, "embedding_model": spec.model,
                 "embedding_text_sha256": body_hash}
                for (tool_id, _, body_hash), vector in zip(batch, vectors, strict=True)
            ])
        report.embedded += len(batch)
        if progress is not None:
            progress(report.embedded, len(todo))
    report.neighbours = await refresh_neighbours(database, spec, force=bool(todo))
    return report


async def refresh_neighbours(database: Database, spec: EmbedderSpec, *,
                             force: bool = False) -> int:
    """Each embedded tool's ``neighbour_similarity``: the mean cosine similarity to its
    ``NEIGHBOURS`` nearest among the tools its owner sees, so no tenant's tools change
    another's scores: a global tool against the global ones, a user's against theirs and
    the global ones.  Exact (numpy, a block of rows at a time).  Recomputed when
    ``force`` (the job embedded something: every vector nearby may have moved) or when
    some tool has none yet; the number of tools written.  A tool deleted since leaves its
    neighbours' values a little high until the next run that embeds anything."""
    async with database.transaction() as session:
        missing = await session.scalar(
            select(Tool.id).where(Tool.embedding_model == spec.model,
                                  Tool.description_embedding.is_not(None),
                                  Tool.neighbour_similarity.is_(None)).limit(1))
        if missing is None and not force:
            return 0
        rows = (await session.execute(
            select(Tool.id, Tool.user_id, Tool.description_embedding)
            .where(Tool.embedding_model == spec.model, Tool.description_embedding.is_not(None))
        )).tuples().all()
    if not rows:
        return 0
    ids = [row[0] for row in rows]
    owners = [row[1] for row in rows]
    vectors = np.asarray([row[2] for row in rows], dtype=np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-9)
    shared = np.flatnonzero([owner is None for owner in owners])
    global_vectors = vectors[shared]
    nobody = np.empty((0, vectors.shape[1]), dtype=vectors.dtype)
    values = np.zeros(len(rows), dtype=np.float64)
    scopes: dict[uuid.UUID | None, list[int]] = {}
    for i, owner in enumerate(owners):
        scopes.setdefault(owner, []).append(i)
    for owner, members in scopes.items():
        # A global tool among the global ones; a user's among theirs and the global ones.
        values[members] = _mean_nearest(vectors[members],
                                        nobody if owner is None else global_vectors)
    written = [{"tid": tool_id, "value": float(value)} for tool_id, value in zip(ids, values, strict=True)]
    for start in range(0, len(written), 1000):
        async with database.transaction() as session:
            await session.execute(_SET_NEIGHBOURS, written[start:start + 1000])
    return len(written)


_SET_NEIGHBOURS = text("UPDATE tools SET neighbour_similarity = :value WHERE id = :tid")


def _mean_nearest(own: np.ndarray[Any, Any], others: np.ndarray[Any, Any],
                  block: int = 512) -> np.ndarray[Any, Any]:
    """For each row of ``own``, the mean cosine to its ``NEIGHBOURS`` nearest among the
    other rows of ``own`` and the rows of ``others`` (unit vectors; fewer neighbours when
    there are fewer; 0 alone).  ``others`` is shared by every user's scope, never copied."""
    out = np.zeros(len(own), dtype=np.float64)
    k = min(NEIGHBOURS, len(own) - 1 + len(others))
    if k <= 0:
        return out
    for start in range(0, len(own), block):
        chunk = own[start:start + block]
        sims = chunk @ own.T
        sims[np.arange(len(chunk)), np.arange(start, start + len(chunk))] = -np.inf  # itself
        if len(others):
            sims = np.hstack([sims, chunk @ others.T])
        nearest = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
        out[start:start + len(chunk)] = nearest.mean(axis=1)
    return out


Vector = np.ndarray[Any, np.dtype[np.float64]]


@dataclass(frozen=True)
class ToolHit:
    tool: Tool
    score: float


@dataclass(frozen=True)
class Catalogue:
    """What one caller searches: how many embedded tools they may use, and the centre the
    ranking subtracts (their vectors' mean, shrunk towards zero for small catalogues)."""

    count: int
    centre: Vector | None
    neighbour_mean: float = 0.0  # stands in for a tool whose similarity is not computed

    @property
    def neighbour_weight(self) -> float:
        return NEIGHBOUR_WEIGHT * self.count / (self.count + CENTRE_PRIOR)


# (database, model, scope) -> (expiry on the monotonic clock, catalogue)
_catalogues: dict[tuple[str, str, str], tuple[float, Catalogue]] = {}


def _where(spec: EmbedderSpec, actor: Principal) -> str:
    # A disabled server's tools cannot be called (409): not offered either.
    where = [f"embedding_model = {sql_literal(check_model_name(spec.model))}", "available",
             "enabled", "(mcp_server_id IS NULL OR EXISTS (SELECT 1 FROM mcp_servers s "
             "WHERE s.id = tools.mcp_server_id AND s.enabled))"]
    if not actor.is_admin:
        where.append("(user_id IS NULL OR user_id = :uid)")
    return " AND ".join(where)


def _expr(spec: EmbedderSpec) -> str:
    return f"(description_embedding::vector({int(spec.dimensions)}))"


def search_sql(spec: EmbedderSpec, actor: Principal) -> str:
    """Approximate nearest neighbours through the default model's HNSW index (the
    fallback for catalogues over ``EXACT_SCAN_MAX``): ``:k`` candidates with their vectors."""
    expr = _expr(spec)
    # Only a checked model name, an int and fixed clauses are interpolated.
    return (
        f"SELECT id, description_embedding AS vec, neighbour_similarity AS rn FROM tools "  # noqa: S608
        f"WHERE {_where(spec, actor)} ORDER BY {expr} <=> :qvec LIMIT :k"
    )


def exact_sql(spec: EmbedderSpec, actor: Principal) -> str:
    """Every visible tool scored by the centred cosine (see the module docstring), best
    first.  ``ORDER BY score`` is not the index's ordering, so this is always a scan.

    With t the tool's vector, q the query's and c the centre:
    cos(t - c, q - c) = (t.q - t.c - q.c + c.c) / (|t - c| |q - c|), where
    |t - c|^2 = t.t - 2 t.c + c.c; the query's terms (``:qc``, ``:cc``, ``:qn``) are
    computed once in Python.  The score is that less ``:rw / 2`` times the tool's
    neighbour similarity (the catalogue's mean ``:rn`` for a tool not computed yet): the
    CSLS ranking ``2 cos - rw * r``, halved so it stays on the cosine's scale."""
    expr = _expr(spec)
    # Only what search_sql interpolates: a checked model name, an int, fixed clauses.
    return (
        "SELECT id, (tq - tc - :qc + :cc) / sqrt(greatest(tt - 2 * tc + :cc, 1e-12)) / :qn "  # noqa: S608
        "- CAST(:rw AS double precision) / 2 * coalesce(neighbour_similarity, :rn) AS score "
        "FROM (SELECT id, neighbour_similarity, "
        f"-({expr} <#> :qvec) AS tq, -({expr} <#> :centre) AS tc, -({expr} <#> {expr}) AS tt "
        f"FROM tools WHERE {_where(spec, actor)}) s "
        "ORDER BY score DESC, id LIMIT :k"
    )


def catalogue_sql(spec: EmbedderSpec, actor: Principal) -> str:
    # avg() of pgvector's vector is a vector: one pass, nothing fetched but the mean.
    return (f"SELECT count(*) AS n, avg({_expr(spec)}) AS mean, "  # noqa: S608
            f"coalesce(avg(neighbour_similarity), 0) AS neighbours FROM tools "
            f"WHERE {_where(spec, actor)}")


def _database_key(session: AsyncSession) -> str:
    bind = session.get_bind()
    url = bind.engine.url if isinstance(bind, Connection) else bind.url
    return url.render_as_string(hide_password=True)


async def catalogue(session: AsyncSession, actor: Principal, spec: EmbedderSpec) -> Catalogue:
    """The caller's catalogue, in the caller's transaction (row-level security applies).

    A large one (``CATALOGUE_CACHE_MIN`` tools or more) is remembered per process for
    ``CATALOGUE_TTL_S``: its mean takes a pass over every vector, and it moves little
    when a few tools come or go.  The key is the scope (one user, or administrators),
    so a user's centre is only ever computed from, and used for, what they may see."""
    key = (_database_key(session), spec.model,
           "admin" if actor.is_admin else f"user:{actor.user_id}")
    now = time.monotonic()
    cached = _catalogues.get(key)
    if cached is not None and cached[0] > now:
        return cached[1]
    stmt = text(catalogue_sql(spec, actor)).columns(n=Integer(), mean=VectorType())
    row = (await session.execute(stmt, _scope_params(actor))).one()
    count, mean = int(row.n), row.mean
    centre = None
    if count and mean is not None:
        # Shrunk towards zero: the mean of a handful of tools is mostly those tools, and
        # subtracting it would distort their own ranking (one tool: a zero vector).
        centre = np.asarray(mean, dtype=np.float64) * (count / (count + CENTRE_PRIOR))
    found = Catalogue(count, centre, float(row.neighbours))
    if found.count >= CATALOGUE_CACHE_MIN:
        if len(_catalogues) >= CATALOGUE_CACHE_SIZE:
            _catalogues.clear()  # rare (that many large scopes in one TTL): start afresh
        _catalogues[key] = (now + CATALOGUE_TTL_S, found)
    return found


def centred_scores(query: Vector, vectors: Vector, centre: Vector | None) -> Vector:
    """cos(v - c, q - c) for each row v of ``vectors`` (plain cosine without a centre)."""
    c = np.zeros_like(query) if centre is None else centre
    rows = vectors - c
    norms = np.maximum(np.linalg.norm(rows, axis=1), 1e-6)
    q = query - c
    return np.asarray((rows @ q) / norms / max(float(np.linalg.norm(q)), 1e-6), dtype=np.float64)


async def search_tools(
    session: AsyncSession, actor: Principal, knowledge: KnowledgeConfig | None, query: str,
    k: int = DEFAULT_K, *, embedder: Embedder | None = None, exact_max: int = EXACT_SCAN_MAX,
) -> list[ToolHit]:
    """The ``k`` tools that best match ``query`` among those ``actor`` may use (own and
    global; administrators: all), best first, with their score (the centred cosine less
    a share of the tool's neighbour similarity: :func:`exact_sql`).

    ``exact_max``: the largest catalogue scanned exactly (larger ones go through the
    HNSW index); the benchmark lowers it to measure the index."""
    spec = require_embedder(knowledge) if embedder is None else _spec_of(knowledge)
    assert knowledge is not None
    query = query.strip()
    if not query:
        raise Unprocessable("q must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise Unprocessable(f"q must be at most {MAX_QUERY_CHARS} characters")
    if not 1 <= k <= MAX_K:
        raise Unprocessable(f"k must be within 1..{MAX_K}")
    vector = np.asarray((await (embedder or get_embedder(spec)).embed([query]))[0],
                        dtype=np.float64)
    scope = await catalogue(session, actor, spec)
    if scope.count <= exact_max:
        found = await exact_candidates(session, spec, actor, vector, scope, k)
    else:
        pool = max(k * CANDIDATES_PER_HIT, MIN_CANDIDATES)
        found = await index_candidates(
            session, spec, actor, vector, scope, k, pool=pool,
            ef_search=max(knowledge.ef_search, HNSW_MIN_EF_SEARCH, pool),
        )
    if not found:
        return []
    tools = {t.id: t for t in (await session.scalars(
        select(Tool).where(Tool.id.in_([tool_id for tool_id, _ in found]))
    )).all()}
    return [ToolHit(tools[tool_id], score) for tool_id, score in found if tool_id in tools]


def _scope_params(actor: Principal) -> dict[str, object]:
    return {} if actor.is_admin else {"uid": actor.user_id}


async def exact_candidates(
    session: AsyncSession, spec: EmbedderSpec, actor: Principal, vector: Vector,
    scope: Catalogue, k: int, *, neighbours: bool = True,
) -> list[tuple[uuid.UUID, float]]:
    """The ``k`` best tools by an exact scan, best first (the scope's centre None: plain
    cosine; ``neighbours`` False: without the neighbour similarity, for the benchmark)."""
    centre = scope.centre
    c = np.zeros_like(vector) if centre is None else centre
    qc, cc = float(vector @ c), float(c @ c)
    qn = max(float(np.linalg.norm(vector - c)), 1e-6)
    stmt = text(exact_sql(spec, actor)).bindparams(
        bindparam("qvec", type_=VectorType()), bindparam("centre", type_=VectorType()),
    )
    params = {**_scope_params(actor), "qvec": vector, "centre": c, "qc": qc, "cc": cc, "qn": qn,
              "k": k, "rn": scope.neighbour_mean,
              "rw": scope.neighbour_weight if neighbours else 0.0}
    return [(row.id, float(row.score)) for row in await session.execute(stmt, params)]


async def index_candidates(
    session: AsyncSession, spec: EmbedderSpec, actor: Principal, vector: Vector,
    scope: Catalogue, k: int, *, pool: int, ef_search: int,
) -> list[tuple[uuid.UUID, float]]:
    """``pool`` HNSW neighbours by plain cosine, re-ranked as the exact scan ranks (so a
    score means the same on both paths), the best ``k`` first."""
    await configure_session(session, max(ef_search, pool))
    stmt = (text(search_sql(spec, actor)).bindparams(bindparam("qvec", type_=VectorType()))
            .columns(id=Uuid(), vec=VectorType()))
    rows = (await session.execute(stmt, {**_scope_params(actor), "qvec": vector, "k": pool})).all()
    if not rows:
        return []
    scores = centred_scores(vector, np.asarray([row.vec for row in rows], dtype=np.float64),
                            scope.centre)
    half = scope.neighbour_weight / 2
    ranked = sorted(
        ((row.id, score - half * (scope.neighbour_mean if row.rn is None else float(row.rn)))
         for row, score in zip(rows, scores.tolist(), strict=True)),
        key=lambda h: (-h[1], h[0]))
    return ranked[:k]


def _spec_of(knowledge: KnowledgeConfig | None) -> EmbedderSpec:
    if knowledge is None:
        raise ToolSearchUnavailable("the knowledge embedder is misconfigured")
    return knowledge.embedder
