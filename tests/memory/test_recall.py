"""Recall: hybrid search (meaning, words, graph), weighting by confidence and recency,
point-in-time search, access counting, decay, embeddings, scopes, and the CLI."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import bindparam, text

from roost.config import Settings
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.db.vector import VectorType
from roost.identity.tenancy import apply_principal
from roost.knowledge.config import KnowledgeConfig, get_embedder, set_embedder
from roost.knowledge.embeddings import DevHashingEmbedder
from roost.memory import recall, service
from roost.memory.decay import archive_unaccessed
from roost.memory.models import DEFAULT_MODEL, Memory
from roost.memory.schemas import MemoryCreate
from roost.principal import Principal
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer

API = "/api/v1/memories"
Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_local_model=False,
                    knowledge_embedding_provider="hash")


class SynonymEmbedder(DevHashingEmbedder):
    """The hashing embedder with a tiny thesaurus: "vehicle" and "automobile" embed as
    "car", so a query finds a fact by meaning with no word in common (full-text cannot)."""

    SYNONYMS = {"vehicle": "car", "automobile": "car", "motorcar": "car"}

    def __init__(self, model_name: str | None = None) -> None:
        super().__init__()
        if model_name is not None:
            self.model_name = model_name

    def embed_sync(self, text: str) -> list[float]:
        words = [self.SYNONYMS.get(w.lower(), w.lower()) for w in text.split()]
        return super().embed_sync(" ".join(words))


@pytest.fixture
def synonyms(test_settings: Settings) -> Iterator[SynonymEmbedder]:
    """The process's configured (hash) embedder replaced by :class:`SynonymEmbedder`."""
    spec = KnowledgeConfig.from_settings(test_settings).embedder
    before = get_embedder(spec)
    embedder = SynonymEmbedder(model_name=before.model_name)
    set_embedder(spec, embedder)
    try:
        yield embedder
    finally:
        set_embedder(spec, before)


