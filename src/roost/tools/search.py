"""Semantic tool search: tool descriptions embedded by the knowledge embedder, ranked by
cosine similarity in pgvector.

Embedding happens off the request path: discovery enqueues ``tools.embed_descriptions``
(``roost.tools.jobs``), a periodic run of the same job catches anything else (built-ins,
tools written by hand), and ``roost tools embed`` does it at once.  A tool is (re)embedded
when it has no vector, when its vector is another model's, or when the text it was made
from (name, title, description) changed: ``embedding_text_sha256`` is that text's hash.

A search embeds the query with the same embedder and orders the caller's visible,
enabled and available tools by ``(description_embedding::vector(<dim>)) <=> query``;
the default model's partial HNSW index (migration 0510) serves that expression.  Tools
not embedded yet are not found.  There is no text fallback: without a working embedder
the search answers 409 ``embedder-unavailable`` (``GET /api/v1/tools?name=`` still lists).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog
from sqlalchemy import bindparam, select, text, update
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
    return report


@dataclass(frozen=True)
class ToolHit:
    tool: Tool
    score: float


def search_sql(spec: EmbedderSpec, actor: Principal) -> str:
    model = sql_literal(check_model_name(spec.model))
    dims = int(spec.dimensions)
    expr = f"(description_embedding::vector({dims}))"
    where = [f"embedding_model = {model}", "available", "enabled"]
    if not actor.is_admin:
        where.append("(user_id IS NULL OR user_id = :uid)")
    # Only a checked model name, an int and fixed clauses are interpolated.
    return (
        f"SELECT id, 1 - ({expr} <=> :qvec) AS score FROM tools "  # noqa: S608
        f"WHERE {' AND '.join(where)} ORDER BY {expr} <=> :qvec LIMIT :k"
    )


async def search_tools(
    session: AsyncSession, actor: Principal, knowledge: KnowledgeConfig | None, query: str,
    k: int = DEFAULT_K, *, embedder: Embedder | None = None,
) -> list[ToolHit]:
    """The ``k`` tools most similar to ``query`` among those ``actor`` may use (own and
    global; administrators: all), best first, with their cosine similarity."""
    spec = require_embedder(knowledge) if embedder is None else _spec_of(knowledge)
    assert knowledge is not None
    query = query.strip()
    if not query:
        raise Unprocessable("q must not be empty")
    if len(query) > MAX_QUERY_CHARS:
        raise Unprocessable(f"q must be at most {MAX_QUERY_CHARS} characters")
    if not 1 <= k <= MAX_K:
        raise Unprocessable(f"k must be within 1..{MAX_K}")
    vector = (await (embedder or get_embedder(spec)).embed([query]))[0]
    await configure_session(session, max(knowledge.ef_search, k))
    stmt = text(search_sql(spec, actor)).bindparams(bindparam("qvec", type_=VectorType()))
    params: dict[str, object] = {"qvec": vector, "k": k}
    if not actor.is_admin:
        params["uid"] = actor.user_id
    found = [(row.id, float(row.score)) for row in await session.execute(stmt, params)]
    if not found:
        return []
    tools = {t.id: t for t in (await session.scalars(
        select(Tool).where(Tool.id.in_([tool_id for tool_id, _ in found]))
    )).all()}
    hits = [ToolHit(tools[tool_id], score) for tool_id, score in found if tool_id in tools]
    # hnsw.iterative_scan=relaxed_order may return neighbours slightly out of order.
    hits.sort(key=lambda h: h.score, reverse=True)
    return hits


def _spec_of(knowledge: KnowledgeConfig | None) -> EmbedderSpec:
    if knowledge is None:
        raise ToolSearchUnavailable("the knowledge embedder is misconfigured")
    return knowledge.embedder
