"""How the tool search ranks (roost.tools.search): an exact scan scored by the cosine
after subtracting the caller's catalogue centre, the same scores through the HNSW
fallback, and the per-scope catalogue (count, centre, cache).  Hand-made 4-dimensional
vectors under a model of their own, so every score is checked against numpy."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.knowledge.config import EmbedderSpec, KnowledgeConfig
from roost.principal import Principal
from roost.tools import search
from tests.support.identity import make_user

pytestmark = pytest.mark.asyncio(loop_scope="session")

SPEC = EmbedderSpec("hash", "test-vectors-4", 4)
KNOWLEDGE = KnowledgeConfig(embedder=SPEC)
QUERY = [0.9, 0.1, 0.3, 0.0]


class FixedEmbedder:
    """Answers every query with ``QUERY``."""

    model_name, dimensions = SPEC.model, SPEC.dimensions

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return [list(QUERY) for _ in texts]


async def add_tools(database: Database, owner: uuid.UUID | None,
                    vectors: dict[str, list[float]], **flags: bool) -> None:
    server_id = uuid.uuid4()
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO mcp_servers (id, user_id, name, transport, url) VALUES "
            "(:id, :uid, :name, 'streamable_http', 'https://mcp.example.com/mcp')"
        ), {"id": server_id, "uid": owner, "name": f"s-{server_id.hex[:8]}"})
        for name, vector in vectors.items():
            await session.execute(text(
                "INSERT INTO tools (id, user_id, mcp_server_id, kind, name, description_embedding, "
                "embedding_model, enabled, available) VALUES (:id, :uid, :sid, 'mcp', :name, "
                "CAST(:vec AS vector), :model, :enabled, :available)"
            ), {"id": uuid.uuid4(), "uid": owner, "sid": server_id, "name": name,
                "vec": str(vector), "model": SPEC.model, "enabled": flags.get("enabled", True),
                "available": flags.get("available", True)})


def expected(vectors: dict[str, list[float]]) -> list[tuple[str, float]]:
    """numpy's ranking: cosine after subtracting the shrunk mean of ``vectors``."""
    names = list(vectors)
    matrix = np.array([vectors[n] for n in names], dtype=np.float64)
    centre = matrix.mean(axis=0) * (len(names) / (len(names) + search.CENTRE_PRIOR))
    rows, q = matrix - centre, np.array(QUERY) - centre
    scores = rows @ q / np.linalg.norm(rows, axis=1) / np.linalg.norm(q)
    return sorted(zip(names, scores.tolist(), strict=True), key=lambda h: -h[1])


async def ranked(database: Database, actor: Principal, k: int, **kw: int) -> list[tuple[str, float]]:
    async with database.transaction() as session:
        await apply_principal(session, actor)
        hits = await search.search_tools(session, actor, KNOWLEDGE, "anything", k,
                                         embedder=FixedEmbedder(), **kw)
    return [(h.tool.name, h.score) for h in hits]


GLOBAL = {"g1": [1.0, 0.0, 0.0, 0.0], "g2": [0.0, 1.0, 0.0, 0.0], "g3": [0.7, 0.7, 0.1, 0.0],
          "g4": [0.2, 0.1, 0.9, 0.3], "g5": [0.5, -0.5, 0.5, 0.5]}
ALICE = {"a1": [0.8, 0.2, 0.3, 0.1], "a2": [-0.3, 0.1, 0.2, 0.9]}
BOB = {"b1": [0.9, 0.1, 0.3, 0.0], "b2": [0.88, 0.12, 0.3, 0.01]}  # nearer than anything


async def test_exact_and_index_paths_score_the_centred_cosine(database: Database) -> None:
    alice_id, _ = await make_user(database)
    bob_id, _ = await make_user(database)
    await add_tools(database, None, GLOBAL)
    await add_tools(database, alice_id, ALICE)
    await add_tools(database, bob_id, BOB)
    await add_tools(database, alice_id, {"off": [0.9, 0.1, 0.3, 0.0]}, enabled=False)
    await add_tools(database, alice_id, {"gone": [0.9, 0.1, 0.3, 0.0]}, available=False)
    alice = Principal(user_id=alice_id, is_admin=False, kind="api_key")

    want = expected({**GLOBAL, **ALICE})  # never bob's, disabled or unavailable tools
    for exact_max in (search.EXACT_SCAN_MAX, 0):  # exact scan, then the HNSW fallback
        got = await ranked(database, alice, 7, exact_max=exact_max)
        assert [n for n, _ in got] == [n for n, _ in want], exact_max
        assert [s for _, s in got] == pytest.approx([s for _, s in want], abs=1e-5)
    top = await ranked(database, alice, 3)
    assert [n for n, _ in top] == [n for n, _ in want[:3]]

    # An administrator's catalogue is everything enabled and available.
    admin = Principal(user_id=None, is_admin=True, kind="operator")
    assert [n for n, _ in await ranked(database, admin, 2)] == ["b1", "b2"]
    async with database.transaction() as session:
        await apply_principal(session, admin)
        assert (await search.catalogue(session, admin, SPEC)).count == 9
        await apply_principal(session, alice)
        assert (await search.catalogue(session, alice, SPEC)).count == 7