async def _add(client: httpx.AsyncClient, headers: Headers, content: str, **extra: Any) -> Any:
    answer = await client.post(API, headers=headers, json={"content": content, **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def _search(client: httpx.AsyncClient, headers: Headers, q: str,
                  **params: Any) -> list[dict[str, Any]]:
    answer = await client.get(f"{API}/search", headers=headers, params={"q": q, **params})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


def _by_content(items: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {i["memory"]["content"]: i for i in items}


async def test_finds_by_meaning_by_words_and_by_graph(
    client: httpx.AsyncClient, database: Database, synonyms: SynonymEmbedder,
) -> None:
    _, headers = await make_user(database)
    car = await _add(client, headers, "Ada drives a red car")
    assert car["embedding_model"] == synonyms.model_name  # embedded as it was added
    await _add(client, headers, "Ada lives in Paris",
               entities=[{"name": "Ada", "type": "person"}, {"name": "Paris", "type": "city"}],
               relationships=[{"source": "Ada", "relation": "lives_in", "target": "Paris"}])
    await _add(client, headers, "The Louvre is a museum located in the French capital",
               relationships=[{"source": "Louvre", "relation": "located_in", "target": "Paris"}])
    bob = await _add(client, headers, "Bob collects coins")
    changed = await client.patch(f"{API}/{bob['id']}", headers=headers,
                                 json={"content": "Bob collects stamps"})
    assert changed.json()["embedding_model"] == synonyms.model_name  # re-embedded at once

    # By meaning: no word of the query is in the fact; only the vector finds it.
    meaning = await _search(client, headers, "automobile")
    assert meaning[0]["memory"]["content"] == "Ada drives a red car"
    assert meaning[0]["vector"] > 0.3 and meaning[0]["text"] is None

    # By words: full-text (stemmed: "living" matches "lives").
    words = await _search(client, headers, "living Paris")
    assert words[0]["memory"]["content"] == "Ada lives in Paris"
    assert words[0]["text"] is not None

    # By graph: "Ada" names an entity; the Louvre fact shares no word with the query
    # but its relation touches Paris, Ada's neighbour.
    graph = _by_content(await _search(client, headers, "Where is Ada?"))
    assert graph["Ada lives in Paris"]["graph"] == 1.0
    louvre = graph["The Louvre is a museum located in the French capital"]
    assert louvre["graph"] == 0.5 and louvre["text"] is None
    assert "Bob collects stamps" not in graph


async def test_confidence_and_recency_order_equal_matches(
    client: httpx.AsyncClient, database: Database,
) -> None:
    _, headers = await make_user(database)
    unsure = await _add(client, headers, "Ada likes green tea", confidence=0.3)
    sure = await _add(client, headers, "Ada likes green tea", confidence=0.9)
    found = await _search(client, headers, "green tea")
    assert [i["memory"]["id"] for i in found] == [sure["id"], unsure["id"]]
    assert found[0]["score"] > found[1]["score"] * 2

    old = await _add(client, headers, "Ada plays the cello", confidence=0.8)
    new = await _add(client, headers, "Ada plays the cello", confidence=0.8)
    long_ago = utcnow() - timedelta(days=365)
    async with database.transaction() as s:  # the first was made, and last recalled, a year ago
        await s.execute(text("UPDATE memories SET created_at = :t, updated_at = :t, "
                             "last_accessed = :t WHERE id = :id"),
                        {"t": long_ago, "id": uuid.UUID(old["id"])})
    found = await _search(client, headers, "cello")
    assert [i["memory"]["id"] for i in found] == [new["id"], old["id"]]
    # The floor (0.5 by default): a year-old memory keeps about half its weight.
    assert 0.45 < found[1]["score"] / found[0]["score"] < 0.55


async def test_very_old_memories_are_recalled_at_the_floor_weight(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Recall still answers when a memory is so old that 0.5 ** (age / half_life) would
    underflow float8 (more than 1,074 half-lives: a century at 30 days, or as_of 2200):
    PostgreSQL's power() failed the statement (a 400); the exponent is capped, the memory
    keeps the floor's weight."""
    _, headers = await make_user(database)
    old = await _add(client, headers, "Ada likes green tea")
    new = await _add(client, headers, "Ada likes green tea")
    async with database.transaction() as s:
        await s.execute(text("UPDATE memories SET created_at = now() - interval '100 years', "
                             "updated_at = now() - interval '100 years' WHERE id = :id"),
                        {"id": uuid.UUID(old["id"])})
    found = await _search(client, headers, "tea")
    assert [i["memory"]["id"] for i in found] == [new["id"], old["id"]]
    assert 0.49 < found[1]["score"] / found[0]["score"] < 0.51  # the floor, 0.5
    later = await _search(client, headers, "tea", as_of="2200-01-01T00:00:00Z")
    assert {i["memory"]["id"] for i in later} == {old["id"], new["id"]}


async def test_as_of_finds_what_was_true_then(client: httpx.AsyncClient, database: Database) -> None:
    user_id, headers = await make_user(database)
    past = utcnow() - timedelta(days=60)
    acme = await _add(client, headers, "Ada works at Acme", valid_from=past.isoformat())
    globex = await _add(client, headers, "Ada works at Globex")
    async with database.transaction() as s:
        memory = await s.get_one(Memory, uuid.UUID(acme["id"]))
        actor = Principal(user_id=user_id, is_admin=False, kind="api_key")
        await service.invalidate(s, actor, memory, at=utcnow() - timedelta(days=30),
                                 by=uuid.UUID(globex["id"]))
    now = [i["memory"]["content"] for i in await _search(client, headers, "Ada works")]
    assert now == ["Ada works at Globex"]
    then = (utcnow() - timedelta(days=45)).isoformat()
    assert [i["memory"]["content"] for i in await _search(client, headers, "Ada works",
                                                           as_of=then)] == ["Ada works at Acme"]


async def test_equal_scores_go_to_the_stronger_text_match(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A point-in-time search weighs every memory's recency as 1, so two memories ranked
    first and second by two signals, crosswise, score exactly the same: the stronger text
    match comes first (then the closer vector, then the later valid_from)."""
    _, headers = await make_user(database)
    past = utcnow() - timedelta(days=10)
    # The closer vector is added first (its id is smaller) and became true later.
    close = await _add(client, headers, "tulip garden",
                       valid_from=(past + timedelta(days=1)).isoformat())
    words = await _add(client, headers, "tulip garden tulip garden", valid_from=past.isoformat())
    then = (utcnow() - timedelta(days=2)).isoformat()
    found = await _search(client, headers, "tulip garden", as_of=then)
    assert [i["memory"]["id"] for i in found] == [words["id"], close["id"]]
    assert found[0]["score"] == found[1]["score"]  # 1/61 + 1/62 each, added in one order
    assert found[0]["text"] > found[1]["text"] and found[1]["vector"] > found[0]["vector"]


async def test_search_counts_accesses(client: httpx.AsyncClient, database: Database) -> None:
    user_id, headers = await make_user(database)
    fact = await _add(client, headers, "Ada's favourite number is seven")
    other = await _add(client, headers, "Bob's favourite colour is blue")
    for _ in range(2):
        found = await _search(client, headers, "number seven")
        assert [i["memory"]["id"] for i in found] == [fact["id"]]
    assert found[0]["memory"]["access_count"] == 2  # the answer shows the touched row
    async with database.transaction() as s:
        rows = dict((await s.execute(text(
            "SELECT id::text, access_count FROM memories WHERE last_accessed IS NOT NULL"))).all())
    assert rows == {fact["id"]: 2}
    assert other["id"] not in rows
    # touch=False (a preview) counts nothing.
    async with database.transaction() as s:
        actor = Principal(user_id=user_id, is_admin=False, kind="api_key")
        hits = await recall.search(s, actor, service.Scope(user_id), "number seven",
                                   embedder=None, touch=False)
        assert [h.memory.access_count for h in hits] == [2]


async def test_decay_archives_memories_not_recalled_for_long(
    client: httpx.AsyncClient, database: Database,
) -> None:
    _, headers = await make_user(database)
    stale = await _add(client, headers, "Ada once owned a typewriter")
    recalled = await _add(client, headers, "Ada once owned a bicycle")
    fresh = await _add(client, headers, "Ada once owned a piano")
    long_ago = utcnow() - timedelta(days=200)
    async with database.transaction() as s:
        await s.execute(text("UPDATE memories SET created_at = :t, updated_at = :t, valid_from = :t "
                             "WHERE id IN (:a, :b)"),
                        {"t": long_ago, "a": uuid.UUID(stale["id"]), "b": uuid.UUID(recalled["id"])})
        await s.execute(text("UPDATE memories SET last_accessed = now() - interval '3 days' "
                             "WHERE id = :b"), {"b": uuid.UUID(recalled["id"])})
    # The periodic job (ROOST_MEMORY_ARCHIVE_AFTER_DAYS defaults to 180).
    from roost.memory import jobs
    from roost.tasks.handlers import TaskContext, discover, get_task_type
    from roost.tasks.schedules import schedules

    discover()
    assert get_task_type(jobs.DECAY_TASK) is not None and jobs.DECAY_TASK in schedules()
    ctx = TaskContext(task_id=uuid.uuid4(), task_type=jobs.DECAY_TASK, queue="maintenance",
                      priority="background", attempt=1, retry_count=0, max_retries=2,
                      scheduled_at=utcnow(), worker_id="test", database=database)
    assert await jobs.decay_job(ctx, {}) == {"archived": 1, "users": 1, "archive_after_days": 180}
    async with database.transaction() as s:
        status = dict((await s.execute(text("SELECT id::text, status FROM memories"))).all())
        events = (await s.execute(text(
            "SELECT event, reason FROM memory_history WHERE memory_id = :id ORDER BY created_at"),
            {"id": uuid.UUID(stale["id"])})).all()
    assert status == {stale["id"]: "archived", recalled["id"]: "active", fresh["id"]: "active"}
    assert [e.event for e in events] == ["add", "archive"] and "180 days" in events[1].reason
    found = [i["memory"]["id"] for i in await _search(client, headers, "Ada owned")]
    assert stale["id"] not in found and set(found) == {recalled["id"], fresh["id"]}
    # Before it was archived, it was there.
    then = (utcnow() - timedelta(days=1)).isoformat()
    assert stale["id"] in [i["memory"]["id"] for i in await _search(client, headers, "typewriter",
                                                                      as_of=then)]
    assert (await archive_unaccessed(database, days=180)).archived == 0  # idempotent


async def test_decay_does_not_archive_a_fact_that_is_not_true_yet(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A fact valid from 2100 cannot be recalled before then, so cannot escape decay by a
    recall: its clock starts when it becomes true (it was archived 180 days after it was
    written, and never listed or recalled when 2100 came)."""
    _, headers = await make_user(database)
    answer = await client.post(API, headers=headers, json={
        "content": "Ada retires", "valid_from": "2100-01-01T00:00:00Z"})
    assert answer.status_code == 201, answer.text
    future = answer.json()
    long_ago = utcnow() - timedelta(days=200)
    async with database.transaction() as s:
        await s.execute(text("UPDATE memories SET created_at = :t, updated_at = :t WHERE id = :a"),
                        {"t": long_ago, "a": uuid.UUID(future["id"])})
    report = await archive_unaccessed(database, days=180)
    assert report.archived == 0
    later = await client.get(API, headers=headers, params={"as_of": "2100-06-01T00:00:00Z"})
    assert [m["id"] for m in later.json()["items"]] == [future["id"]]


async def test_memories_without_vectors_are_embedded_later(
    client: httpx.AsyncClient, database: Database, test_settings: Settings,
) -> None:
    user_id, _ = await make_user(database)
    actor = Principal(user_id=user_id, is_admin=False, kind="system")
    async with database.transaction() as s:
        await apply_principal(s, actor)
        memory = await service.add_memory(s, actor, service.Scope(user_id),
                                          MemoryCreate(content="Ada keeps bees"))
        assert memory.embedding is None
    embedder = recall.usable_embedder(test_settings)
    assert embedder is not None
    report = await recall.embed_missing(database, embedder)
    assert (report.missing, report.embedded) == (1, 1)
    async with database.transaction() as s:
        row = (await s.execute(text("SELECT embedding_model, embedding_dim FROM memories"))).one()
    assert tuple(row) == (embedder.model_name, 384)
    assert (await recall.embed_missing(database, embedder)).missing == 0


async def test_default_model_goes_through_the_hnsw_index(database: Database) -> None:
    """Vectors tagged all-MiniLM-L6-v2 (384 dimensions) are searched with the partial HNSW
    index's expression; the query plan uses the index when told to.  A user with at most
    ``EXACT_VECTORS_MAX`` memories has them compared exactly instead (their entries of
    ix_memories_user_minilm); the walk is for larger ones."""
    user_id, _ = await make_user(database)
    actor = Principal(user_id=user_id, is_admin=False, kind="system")
    embedder = SynonymEmbedder(model_name=DEFAULT_MODEL)
    async with database.transaction() as s:
        await apply_principal(s, actor)
        made = [await service.add_memory(s, actor, service.Scope(user_id), MemoryCreate(content=c))
                for c in ("Ada drives a red car", "Bob collects stamps", "Cy bakes bread")]
        await recall.embed_memories(s, made, embedder)
    async with database.transaction() as s:
        await apply_principal(s, actor)
        await s.execute(text("SET LOCAL enable_seqscan = off"))
        hits = await recall.search(s, actor, service.Scope(user_id), "automobile",
                                   embedder=embedder, touch=False)
        assert hits[0].memory.content == "Ada drives a red car" and hits[0].vector is not None
        [qvec] = await embedder.embed(["automobile"])
        plan = recall._plan(service.Scope(user_id), "automobile", model=DEFAULT_MODEL, dims=384,
                            vector=qvec, k=10, as_of=None, half_life_days=30, floor=0.5)
        explained = "\n".join((await s.execute(
            text("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) " + plan.sql)
            .bindparams(bindparam("qvec", type_=VectorType())), plan.params)).scalars().all())
    walk = next(line for line in explained.splitlines()
                if "ix_memories_embedding_all_minilm_l6_v2" in line)
    exact = next(line for line in explained.splitlines()
                 if "Index Only Scan using ix_memories_user_minilm" in line)
    assert "never executed" in walk and "never executed" not in exact  # 3 memories: exact


async def test_scopes_are_isolated(client: httpx.AsyncClient, database: Database) -> None:
    alice, alice_h = await make_user(database)
    _, bob_h = await make_user(database)
    personas = []
    for name in ("Work", "Home"):
        made = await client.post("/api/v1/personas", headers=alice_h, json={"name": name})
        assert made.status_code == 201, made.text
        personas.append(made.json()["id"])
    work, home = personas
    await _add(client, alice_h, "Ada's secret is the tulip", persona_id=work,
               relationships=[{"source": "Ada", "relation": "likes", "target": "tulip"}])
    await _add(client, alice_h, "Ada's secret is the rose", persona_id=home,
               relationships=[{"source": "Ada", "relation": "likes", "target": "rose"}])
    await _add(client, bob_h, "Ada's secret is the lily",
               relationships=[{"source": "Ada", "relation": "likes", "target": "lily"}])
    everything = {i["memory"]["content"] for i in await _search(client, alice_h, "Ada secret")}
    assert everything == {"Ada's secret is the tulip", "Ada's secret is the rose"}
    at_work = await _search(client, alice_h, "Ada secret", persona_id=work)
    assert [i["memory"]["content"] for i in at_work] == ["Ada's secret is the tulip"]
    assert at_work[0]["graph"] == 1.0  # the Work persona's own entity "Ada"
    bobs = {i["memory"]["content"] for i in await _search(client, bob_h, "Ada secret")}
    assert bobs == {"Ada's secret is the lily"}
    # Another tenant's persona, or another user, is a 404; bad parameters are 422s.
    theirs = await client.get(f"{API}/search", headers=bob_h, params={"q": "x", "persona_id": work})
    assert theirs.status_code == 404
    other = await client.get(f"{API}/search", headers=bob_h, params={"q": "x", "user_id": str(alice)})
    assert other.status_code == 404
    for params in ({"q": ""}, {"q": "x", "k": 0}, {"q": "x", "k": 51}, {"q": "x" * 1001}):
        assert (await client.get(f"{API}/search", headers=bob_h, params=params)).status_code == 422
    assert (await client.get(f"{API}/search", params={"q": "x"})).status_code == 401
    stopwords = await client.get(f"{API}/search", headers=alice_h, params={"q": "the of and"})
    assert stopwords.status_code == 200  # no text terms: vector and graph still answer
    syntax = await client.get(f"{API}/search", headers=alice_h,
                              params={"q": '"secret is" -rose or tulip & |!'})
    assert syntax.status_code == 200
    assert syntax.json()["items"][0]["memory"]["content"] == "Ada's secret is the tulip"


async def test_memory_cli_add_search_ls_forget(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    await make_user(database, username="mina")
    await make_user(database, username="otto")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash"}

    def roost(*args: str) -> Any:
        return run_roost("memory", *args, env=env)

    added = await asyncio.to_thread(
        roost, "add", "Mina's cat is called Pixel", "--user", "mina", "--confidence", "0.9",
        "-e", "Mina:person", "-r", "Mina:owns:Pixel")
    assert added.returncode == 0, added.stderr
    assert "Remembered" in added.stdout and "(embedded)" in added.stdout
    memory_id = added.stdout.split()[1]
    found = await asyncio.to_thread(roost, "search", "what is the cat called", "--user", "mina")
    assert found.returncode == 0, found.stderr
    assert "Pixel" in found.stdout and memory_id in found.stdout
    hidden = await asyncio.to_thread(roost, "search", "cat Pixel", "--user", "otto")
    assert hidden.returncode == 0 and "Nothing recalled" in hidden.stdout
    listed = await asyncio.to_thread(roost, "ls", "--user", "mina")
    assert memory_id in listed.stdout and "0.90" in listed.stdout
    bad = await asyncio.to_thread(roost, "add", "x", "--user", "mina", "-r", "only:two")
    assert bad.returncode == 1 and "SOURCE:RELATION:TARGET" in bad.stderr
    refused = await asyncio.to_thread(roost, "forget", memory_id[:13], "--user", "otto")
    assert refused.returncode == 1 and "no memory id starts with" in refused.stderr
    gone = await asyncio.to_thread(roost, "forget", memory_id[:13], "--user", "mina")
    assert gone.returncode == 0, gone.stderr
    assert "Forgot 1 memory" in gone.stdout
    async with database.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM memories")) == 0


async def test_memory_cli_refuses_bad_input_in_one_line(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
) -> None:
    """roost memory answers a blank fact and an --as-of outside years 1-9999 in UTC with
    one line on stderr, as the API answers 422s (they were CheckViolation and DataError
    tracebacks)."""
    await make_user(database, username="mina")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash"}
    for args, says in ((("add", "   ", "--user", "mina"), "content"),
                       (("search", "x", "--user", "mina", "--as-of", "0001-01-01T00:00:00+14:00"),
                        "between the years 1 and 9999"),
                       (("ls", "--user", "mina", "--as-of", "9999-12-31T23:59:59-14:00"),
                        "between the years 1 and 9999")):
        out = await asyncio.to_thread(run_roost, "memory", *args, env=env)
        assert out.returncode == 1, (args, out.stdout, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1 and says in out.stderr, (args, out.stderr)
    async with database.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM memories")) == 0


async def test_a_recall_does_not_wait_for_a_memory_another_transaction_holds(
        client: httpx.AsyncClient, database: Database) -> None:
    """Access counting is best-effort: a memory another transaction has locked (a
    concurrent recall counting it, an edit) is found uncounted, not waited for; waiting
    is what made overlapping recalls deadlock (they lock their rows in different orders)."""
    _, headers = await make_user(database)
    held = await _add(client, headers, "Ada drinks tea in Paris")
    free = await _add(client, headers, "Ada buys tea in London")
    async with database.transaction() as session:
        await session.execute(text("SELECT id FROM memories WHERE id = :id FOR NO KEY UPDATE"),
                              {"id": held["id"]})
        # Bounded only so the old behaviour (waiting for this transaction) fails, not hangs.
        found = _by_content(await asyncio.wait_for(_search(client, headers, "Ada tea"), 60))
    assert found[held["content"]]["memory"]["access_count"] == 0
    assert found[free["content"]]["memory"]["access_count"] == 1
    found = _by_content(await _search(client, headers, "Ada tea"))
    assert found[held["content"]]["memory"]["access_count"] == 1  # counted once free again


async def test_concurrent_recalls_of_one_users_memories_do_not_deadlock(
        client: httpx.AsyncClient, database: Database) -> None:
    """Several searches of one user's memory at once (parallel agent runs) all answer 200,
    none a 503 from a deadlock in recall's access counting."""
    _, headers = await make_user(database)
    for i in range(60):
        await _add(client, headers, f"Ada fact number {i} about tea and Paris",
                   relationships=[{"source": "Ada", "relation": f"r{i % 5}",
                                   "target": f"T{i % 7}"}])
    queries = ["Ada tea", "Paris tea", "fact number", "Ada Paris", "tea"] * 3

    async def search(q: str) -> int:
        answer = await client.get(f"{API}/search", headers=headers, params={"q": q, "k": 50})
        return answer.status_code

    for _ in range(4):
        codes = await asyncio.gather(*(search(q) for q in queries))
        assert set(codes) == {200}, codes


async def test_recall_of_a_memory_at_the_access_count_limit(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A memory whose recall count reached the column's largest value is still recalled
    (the count stops there): its count overflowed and failed every search that found it
    (a 400)."""
    _, headers = await make_user(database)
    fact = await _add(client, headers, "Ada's favourite number is seven")
    async with database.transaction() as s:
        await s.execute(text("UPDATE memories SET access_count = 2147483647 WHERE id = :id"),
                        {"id": uuid.UUID(fact["id"])})
    answer = await client.get(f"{API}/search", headers=headers, params={"q": "number seven"})
    assert answer.status_code == 200, answer.text
    assert [i["memory"]["id"] for i in answer.json()["items"]] == [fact["id"]]


async def test_archiving_does_not_make_a_memory_fresh_in_a_point_in_time_search(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A search as_of a time before the archiving scores a memory as it was then:
    archiving is no creation, change or recall of it (decay set updated_at, and the old
    fact scored as brand new in every point-in-time search)."""
    _, headers = await make_user(database)
    await _add(client, headers, "Ada owned a typewriter")
    long_ago = utcnow() - timedelta(days=200)
    async with database.transaction() as s:
        await s.execute(text("UPDATE memories SET created_at = :t, updated_at = :t, valid_from = :t"),
                        {"t": long_ago})
    then = (utcnow() - timedelta(days=100)).isoformat()
    params = {"q": "typewriter", "as_of": then}
    before = await client.get(f"{API}/search", headers=headers, params=params)
    assert before.status_code == 200, before.text
    async with database.transaction() as s:  # forget that recall: the memory is stale
        await s.execute(text("UPDATE memories SET last_accessed = NULL, access_count = 0"))
    assert (await archive_unaccessed(database, days=180)).archived == 1
    after = await client.get(f"{API}/search", headers=headers, params=params)
    assert after.status_code == 200, after.text
    [was] = before.json()["items"]
    [now] = after.json()["items"]
    assert now["score"] == was["score"]
