"""Recall under row-level security after migration 0830: the user's own index entries
(``ix_memories_user_text``, ``ix_memories_user_long_text``, ``ix_memories_user_minilm``),
the policy that reads the principal once per statement, and what they must not change:
another user's memories never come back, and recall answers exactly what it answers
without row-level security."""

from __future__ import annotations

import random
import uuid
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import bindparam, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.base import utcnow
from roost.db.engine import Database
from roost.db.vector import VectorType
from roost.identity.tenancy import apply_principal, current_scope
from roost.knowledge.embeddings import DevHashingEmbedder
from roost.memory import recall, service
from roost.memory.models import DEFAULT_MODEL, LONG_TEXT, SHORT_TEXT, Memory
from roost.memory.schemas import MemoryCreate
from roost.principal import Principal
from tests.support.identity import make_user

SECRET = "Ada's secret flower is the tulip"
INDEX_ONLY = ("SELECT set_config('enable_seqscan', 'off', true), "
              "set_config('enable_bitmapscan', 'off', true)")


def _person(user_id: uuid.UUID | None, *, admin: bool = False) -> Principal:
    return Principal(user_id=user_id, is_admin=admin, kind="api_key")


def _embedder() -> DevHashingEmbedder:
    embedder = DevHashingEmbedder(384)
    embedder.model_name = DEFAULT_MODEL  # the default model: its HNSW and covering indexes
    return embedder


async def _remember(database: Database, user_id: uuid.UUID, content: str,
                    scope: service.Scope | None = None, **extra: Any) -> Memory:
    async with database.transaction() as s:
        memory = await service.add_memory(s, _person(user_id), scope or service.Scope(user_id),
                                          MemoryCreate(content=content, **extra))
        await recall.embed_memories(s, [memory], _embedder())
        return memory


async def _text_ids(session: AsyncSession, user_id: uuid.UUID, tsquery: str) -> set[uuid.UUID]:
    """Recall's two full-text reads of one user (short memories from the index, long ones
    from the table), index scans only."""
    rows = await session.execute(text(
        " UNION ALL ".join(f"SELECT id FROM memories WHERE {size} AND user_id = :u "
                           "AND content_tsv @@ to_tsquery('english', :q)"
                           for size in (SHORT_TEXT, LONG_TEXT))), {"u": user_id, "q": tsquery})
    return set(rows.scalars())


async def _vector_ids(session: AsyncSession, user_id: uuid.UUID) -> set[uuid.UUID]:
    [qvec] = await _embedder().embed([SECRET])
    rows = await session.execute(text(
        "SELECT id FROM (SELECT id, (embedding::vector(384)) <=> CAST(:q AS vector(384)) AS d "
        "FROM memories WHERE embedding_model = :m AND user_id = :u OFFSET 0) x ORDER BY d"
    ).bindparams(bindparam("q", type_=VectorType())), {"u": user_id, "q": qvec, "m": DEFAULT_MODEL})
    return set(rows.scalars())


