"""Per-request breakdown of two authenticated read paths: where a request's time goes.

    .venv/bin/python bench/overhead/breakdown.py [--requests 300] [--chunks 3000] [--label after]
    PYTHONPATH=/tmp/roost-before/src:. .venv/bin/python bench/overhead/breakdown.py --label before

In process: the FastAPI app of ``roost.app.create_app`` (its lifespan run), driven by
httpx's ASGI transport (no sockets), on an embedded PostgreSQL in a temporary directory.
A user with an API key (``tests.support.identity.make_user``) sends, ``--requests`` times
each:

* **search**: ``POST /api/v1/knowledge/search`` (vector mode, k = 10) over ``--chunks``
  chunks of the user's documents (the k-NN with the hits' chunk and document rows).
  The query embedder is replaced by one returning a random unit vector (no model: the
  model's time is not per-request overhead);
* **history**: ``GET /api/v1/chat/sessions/{id}/messages?limit=50`` of a session with 60
  Fernet-encrypted messages.

For each request: **round trips** = statements the app's pooled asyncpg connections sent
(BEGIN and COMMIT included; asyncpg's type introspection excluded), counted by wrapping
asyncpg's execution entry points (see ``Recorder``: its query logger misses prepared
statements, i.e. everything SQLAlchemy sends); **database time** = the sum of the
timed statements (the driver's time per statement: network + server); **Python time**
= the request's wall time at the client minus the database time (routing, validation,
dependencies, ORM, decryption, serialisation, the ASGI transport).  Medians.

Only public pieces are used (``create_app``, ``make_user``, the HTTP API, SQL), so the
same script runs on an older tree (``PYTHONPATH`` first).  Results are merged into
bench/results/overhead.json under ``--label``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import platform
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "overhead.json"
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # tests.support; after PYTHONPATH, so an older src/ wins
DIMS = 384
MODEL = "all-MiniLM-L6-v2"


class _RandomEmbedder:
    """A random unit vector per text: the HNSW walk varies, no model runs."""

    model_name = MODEL
    dimensions = DIMS

    def __init__(self) -> None:
        self.rng = np.random.default_rng(11)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        out = []
        for _ in texts:
            v = self.rng.standard_normal(DIMS)
            out.append((v / np.linalg.norm(v)).tolist())
        return out


class Recorder:
    """Every statement (text, seconds) the process's asyncpg connections send while ``on``.

    asyncpg's ``add_query_logger`` sees only ``Connection.execute``/``fetch*``: not the
    executions of prepared statements (``PreparedStatement.fetch``, the path SQLAlchemy's
    asyncpg dialect takes for every ORM/Core statement), and it reports through
    ``call_soon``, after the statement.  So the three places a round trip starts are
    wrapped instead, and timed synchronously: ``Connection.execute`` without arguments
    (simple protocol: BEGIN, COMMIT), ``Connection._do_execute`` (``execute``/``fetch*``
    with arguments), ``PreparedStatement`` execution, and ``Connection.prepare`` (a
    Parse/Describe round trip, only when SQLAlchemy's statement cache misses).
    asyncpg's own type introspection is left out (run once per connection and type)."""

    def __init__(self) -> None:
        self.on = False
        self.sent: list[tuple[str, float]] = []

    def _note(self, sql: str, elapsed: float) -> None:
        if not self.on:
            return
        sql = " ".join(sql.split())
        if "typeinfo_tree" in sql or "set_config('jit'" in sql:
            return
        self.sent.append((sql, elapsed))

    def install(self) -> None:
        from asyncpg.connection import Connection
        from asyncpg.prepared_stmt import PreparedStatement

        recorder = self
        execute, do_execute, prepare = Connection.execute, Connection._do_execute, Connection.prepare
        stmt_execute = PreparedStatement._PreparedStatement__do_execute  # type: ignore[attr-defined]

        async def timed_execute(conn: Any, query: str, *args: Any, **kw: Any) -> Any:
            if args:  # goes on to _do_execute, which notes it
                return await execute(conn, query, *args, **kw)
            t0 = time.perf_counter()
            try:
                return await execute(conn, query, **kw)
            finally:
                recorder._note(query, time.perf_counter() - t0)

        async def timed_do_execute(conn: Any, query: str, *args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await do_execute(conn, query, *args, **kw)
            finally:
                recorder._note(query, time.perf_counter() - t0)

        async def timed_prepare(conn: Any, query: str, *args: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await prepare(conn, query, *args, **kw)
            finally:
                recorder._note("PREPARE " + query, time.perf_counter() - t0)

        async def timed_stmt_execute(stmt: Any, executor: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return await stmt_execute(stmt, executor)
            finally:
                recorder._note(stmt.get_query(), time.perf_counter() - t0)

        Connection.execute = timed_execute  # type: ignore[method-assign]
        Connection._do_execute = timed_do_execute  # type: ignore[method-assign]
        Connection.prepare = timed_prepare  # type: ignore[method-assign]
        PreparedStatement._PreparedStatement__do_execute = timed_stmt_execute  # type: ignore[attr-defined]


def _short(sql: str, width: int = 110) -> str:
    return sql if len(sql) <= width else sql[: width - 3] + "..."


async def _seed(dsn: str, user_id: uuid.UUID, chat_id: str, fernet: Fernet, chunks: int) -> None:
    import asyncpg

    rng = np.random.default_rng(5)
    conn = await asyncpg.connect(dsn)
    try:
        docs = [uuid.uuid4() for _ in range(chunks // 100 + 1)]
        await conn.executemany(
            "INSERT INTO documents (id, user_id, name, source, path_hash, status) "
            "VALUES ($1, $2, 'doc', 'file', $3, 'ready')",
            [(d, user_id, str(d)) for d in docs])
        vecs = rng.standard_normal((chunks, DIMS)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        rows = [(uuid.uuid4(), docs[i // 100], user_id, "c0", i % 100,
                 f"chunk {i} of the overhead benchmark", 8,
                 "[" + ",".join(f"{x:.6f}" for x in vecs[i]) + "]", MODEL, DIMS)
                for i in range(chunks)]
        await conn.executemany(
            "INSERT INTO document_chunks (id, document_id, user_id, collection, tags, "
            "chunk_index, content, token_count, embedding, embedding_model, embedding_dim, "
            "metadata) VALUES ($1, $2, $3, $4, '[]'::jsonb, $5, $6, $7, $8::text::vector, $9, "
            "$10, '{\"page\": 1}'::jsonb)", rows)
        sid = uuid.UUID(chat_id)
        count = 60
        await conn.executemany(
            "INSERT INTO chat_messages (id, session_id, user_id, seq, role, content, created_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, now() - make_interval(secs => $7))",
            [(uuid.uuid4(), sid, user_id, s, "user" if s % 2 else "assistant",
              fernet.encrypt(f"message {s}: {secrets.token_hex(40)}".encode()), float(count - s))
             for s in range(1, count + 1)])
        await conn.execute("UPDATE chat_sessions SET message_count = $2 WHERE id = $1", sid, count)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from tests.support.identity import make_user

    import roost
    from roost.app import create_app
    from roost.config import Settings
    from roost.db.embedded import start_embedded
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade
    from roost.keyfiles import KeyMaterial
    from roost.knowledge import search as search_mod

    print(f"roost from {roost.__file__}", flush=True)
    embedder = _RandomEmbedder()
    search_mod.get_embedder = lambda spec: embedder  # type: ignore[assignment,attr-defined]
    keys = KeyMaterial(
        secret_key=secrets.token_urlsafe(48), message_keys=(Fernet.generate_key().decode(),),
        secrets_key=base64.b64decode(base64.b64encode(secrets.token_bytes(32))),
        admin_token="rst_admin_" + secrets.token_urlsafe(24))
    out: dict[str, Any] = {"roost_file": roost.__file__, "requests": args.requests,
                           "chunks": args.chunks}
    with tempfile.TemporaryDirectory(prefix="roost-bench-overhead-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        try:
            ensure_database_exists(server, "bench_overhead")
            dsn = server.libpq_url("bench_overhead")
            settings = Settings(data_dir=tmp / "data", log_json=True, llm_local_model=False,
                                log_level="warning")
            database = create_database(settings, url=to_async_url(dsn))
            await upgrade(database.engine)
            recorder = Recorder()
            recorder.install()
            # Request logs at warning, as bench/chat runs `roost serve`.
            app = create_app(settings, database=database, keys=keys, configure_logs=True)
            user_id, headers = await make_user(database, username="overhead")
            transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50001))
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=transport, base_url="http://roost.test"
            ) as client:
                chat = await client.post("/api/v1/chat/sessions", headers=headers,
                                         json={"title": "overhead"})
                assert chat.status_code == 201, chat.text
                chat_id = chat.json()["id"]
                await _seed(dsn, user_id, chat_id, Fernet(keys.message_keys[0]), args.chunks)

                body = {"query": "what the benchmark asks", "k": 10, "mode": "vector"}

                async def search() -> httpx.Response:
                    return await client.post("/api/v1/knowledge/search", headers=headers,
                                             json=body)

                async def history() -> httpx.Response:
                    return await client.get(f"/api/v1/chat/sessions/{chat_id}/messages",
                                            params={"limit": 50}, headers=headers)

                def check_search(r: httpx.Response) -> None:
                    assert r.status_code == 200, r.text
                    assert len(r.json()["results"]) == 10, r.text

                def check_history(r: httpx.Response) -> None:
                    assert r.status_code == 200, r.text
                    assert len(r.json()["items"]) == 50, r.text

                cases = {"search": (search, check_search), "history": (history, check_history)}
                per: dict[str, dict[str, list[float]]] = {
                    name: {"round_trips": [], "db_ms": [], "python_ms": [], "wall_ms": []}
                    for name in cases}
                samples: dict[str, list[dict[str, Any]]] = {}
                for call, check in cases.values():
                    for _ in range(30):
                        check(await call())  # warm-up: plans, caches, the key's touch
                # Interleaved (one of each in turn), so a noisy machine hits both alike.
                for i in range(args.requests):
                    for name, (call, check) in cases.items():
                        recorder.sent = []
                        recorder.on = True
                        t0 = time.perf_counter()
                        resp = await call()
                        wall = time.perf_counter() - t0
                        recorder.on = False
                        check(resp)
                        db = sum(e for _, e in recorder.sent)
                        per[name]["round_trips"].append(len(recorder.sent))
                        per[name]["db_ms"].append(db * 1000)
                        per[name]["python_ms"].append((wall - db) * 1000)
                        per[name]["wall_ms"].append(wall * 1000)
                        if i == args.requests // 2:
                            samples[name] = [{"sql": _short(s), "ms": round(e * 1000, 3)}
                                             for s, e in recorder.sent]
            await database.dispose()
        finally:
            server.stop()
    for name, values in per.items():
        out[name] = {
            "round_trips": statistics.median(values["round_trips"]),
            "round_trips_max": max(values["round_trips"]),
            "db_ms": round(statistics.median(values["db_ms"]), 3),
            "python_ms": round(statistics.median(values["python_ms"]), 3),
            "wall_ms": round(statistics.median(values["wall_ms"]), 3),
            "wall_p90_ms": round(statistics.quantiles(values["wall_ms"], n=10)[8], 3),
            "statements": samples.get(name, []),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--chunks", type=int, default=3000)
    parser.add_argument("--label", default="after", help="key in overhead.json (before/after)")
    args = parser.parse_args()
    result = asyncio.run(run(args))
    print(f"\n[{args.label}] {'path':<10}{'round trips':>12}{'db ms':>9}{'python ms':>11}"
          f"{'wall ms':>9}{'wall p90':>10}")
    for name in ("search", "history"):
        r = result[name]
        print(f"[{args.label}] {name:<10}{r['round_trips']:>12g}{r['db_ms']:>9.2f}"
              f"{r['python_ms']:>11.2f}{r['wall_ms']:>9.2f}{r['wall_p90_ms']:>10.2f}")
        for s in r["statements"]:
            print(f"      {s['ms']:>7.3f} ms  {s['sql']}")
    existing: dict[str, Any] = {}
    if RESULTS.exists():
        existing = json.loads(RESULTS.read_text())
    existing.setdefault("benchmark", "overhead")
    existing["machine"] = {"python": platform.python_version(), "platform": platform.platform()}
    existing.setdefault("runs", {})[args.label] = result
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(existing, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)} [{args.label}]")



# --- shared by the benchmarks that import this module (bench/agents, bench/workflows) ---


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def statement_kind(sql: str) -> str:
    """A statement's kind for a profile table: the verb and its table."""
    words = sql.replace('"', "").split()
    head = words[0].upper() if words else "?"
    if head in ("BEGIN", "COMMIT", "ROLLBACK"):
        return head
    if head == "PREPARE":
        return "PREPARE (statement cache miss)"
    if head == "INSERT" and len(words) > 2:
        return f"INSERT {words[2]}"
    if head == "UPDATE" and len(words) > 1:
        return f"UPDATE {words[1]}"
    if head == "DELETE" and len(words) > 2:
        return f"DELETE {words[2]}"
    if "pg_notify" in sql:
        return "SELECT pg_notify"
    if "set_config" in sql:
        return "SELECT set_config (RLS scope)"
    if head == "SELECT" and " FROM " in sql.upper():
        after = sql.upper().split(" FROM ", 1)[1].split()
        return f"SELECT ... FROM {after[0].lower() if after else '?'}"
    return head


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


if __name__ == "__main__":
    main()
