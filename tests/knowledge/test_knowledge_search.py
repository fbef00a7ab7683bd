"""Search: the local model finds paraphrases, scoping never leaks, the HNSW index is
used, filtered search still returns k results, hybrid fuses both rankings."""

from __future__ import annotations

import itertools
import uuid
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.knowledge import search as search_mod
from roost.knowledge.config import EmbedderSpec, KnowledgeConfig
from roost.knowledge.embeddings import DevHashingEmbedder
from roost.knowledge.index import ensure_model, index_name
from roost.knowledge.models import DEFAULT_INDEX
from roost.knowledge.schemas import SearchRequest
from tests.knowledge.support import drain_jobs, ingest, make_group, principal
from tests.support.identity import make_user
from tests.support.sql import fetch

API = "/api/v1/knowledge"

TOPICS = {
    "refunds.md": "# Billing\n\n## Refunds\n\nCustomers can get their money back within thirty "
                  "days of purchase by writing to support with the order number.",
    "garden.md": "# Garden\n\nTomatoes need six hours of direct sunlight and steady watering; "
                 "basil likes the same spot.",
    "security.md": "# Security\n\nPasswords are hashed with argon2id and API keys are kept only "
                   "as SHA-256 digests, so a database leak reveals no credential.",
    "travel.md": "# Travel\n\nThe train from Paris to Lyon takes about two hours and leaves "
                 "every thirty minutes in the morning.",
}


async def _search(database: Database, who: object, cfg: KnowledgeConfig, **body: object):  # type: ignore[no-untyped-def]
    async with database.transaction() as s:
        await apply_principal(s, who, app_role=cfg.app_role)  # type: ignore[arg-type]
        return await search_mod.search(s, who, cfg, SearchRequest(**body))  # type: ignore[arg-type]


@pytest.mark.needs_local
async def test_the_local_model_finds_the_chunk_for_a_paraphrased_question(
    database: Database, ingest_root: Path, local_embedder: object
) -> None:
    cfg = KnowledgeConfig(ingest_roots=(ingest_root,))  # default: local all-MiniLM-L6-v2
    for name, body in TOPICS.items():
        (ingest_root / name).write_text(body)
    user_id, _ = await make_user(database)
    who = principal(user_id)
    run = await ingest(database, who, cfg, str(ingest_root))
    assert run["status"] == "success" and run["embedding_model"] == "all-MiniLM-L6-v2"
    assert await fetch(database, "SELECT DISTINCT embedding_dim FROM document_chunks") == [(384,)]

    questions = {
        "How long do I have to return something and be reimbursed?": "refunds.md",
        "How are login secrets protected if the DB is stolen?": "security.md",
        "What is the journey time by rail between two French cities?": "travel.md",
    }
    for mode in ("vector", "hybrid"):
        for question, expected in questions.items():
            result = await _search(database, who, cfg, query=question, k=3, mode=mode)
            top = result.results[0]
            names = [h.document.name for h in result.results]
            assert top.document.name == expected, (mode, question, names)
            assert top.section is not None and top.document.path is not None
    best = (await _search(database, who, cfg, query="getting a refund", k=1, mode="vector")).results[0]
    assert best.section == "Billing > Refunds" and 0.3 < best.score <= 1.0


