"""Task queue benchmark: Roost vs pgqueuer vs procrastinate on one embedded PostgreSQL.

    .venv/bin/python bench/queue/run.py [--jobs 10000] [--latency-jobs 1000] [--rate 200]

For each system and for 1 and 4 worker processes (each running CONCURRENCY jobs at once):

* throughput: with the workers idle and listening, N no-op jobs are enqueued in ONE
  transaction (each system's bulk enqueue); the clock runs from that commit until the
  system reports every job done (polled every 20 ms);
* latency: with the workers idle, jobs are enqueued one per transaction at a steady rate
  (well below every system's throughput) with each system's ordinary enqueue call; a job
  records ``time.time()`` at start minus the producer's ``time.time()`` just before the
  enqueue call.  That total is split into the enqueue call itself (until it returned,
  i.e. committed) and the pickup (from then until the handler started).

Every system gets its own database on the same server, the same worker count and
concurrency, and runs in the same invocation.  Prints a table and writes
bench/results/queue.json.  Needs the ``bench`` extra (pgqueuer, procrastinate).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import asyncpg

HERE = Path(__file__).resolve().parent
RESULTS = HERE.parent / "results" / "queue.json"
PY = sys.executable
ROOST = str(Path(PY).with_name("roost"))


@dataclass
class Result:
    system: str
    workers: int
    concurrency: int
    jobs: int
    bulk_enqueue_s: float
    drain_s: float
    throughput_jobs_s: float
    latency_jobs: int
    latency_p50_ms: float
    latency_p99_ms: float
    latency_max_ms: float
    enqueue_call_p50_ms: float
    enqueue_call_p99_ms: float
    pickup_p50_ms: float
    pickup_p99_ms: float


# --- the three systems ----------------------------------------------------------------


class Roost:
    name = "roost"
    ready_marker = "worker_started"

    def __init__(self, dsn: str, data_dir: Path, *, pre_ping: bool = False) -> None:
        self.dsn = dsn
        self.data_dir = data_dir
        # roost-preping: the producer's engine with SQLAlchemy's pool pre-ping (which,
        # with asyncpg, is BEGIN; SELECT 1; ROLLBACK before every transaction; Roost's
        # engine used it until 2026-11-25), to show what that setting costs an enqueue.
        # Workers are identical.
        self.pre_ping = pre_ping
        if pre_ping:
            self.name = "roost-preping"

    async def setup(self) -> None:
        from roost.config import Settings
        from roost.db.engine import create_database, to_async_url
        from roost.db.migrate import upgrade

        sys.path.insert(0, str(HERE))
        import roost_handlers  # noqa: F401  (registers bench.noop in this process)

        self.db = create_database(Settings(), url=to_async_url(self.dsn))
        await upgrade(self.db.engine)
        if self.pre_ping:
            from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

            from roost.db.engine import engine_options

            await self.db.dispose()
            options = {**engine_options(Settings()), "pool_pre_ping": True}
            self.db.engine = create_async_engine(self.db.url, **options)
            self.db.sessionmaker = async_sessionmaker(self.db.engine, expire_on_commit=False)

    async def close(self) -> None:
        await self.db.dispose()

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE background_tasks, dead_letter_queue, task_schedules")

    async def enqueue_bulk(self, n: int) -> None:
        from roost.tasks.service import enqueue_many

        async with self.db.transaction() as session:
            await enqueue_many(session, "bench.noop", [{}] * n)

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        from roost.tasks.service import enqueue

        async with self.db.transaction() as session:
            await enqueue(session, "bench.noop", payload)

    async def remaining(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(
            "SELECT count(*) FROM background_tasks WHERE status <> 'completed'"))

    def worker_command(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        env = {"ROOST_DATABASE_URL": self.dsn, "ROOST_DATA_DIR": str(self.data_dir),
               "ROOST_LOG_LEVEL": "info"}
        return ([ROOST, "worker", "--import", "roost_handlers", "--concurrency",
                 str(concurrency), "--no-schedules"], env)


class PgQueuer:
    name = "pgqueuer"
    ready_marker = "ready"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def setup(self) -> None:
        from pgqueuer.db import AsyncpgDriver
        from pgqueuer.queries import Queries

        self.conn = await asyncpg.connect(self.dsn)
        self.queries = Queries(AsyncpgDriver(self.conn))
        await self.queries.install()

    async def close(self) -> None:
        await self.conn.close()

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")

    async def enqueue_bulk(self, n: int) -> None:
        await self.queries.enqueue(["noop"] * n, [None] * n, [0] * n)  # one statement

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        await self.queries.enqueue("noop", json.dumps(payload).encode())

    async def remaining(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval("SELECT count(*) FROM pgqueuer"))

    def worker_command(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        return [PY, str(HERE / "peer_worker.py"), "pgqueuer", self.dsn, str(concurrency)], {}


class Procrastinate:
    name = "procrastinate"
    ready_marker = "ready"

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def setup(self) -> None:
        import procrastinate

        self.app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=self.dsn))

        @self.app.task(name="noop")
        async def noop(**payload: Any) -> None:
            return None

        self.task = noop
        await self.app.open_async()
        await self.app.schema_manager.apply_schema_async()

    async def close(self) -> None:
        await self.app.close_async()

    async def reset(self, conn: asyncpg.Connection) -> None:
        await conn.execute("TRUNCATE procrastinate_jobs CASCADE")

    async def enqueue_bulk(self, n: int) -> None:
        await self.task.batch_defer_async(*([{}] * n))  # one statement

    async def enqueue_one(self, payload: dict[str, Any]) -> None:
        await self.task.defer_async(**payload)

    async def remaining(self, conn: asyncpg.Connection) -> int:
        return int(await conn.fetchval(
            "SELECT count(*) FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"))

    def worker_command(self, concurrency: int) -> tuple[list[str], dict[str, str]]:
        return ([PY, str(HERE / "peer_worker.py"), "procrastinate", self.dsn,
                 str(concurrency)], {})


System = Roost | PgQueuer | Procrastinate


# --- running workers ------------------------------------------------------------------


class Workers:
    def __init__(self, system: System, count: int, concurrency: int, tmp: Path) -> None:
        self.procs: list[tuple[subprocess.Popen[bytes], Path, Path]] = []
        cmd, extra_env = system.worker_command(concurrency)
        for i in range(count):
            log = tmp / f"{system.name}-{count}-{i}.log"
            lat = tmp / f"{system.name}-{count}-{i}.latency.json"
            env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
            env.update(extra_env)
            env["BENCH_LATENCY_OUT"] = str(lat)
            env["PYTHONPATH"] = str(HERE)
            with log.open("wb") as out:
                proc = subprocess.Popen(cmd, cwd=HERE, env=env, stdout=out,
                                        stderr=subprocess.STDOUT)
            self.procs.append((proc, log, lat))
        self.marker = system.ready_marker

    async def wait_ready(self, within: float = 60) -> None:
        deadline = time.monotonic() + within
        for proc, log, _ in self.procs:
            while self.marker not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"worker did not start:\n{log.read_text()[-3000:]}")
                await asyncio.sleep(0.05)

    async def stop(self) -> list[list[float]]:
        for proc, _, _ in self.procs:
            proc.terminate()
        samples: list[list[float]] = []
        for proc, log, lat in self.procs:
            try:
                await asyncio.to_thread(proc.wait, 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                print(f"warning: {log.name} had to be killed", file=sys.stderr)
            if lat.exists():
                samples += json.loads(lat.read_text())
        return samples


async def wait_drained(system: System, conn: asyncpg.Connection, within: float) -> None:
    deadline = time.monotonic() + within
    while await system.remaining(conn) > 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{system.name}: jobs not done after {within} s")
        await asyncio.sleep(0.02)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


async def measure(system: System, conn: asyncpg.Connection, workers: int, concurrency: int,
                  jobs: int, latency_jobs: int, rate: float, tmp: Path) -> Result:
    await system.reset(conn)
    await conn.execute("VACUUM ANALYZE")
    # Start from a clean slate: no checkpoint or autovacuum left over from the previous
    # system's run should land in this one's measurement.
    await conn.execute("CHECKPOINT")
    pool = Workers(system, workers, concurrency, tmp)
    try:
        await pool.wait_ready()
        await asyncio.sleep(1.0)  # let every worker settle into waiting for work

        started = time.perf_counter()
        await system.enqueue_bulk(jobs)
        committed = time.perf_counter()
        await wait_drained(system, conn, within=600)
        drained = time.perf_counter()

        await asyncio.sleep(0.5)
        returned: dict[int, float] = {}
        begin = time.perf_counter()
        for i in range(latency_jobs):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            await system.enqueue_one({"t": time.time(), "i": i})
            returned[i] = time.time()
        await wait_drained(system, conn, within=120)
    finally:
        samples = await pool.stop()
    await system.reset(conn)  # clean up after ourselves before the next system runs
    await conn.execute("VACUUM ANALYZE")
    if len(samples) != latency_jobs:
        print(f"warning: {system.name} recorded {len(samples)} of {latency_jobs} latencies",
              file=sys.stderr)
    total = [(start - t) * 1000 for _, t, start in samples] or [float("nan")]
    call = [(returned[int(i)] - t) * 1000 for i, t, _ in samples] or [float("nan")]
    pickup = [(start - returned[int(i)]) * 1000 for i, _, start in samples] or [float("nan")]
    return Result(
        system=system.name, workers=workers, concurrency=concurrency, jobs=jobs,
        bulk_enqueue_s=round(committed - started, 3), drain_s=round(drained - committed, 3),
        throughput_jobs_s=round(jobs / (drained - committed), 1), latency_jobs=len(samples),
        latency_p50_ms=round(percentile(total, 0.50), 2),
        latency_p99_ms=round(percentile(total, 0.99), 2), latency_max_ms=round(max(total), 2),
        enqueue_call_p50_ms=round(percentile(call, 0.50), 2),
        enqueue_call_p99_ms=round(percentile(call, 0.99), 2),
        pickup_p50_ms=round(percentile(pickup, 0.50), 2),
        pickup_p99_ms=round(percentile(pickup, 0.99), 2),
    )


def median_result(series: list[Result]) -> Result:
    first = asdict(series[0])
    merged: dict[str, Any] = {}
    for key, value in first.items():
        if isinstance(value, float):
            merged[key] = round(statistics.median(asdict(r)[key] for r in series), 2)
        else:
            merged[key] = value
    return Result(**merged)


def table(results: list[Result]) -> str:
    lines = [
        "| system | worker processes | throughput (jobs/s) | latency p50 (ms) | "
        "latency p99 (ms) | enqueue call p50 / p99 (ms) | pickup p50 / p99 (ms) | "
        "bulk enqueue of N (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r.system} | {r.workers} | {r.throughput_jobs_s:,.0f} | {r.latency_p50_ms:.1f} | "
            f"{r.latency_p99_ms:.1f} | {r.enqueue_call_p50_ms:.1f} / {r.enqueue_call_p99_ms:.1f} "
            f"| {r.pickup_p50_ms:.1f} / {r.pickup_p99_ms:.1f} | {r.bulk_enqueue_s:.2f} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    from roost.db.embedded import start_embedded

    with tempfile.TemporaryDirectory(prefix="roost-bench-queue-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        try:
            admin = await asyncpg.connect(server.libpq_url("postgres"))
            version = await admin.fetchval("SHOW server_version")
            for name in ("bench_roost", "bench_roost_preping", "bench_pgqueuer",
                         "bench_procrastinate"):
                await admin.execute(f'CREATE DATABASE "{name}"')
            await admin.close()
            systems: list[System] = [
                Roost(server.libpq_url("bench_roost"), tmp / "roost-data"),
                Roost(server.libpq_url("bench_roost_preping"), tmp / "roost-data2",
                      pre_ping=False),
                PgQueuer(server.libpq_url("bench_pgqueuer")),
                Procrastinate(server.libpq_url("bench_procrastinate")),
            ]
            wanted = [s for s in systems if s.name in args.systems]
            results: list[Result] = []
            for system in wanted:
                await system.setup()
            runs: dict[tuple[str, int], list[Result]] = {}
            try:
                # Repeats go round every system in turn, so a burst of load from elsewhere
                # on the machine hits them alike rather than one system's whole series.
                for round_ in range(args.repeat):
                    # Rotate the order each round, so no system always follows the same one.
                    order = wanted[round_ % len(wanted):] + wanted[:round_ % len(wanted)]
                    for workers in args.workers:
                        for system in order:
                            conn = await asyncpg.connect(system.dsn)
                            try:
                                r = await measure(system, conn, workers, args.concurrency,
                                                  args.jobs, args.latency_jobs, args.rate, tmp)
                            finally:
                                await conn.close()
                            runs.setdefault((system.name, workers), []).append(r)
                            print(f"{r.system:>13} x{workers}: {r.throughput_jobs_s:>8,.0f}"
                                  f" jobs/s, p50 {r.latency_p50_ms:.1f} ms,"
                                  f" p99 {r.latency_p99_ms:.1f} ms", flush=True)
            finally:
                for system in wanted:
                    await system.close()
        finally:
            server.stop()
    # Each figure is the median of its repeats (all runs go to the JSON too).
    results = [median_result(series) for series in runs.values()]
    results.sort(key=lambda r: (r.workers, r.system))
    print()
    print(table(results))
    import pgqueuer
    import procrastinate

    import roost

    meta = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "postgresql": version, "python": platform.python_version(),
        "cpus": os.cpu_count(), "machine": platform.machine(),
        "versions": {"roost": roost.__version__, "pgqueuer": pgqueuer.__version__,
                     "procrastinate": _version("procrastinate", procrastinate)},
        "params": {"jobs": args.jobs, "latency_jobs": args.latency_jobs, "rate": args.rate,
                   "concurrency": args.concurrency, "repeat": args.repeat},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "meta": meta, "results": [asdict(r) for r in results],
        "all_runs": [asdict(r) for series in runs.values() for r in series],
    }, indent=2) + "\n")
    print(f"\nwrote {RESULTS.relative_to(Path.cwd()) if RESULTS.is_relative_to(Path.cwd()) else RESULTS}")


def _version(name: str, module: Any) -> str:
    from importlib.metadata import version

    return getattr(module, "__version__", None) or version(name)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--rate", type=float, default=50.0, help="latency phase, jobs/s")
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 4])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--systems", nargs="+",
                        default=["roost", "roost-preping", "pgqueuer", "procrastinate"])
    asyncio.run(main(parser.parse_args()))
