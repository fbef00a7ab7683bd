"""Curated summaries from a real OpenAI-compatible server process, and web ingestion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.curation import curate_document
from roost.knowledge.ingest import run_ingestion
from roost.knowledge.models import IngestionRun
from roost.llm import providers
from roost.llm.gateway import LLMGateway
from roost.llm.schemas import ProviderCreate
from roost.principal import OPERATOR
from tests.knowledge.helpers import LoopbackServer
from tests.knowledge.support import PARAGRAPH, ingest, principal
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, start_stub
from tests.support.sql import fetch, scalar


async def _register_provider(gateway: LLMGateway, base_url: str) -> None:
    async with gateway.db.transaction() as s:
        await providers.create_provider(s, gateway, OPERATOR, ProviderCreate(
            name="curator", type="openai", base_url=base_url, model="curator-model"))


async def test_curated_chunks_summarise_their_sources_and_are_searchable(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path, test_settings: Settings,
    test_keys: KeyMaterial,
) -> None:
    """Curation goes through the LLM gateway: a registered provider (a real server
    process), every call recorded for the document's owner."""
    user_id, _ = await make_user(database)
    gateway = LLMGateway.build(database, test_settings, test_keys)
    (ingest_root / "long.txt").write_text(" ".join(f"Fact {i}. " + PARAGRAPH for i in range(12)))
    cfg = dataclasses.replace(kcfg, curation_enabled=True, curation_group_size=3)
    run = await ingest(database, principal(user_id), cfg, str(ingest_root))
    doc_id = (await fetch(database, "SELECT id FROM documents"))[0][0]
    # Ingestion queued the curation job in its own transaction.
    queued = await scalar(database, "SELECT count(*) FROM background_tasks "
                                    "WHERE task_type = 'knowledge.curate'")
    assert queued == 1 and run["totals_chunks"] >= 4
    # No provider registered yet: the job ends, skipped, and writes nothing.
    skipped = await curate_document(database, cfg, doc_id, user_id, gateway=gateway)
    assert "no LLM provider" in skipped["skipped"]
    with start_stub(Reply("Summary: Roost stores documents and embeds chunks.", times=None)) as stub:
        await _register_provider(gateway, stub.base_url)
        result = await curate_document(database, cfg, doc_id, user_id, gateway=gateway)
        calls = len(stub.requests(path="/v1/chat/completions"))
    curated = await fetch(database, "SELECT content, source_chunk_ids, chunk_index FROM document_chunks "
                                   "WHERE is_curated ORDER BY chunk_index")
    originals = {r[0] for r in await fetch(database, "SELECT id FROM document_chunks WHERE NOT is_curated")}
    assert result["curated_chunks"] == len(curated) == calls >= 1
    assert all(c.content.startswith("Summary:") for c in curated)
    assert all(set(c.source_chunk_ids) <= originals and len(c.source_chunk_ids) >= 2 for c in curated)
    recorded = await fetch(database, "SELECT user_id, status, model FROM llm_requests")
    assert recorded == [(user_id, "completed", None)] * calls
    usage = await scalar(database, "SELECT count(*) FROM usage_records WHERE user_id = :u", u=user_id)
    assert usage == calls

    # Re-ingestion replaces curated chunks with the rest.
    (ingest_root / "long.txt").write_text("Short now.")
    await ingest(database, principal(user_id), kcfg, str(ingest_root))
    assert await scalar(database, "SELECT count(*) FROM document_chunks WHERE is_curated") == 0


async def test_web_ingestion_when_private_fetching_is_allowed(
    database: Database, kcfg: KnowledgeConfig, loopback: LoopbackServer
) -> None:
    user_id, _ = await make_user(database)
    cfg = dataclasses.replace(kcfg, allow_private_fetch=True)
    url = loopback.url("/doc.html")
    run = await ingest(database, principal(user_id), cfg, url, collection="web")
    assert (run["status"], run["source"], run["from_web"], run["totals_files"]) == ("success", "web", True, 1)
    doc = (await fetch(database, "SELECT uri, source, mime, status FROM documents"))[0]
    assert (doc.uri, doc.source, doc.mime, doc.status) == (url, "web", "text/html", "ready")
    text = await scalar(database, "SELECT string_agg(content, ' ') FROM document_chunks")
    assert "Served from 127.0.0.1" in text and "Menu" not in text

    # Without the operator's permission the fetch itself refuses the address (a run whose
    # target passed the API's early check, e.g. a name that now resolves to loopback).
    async with database.transaction() as s:
        run_row = IngestionRun(user_id=user_id, target=url, source="web", from_web=True,
                               embedding_model=kcfg.embedder.model)
        s.add(run_row)
    hits_before = loopback.hits.get("/doc.html", 0)
    await run_ingestion(database, run_row.id, kcfg)
    refused = (await fetch(database, "SELECT status, errors FROM ingestion_runs WHERE id = :i",
                          i=run_row.id))[0]
    assert refused.status == "failed" and refused.errors[0]["type"] == "fetch-refused"
    assert "loopback" in refused.errors[0]["error"]
    assert loopback.hits.get("/doc.html", 0) == hits_before  # no connection was made
