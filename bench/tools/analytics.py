"""Tool analytics benchmark: an indexed query against a materialised view, on a million
``tool_runs``.

    .venv/bin/python bench/tools/analytics.py [--runs 1000000] [--repeat 10]

One embedded PostgreSQL (temporary directory), migrated to head.  100 users, 50 global
tools and 2 tools of each user's own; ``--runs`` runs spread over the last 30 days in
time order (as they are appended), users and tools drawn with skew (the busiest user
has about 10 % of the runs), 93 % successes, 5 % errors, 2 % timeouts, log-normal
durations (median 150 ms).  Then ``VACUUM ANALYZE`` (autovacuum's steady state).

Measured, each query in a transaction scoped as a request's is (``apply_principal``:
row-level security on), p50/p99 over ``--repeat`` rounds:

- ``roost.tools.analytics.tool_report`` (all tools, by calls) for the busiest user and
  for an administrator, over 24 hours, 7 days and 31 days, and ``tool_detail`` of the
  most called tool over 7 days: with the indexes of migrations up to 0520, with those
  of migration 0530, and with 0530's plus a ``(started_at)`` covering index for
  administrators (which index served is read from ``pg_stat_user_indexes``);
- a materialised view of the same numbers for fixed windows (24h, 7d, 31d; per user
  and tool, and per tool over all users: GROUPING SETS), its ``REFRESH ... CONCURRENTLY``
  time and size, and reading one page of it.

Writes bench/results/tools_analytics.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results" / "tools_analytics.json"
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))  # tests.support

USERS = 100
GLOBAL_TOOLS = 50
OWN_TOOLS = 2
DAYS = 30
ERRORS = ["tool 'x' reported an error: upstream returned 500",
          "tool 'x' reported an error: rate limited", "the result is over the output cap"]
# The indexes migration 0530 replaces, and its own (kept in step with it).
BEFORE_0530 = {
    "ix_tool_runs_user_started":
        "CREATE INDEX ix_tool_runs_user_started ON tool_runs (user_id, started_at DESC)",
    "ix_tool_runs_tool_id": "CREATE INDEX ix_tool_runs_tool_id ON tool_runs (tool_id)",
}
MIGRATION_0530 = {
    "ix_tool_runs_user_stats":
        "CREATE INDEX ix_tool_runs_user_stats ON tool_runs (user_id, started_at) "
        "INCLUDE (tool_id, tool_name, status, duration_ms)",
    "ix_tool_runs_tool_stats":
        "CREATE INDEX ix_tool_runs_tool_stats ON tool_runs (tool_id, started_at) "
        "INCLUDE (user_id, status, duration_ms)",
}
# Measured and left out: what it saves administrators is not worth its size.
ADMIN_EXTRA = {
    "ix_tool_runs_started_cover":
        "CREATE INDEX ix_tool_runs_started_cover ON tool_runs (started_at) "
        "INCLUDE (user_id, tool_id, tool_name, status, duration_ms)",
}
WINDOWS = {"24h": timedelta(hours=24), "7d": timedelta(days=7), "31d": timedelta(days=31)}
MATVIEW = """
CREATE MATERIALIZED VIEW bench_tool_stats AS
SELECT w.label AS time_window, r.user_id, grouping(r.user_id) = 1 AS all_users, r.tool_id,
       r.tool_name, count(*) AS calls,
       count(*) FILTER (WHERE r.status = 'success') AS successes,
       count(*) FILTER (WHERE r.status = 'error') AS errors,
       count(*) FILTER (WHERE r.status = 'timeout') AS timeouts,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY r.duration_ms) AS p50_ms,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY r.duration_ms) AS p95_ms,
       max(r.started_at) AS last_called_at
FROM tool_runs r
JOIN (VALUES ('24h', interval '24 hours'), ('7d', interval '7 days'),
             ('31d', interval '31 days')) AS w(label, span)
  ON r.started_at >= now() - w.span
GROUP BY GROUPING SETS ((w.label, r.user_id, r.tool_id, r.tool_name),
                        (w.label, r.tool_id, r.tool_name))
