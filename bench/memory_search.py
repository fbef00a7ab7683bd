"""Memory recall and graph benchmark: hybrid search and 2-hop graph queries over many facts.

    .venv/bin/python bench/memory_search.py [--facts 100000] [--users 1] [--queries 200]
    .venv/bin/python bench/memory_search.py --attach postgresql://...  # a database loaded before

One embedded PostgreSQL (temporary directory), migrated.  ``--facts`` synthetic facts
("person-17 lives in city-4", "person-17 works at company-88", "... likes hobby-3",
"... knows person-912"), spread over ``--users`` users, each with its relation in the
entity graph (``memory_entities``, ``memory_relations``), are bulk-copied (in chunks of
50,000) with their embeddings: the dev hashing embedder's vectors tagged as
all-MiniLM-L6-v2 (384 dimensions), so the search goes through the default model's partial
HNSW index as it would with the real model (the hashing embedder is not semantic, but
the index, the SQL and the row counts are the same).  The HNSW index is dropped for the
load and rebuilt after it (its build time is reported).  ``--attach URL`` measures a
database an earlier run loaded (its users ``user0``...; nothing is loaded or dropped).

Measured in transactions scoped to the first user as a request is (``apply_principal``:
row-level security on):

* ``search``: ``roost.memory.recall.search`` for "where does person-N live and work"
  (vector + full-text + graph, fused and weighted, touch included: the UPDATE of
  access_count), query embedding included;
* ``search_no_touch``: the same with ``touch=False``;
* ``search_sql``: the search's one statement alone (query vector computed before);
* ``graph_2hop``: ``roost.memory.graphq.neighbours(depth=2)`` of a random person;
* ``paths_3``: ``roost.memory.graphq.paths`` (at most 3 hops, at most 20 paths) from a
  random person to the end of a random 3-step walk from them (so connected).

Prints a table and adds the run to bench/results/memory_search.json, with the scans of
each index of ``memories`` during the measured queries (``index_scans``: which paths the
plans took).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "memory_search.json"
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # tests.support

CITIES, COMPANIES, HOBBIES = 1000, 2000, 500
CHUNK = 50_000
RELATIONS = (("lives_in", "city", "lives in"), ("works_at", "company", "works at"),
             ("likes", "hobby", "likes"), ("knows", "person", "knows"))
MEMORY_COLUMNS = ["id", "user_id", "content", "memory_type", "confidence", "content_sha256",
                  "embedding", "embedding_model", "embedding_dim", "valid_from", "created_at",
                  "updated_at", "entities", "relationships"]
RELATION_COLUMNS = ["id", "user_id", "source_entity_id", "target_entity_id", "relation",
                    "memory_id", "valid_from", "created_at"]
INDEX_DDL = ("CREATE INDEX ix_memories_embedding_all_minilm_l6_v2 ON memories USING hnsw "
             "((embedding::vector(384)) vector_cosine_ops) WITH (m = 16, ef_construction = 64) "
             "WHERE embedding_model = 'all-MiniLM-L6-v2'")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: list[float]) -> dict[str, float]:
    return {"n": len(samples), "p50_ms": round(statistics.median(samples), 2),
            "p95_ms": round(percentile(samples, 0.95), 2),
            "max_ms": round(max(samples), 2)}


@dataclass
class Corpus:
    users: list[uuid.UUID]
    people: int
    adjacency: dict[str, list[str]] = field(default_factory=dict)  # the first user's graph
    timings: dict[str, float | None] = field(default_factory=dict)


async def load(db: Any, args: argparse.Namespace, rng: random.Random, embedder: Any) -> Corpus:
    """Users, entities, facts with vectors and relations; the HNSW index rebuilt."""
    import numpy as np
    from tests.support.identity import make_user

    from roost.db.base import uuid7
    from roost.db.vector import ensure_vector_codec
    from roost.memory.graph import normalize
    from roost.memory.models import DEFAULT_MODEL

    users = [(await make_user(db, username=f"user{i}"))[0] for i in range(args.users)]
    people = max(10, args.facts // args.users // 4)  # per user
    counts = {"city": min(CITIES, max(10, people // 4)),
              "company": min(COMPANIES, max(10, people // 4)),
              "hobby": min(HOBBIES, max(10, people // 4)), "person": people}
    entity_ids: dict[tuple[uuid.UUID, str], uuid.UUID] = {}
    entity_rows = []
    for user in users:
        for kind, count in counts.items():
            for i in range(count):
                name = f"{kind}-{i}"
                entity_ids[(user, name)] = eid = uuid7()
                entity_rows.append((eid, user, name, normalize(name), kind))
    corpus = Corpus(users, people)
    base = datetime.now(UTC)

    def chunk(first: int, size: int) -> tuple[list[Any], list[Any]]:
        memory_rows, relation_rows = [], []
        for n in range(first, first + size):
            user = users[n % len(users)]
            person = f"person-{rng.randrange(people)}"
            relation, kind, verb = RELATIONS[rng.randrange(len(RELATIONS))]
            other = f"{kind}-{rng.randrange(counts[kind])}"
            content = f"{person} {verb} {other}"
            created = base - timedelta(days=rng.random() * 120)
            mid = uuid7()
            memory_rows.append((
                mid, user, content, "fact", round(0.5 + rng.random() * 0.5, 4),
                hashlib.sha256(content.encode()).hexdigest(),
                np.asarray(embedder.embed_sync(content), dtype=np.float32), DEFAULT_MODEL, 384,
                created, created, created,
                json.dumps([{"name": person, "type": "person"}, {"name": other, "type": kind}]),
                json.dumps([{"source": person, "relation": relation, "target": other}])))
            relation_rows.append((uuid7(), user, entity_ids[(user, person)],
                                  entity_ids[(user, other)], relation, mid, created, created))
            if user == users[0]:
                corpus.adjacency.setdefault(person, []).append(other)
                corpus.adjacency.setdefault(other, []).append(person)
        return memory_rows, relation_rows

    generate_s = copy_s = 0.0
    async with db.engine.connect() as conn:
        raw = await conn.get_raw_connection()
        driver = raw.driver_connection
        assert driver is not None
        await ensure_vector_codec(driver)
        await driver.execute("SET statement_timeout = 0")
        await driver.execute("DROP INDEX ix_memories_embedding_all_minilm_l6_v2")
        if args.fillfactor:
            await driver.execute(f"ALTER TABLE memories SET (fillfactor = {int(args.fillfactor)})")
        await driver.copy_records_to_table(
            "memory_entities", records=entity_rows,
            columns=["id", "user_id", "name", "normalized_name", "entity_type"])
        for first in range(0, args.facts, CHUNK):
            t0 = time.perf_counter()
            memory_rows, relation_rows = chunk(first, min(CHUNK, args.facts - first))
            generate_s += time.perf_counter() - t0
            t0 = time.perf_counter()
            await driver.copy_records_to_table("memories", records=memory_rows,
                                               columns=MEMORY_COLUMNS)
            await driver.copy_records_to_table("memory_relations", records=relation_rows,
                                               columns=RELATION_COLUMNS)
            copy_s += time.perf_counter() - t0
        print(f"generated {args.facts} facts with embeddings in {generate_s:.1f} s, copied in "
              f"{copy_s:.1f} s; building the HNSW index", flush=True)
        t0 = time.perf_counter()
        await driver.execute("SET maintenance_work_mem = '1GB'")
        await driver.execute(INDEX_DDL)
        index_s = time.perf_counter() - t0
        for table in ("memories", "memory_entities", "memory_relations"):
            await driver.execute(f"VACUUM ANALYZE {table}")
        await conn.commit()
    print(f"HNSW index built in {index_s:.1f} s", flush=True)
    corpus.timings = {"generate_s": round(generate_s, 1), "copy_s": round(copy_s, 1),
                      "hnsw_build_s": round(index_s, 1)}
    return corpus


async def attach(db: Any) -> Corpus:
    """A database an earlier run loaded: its users and the first user's graph."""
    from sqlalchemy import text

    async with db.transaction() as session:
        await session.execute(text("ANALYZE memories"))
        users = list((await session.execute(text(
            "SELECT id FROM users WHERE username ~ '^user[0-9]+$' "
            "ORDER BY length(username), username"))).scalars())
        people = int(await session.scalar(text(
            "SELECT count(*) FROM memory_entities WHERE user_id = :u AND entity_type = 'person'"),
            {"u": users[0]}) or 0)
        rows = (await session.execute(text(
            "SELECT s.name, t.name FROM memory_relations r "
            "JOIN memory_entities s ON s.id = r.source_entity_id "
            "JOIN memory_entities t ON t.id = r.target_entity_id WHERE r.user_id = :u"),
            {"u": users[0]})).all()
    corpus = Corpus(users, people)
    for source, target in rows:
        corpus.adjacency.setdefault(source, []).append(target)
        corpus.adjacency.setdefault(target, []).append(source)
    corpus.timings = {"generate_s": None, "copy_s": None, "hnsw_build_s": None}
    return corpus