async def test_private_documents_never_leak_and_group_documents_reach_members_only(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    alice_id, alice = await make_user(database)
    bob_id, bob = await make_user(database)
    _, carol = await make_user(database)
    team = await make_group(database, f"team-{uuid.uuid4().hex[:6]}", alice_id, bob_id)

    async def upload(name: str, words: str, **form: str) -> str:
        r = await kclient.post(f"{API}/documents", headers=alice,
                               files={"file": (name, words.encode(), "text/plain")}, data=form)
        assert r.status_code == 202, r.text
        return str(r.json()["document"]["id"])

    private = await upload("diary.txt", "zebra diary private thoughts zebra")
    shared = await upload("plan.txt", "zebra roadmap for the whole team zebra", group_id=str(team))
    hidden = await upload("draft.txt", "zebra draft kept private despite group zebra",
                          group_id=str(team), is_private="true")
    await drain_jobs(database, kcfg)

    async def found(headers: dict[str, str], mode: str) -> set[str]:
        r = await kclient.post(f"{API}/search", headers=headers,
                               json={"query": "zebra", "k": 10, "mode": mode})
        assert r.status_code == 200, r.text
        return {hit["document_id"] for hit in r.json()["results"]}

    for mode in ("vector", "text", "hybrid"):
        assert await found(alice, mode) == {private, shared, hidden}
        assert await found(bob, mode) == {shared}
        assert await found(carol, mode) == set()
    assert (await kclient.get(f"{API}/documents/{shared}", headers=bob)).status_code == 200
    assert (await kclient.get(f"{API}/documents/{private}", headers=bob)).status_code == 404
    assert (await kclient.get(f"{API}/documents/{hidden}", headers=bob)).status_code == 404
    assert (await kclient.get(f"{API}/documents/{shared}", headers=carol)).status_code == 404
    # A member who does not own it may read it, not change it.
    assert (await kclient.delete(f"{API}/documents/{shared}", headers=bob)).status_code == 403

    # Unsharing takes effect on the chunks at once.
    r = await kclient.patch(f"{API}/documents/{shared}", headers=alice, json={"is_private": True})
    assert r.status_code == 200 and r.json()["is_private"] is True
    assert await found(bob, "hybrid") == set()

    # Row-level security alone (no service filter): Bob's transaction sees no private chunk.
    async with database.transaction() as s:
        await apply_principal(s, principal(bob_id, team), app_role="roost_app")
        visible = (await s.execute(text("SELECT count(*) FROM document_chunks"))).scalar()
        docs = (await s.execute(text("SELECT count(*) FROM documents"))).scalar()
    assert (visible, docs) == (0, 0)


async def test_vector_queries_use_the_models_hnsw_index(database: Database) -> None:
    await ensure_model(database.engine, "remote-768", 768, "openai")
    user = uuid.uuid4()
    for model, dims, index in (("all-MiniLM-L6-v2", 384, DEFAULT_INDEX),
                               ("remote-768", 768, index_name("remote-768"))):
        req = SearchRequest(query="q", collection="c", tags=["t"], document_ids=[uuid.uuid4()])
        filters = search_mod.build_filters(principal(user, uuid.uuid4()), req)
        for mode in (None, "vector", "hybrid"):  # the candidates alone, or a search's statement
            sql = (search_mod.vector_query_sql(model, dims, filters.sql) if mode is None
                   else search_mod.search_sql(mode, model, dims, filters.sql))
            async with database.transaction() as s:
                await s.execute(text("SET LOCAL enable_seqscan = off"))
                # Under row-level security, as a search runs (its estimates differ).
                await apply_principal(s, principal(user), app_role="roost_app")
                plan = "\n".join(r[0] for r in (await s.execute(
                    text("EXPLAIN " + sql),
                    {**filters.params, "qvec": "[" + ",".join(["0.1"] * dims) + "]", "limit": 10,
                     "pool": 40, "qtext": "q"},
                )).all())
            assert f"Index Scan using {index}" in plan, (mode, plan)
    definition = (await fetch(database, "SELECT indexdef FROM pg_indexes WHERE indexname = :n",
                             n=index_name("remote-768")))[0][0]
    assert "vector(768)" in definition and "m='16'" in definition
    assert "ef_construction='64'" in definition and "remote-768" in definition
    registered = await fetch(database, "SELECT dimensions FROM embedding_models WHERE name = 'remote-768'")
    assert registered == [(768,)]
    with pytest.raises(Exception, match="768 dimensions"):
        await ensure_model(database.engine, "remote-768", 1536, "openai")


async def test_a_selective_filter_still_returns_k_results(database: Database) -> None:
    """pgvector 0.8 iterative scans: 1% of 3000 chunks match; ef_search 10 alone finds few."""
    user_id, _ = await make_user(database)
    cfg = KnowledgeConfig(ef_search=10, embedder=EmbedderSpec("hash", "dev-hashing-64", 64))
    await ensure_model(database.engine, "dev-hashing-64", 64, "hash")
    async with database.transaction() as s:
        doc = (await s.execute(text(
            "INSERT INTO documents (id, user_id, name, source, path_hash) "
            "VALUES (gen_random_uuid(), :u, 'synthetic', 'file', 'h') RETURNING id"),
            {"u": user_id})).scalar()
        await s.execute(text(
            "INSERT INTO document_chunks (id, document_id, user_id, collection, chunk_index, content, "
            "embedding, embedding_model, embedding_dim) "
            "SELECT gen_random_uuid(), :d, :u, CASE WHEN i % 100 = 0 THEN 'rare' ELSE 'common' END, i, "
            "'chunk ' || i, (SELECT array_agg(random() - 0.5) FROM generate_series(1, 64) "
            "WHERE i IS NOT NULL)::vector, 'dev-hashing-64', 64 FROM generate_series(0, 2999) i"),
            {"d": doc, "u": user_id})
        await s.execute(text("ANALYZE document_chunks"))
    who = principal(user_id)
    result = await _search(database, who, cfg, query="anything", k=10, mode="vector",
                           collection="rare")
    assert len(result.results) == 10
    assert all(int(h.content.split()[1]) % 100 == 0 for h in result.results)
    sims = [h.score for h in result.results]
    assert sims == sorted(sims, reverse=True)
    # The index path itself (seq scans off; no owner filter, so no b-tree competes):
    # ef_search = 10 without iterative scans finds few of the rare rows, with them all 10.
    f = search_mod.build_filters(None, SearchRequest(query="x", collection="rare"))
    sql = search_mod.vector_query_sql("dev-hashing-64", 64, f.sql)
    params = {**f.params, "qvec": [0.01] * 64, "limit": 10}
    counts = {}
    for mode in ("off", "relaxed_order"):
        async with database.transaction() as s:
            await s.execute(text("SET LOCAL enable_seqscan = off"))
            await s.execute(text("SET LOCAL hnsw.ef_search = 10"))
            await s.execute(text(f"SET LOCAL hnsw.iterative_scan = {mode}"))
            plan = "\n".join(r[0] for r in (await s.execute(text("EXPLAIN " + sql), params)).all())
            assert f"Index Scan using {index_name('dev-hashing-64')}" in plan, plan
            counts[mode] = len((await s.execute(text(sql), params)).all())
    assert counts["off"] < 10 and counts["relaxed_order"] == 10


async def test_a_hydrated_search_runs_its_knn_once_under_row_level_security(
    database: Database
) -> None:
    """The hits' documents are looked up after the k-NN, one by key for each hit.  With a
    plain join, row-level security's estimate of one visible document (a table not analysed
    yet) made the planner scan the documents and run the k-NN again for each of them (20x
    slower on 30)."""
    user_id, _ = await make_user(database)
    await ensure_model(database.engine, "dev-hashing-64", 64, "hash")
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO documents (id, user_id, name, source, path_hash) "
            "SELECT gen_random_uuid(), :u, 'doc ' || i, 'file', 'h' || i "
            "FROM generate_series(1, 30) i"), {"u": user_id})
        await s.execute(text(
            "INSERT INTO document_chunks (id, document_id, user_id, collection, chunk_index, "
            "content, embedding, embedding_model, embedding_dim) "
            "SELECT gen_random_uuid(), d.id, :u, 'c' || (i % 10), i, 'chunk ' || i, "
            "(SELECT array_agg(random() - 0.5) FROM generate_series(1, 64) WHERE i IS NOT NULL)"
            "::vector, 'dev-hashing-64', 64 FROM documents d, generate_series(0, 99) i "
            "WHERE d.user_id = :u"), {"u": user_id})
        # The documents not analysed yet (as before autovacuum's first pass).
        await s.execute(text("ANALYZE document_chunks"))
    who = principal(user_id)
    filters = search_mod.build_filters(who, SearchRequest(query="q", collection="c1"))
    for mode in ("vector", "hybrid"):
        sql = search_mod.search_sql(mode, "dev-hashing-64", 64, filters.sql)
        async with database.transaction() as s:
            await apply_principal(s, who, app_role="roost_app")
            plan = "\n".join(r[0] for r in (await s.execute(
                text("EXPLAIN " + sql),
                {**filters.params, "qvec": "[" + ",".join(["0.01"] * 64) + "]", "limit": 10,
                 "pool": 40, "qtext": "chunk"})).all())
        index = index_name("dev-hashing-64")
        assert -1 < plan.index(index) < plan.find(" on documents"), (mode, plan)
        assert plan.count(index) == 1, (mode, plan)


