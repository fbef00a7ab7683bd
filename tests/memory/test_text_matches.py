"""Recall's text signal under row-level security: ``roost_memory_text_matches`` (migration
0830), the ``SECURITY DEFINER`` function that lets the full-text match use its index, never
answers a memory the caller could not read, and recall answers exactly what it answers
without row-level security."""

from __future__ import annotations

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
from roost.memory.models import DEFAULT_MODEL, Memory
from roost.memory.schemas import MemoryCreate
from roost.principal import Principal
from tests.support.identity import make_user

SECRET = "Ada's secret flower is the tulip"


def _person(user_id: uuid.UUID | None, *, admin: bool = False) -> Principal:
    return Principal(user_id=user_id, is_admin=admin, kind="api_key")


async def _remember(database: Database, user_id: uuid.UUID, content: str,
                    scope: service.Scope | None = None, **extra: Any) -> Memory:
    async with database.transaction() as s:
        return await service.add_memory(s, _person(user_id), scope or service.Scope(user_id),
                                        MemoryCreate(content=content, **extra))


async def _matches(session: AsyncSession, user_id: uuid.UUID, query: str) -> list[uuid.UUID]:
    """The function called as recall calls it (any scope, now, every then any term)."""
    every = "websearch_to_tsquery('english', :q)"
    rows = await session.execute(text(
        f"SELECT id FROM roost_memory_text_matches(:u, {every}, "
        f"replace({every}::text, ' & ', ' | ')::tsquery, NULL, NULL, NULL, NULL, 1000, 50)"),
        {"u": user_id, "q": query})
    return list(rows.scalars())


async def test_another_users_memories_never_come_back(database: Database) -> None:
    alice, _ = await make_user(database)
    bob, _ = await make_user(database)
    mine = await _remember(database, alice, SECRET)
    theirs = {(await _remember(database, bob, content)).id for content in (
        SECRET, "Bob's secret flower is the lily", "Tulip bulbs are planted in autumn")}

    async with database.transaction() as s:
        await apply_principal(s, _person(alice))
        assert (await current_scope(s))[0] == "roost_app"
        # Her own matches; asking for Bob's user id answers nothing, however well his
        # memories match (every term, then any term).
        assert await _matches(s, alice, "secret tulip") == [mine.id]
        assert await _matches(s, bob, "secret tulip") == []
        assert await _matches(s, bob, "lily or autumn or tulip or secret") == []
        # What the function answers is what row-level security lets her select.
        visible = set((await s.execute(text(
            "SELECT id FROM memories WHERE content_tsv @@ "
            "to_tsquery('english', 'secret | tulip | lily | autumn')"))).scalars())
        assert visible == {mine.id}
        # Recall through it: only her memory, whatever the query names.
        hits = await recall.search(s, _person(alice), service.Scope(alice),
                                   "lily autumn tulip secret", embedder=None, touch=False)
        assert [h.memory.id for h in hits] == [mine.id]

    # A transaction in the application role without a user sees nothing, theirs or hers.
    async with database.transaction() as s:
        await apply_principal(s, _person(None))
        assert await _matches(s, alice, "secret tulip") == []
        assert await _matches(s, bob, "secret tulip") == []

    # An administrator reads every user's memories under the policy; so through the function.
    async with database.transaction() as s:
        await apply_principal(s, _person(alice, admin=True))
        assert set(await _matches(s, bob, "secret or tulip")) == theirs
        assert await _matches(s, alice, "secret or tulip") == [mine.id]


async def test_the_function_is_a_pinned_security_definer(database: Database) -> None:
    async with database.transaction() as s:
        row = (await s.execute(text(
            "SELECT p.prosecdef, p.provolatile::text AS provolatile, p.proconfig, "
            "pg_get_userbyid(p.proowner) = pg_get_userbyid(c.relowner) AS same_owner "
            "FROM pg_proc p, pg_class c "
            "WHERE p.proname = 'roost_memory_text_matches' AND c.relname = 'memories'"))).one()
    assert row.prosecdef and row.provolatile == "s" and row.same_owner
    assert "search_path=pg_catalog, public, pg_temp" in row.proconfig


async def test_recall_is_the_same_with_and_without_row_level_security(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Under row-level security the text signal comes from the function; in the owner's
    view (no policy) from the same query inline.  Same data, same answers."""
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
        ("Cy bakes bread every morning", "Cy", "bakes", "bread", None),
    ]
    embedder = DevHashingEmbedder(384)
    embedder.model_name = DEFAULT_MODEL
    stored = []
    for content, source, relation, target, persona in facts:
        stored.append(await _remember(
            database, user_id, content, service.Scope(user_id, persona_id=persona),
            entities=[{"name": source, "type": "thing"}, {"name": target, "type": "thing"}],
            relationships=[{"source": source, "relation": relation, "target": target}]))
        await _remember(database, other, content)  # the same facts, another tenant's
    async with database.transaction() as s:
        await recall.embed_memories(s, [await s.get_one(Memory, m.id) for m in stored], embedder)
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
                                                embedder=embedder, as_of=as_of, touch=False))
        async with database.transaction() as s:  # the owner: no policy, the inline query
            owner = answer(await recall.search(s, _person(user_id), scope, query,
                                               embedder=embedder, as_of=as_of, touch=False))
        assert scoped == owner, query
        assert {row[0] for row in scoped} <= {m.id for m in stored}
        seen_text += sum(1 for row in scoped if row[3] is not None)
    assert seen_text >= 4  # the text signal did find things

    # Which of the two ran: the function under the policy, the inline query without it.
    [qvec] = await embedder.embed(["Paris museum"])
    plan = recall._plan(service.Scope(user_id), "Paris museum", model=DEFAULT_MODEL, dims=384,
                        vector=qvec, k=10, as_of=None, half_life_days=30, floor=0.5)
    stmt = text("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + plan.sql).bindparams(
        bindparam("qvec", type_=VectorType()))
    async with database.transaction() as s:
        await apply_principal(s, _person(user_id))
        scoped_plan = "\n".join((await s.execute(stmt, plan.params)).scalars())
    async with database.transaction() as s:
        owner_plan = "\n".join((await s.execute(stmt, plan.params)).scalars())
    assert "Function Scan on roost_memory_text_matches f (actual rows=" in scoped_plan
    assert "Function Scan on roost_memory_text_matches f (never executed)" in owner_plan