async def measure(db: Any, args: argparse.Namespace, corpus: Corpus, rng: random.Random,
                  embedder: Any) -> dict[str, Any]:
    from sqlalchemy import bindparam, text

    from roost.config import Settings
    from roost.db.vector import VectorType
    from roost.identity.tenancy import apply_principal
    from roost.knowledge.search import configure_session
    from roost.memory import graphq, recall
    from roost.memory.models import DEFAULT_MODEL
    from roost.memory.recall import _plan
    from roost.memory.service import Scope
    from roost.principal import Principal

    settings = Settings()
    actor = Principal(user_id=corpus.users[0], is_admin=False, kind="api_key")
    scope = Scope(corpus.users[0])
    walkers = sorted(n for n in corpus.adjacency if n.startswith("person-"))

    async def timed(fn: Any) -> tuple[float, Any]:
        async with db.transaction() as session:
            await apply_principal(session, actor, app_role=settings.db_app_role)
            t = time.perf_counter()
            out = await fn(session)
            return (time.perf_counter() - t) * 1000, out

    def query() -> str:
        return f"where does person-{rng.randrange(corpus.people)} live and work"

    def person() -> str:
        return f"person-{rng.randrange(corpus.people)}"

    def connected(hops: int) -> tuple[str, str]:
        """A person and the end of a random walk of ``hops`` relations from them."""
        while True:
            start = end = rng.choice(walkers)
            for _ in range(hops):
                end = rng.choice(corpus.adjacency[end])
            if end != start:
                return start, end

    async def sql_only(s: Any, q: str, explain: bool = False) -> Any:
        """The search's one statement (query vector computed before the clock)."""
        [vec] = await embedder.embed([q])
        plan = _plan(scope, q, model=DEFAULT_MODEL, dims=384, vector=vec, k=10, as_of=None,
                     half_life_days=30, floor=0.5)
        await configure_session(s, recall.EF_SEARCH)
        prefix = "EXPLAIN (ANALYZE, BUFFERS) " if explain else ""
        stmt = text(prefix + plan.sql).bindparams(bindparam("qvec", type_=VectorType()))
        t = time.perf_counter()
        rows = (await s.execute(stmt, plan.params)).all()
        return (time.perf_counter() - t) * 1000, rows

    if args.explain:
        async with db.transaction() as session:
            await apply_principal(session, actor, app_role=settings.db_app_role)
            _, plan_rows = await sql_only(session, query(), explain=True)
            print("\n".join(r[0] for r in plan_rows))

    measures: dict[str, Any] = {
        "search": lambda q: lambda s: recall.search(
            s, actor, scope, q, embedder=embedder, k=10, settings=settings),
        "search_no_touch": lambda q: lambda s: recall.search(
            s, actor, scope, q, embedder=embedder, k=10, settings=settings, touch=False),
        "search_sql": None,
        "graph_2hop": lambda _q: lambda s: graphq.neighbours(s, actor, person(), depth=2),
        "paths_3": lambda _q: lambda s: graphq.paths(s, actor, *connected(3), max_hops=3,
                                                     limit=20),
    }
    index_scans_sql = text("SELECT indexrelname, idx_scan FROM pg_stat_user_indexes "
                           "WHERE relname = 'memories'")

    async def index_scans() -> dict[str, int]:
        async with db.transaction() as session:
            await session.execute(text("SELECT pg_stat_clear_snapshot()"))
            return {str(name): int(n or 0)
                    for name, n in (await session.execute(index_scans_sql)).all()}

    scans_before = await index_scans()
    results: dict[str, Any] = {}
    hits: list[Any] = []
    for name, make in measures.items():
        samples, sizes = [], []
        for i in range(args.queries + 10):  # 10 warm-up rounds
            if make is None:
                async with db.transaction() as session:
                    await apply_principal(session, actor, app_role=settings.db_app_role)
                    ms, out = await sql_only(session, query())
            else:
                ms, out = await timed(make(query()))
            if i >= 10:
                samples.append(ms)
                sizes.append(len(out))
            if name == "search" and i == 10:
                hits = [(h.memory.content, round(h.score, 3), h.vector, h.text, h.graph)
                        for h in out[:3]]
        results[name] = {**summary(samples), "mean_results": round(statistics.mean(sizes), 1)}
        print(f"{name}: {results[name]}", flush=True)
    await asyncio.sleep(11)  # idle backends flush their statistics within 10 s
    scans_after = await index_scans()
    # Scans of memories' indexes during the measured queries (those inside
    # roost_memory_text_matches included), by index.
    scans_by_index = {name: n - scans_before.get(name, 0) for name, n in scans_after.items()
                      if n - scans_before.get(name, 0)}
    scans = scans_by_index.get("ix_memories_embedding_all_minilm_l6_v2", 0)
    async with db.transaction() as session:
        total = await session.scalar(text("SELECT count(*) FROM memories"))
        first_user = await session.scalar(text("SELECT count(*) FROM memories WHERE user_id = :u"),
                                          {"u": corpus.users[0]})
        accessed = await session.scalar(text("SELECT count(*) FROM memories WHERE access_count > 0"))
    return {
        "facts": total, "users": len(corpus.users), "facts_first_user": first_user,
        "people_per_user": corpus.people, "fillfactor": args.fillfactor or 100,
        "queries": args.queries, **corpus.timings, "hnsw_index_scans": scans,
        "index_scans": scans_by_index,
        "memories_touched": accessed, "sample_hits": hits, "results": results,
        "machine": {"python": platform.python_version(), "platform": platform.platform(),
                    "cpus": os.cpu_count(), "load_average": os.getloadavg()},
    }