"""
MATVIEW_INDEX = ("CREATE UNIQUE INDEX bench_tool_stats_key ON bench_tool_stats "
                 "(time_window, all_users, user_id, tool_id, tool_name) NULLS NOT DISTINCT")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 2), "p99": round(pct(values, 0.99), 2)}


async def main(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg
    from sqlalchemy import text
    from tests.support.identity import make_user

    from roost.config import Settings
    from roost.db.embedded import start_embedded
    from roost.db.engine import create_database, ensure_database_exists, to_async_url
    from roost.db.migrate import upgrade
    from roost.identity.tenancy import apply_principal
    from roost.principal import Principal
    from roost.tools import analytics

    rng = np.random.default_rng(7)
    with tempfile.TemporaryDirectory(prefix="roost-bench-analytics-") as tmp_dir:
        server = start_embedded(Path(tmp_dir) / "pg", delete_on_exit=True)
        ensure_database_exists(server, "bench_analytics")
        url = server.libpq_url("bench_analytics")
        db = create_database(Settings(), url=to_async_url(url))
        try:
            await upgrade(db.engine)
            users = [(await make_user(db, username=f"user{i}"))[0] for i in range(USERS)]
            tools: list[tuple[uuid.UUID, str, uuid.UUID | None]] = []
            async with db.transaction() as session:
                for owner in [None, *users]:
                    sid = uuid.uuid4()
                    await session.execute(text(
                        "INSERT INTO mcp_servers (id, user_id, name, transport, url) VALUES "
                        "(:id, :uid, :name, 'streamable_http', 'https://mcp.example.com/mcp')"
                    ), {"id": sid, "uid": owner, "name": f"s{owner}"})
                    count = GLOBAL_TOOLS if owner is None else OWN_TOOLS
                    for i in range(count):
                        tid, name = uuid.uuid4(), f"{'global' if owner is None else 'own'}_tool_{i}"
                        tools.append((tid, name, owner))
                        await session.execute(text(
                            "INSERT INTO tools (id, user_id, mcp_server_id, kind, name) "
                            "VALUES (:id, :uid, :sid, 'mcp', :name)"
                        ), {"id": tid, "uid": owner, "sid": sid, "name": name})
            global_tools = [t for t in tools if t[2] is None]
            own = {u: [t for t in tools if t[2] == u] for u in users}

            # The runs: in time order, skewed users and tools (Zipf-like weights).
            n = args.runs
            now = datetime.now(UTC)
            offsets = np.sort(rng.uniform(0, DAYS * 86400, n))[::-1]
            user_w = 1 / np.arange(1, USERS + 1) ** 0.8
            user_idx = rng.choice(USERS, n, p=user_w / user_w.sum())
            tool_w = 1 / np.arange(1, GLOBAL_TOOLS + 1) ** 1.0
            global_idx = rng.choice(GLOBAL_TOOLS, n, p=tool_w / tool_w.sum())
            use_own = rng.random(n) < 0.2
            own_idx = rng.integers(0, OWN_TOOLS, n)
            status_draw = rng.random(n)
            durations = np.minimum(rng.lognormal(np.log(150), 1.0, n), 55_000).astype(int)
            records = []
            for i in range(n):
                user = users[user_idx[i]]
                tool = own[user][own_idx[i]] if use_own[i] else global_tools[global_idx[i]]
                status = ("success" if status_draw[i] < 0.93 else
                          "error" if status_draw[i] < 0.98 else "timeout")
                ms = 60_000 if status == "timeout" else int(durations[i])
                started = now - timedelta(seconds=float(offsets[i]))
                finished = started + timedelta(milliseconds=ms)
                records.append((uuid.uuid4(), tool[0], user, f"run-{i}", tool[1], status, "{}",
                                ERRORS[i % 3] if status == "error" else None, started,
                                finished, ms, finished))
            t0 = time.perf_counter()
            conn = await asyncpg.connect(url)
            try:
                await conn.copy_records_to_table(
                    "tool_runs", records=records,
                    columns=["id", "tool_id", "user_id", "trace_id", "tool_name", "status",
                             "input", "error", "started_at", "finished_at", "duration_ms",
                             "created_at"])
                await conn.execute("VACUUM ANALYZE tool_runs")
                load_s = time.perf_counter() - t0
                print(f"loaded {n} runs in {load_s:.1f} s", flush=True)
                table_mb = await conn.fetchval(
                    "SELECT pg_total_relation_size('tool_runs') / 1048576.0")
            finally:
                await conn.close()
            del records

            counts = np.bincount(user_idx, minlength=USERS)
            busiest = users[int(counts.argmax())]
            top_tool = global_tools[int(np.bincount(global_idx).argmax())][0]
            user = Principal(user_id=busiest, is_admin=False, kind="api_key")
            admin = Principal(user_id=None, is_admin=True, kind="operator")

            async def timed(actor: Principal, fn: Callable[[Any], Awaitable[Any]]) -> list[float]:
                out = []
                for _ in range(args.repeat):
                    async with db.transaction() as session:
                        await apply_principal(session, actor)
                        t = time.perf_counter()
                        await fn(session)
                        out.append((time.perf_counter() - t) * 1000)
                        # This backend's index counters reach pg_stat_user_indexes at commit.
                        await session.execute(text("SELECT pg_stat_force_next_flush()"))
                return out

            async def index_scans() -> dict[str, int]:
                await asyncio.sleep(0.5)  # the last transaction's counters (flushed at commit)
                async with db.transaction() as session:
                    rows = await session.execute(text(
                        "SELECT indexrelname, idx_scan FROM pg_stat_user_indexes "
                        "WHERE relname = 'tool_runs'"))
                    return {name: int(scans) for name, scans in rows}

            async def indexed(label: str) -> dict[str, Any]:
                out: dict[str, Any] = {}
                for who, actor in (("user", user), ("admin", admin)):
                    for wname, span in WINDOWS.items():
                        async def report(session: Any, span: timedelta = span,
                                         actor: Principal = actor) -> Any:
                            window = analytics.Window(since=datetime.now(UTC) - span,
                                                      until=datetime.now(UTC))
                            return await analytics.tool_report(session, actor, window)
                        before = await index_scans()
                        ms = await timed(actor, report)
                        after = await index_scans()
                        used = sorted(k for k, v in after.items() if v > before.get(k, 0))
                        out[f"{who}_list_{wname}"] = {**summary(ms), "indexes": used}
                    async def detail(session: Any, actor: Principal = actor) -> Any:
                        window = analytics.Window(since=datetime.now(UTC) - WINDOWS["7d"],
                                                  until=datetime.now(UTC))
                        return await analytics.tool_detail(session, actor, top_tool, window)
                    before = await index_scans()
                    ms = await timed(actor, detail)
                    after = await index_scans()
                    used = sorted(k for k, v in after.items() if v > before.get(k, 0))
                    out[f"{who}_detail_7d"] = {**summary(ms), "indexes": used}
                print(label, json.dumps({k: (v["p50"], v["p99"]) for k, v in out.items()}),
                      flush=True)
                return out

            async def ddl(*statements: str) -> None:
                async with db.transaction() as session:
                    for statement in statements:
                        await session.execute(text(statement))
                    await session.execute(text("ANALYZE tool_runs"))

            async def index_mb(names: list[str]) -> float:
                async with db.transaction() as session:
                    return round(float(await session.scalar(text(
                        "SELECT sum(pg_relation_size(c.oid)) / 1048576.0 FROM pg_class c "
                        "WHERE c.relname = ANY(:names)"), {"names": names}) or 0), 1)

            # Head has 0530's indexes: back to 0520's first.
            await ddl(*(f"DROP INDEX IF EXISTS {name}" for name in MIGRATION_0530),
                      *BEFORE_0530.values())
            sizes = {"before_0530_mb": await index_mb(list(BEFORE_0530))}
            before_indexes = await indexed("indexes up to 0520")
            t0 = time.perf_counter()
            await ddl(*MIGRATION_0530.values(), *(f"DROP INDEX {name}" for name in BEFORE_0530))
            index_build_s = time.perf_counter() - t0
            sizes["migration_0530_mb"] = await index_mb(list(MIGRATION_0530))
            with_indexes = await indexed("indexes of 0530")
            await ddl(*ADMIN_EXTRA.values())
            sizes["admin_extra_mb"] = await index_mb(list(ADMIN_EXTRA))
            with_extra = await indexed("0530 and (started_at) INCLUDE (...)")
            await ddl(*(f"DROP INDEX {name}" for name in ADMIN_EXTRA))

            # The materialised view: refresh cost and reading one page of it.
            await ddl(MATVIEW, MATVIEW_INDEX, "GRANT SELECT ON bench_tool_stats TO roost_app")
            refresh: list[float] = []
            for _ in range(3):
                async with db.transaction() as session:
                    t = time.perf_counter()
                    await session.execute(text(
                        "REFRESH MATERIALIZED VIEW CONCURRENTLY bench_tool_stats"))
                refresh.append((time.perf_counter() - t) * 1000)
            async with db.transaction() as session:
                view_rows = int(await session.scalar(text("SELECT count(*) FROM bench_tool_stats")) or 0)
                view_mb = float(await session.scalar(text(
                    "SELECT pg_total_relation_size('bench_tool_stats') / 1048576.0")) or 0)
            matview: dict[str, Any] = {
                "refresh_ms": summary(refresh), "rows": view_rows, "size_mb": round(view_mb, 1),
            }
            for who, actor in (("user", user), ("admin", admin)):
                for wname in WINDOWS:
                    # No row-level security on a view: the user filter is the only wall.
                    where = "user_id = :uid AND NOT all_users" if who == "user" else "all_users"

                    async def page(session: Any, where: str = where, wname: str = wname) -> Any:
                        return (await session.execute(text(
                            f"SELECT * FROM bench_tool_stats WHERE time_window = :w AND {where} "
                            "ORDER BY calls DESC, tool_name LIMIT 100"),
                            {"w": wname, "uid": busiest})).all()
                    matview[f"{who}_list_{wname}"] = summary(await timed(actor, page))
            print("matview", json.dumps(matview), flush=True)
        finally:
            await db.dispose()
            server.stop()
    return {
        "runs": n, "users": USERS, "tools": len(tools), "days": DAYS,
        "busiest_user_runs": int(counts.max()), "load_s": round(load_s, 1),
        "tool_runs_mb": round(float(table_mb), 1),
        "index_sizes": sizes, "migration_0530_build_s": round(index_build_s, 1),
        "indexed_before": before_indexes, "indexed_with_0530": with_indexes,
        "indexed_with_0530_and_admin_extra": with_extra,
        "materialised_view": matview,
        "repeat": args.repeat, "python": sys.version.split()[0], "machine": platform.machine(),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--repeat", type=int, default=10)
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
