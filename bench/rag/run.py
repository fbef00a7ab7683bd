"""RAG index benchmark: Roost vs raw pgvector SQL (psycopg) vs langchain-postgres PGVector.

    .venv/bin/python bench/rag/run.py [--n 100000] [--dims 384] [--queries 500] [--ef 40,100,200]
        [--systems raw,rawschema,roost,langchain]

One embedded PostgreSQL (pgvector 0.8), one database per system, the same data, in one
invocation.  Vectors are synthetic but shaped like sentence embeddings (see
``make_data``: 256 topic clusters in a 32-dimensional latent space projected to 384
dimensions; i.i.d. random vectors would have no neighbourhood structure and say nothing
about HNSW on real text).  Every chunk gets one of 10 collections; every query filters
on one (10 % selectivity).

For each system:

* **bulk load** (rows/s): the N chunks into the table without its vector index, through
  each system's own write path: raw = psycopg binary ``COPY`` into a four-column table;
  rawschema = psycopg binary ``COPY`` into Roost's own ``document_chunks`` as its owner
  (the write limit for that table); Roost = ``roost.knowledge.bulk.insert_chunks`` (its
  ingestion path, under the user's row-level security scope); LangChain =
  ``PGVector.add_embeddings``;
* **index build** (s): HNSW ``vector_cosine_ops`` with m = 16, ef_construction = 64;
* **live insert** (rows/s): 2,000 more chunks into the indexed table, same write paths;
* **filtered search**, per ``ef_search``: recall@10 against exact (numpy, same filter)
  and sequential single-client QPS (query vector given; no embedding time).  Raw SQL
  sets ``ef_search``/``iterative_scan`` once per connection and sends one prepared
  statement per query; Roost calls its search service in vector mode inside a
  transaction scoped to the user (row-level security on, the HNSW settings set by the
  search's one statement, which also returns the hits' chunk and document rows; before
  2026-12-04 night this column measured the candidates' ids only);
  LangChain gets the settings per database (it has no option for them) and runs
  ``similarity_search_by_vector`` with a metadata filter.  rawschema does not search.
* **a transaction per query** (``qps_transaction_per_query``), the fair baseline for an
  API request, which always has its own transaction: raw = BEGIN, the query, COMMIT
  (psycopg, commit after each); Roost = the API path minus HTTP and embedding: what
  ``POST /api/v1/knowledge/search`` does in vector mode for an API key, i.e. a caller
  the process knows in one statement that confirms the key, scopes itself and returns
  the hits with their chunk and document rows (``search_confirming``), the first query
  in a transaction that authenticates the key (``resolve_bearer``).  It returns more
  than raw's ids (the hits' content and documents).  Reported beside both raw figures
  (one shared transaction; a transaction per query).

Prints a table and writes bench/results/rag.json.  Needs the ``bench`` extra.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import secrets
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from pgvector.psycopg import register_vector

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "rag.json"
K = 10
LIVE_INSERT = 2000
COLLECTIONS = 10


# --- data -------------------------------------------------------------------------------


def make_data(n: int, dims: int, queries: int, seed: int = 7) -> dict[str, Any]:
    """Unit vectors with the shape of sentence embeddings: 256 topic clusters in a
    32-dimensional latent space, projected to ``dims`` with a little isotropic noise
    (text embeddings have a low intrinsic dimension; i.i.d. Gaussian vectors would have
    none and no neighbourhood structure for any index to exploit)."""
    rng = np.random.default_rng(seed)
    latent = 32
    total = n + LIVE_INSERT
    centres = rng.standard_normal((256, latent)).astype(np.float32)
    assign = rng.integers(0, 256, total)
    z = centres[assign] + 0.5 * rng.standard_normal((total, latent)).astype(np.float32)
    proj = (rng.standard_normal((latent, dims)) / np.sqrt(latent)).astype(np.float32)
    x = z @ proj + 0.02 * rng.standard_normal((total, dims)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    coll = rng.integers(0, COLLECTIONS, total)
    picks = rng.integers(0, n, queries)
    zq = z[picks] + 0.25 * rng.standard_normal((queries, latent)).astype(np.float32)
    q = zq @ proj + 0.02 * rng.standard_normal((queries, dims)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    qcoll = rng.integers(0, COLLECTIONS, queries)
    base, base_coll = x[:n], coll[:n]
    truth = []
    for i in range(queries):
        idx = np.flatnonzero(base_coll == qcoll[i])
        sims = base[idx] @ q[i]
        truth.append(set(idx[np.argsort(-sims)[:K]].tolist()))
    return {"x": x, "coll": coll, "q": q.astype(np.float32), "qcoll": qcoll, "truth": truth,
            "n": n, "dims": dims}


def content(i: int) -> str:
    return f"chunk {i} of the synthetic benchmark corpus"


def recall(found: list[set[int]], truth: list[set[int]]) -> float:
    return float(np.mean([len(f & t) / K for f, t in zip(found, truth, strict=True)]))


# --- the systems --------------------------------------------------------------------------
# Each: load() (bulk, no vector index), build(), set_ef(ef), query(i) -> its result,
# ids(result) -> row numbers, insert() (live, into the indexed table), close().  Loads
# and builds run one system after the other; searches are interleaved (a slice of
# queries per system in turn), so a noisy
# shared machine slows every system alike and the ratios stay meaningful.


class Raw:
    name = "raw pgvector (psycopg)"

    def __init__(self, dsn: str, data: dict[str, Any]) -> None:
        self.data = data
        self.conn = psycopg.connect(dsn)
        self.conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        register_vector(self.conn)
        self.conn.execute(f"CREATE TABLE chunks (id bigint PRIMARY KEY, collection text NOT NULL, "
                          f"content text NOT NULL, embedding vector({data['dims']}) NOT NULL)")
        self.conn.commit()

    def _copy(self, lo: int, hi: int) -> float:
        x, coll = self.data["x"], self.data["coll"]
        t0 = time.perf_counter()
        with self.conn.cursor() as cur, cur.copy(
            "COPY chunks (id, collection, content, embedding) FROM STDIN WITH (FORMAT BINARY)"
        ) as cp:
            cp.set_types(["int8", "text", "text", "vector"])
            for i in range(lo, hi):
                cp.write_row((i, f"c{coll[i]}", content(i), x[i]))
        self.conn.commit()
        return (hi - lo) / (time.perf_counter() - t0)

    def load(self) -> float:
        return self._copy(0, self.data["n"])

    def build(self) -> None:
        self.conn.execute("SET maintenance_work_mem = '1GB'")
        self.conn.execute("CREATE INDEX ON chunks USING hnsw (embedding vector_cosine_ops) "
                          "WITH (m = 16, ef_construction = 64)")
        self.conn.execute("ANALYZE chunks")
        self.conn.commit()

    def set_ef(self, ef: int) -> None:
        self.conn.execute(f"SET hnsw.ef_search = {int(ef)}")
        self.conn.execute("SET hnsw.iterative_scan = relaxed_order")
        self.conn.commit()

    def query(self, i: int) -> Any:
        return self.conn.execute(
            "SELECT id FROM chunks WHERE collection = %s ORDER BY embedding <=> %s LIMIT 10",
            (f"c{self.data['qcoll'][i]}", self.data["q"][i]), prepare=True,
        ).fetchall()

    def ids(self, result: Any) -> set[int]:
        return {int(r[0]) for r in result}

    def per_request_slice(self, lo: int, hi: int) -> None:
        """A transaction per query, as a request handler on psycopg does: BEGIN (sent by
        psycopg with the query), the query, COMMIT."""
        for i in range(lo, hi):
            self.query(i)
            self.conn.commit()

    def insert(self) -> float:
        self.conn.commit()
        n = self.data["n"]
        return self._copy(n, n + LIVE_INSERT)

    def close(self) -> None:
        self.conn.close()


def _server_loop_factory() -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] ships it on Linux and macOS
        return None
    return uvloop.new_event_loop


class Roost:
    """Roost's own code paths: ``insert_chunks`` (ingestion) and ``search`` (the search
    service, vector mode) under the principal's row-level security."""

    name = "roost"

    def __init__(self, url: str, data: dict[str, Any]) -> None:
        self.data = data
        # The event loop `roost serve` runs on: uvicorn picks uvloop when it is installed
        # (it is, with uvicorn[standard]).
        self.runner = asyncio.Runner(loop_factory=_server_loop_factory())
        self.url = url
        dims = data["dims"]
        self.model = "all-MiniLM-L6-v2" if dims == 384 else f"bench-{dims}"
        self.chunk_ids: list[uuid.UUID] = []
        self.runner.run(self._setup())

    async def _setup(self) -> None:
        from sqlalchemy import make_url, text

        from roost.config import Settings
        from roost.db.base import uuid7
        from roost.db.engine import create_database
        from roost.db.migrate import upgrade
        from roost.identity.accounts import create_user
        from roost.identity.apikeys import create_api_key
        from roost.identity.common import principal_for
        from roost.knowledge.index import index_name
        from roost.principal import SYSTEM, Principal

        self.db = create_database(Settings(), url=make_url(self.url))
        await upgrade(self.db.engine)
        async with self.db.transaction() as s:
            user = await create_user(s, SYSTEM, username="bench", email="bench@example.test",
                                     password=None, role="user", status="active",
                                     first_becomes_root=False)
            self.user_id = user.id
            self.api_key = (await create_api_key(s, principal_for(user), name="bench")).key
            self.docs = [uuid7() for _ in range((self.data["n"] + LIVE_INSERT) // 100 + 1)]
            await s.execute(
                text("INSERT INTO documents (id, user_id, name, source, path_hash, status) "
                     "SELECT d, :u, 'doc', 'file', d::text, 'ready' FROM unnest(CAST(:ids AS uuid[])) d"),
                {"u": self.user_id, "ids": self.docs},
            )
            await s.execute(text(f"DROP INDEX IF EXISTS {index_name(self.model)}"))
        self.who = Principal(user_id=self.user_id, is_admin=False, kind="api_key")
        self.settings = Settings()

    async def _load(self, lo: int, hi: int, batch: int) -> float:
        from roost.db.base import uuid7
        from roost.identity.tenancy import apply_principal
        from roost.knowledge.bulk import insert_chunks

        x, coll, dims = self.data["x"], self.data["coll"], self.data["dims"]
        t0 = time.perf_counter()
        for start in range(lo, hi, batch):
            rows = []
            for i in range(start, min(hi, start + batch)):
                cid = uuid7()
                self.chunk_ids.append(cid)
                rows.append({
                    "id": cid, "document_id": self.docs[i // 100], "user_id": self.user_id,
                    "collection": f"c{coll[i]}", "tags": [], "chunk_index": i % 100,
                    "content": content(i), "token_count": 12, "embedding": x[i],
                    "embedding_model": self.model, "embedding_dim": dims, "metadata": {"page": 1},
                })
            async with self.db.transaction() as s:
                await apply_principal(s, self.who)
                await insert_chunks(s, rows)
        return (hi - lo) / (time.perf_counter() - t0)

    def load(self) -> float:
        return self.runner.run(self._load(0, self.data["n"], 5000))

    async def _build(self) -> None:
        from sqlalchemy import text

        from roost.knowledge.index import index_ddl

        async with self.db.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text("SET maintenance_work_mem = '1GB'"))
            await conn.execute(text("SET statement_timeout = 0"))
            await conn.execute(text(index_ddl(self.model, self.data["dims"], concurrently=False)))
            await conn.execute(text("ANALYZE document_chunks"))

    def build(self) -> None:
        self.runner.run(self._build())
        self.position = {cid: i for i, cid in enumerate(self.chunk_ids)}

    async def _open(self, ef: int) -> None:
        from roost.identity.tenancy import apply_principal
        from roost.knowledge.config import EmbedderSpec, KnowledgeConfig

        # As the search service runs in an API request: inside the request's transaction,
        # which authentication opened and scoped to the principal (RLS on).
        self.cfg = KnowledgeConfig(ef_search=ef, embedder=EmbedderSpec("local", self.model,
                                                                       self.data["dims"]))
        self.session = self.db.sessionmaker()
        await self.session.begin()
        await apply_principal(self.session, self.who)

    def set_ef(self, ef: int) -> None:
        if getattr(self, "session", None) is not None:
            self.runner.run(self.session.close())
        self.runner.run(self._open(ef))

    async def _query(self, i: int) -> Any:
        from roost.knowledge import search as search_mod
        from roost.knowledge.schemas import SearchRequest

        req = SearchRequest(query="-", k=K, mode="vector", collection=f"c{self.data['qcoll'][i]}")
        return await search_mod.search(self.session, self.who, self.cfg, req,
                                       vector=self.data["q"][i])

    def ids(self, result: Any) -> set[int]:
        return {self.position[hit.chunk_id] for hit in result.results}

    def query(self, i: int) -> Any:
        return self.runner.run(self._query(i))

    def query_slice(self, lo: int, hi: int) -> list[Any]:
        async def run() -> list[Any]:  # an application's loop is already running
            return [await self._query(i) for i in range(lo, hi)]

        return self.runner.run(run())

    async def _per_request(self, i: int, request: Any) -> None:
        """An API search request's database work, minus HTTP and the query's embedding,
        as ``POST /api/v1/knowledge/search`` in vector mode does it: a caller the process
        knows (every query after the first) is one statement with no transaction around
        it (``search_confirming``: the database confirms the API key, scopes the
        statement, sets the HNSW settings and returns the hits with their chunks and
        documents); otherwise one transaction that authenticates the key
        (``resolve_bearer``) and runs ``search``."""
        from roost.identity.resolver import known_caller, resolve_bearer
        from roost.knowledge import search as search_mod
        from roost.knowledge.schemas import SearchRequest

        req = SearchRequest(query="-", k=K, mode="vector", collection=f"c{self.data['qcoll'][i]}")
        vector = self.data["q"][i]
        caller = await known_caller(request)
        if caller is not None:
            found = await caller.run(lambda confirmation, scope: search_mod.search_confirming(
                self.db, caller.principal, self.cfg, req, vector, confirmation=confirmation,
                scope=scope))
            if found is not None:
                return
        async with self.db.sessionmaker() as s, s.begin():
            who = await resolve_bearer(s, self.api_key, request)
            assert who is not None
            await search_mod.search(s, who, self.cfg, req, vector=vector)

    def _app(self) -> Any:
        """What the search route reads of its app: ``app.state``'s settings, keys and rate
        limiter (no rate limit applies to the key unless the settings set one)."""
        from types import SimpleNamespace

        keys = SimpleNamespace(admin_token=secrets.token_urlsafe(32))  # not the key
        return SimpleNamespace(state=SimpleNamespace(settings=self.settings, keys=keys))

    def _request(self, app: Any) -> Any:
        """A request with the API key, as the search route sees it."""
        from starlette.requests import Request

        return Request({"type": "http", "method": "POST", "path": "/api/v1/knowledge/search",
                        "query_string": b"", "app": app,
                        "headers": [(b"authorization", f"Bearer {self.api_key}".encode())]})

    def per_request_slice(self, lo: int, hi: int) -> None:
        app = self._app()

        async def run() -> None:
            for i in range(lo, hi):
                await self._per_request(i, self._request(app))  # a Request per request

        self.runner.run(run())

    def insert(self) -> float:
        self.runner.run(self.session.close())
        self.session = None
        n = self.data["n"]
        result = self.runner.run(self._load(n, n + LIVE_INSERT, 500))
        return result

    def close(self) -> None:
        self.runner.run(self.db.dispose())
        self.runner.close()


class RawSchema(Roost):
    """The write limit for Roost's own table: psycopg binary ``COPY`` of the same rows
    straight into ``document_chunks`` as its owner (no row-level security, no Python
    encoding of Roost's), with the same columns, indexes, generated full-text vector and
    foreign key.  Loads and inserts only; its searches would be Roost's table again."""

    name = "raw COPY into Roost's table"
    searchable = False

    def __init__(self, url: str, dsn: str, data: dict[str, Any]) -> None:
        super().__init__(url, data)
        self.conn = psycopg.connect(dsn)
        register_vector(self.conn)

    def _copy(self, lo: int, hi: int, batch: int) -> float:
        from psycopg.types.json import Jsonb

        from roost.db.base import uuid7

        x, coll, dims = self.data["x"], self.data["coll"], self.data["dims"]
        t0 = time.perf_counter()
        for start in range(lo, hi, batch):
            with self.conn.cursor() as cur, cur.copy(
                "COPY document_chunks (id, document_id, user_id, collection, tags, chunk_index, "
                "content, token_count, embedding, embedding_model, embedding_dim, metadata) "
                "FROM STDIN WITH (FORMAT BINARY)"
            ) as cp:
                cp.set_types(["uuid", "uuid", "uuid", "text", "jsonb", "int4", "text", "int4",
                              "vector", "text", "int4", "jsonb"])
                for i in range(start, min(hi, start + batch)):
                    cp.write_row((uuid7(), self.docs[i // 100], self.user_id, f"c{coll[i]}",
                                  Jsonb([]), i % 100, content(i), 12, x[i], self.model, dims,
                                  Jsonb({"page": 1})))
            self.conn.commit()
        return (hi - lo) / (time.perf_counter() - t0)

    def load(self) -> float:
        return self._copy(0, self.data["n"], 5000)

    def build(self) -> None:
        super().build()

    def insert(self) -> float:
        n = self.data["n"]
        return self._copy(n, n + LIVE_INSERT, 500)

    def close(self) -> None:
        self.conn.close()
        super().close()


class LangChain:
    name = "langchain-postgres PGVector"

    def __init__(self, dsn: str, data: dict[str, Any]) -> None:
        from langchain_core.embeddings import Embeddings
        from langchain_postgres import PGVector
        from sqlalchemy import create_engine

        class Given(Embeddings):  # vectors are given; nothing is embedded here
            def embed_documents(self, texts: list[str]) -> list[list[float]]:
                raise NotImplementedError

            def embed_query(self, text: str) -> list[float]:
                raise NotImplementedError

        self.data = data
        self.engine = create_engine(dsn.replace("postgresql://", "postgresql+psycopg://", 1))
        self.store = PGVector(embeddings=Given(), connection=self.engine, collection_name="bench",
                              embedding_length=data["dims"], use_jsonb=True,
                              pre_delete_collection=True)

    def _add(self, lo: int, hi: int, batch: int) -> float:
        x, coll = self.data["x"], self.data["coll"]
        t0 = time.perf_counter()
        for start in range(lo, hi, batch):
            end = min(hi, start + batch)
            self.store.add_embeddings(
                texts=[content(i) for i in range(start, end)],
                embeddings=x[start:end].tolist(),
                metadatas=[{"collection": f"c{coll[i]}"} for i in range(start, end)],
                ids=[str(i) for i in range(start, end)],
            )
        return (hi - lo) / (time.perf_counter() - t0)

    def load(self) -> float:
        return self._add(0, self.data["n"], 1000)

    def build(self) -> None:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text("SET maintenance_work_mem = '1GB'"))
            conn.execute(text("CREATE INDEX ON langchain_pg_embedding USING hnsw "
                              "(embedding vector_cosine_ops) WITH (m = 16, ef_construction = 64)"))
            conn.execute(text("ANALYZE langchain_pg_embedding"))
            conn.commit()

    def set_ef(self, ef: int) -> None:
        from sqlalchemy import text

        name = self.engine.url.database
        with self.engine.connect() as conn:  # PGVector has no option for these settings
            conn.execute(text(f'ALTER DATABASE "{name}" SET hnsw.ef_search = {int(ef)}'))
            conn.execute(text(f'ALTER DATABASE "{name}" SET hnsw.iterative_scan = relaxed_order'))
            conn.commit()
        self.engine.dispose()  # new connections pick the settings up

    def query(self, i: int) -> Any:
        return self.store.similarity_search_by_vector(
            self.data["q"][i].tolist(), k=K,
            filter={"collection": {"$eq": f"c{self.data['qcoll'][i]}"}},
        )

    def ids(self, result: Any) -> set[int]:
        return {int(str(d.id)) for d in result}

    def insert(self) -> float:
        n = self.data["n"]
        return self._add(n, n + LIVE_INSERT, 500)

    def close(self) -> None:
        self.engine.dispose()


def measure(systems: list[Any], data: dict[str, Any], ef: int, rounds: int = 5) -> dict[str, Any]:
    nq = len(data["truth"])
    for system in systems:
        system.set_ef(ef)
        for i in range(min(20, nq)):
            system.query(i)  # warm-up
    # Results are mapped to row numbers after the clock stops (each system's ids differ).
    found: dict[str, list[Any]] = {s.name: [None] * nq for s in systems}
    spent = dict.fromkeys(found, 0.0)
    bounds = np.linspace(0, nq, rounds + 1).astype(int)
    for r in range(rounds):
        for system in systems:  # each slice of queries on every system in turn
            lo, hi = int(bounds[r]), int(bounds[r + 1])
            t0 = time.perf_counter()
            if hasattr(system, "query_slice"):
                found[system.name][lo:hi] = system.query_slice(lo, hi)
            else:
                found[system.name][lo:hi] = [system.query(i) for i in range(lo, hi)]
            spent[system.name] += time.perf_counter() - t0
    return {s.name: {"recall_at_10": recall([s.ids(r) for r in found[s.name]], data["truth"]),
                     "qps": nq / spent[s.name]} for s in systems}


def measure_per_request(systems: list[Any], data: dict[str, Any], rounds: int = 5) -> dict[str, float]:
    """QPS with a transaction per query (after ``measure`` set ``ef_search``), slices
    interleaved across systems like ``measure``."""
    nq = len(data["truth"])
    runners = [s for s in systems if hasattr(s, "per_request_slice")]
    for system in runners:
        system.per_request_slice(0, min(20, nq))  # warm-up
    spent = {s.name: 0.0 for s in runners}
    bounds = np.linspace(0, nq, rounds + 1).astype(int)
    for r in range(rounds):
        for system in runners:
            t0 = time.perf_counter()
            system.per_request_slice(int(bounds[r]), int(bounds[r + 1]))
            spent[system.name] += time.perf_counter() - t0
    return {name: nq / secs for name, secs in spent.items()}


# --- main ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=384)
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ef", default="40,100,200")
    parser.add_argument("--systems", default="raw,rawschema,roost,langchain")
    args = parser.parse_args()
    efs = [int(v) for v in args.ef.split(",")]
    systems = args.systems.split(",")

    from roost.db.embedded import start_embedded

    t0 = time.perf_counter()
    data = make_data(args.n, args.dims, args.queries)
    print(f"data: {args.n} x {args.dims} vectors, {args.queries} queries "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="roost-bench-rag-") as tmp:
        server = start_embedded(Path(tmp) / "pg", delete_on_exit=True)
        try:
            admin = server.url("postgres").replace("postgresql+asyncpg://", "postgresql://", 1)
            with psycopg.connect(admin, autocommit=True) as conn:
                version = conn.execute("SHOW server_version").fetchone()
                for name in ("bench_raw", "bench_roost", "bench_lc", "bench_raw_schema"):
                    conn.execute(f"CREATE DATABASE {name}")
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                pgvector = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()

            def dsn(name: str) -> str:
                return server.url(name).replace("postgresql+asyncpg://", "postgresql://", 1)

            builders = {"raw": lambda: Raw(dsn("bench_raw"), data),
                        "roost": lambda: Roost(server.url("bench_roost"), data),
                        "langchain": lambda: LangChain(dsn("bench_lc"), data),
                        "rawschema": lambda: RawSchema(server.url("bench_raw_schema"),
                                                       dsn("bench_raw_schema"), data)}
            running: list[Any] = []
            for key in systems:
                t1 = time.perf_counter()
                system = builders[key]()
                running.append(system)
                load = system.load()
                t2 = time.perf_counter()
                system.build()
                build = time.perf_counter() - t2
                results.append({"system": system.name, "load_rows_s": load, "build_s": build,
                                "search": {}})
                print(f"{key}: loaded at {load:.0f} rows/s, index built in {build:.1f} s "
                      f"({time.perf_counter() - t1:.0f} s)", flush=True)
            searchable = [s for s in running if getattr(s, "searchable", True)]
            for ef in efs:
                measured = measure(searchable, data, ef) if searchable else {}
                per_request = measure_per_request(searchable, data) if searchable else {}
                for system, result in zip(running, results, strict=True):
                    if system.name not in measured:
                        continue
                    result["search"][ef] = measured[system.name]
                    if system.name in per_request:
                        # Raw: BEGIN, query, COMMIT per query; Roost: the API path minus
                        # HTTP (authenticate an API key, scope, search, commit).
                        result["search"][ef]["qps_transaction_per_query"] = per_request[system.name]
                print(f"ef_search={ef}: " + ", ".join(
                    f"{n} recall {m['recall_at_10']:.3f} QPS {m['qps']:.0f}"
                    + (f" (tx/query {per_request[n]:.0f})" if n in per_request else "")
                    for n, m in measured.items()), flush=True)
            for system, result in zip(running, results, strict=True):
                result["insert_rows_s"] = system.insert()
                system.close()
        finally:
            server.stop()
    report(results, efs, args, version[0] if version else "?", pgvector[0] if pgvector else "?")


def report(results: list[dict[str, Any]], efs: list[int], args: argparse.Namespace,
           server_version: str, pgvector: str) -> None:
    header = f"{'system':<30}{'load rows/s':>12}{'build s':>9}{'insert rows/s':>14}"
    for ef in efs:
        header += f"{f'ef={ef} recall':>15}{f'ef={ef} QPS':>12}"
    print("\n" + header)
    for r in results:
        line = f"{r['system']:<30}{r['load_rows_s']:>12.0f}{r['build_s']:>9.1f}{r['insert_rows_s']:>14.0f}"
        for ef in efs:
            s = r["search"].get(ef)
            line += f"{s['recall_at_10']:>15.3f}{s['qps']:>12.0f}" if s else f"{'-':>15}{'-':>12}"
        print(line)
    by_name = {r["system"]: r for r in results}
    raw, same_table = by_name.get(Raw.name), by_name.get(RawSchema.name)
    for base in (b for b in (raw, same_table) if b is not None):
        print(f"\nrelative to {base['system']}:")
        for r in results:
            if r is base or r is same_table or (base is same_table and r is raw):
                continue
            parts = [f"load {r['load_rows_s'] / base['load_rows_s']:.2f}x",
                     f"insert {r['insert_rows_s'] / base['insert_rows_s']:.2f}x"]
            parts += [f"QPS@ef{ef} {r['search'][ef]['qps'] / base['search'][ef]['qps']:.2f}x"
                      for ef in efs if ef in r["search"] and ef in base["search"]]
            print(f"  {r['system']}: " + ", ".join(parts))
            for ef in efs:
                per = r["search"].get(ef, {}).get("qps_transaction_per_query")
                base_per = base["search"].get(ef, {}).get("qps_transaction_per_query")
                if per and ef in base["search"]:
                    line = (f"    ef={ef}: {per:.0f} QPS on the API path (authenticated, a "
                            f"transaction per query): {per / base['search'][ef]['qps']:.2f}x "
                            f"raw in one transaction")
                    if base_per:
                        line += (f", {per / base_per:.2f}x raw with a transaction per query "
                                 f"({base_per:.0f} QPS)")
                    print(line)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "rag", "n": args.n, "dims": args.dims, "queries": args.queries, "k": K,
        "collections": COLLECTIONS, "live_insert_rows": LIVE_INSERT, "hnsw": {"m": 16, "ef_construction": 64},
        "postgres": server_version, "pgvector": pgvector, "python": sys.version.split()[0],
        "machine": f"{platform.machine()} {platform.system()}",
        "results": results,
    }, indent=2, default=str) + "\n")
    print(f"\nwrote {RESULTS}")


if __name__ == "__main__":
    main()