def _same_vector_words(word: str, dims: int, count: int) -> list[str]:
    """``count`` words the dev hashing embedder maps to exactly ``word``'s vector (the
    same bucket and sign): a vector search for ``word`` finds them at distance 0, a text
    search does not find them at all."""
    embedder = DevHashingEmbedder(dims)
    target = embedder.embed_sync(word)
    found: list[str] = []
    for n in itertools.count():
        candidate = f"qz{n}"
        if embedder.embed_sync(candidate) == target:
            found.append(candidate)
            if len(found) == count:
                return found
    raise AssertionError("unreachable")


async def test_hybrid_fuses_the_vector_and_text_rankings_by_reciprocal_rank(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path
) -> None:
    """The hybrid statement's fusion is reciprocal rank fusion of the two candidate lists
    (each ``max(4k, 40)`` long): score = sum of 1 / (60 + position), ties by id (k = 9
    cuts a tie); a chunk found by one list only still counts (here the lists do not
    overlap at all)."""
    user_id, _ = await make_user(database)
    for i, word in enumerate(_same_vector_words("zircon", kcfg.embedder.dimensions, 40)):
        (ingest_root / f"near{i}.txt").write_text(word)
    for i in range(6):  # the word, among others: found by text, far from the query vector
        filler = " ".join(f"w{i}x{j}" for j in range(30))
        (ingest_root / f"text{i}.txt").write_text(f"{filler} zircon {'zircon ' * i}")
    who = principal(user_id)
    await ingest(database, who, kcfg, str(ingest_root))
    vec = (await _search(database, who, kcfg, query="zircon", mode="vector", k=40)).results
    txt = (await _search(database, who, kcfg, query="zircon", mode="text", k=40)).results
    assert len(vec) == 40 and all(h.document.name.startswith("near") for h in vec)
    assert len(txt) == 6 and all(h.document.name.startswith("text") for h in txt)
    scores: dict[uuid.UUID, float] = {}
    for ranking in (vec, txt):
        for position, hit in enumerate(ranking, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + 1.0 / (60 + position)
    expected = sorted(scores.items(), key=lambda item: (-item[1], str(item[0])))[:9]
    hybrid = (await _search(database, who, kcfg, query="zircon", mode="hybrid", k=9)).results
    assert [(h.chunk_id, h.score) for h in hybrid] == expected
    assert {h.document.name[:4] for h in hybrid} == {"near", "text"}
    similarity = {h.chunk_id: h.vector_similarity for h in vec}
    ranks = {h.chunk_id: h.text_rank for h in txt}
    for hit in hybrid:
        assert hit.vector_similarity == similarity.get(hit.chunk_id)
        assert hit.text_rank == ranks.get(hit.chunk_id)


async def test_hybrid_search_uses_text_and_vectors(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path
) -> None:
    user_id, _ = await make_user(database)
    (ingest_root / "a.txt").write_text("The quartzite ridge overlooks the valley.")
    (ingest_root / "b.txt").write_text("Nothing about rocks here, only cooking pasta.")
    who = principal(user_id)
    await ingest(database, who, kcfg, str(ingest_root), tags=["geo"])
    text_only = await _search(database, who, kcfg, query="ridges of quartzite", mode="text")
    assert [h.document.name for h in text_only.results] == ["a.txt"]
    assert text_only.results[0].text_rank is not None and text_only.results[0].vector_similarity is None
    hybrid = await _search(database, who, kcfg, query="quartzite ridge", mode="hybrid", k=2)
    assert hybrid.results[0].document.name == "a.txt"
    assert hybrid.results[0].text_rank is not None and hybrid.results[0].vector_similarity is not None
    none = await _search(database, who, kcfg, query="quartzite", tags=["other"])
    assert none.results == []


async def test_text_search_finds_each_word_of_the_document(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path
) -> None:
    """The query's lexemes are searched as plainto_tsquery stemmed them, not stemmed a
    second time ('agreed' -> 'agre', never 'agr'), in text and hybrid mode alike; an
    apostrophe in a word does not break the query."""
    user_id, _ = await make_user(database)
    words = ["agreed", "universities", "generously", "herons", "O'Brien's"]
    (ingest_root / "w.txt").write_text(" ".join(words) + ".")
    (ingest_root / "other.txt").write_text("Nothing relevant: pasta and tomatoes.")
    who = principal(user_id)
    await ingest(database, who, kcfg, str(ingest_root))
    for mode in ("text", "hybrid"):
        for word in words:
            found = await _search(database, who, kcfg, query=word, mode=mode, k=1)
            assert [h.document.name for h in found.results] == ["w.txt"], (mode, word)
    # Any of the terms matches; stop words alone match nothing (and do not fail).
    anyof = await _search(database, who, kcfg, query="agreed pasta", mode="text")
    assert {h.document.name for h in anyof.results} == {"w.txt", "other.txt"}
    assert (await _search(database, who, kcfg, query="the of and", mode="text")).results == []