async def main(args: argparse.Namespace) -> dict[str, Any]:
    from roost.config import Settings
    from roost.db.embedded import start_embedded
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade
    from roost.knowledge.embeddings import DevHashingEmbedder
    from roost.memory.models import DEFAULT_MODEL

    rng = random.Random(15)
    embedder = DevHashingEmbedder(384)
    embedder.model_name = DEFAULT_MODEL
    if args.attach:
        db = create_database(Settings(), url=to_async_url(args.attach))
        try:
            return await measure(db, args, await attach(db), rng, embedder)
        finally:
            await db.dispose()
    with tempfile.TemporaryDirectory(prefix="roost-bench-memory-") as tmp_dir:
        server = start_embedded(Path(tmp_dir) / "pg", delete_on_exit=True)
        ensure_database_exists(server, "bench_memory")
        db = create_database(Settings(), url=to_async_url(server.libpq_url("bench_memory")))
        try:
            await upgrade(db.engine)
            corpus = await load(db, args, rng, embedder)
            return await measure(db, args, corpus, rng, embedder)
        finally:
            await db.dispose()
            server.stop()


def print_table(report: dict[str, Any]) -> None:
    print(f"\n{report['facts']:,} facts, {report['users']} user(s) "
          f"({report['facts_first_user']:,} searched); HNSW build {report['hnsw_build_s']} s, "
          f"index scans {report['hnsw_index_scans']}")
    print(f"{'query':<16} {'n':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8} {'results':>8}")
    for name, r in report["results"].items():
        print(f"{name:<16} {r['n']:>5} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['max_ms']:>8} "
              f"{r['mean_results']:>8}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--facts", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--explain", action="store_true", help="Print one search's plan.")
    parser.add_argument("--fillfactor", type=int, default=0,
                        help="memories' fillfactor for the load (0: the table's, 100)")
    parser.add_argument("--attach", default=None,
                        help="Measure this already loaded database (libpq URL) instead.")
    args = parser.parse_args()
    report = asyncio.run(main(args))
    print_table(report)
    existing = json.loads(args.out.read_text()) if args.out.exists() else {}
    runs = existing.get("runs", {}) if isinstance(existing.get("runs"), dict) else {}
    runs[f"{report['facts']}_facts_{report['users']}_users"] = report
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"runs": runs}, indent=2, default=str) + "\n")
    print(f"wrote {args.out}")