async def test_a_catalogue_of_one_tool_is_barely_centred(database: Database) -> None:
    alice_id, _ = await make_user(database)
    await add_tools(database, alice_id, {"only": [0.0, 1.0, 0.0, 0.0]})
    got = await ranked(database, Principal(user_id=alice_id, is_admin=False, kind="api_key"), 5)
    assert [n for n, _ in got] == ["only"]
    assert got[0][1] == pytest.approx(expected({"only": [0.0, 1.0, 0.0, 0.0]})[0][1], abs=1e-6)
    plain = 0.1 / float(np.linalg.norm(QUERY))
    assert abs(got[0][1] - plain) < 0.02  # one tool: nearly the plain cosine, never NaN


async def test_large_catalogues_are_cached_per_scope(
    database: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(search, "CATALOGUE_CACHE_MIN", 3)
    monkeypatch.setattr(search, "_catalogues", {})
    alice_id, _ = await make_user(database)
    bob_id, _ = await make_user(database)
    alice = Principal(user_id=alice_id, is_admin=False, kind="api_key")
    bob = Principal(user_id=bob_id, is_admin=False, kind="api_key")
    await add_tools(database, alice_id, {"a1": [1, 0, 0, 0], "a2": [0, 1, 0, 0], "a3": [0, 0, 1, 0]})
    await add_tools(database, bob_id, {"b1": [1, 0, 0, 0]})

    async def count(actor: Principal) -> int:
        async with database.transaction() as session:
            await apply_principal(session, actor)
            return (await search.catalogue(session, actor, SPEC)).count

    assert await count(alice) == 3
    assert await count(bob) == 1  # another scope: never alice's entry
    await add_tools(database, alice_id, {"a4": [0, 0, 0, 1]})
    await add_tools(database, bob_id, {"b2": [0, 1, 0, 0]})
    assert await count(alice) == 3  # cached (3 tools and more)
    assert await count(bob) == 2  # too small to cache: always fresh
    search._catalogues.clear()
    assert await count(alice) == 4


def _unit(vectors: dict[str, list[float]]) -> dict[str, np.ndarray]:
    return {n: np.asarray(v, dtype=np.float64) / np.linalg.norm(v) for n, v in vectors.items()}


def _mean_nearest(name: str, pool: dict[str, np.ndarray]) -> float:
    sims = sorted((float(pool[name] @ v) for other, v in pool.items() if other != name),
                  reverse=True)
    return float(np.mean(sims[:search.NEIGHBOURS])) if sims else 0.0


async def _neighbour_values(database: Database) -> dict[str, float]:
    async with database.transaction() as session:
        rows = await session.execute(text(
            "SELECT name, neighbour_similarity FROM tools WHERE embedding_model = :m"),
            {"m": SPEC.model})
        return {row.name: row.neighbour_similarity for row in rows}


async def test_neighbour_similarity_is_measured_within_what_the_owner_sees(
        database: Database) -> None:
    alice_id, _ = await make_user(database)
    bob_id, _ = await make_user(database)
    await add_tools(database, None, GLOBAL)
    await add_tools(database, alice_id, ALICE)
    await add_tools(database, bob_id, BOB)
    assert await search.refresh_neighbours(database, SPEC) == 9  # none had one yet
    assert await search.refresh_neighbours(database, SPEC) == 0  # nothing new: no work
    got = await _neighbour_values(database)
    shared, mine = _unit(GLOBAL), _unit({**GLOBAL, **ALICE})
    for name in GLOBAL:  # a global tool: among global tools only
        assert got[name] == pytest.approx(_mean_nearest(name, shared), abs=1e-5), name
    for name in ALICE:  # Alice's: among hers and the global ones, never Bob's
        assert got[name] == pytest.approx(_mean_nearest(name, mine), abs=1e-5), name

    # Bob adds tools right next to Alice's and the global ones: nothing of theirs moves.
    await add_tools(database, bob_id, {"b3": ALICE["a1"], "b4": GLOBAL["g3"]})
    assert await search.refresh_neighbours(database, SPEC, force=True) == 11
    after = await _neighbour_values(database)
    for name in (*GLOBAL, *ALICE):
        assert after[name] == pytest.approx(got[name], abs=1e-9), name


async def test_tools_close_to_everything_rank_lower(
        database: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    alice_id, _ = await make_user(database)
    await add_tools(database, None, GLOBAL)
    await add_tools(database, alice_id, ALICE)
    await search.refresh_neighbours(database, SPEC)
    alice = Principal(user_id=alice_id, is_admin=False, kind="api_key")
    values = await _neighbour_values(database)
    before = await ranked(database, alice, 7)
    monkeypatch.setattr(search, "NEIGHBOUR_WEIGHT", 40.0)  # the term made to dominate
    vectors = {**GLOBAL, **ALICE}
    weight = 40.0 * len(vectors) / (len(vectors) + search.CENTRE_PRIOR)
    centred = dict(expected(vectors))
    want = sorted(vectors, key=lambda n: -(2 * centred[n] - weight * values[n]))
    for exact_max in (search.EXACT_SCAN_MAX, 0):  # exact scan, then the HNSW fallback
        got = await ranked(database, alice, 7, exact_max=exact_max)
        assert [n for n, _ in got] == want, exact_max
        # The score answered is the ranking's, halved onto the cosine's scale.
        assert [s for _, s in got] == pytest.approx(
            [centred[n] - weight / 2 * values[n] for n in want], abs=1e-5)
    assert [n for n, _ in before] != want  # the neighbour term changed the order
