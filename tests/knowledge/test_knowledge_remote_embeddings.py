"""A remote OpenAI-compatible 768-dimensional model next to the 384-dimensional one:
its own HNSW index, its dimension on every chunk, queries see only their model's chunks."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sqlalchemy import text

from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.knowledge import search as search_mod
from roost.knowledge.config import EmbedderSpec, KnowledgeConfig
from roost.knowledge.index import index_name
from roost.knowledge.schemas import SearchRequest
from tests.knowledge.support import ingest, principal
from tests.support.identity import make_user
from tests.support.openai_stub import Embed, start_stub
from tests.support.sql import fetch


async def test_a_768_dimension_remote_model_lives_beside_the_default(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path
) -> None:
    user_id, _ = await make_user(database)
    who = principal(user_id)
    (ingest_root / "small").mkdir()
    (ingest_root / "small" / "a.txt").write_text("Local model text about lighthouses.")
    (ingest_root / "big").mkdir()
    (ingest_root / "big" / "b.txt").write_text("Remote model text about lighthouses.")
    await ingest(database, who, kcfg, str(ingest_root / "small"))
    with start_stub(Embed(768, times=None)) as stub:
        remote = dataclasses.replace(kcfg, embedder=EmbedderSpec(
            "openai", "stub-embed-768", 768, base_url=stub.base_url, api_key="sk-test"))
        run = await ingest(database, who, remote, str(ingest_root / "big"))
        assert run["status"] == "success" and run["embedding_model"] == "stub-embed-768"
        assert stub.requests(path="/v1/embeddings")
        async with database.transaction() as s:
            await apply_principal(s, who)
            hits = await search_mod.search(s, who, remote, SearchRequest(query="lighthouses",
                                                                         mode="hybrid"))
    assert {h.document.name for h in hits.results} == {"b.txt"}
    dims = await fetch(database, "SELECT d.name, c.embedding_dim, c.embedding_model FROM "
                                "document_chunks c JOIN documents d ON d.id = c.document_id ORDER BY 1")
    assert [tuple(r) for r in dims] == [("a.txt", 384, "dev-hashing-384"),
                                        ("b.txt", 768, "stub-embed-768")]
    indexes = {r[0] for r in await fetch(database, "SELECT indexname FROM pg_indexes "
                                                  "WHERE tablename = 'document_chunks'")}
    assert {index_name("stub-embed-768"), index_name("dev-hashing-384")} <= indexes
    async with database.transaction() as s:
        await apply_principal(s, who)
        local = await search_mod.search(s, who, kcfg, SearchRequest(query="lighthouses", mode="vector"))
        valid = (await s.execute(text(
            "SELECT bool_and(i.indisvalid) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
            "WHERE c.relname LIKE 'ix_document_chunks_embedding_%'"))).scalar()
    assert {h.document.name for h in local.results} == {"a.txt"} and valid is True
