"""Curated chunks: LLM summaries of chunk groups.

With ``ROOST_KNOWLEDGE_CURATION=true`` every ingested document gets a
``knowledge.curate`` job.  It summarises each run of ``curation_group_size``
consecutive chunks through the LLM gateway (the registered providers, with their
fallback; ``ROOST_KNOWLEDGE_CURATION_MODEL`` picks the model), acting for the
document's owner, so every call is in ``llm_requests`` and the owner's usage like any
other.  Each summary is embedded with the document's model and stored as a chunk with
``is_curated = true`` and ``source_chunk_ids`` naming the chunks it summarises.
Curated chunks are searchable like any other (``include_curated`` in a search turns
them off).  Without a provider that can serve the model the job ends, skipped.

The summaries are written in one transaction that first checks the source chunks
still exist: if a newer ingestion replaced them meanwhile, nothing is written (that
ingestion queued its own curation).  Re-ingestion deletes curated chunks with the rest.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import defer

from roost.audit import service as audit
from roost.db.base import uuid7
from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.knowledge.bulk import insert_chunks
from roost.knowledge.config import KnowledgeConfig, get_embedder
from roost.knowledge.models import Document, DocumentChunk
from roost.llm import calls
from roost.llm.errors import ModelNotFound, NoProvider
from roost.llm.gateway import LLMGateway
from roost.llm.types import ChatMessage, ChatRequest
from roost.principal import Principal

SYSTEM_PROMPT = (
    "You condense passages of a document into a faithful, self-contained summary for a "
    "search index. Keep names, numbers and key facts; add nothing that is not in the text. "
    "Answer with the summary only, at most 120 words."
)
MAX_SUMMARY_CHARS = 4000


async def _scoped(session: AsyncSession, cfg: KnowledgeConfig, user_id: uuid.UUID) -> None:
    from roost.knowledge.ingest import RunPrincipal

    await apply_principal(session, RunPrincipal(user_id), app_role=cfg.app_role)


async def curate_document(
    database: Database, cfg: KnowledgeConfig, document_id: uuid.UUID, user_id: uuid.UUID,
    *, gateway: LLMGateway | None = None,
) -> dict[str, Any]:
    """``gateway``: the LLM gateway's (default: the worker process's own)."""
    if not cfg.curation_enabled:
        return {"skipped": "curation is off (ROOST_KNOWLEDGE_CURATION)"}
    if gateway is None:
        from roost.llm.jobs import job_gateway

        gateway = job_gateway(database)
    try:
        return await _curate(database, cfg, document_id, user_id, gateway)
    except (NoProvider, ModelNotFound) as exc:
        # Nothing to retry until an administrator registers a provider.
        return {"skipped": f"no LLM provider for curation: {exc}"}


async def _curate(
    database: Database, cfg: KnowledgeConfig, document_id: uuid.UUID, user_id: uuid.UUID,
    gateway: LLMGateway,
) -> dict[str, Any]:
    async with database.transaction() as s:
        await _scoped(s, cfg, user_id)
        doc = await s.get(Document, document_id)
        if doc is None or doc.status != "ready" or doc.embedding_model is None:
            return {"skipped": "the document is gone or not ready"}
        model = doc.embedding_model
        chunks = list((await s.scalars(
            select(DocumentChunk).where(DocumentChunk.document_id == document_id,
                                        ~DocumentChunk.is_curated)
            .options(defer(DocumentChunk.embedding), defer(DocumentChunk.content_tsv))
            .order_by(DocumentChunk.chunk_index)
        )).all())
    size = cfg.curation_group_size
    groups = [chunks[i: i + size] for i in range(0, len(chunks), size)]
    groups = [g for g in groups if len(g) >= 2 or len(chunks) < 2]
    owner = Principal(user_id=user_id, is_admin=False, kind="job")
    summaries: list[str] = []
    for group in groups:
        passage = "\n\n".join(c.content for c in group)
        outcome = await calls.complete(gateway, owner, ChatRequest(
            model=cfg.curation_model,
            messages=[ChatMessage(role="system", content=SYSTEM_PROMPT),
                      ChatMessage(role="user", content=f"Passages:\n\n{passage}")],
            temperature=0.2, max_tokens=400,
        ), model=cfg.curation_model)
        summaries.append(outcome.result.content.strip()[:MAX_SUMMARY_CHARS])
    spec = cfg.spec_for(model)
    vectors = await get_embedder(spec).embed(summaries) if summaries else []
    async with database.transaction() as s:
        await _scoped(s, cfg, user_id)
        doc = (await s.scalars(
            select(Document).where(Document.id == document_id).with_for_update()
        )).one_or_none()
        source_ids = [c.id for g in groups for c in g]
        still = (await s.execute(
            select(func.count()).select_from(DocumentChunk)
            .where(DocumentChunk.id.in_(source_ids))
        )).scalar_one()
        if doc is None or still != len(source_ids):
            return {"skipped": "the document was re-ingested meanwhile"}
        await s.execute(delete(DocumentChunk).where(DocumentChunk.document_id == document_id,
                                                    DocumentChunk.is_curated))
        rows = []
        for index, (group, summary, vector) in enumerate(zip(groups, summaries, vectors, strict=True)):
            if not summary:
                continue
            pages = sorted({int(c.chunk_metadata["page"]) for c in group
                            if c.chunk_metadata.get("page") is not None})
            meta: dict[str, Any] = {"curated_from": [c.chunk_index for c in group]}
            if pages:
                meta["page"] = pages[0]
                meta["pages"] = pages
            section = group[0].chunk_metadata.get("section")
            if section:
                meta["section"] = section
            rows.append({
                "id": uuid7(), "document_id": document_id, "user_id": doc.user_id,
                "group_id": None if doc.is_private else doc.group_id,
                "persona_id": doc.persona_id, "collection": doc.collection, "tags": doc.tags,
                "chunk_index": index, "content": summary, "token_count": None,
                "embedding": vector, "embedding_model": model, "embedding_dim": spec.dimensions,
                "is_curated": True, "source_chunk_ids": [c.id for c in group],
                "chunk_metadata": meta,
            })
        if rows:
            await insert_chunks(s, rows)
        await audit.record(
            s, "knowledge.document.curated", user_id=doc.user_id, resource_type="document",
            resource_id=document_id, changes={"curated_chunks": len(rows)},
        )
    return {"curated_chunks": len(rows)}