async def test_another_users_memories_never_come_back(database: Database) -> None:
    alice, _ = await make_user(database)
    bob, _ = await make_user(database)
    mine = await _remember(database, alice, SECRET)
    long_mine = await _remember(database, alice, "tulip " + " ".join(
        f"word{i}" for i in range(250)))  # a long memory: read from the table
    theirs = {(await _remember(database, bob, content)).id for content in (
        SECRET, "Bob's secret flower is the lily", "tulip " + " ".join(
            f"term{i}" for i in range(250)))}
    tulips = "secret | tulip | lily"

    async with database.transaction() as s:
        await apply_principal(s, _person(alice))
        assert (await current_scope(s))[0] == "roost_app"
        await s.execute(text(INDEX_ONLY))
        # Asking for Bob's rows by his user id, through the indexes that hold his entries
        # next to hers: nothing, however well they match.
        assert await _text_ids(s, bob, tulips) == set()
        assert await _vector_ids(s, bob) == set()
        assert await _text_ids(s, alice, tulips) == {mine.id, long_mine.id}
        assert await _vector_ids(s, alice) == {mine.id, long_mine.id}
        # Recall: only her memories, whatever the query names.
        hits = await recall.search(s, _person(alice), service.Scope(alice),
                                   "lily autumn tulip secret term1", embedder=_embedder(),
                                   touch=False)
        assert {h.memory.id for h in hits} == {mine.id, long_mine.id}
        assert all(h.text is not None for h in hits)  # both found by their words too

    # The application role without a user sees nothing, theirs or hers.
    async with database.transaction() as s:
        await apply_principal(s, _person(None))
        await s.execute(text(INDEX_ONLY))
        assert await _text_ids(s, alice, tulips) == set() == await _text_ids(s, bob, tulips)
        assert await _vector_ids(s, alice) == set() == await _vector_ids(s, bob)
        assert (await s.execute(text("SELECT count(*) FROM memories"))).scalar() == 0

    # An administrator reads every user's memories, as the policy always allowed.
    async with database.transaction() as s:
        await apply_principal(s, _person(alice, admin=True))
        await s.execute(text(INDEX_ONLY))
        assert await _text_ids(s, bob, tulips) == theirs
        assert await _vector_ids(s, bob) == theirs


async def test_the_policy_reads_the_principal_once(database: Database) -> None:
    """``memories_owner`` is ``roost_row_visible(user_id)`` with the settings read in
    initplans (once per statement); recall's scans are index-only under it."""
    user_id, _ = await make_user(database)
    await _remember(database, user_id, SECRET)
    async with database.transaction() as s:
        using, check = (await s.execute(text(
            "SELECT pg_get_expr(polqual, polrelid), pg_get_expr(polwithcheck, polrelid) "
            "FROM pg_policy WHERE polname = 'memories_owner'"))).one()
    assert " ".join(using.replace("( ", "(").split()) == (
        "((SELECT roost_is_admin() AS roost_is_admin) OR "
        "(user_id = (SELECT roost_current_user_id() AS roost_current_user_id)))")
    assert check == "roost_row_visible(user_id)"

    [qvec] = await _embedder().embed(["secret tulip"])
    plan = recall._plan(service.Scope(user_id), "secret tulip", model=DEFAULT_MODEL, dims=384,
                        vector=qvec, k=10, as_of=None, half_life_days=30, floor=0.5)
    async with database.transaction() as s:
        await apply_principal(s, _person(user_id))
        await s.execute(text(INDEX_ONLY))
        explained = "\n".join((await s.execute(
            text("EXPLAIN " + plan.sql).bindparams(bindparam("qvec", type_=VectorType())),
            plan.params)).scalars())
        # The exact comparison of the user's vectors (which the planner prefers over the
        # HNSW walk when the user has a small share of a large table).
        [qvec] = await _embedder().embed([SECRET])
        exact = "\n".join((await s.execute(text(
            "EXPLAIN SELECT id FROM (SELECT id, (embedding::vector(384)) <=> "
            "CAST(:q AS vector(384)) AS d FROM memories WHERE embedding_model = :m "
            "AND user_id = :u OFFSET 0) x ORDER BY d LIMIT 40").bindparams(
            bindparam("q", type_=VectorType())),
            {"u": user_id, "q": qvec, "m": DEFAULT_MODEL})).scalars())
    assert "Index Only Scan using ix_memories_user_text" in explained
    assert "Index Only Scan using ix_memories_user_minilm" in exact
    assert "OR (user_id = (InitPlan" in explained  # the policy, its settings read once


async def test_every_memory_fits_its_index(database: Database) -> None:
    """Whatever the text (up to the 4,000-character limit), a memory is stored: its
    tsvector goes to ix_memories_user_text only when the entry fits a B-tree page."""
    user_id, _ = await make_user(database)
    rng = random.Random(15)

    def token(n: int) -> str:
        return "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(n))

    # Many distinct short lexemes, hyphenated compounds (a word and its parts), numbers:
    # the most bytes of tsvector per character of text.
    texts = [" ".join(f"{token(2)}-{token(2)}-{token(2)}" for _ in range(size))
             for size in (10, 60, 66, 70, 80, 120, 444)]
    texts += [" ".join(str(i) for i in range(size)) for size in (250, 300, 900)]
    for content in texts:
        await _remember(database, user_id, content[:4000])
    async with database.transaction() as s:
        sizes = (await s.execute(text(
            f"SELECT {SHORT_TEXT} AS short, pg_column_size(content_tsv) AS size "
            "FROM memories WHERE user_id = :u"), {"u": user_id})).all()
    assert len(sizes) == len(texts)
    assert {r.short for r in sizes} == {True, False}  # both kinds exercised
    assert max(r.size for r in sizes if r.short) < 2704 - 200


async def test_recall_is_the_same_with_and_without_row_level_security(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Under row-level security (the initplan policy) and in the owner's view (no policy):
    same data, same answers."""
    user_id, headers = await make_user(database)
    other, _ = await make_user(database)
    made = await client.post("/api/v1/personas", headers=headers, json={"name": "Work"})
    assert made.status_code == 201, made.text
    work = uuid.UUID(made.json()["id"])
    facts = [
        ("Ada lives in Paris", "Ada", "lives_in", "Paris", None),
        ("Ada works at Acme in Paris", "Ada", "works_at", "Acme", None),
        ("Bob works at Globex", "Bob", "works_at", "Globex", work),
        ("The Louvre is a museum in the French capital", "Louvre", "located_in", "Paris", None),
        ("Ada likes green tea", "Ada", "likes", "green tea", work),
        ("Cy bakes bread every morning " + " ".join(f"loaf{i}" for i in range(300)),
         "Cy", "bakes", "bread", None),
    ]
    stored = []
    for content, source, relation, target, persona in facts:
        stored.append(await _remember(
            database, user_id, content, service.Scope(user_id, persona_id=persona),
            entities=[{"name": source, "type": "thing"}, {"name": target, "type": "thing"}],
            relationships=[{"source": source, "relation": relation, "target": target}]))
        await _remember(database, other, content)  # the same facts, another tenant's
    async with database.transaction() as s:
        # An old fact, closed a day ago: found only at an earlier time.
        await s.execute(text(
            "UPDATE memories SET valid_from = now() - interval '30 days', "
            "valid_to = now() - interval '1 day' WHERE id = :id"), {"id": stored[1].id})
    then = utcnow() - timedelta(days=2)
    cases: list[tuple[str, service.Scope, Any]] = [
        ("where does Ada live and work", service.Scope(user_id), None),
        ("where does Ada live and work", service.Scope(user_id), then),
        ("Paris museum", service.Scope(user_id), None),
        ("who works where", service.Scope(user_id, persona_id=work), None),
        ('"green tea" or bread -Bob', service.Scope(user_id), None),
        ("the of and", service.Scope(user_id), None),
    ]

    def answer(hits: list[recall.Recalled]) -> list[tuple[Any, ...]]:
        # The score moves by the recency weight between two transactions (1e-8 here).
        return [(h.memory.id, round(h.score, 5), h.vector, h.text, h.graph) for h in hits]

    seen_text = 0
    for query, scope, as_of in cases:
        async with database.transaction() as s:
            await apply_principal(s, _person(user_id))
            scoped = answer(await recall.search(s, _person(user_id), scope, query,
                                                embedder=_embedder(), as_of=as_of, touch=False))
        async with database.transaction() as s:  # the owner: no policy
            owner = answer(await recall.search(s, _person(user_id), scope, query,
                                               embedder=_embedder(), as_of=as_of, touch=False))
        assert scoped == owner, query
        assert {row[0] for row in scoped} <= {m.id for m in stored}
        seen_text += sum(1 for row in scoped if row[3] is not None)
    assert seen_text >= 4  # the text signal did find things
