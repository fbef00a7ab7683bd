"""Workflow-engine benchmark: Roost's durable workflow runs beside LangGraph + its Postgres checkpointer.

    .venv/bin/python bench/workflows/run.py [--runs 30] [--warmup 3] [--rounds 3]
                                            [--concurrency 1 4] [--worker-concurrency 8 2]
                                            [--systems roost-inline roost-queue langgraph-sync
                                             langgraph-async] [--profile-runs 3]

The same 100-node graph, every node a no-op, in one process and one run, on one embedded
PostgreSQL (a database each):

    start -> parallel -> 10 branches x 9 nodes -> join (all) -> 6-node tail chain -> end

(1 + 1 + 90 + 1 + 6 + 1 = 100 nodes).

* **roost-inline**: an XYFlow graph whose 96 no-op nodes (the branches and the tail) are
  ``template`` nodes (rendering the constant ``ok``): pure nodes the engine computes in
  the transaction that finished their predecessor, so the whole run (100 ``run_steps``
  rows, the scheduler's state, the audit records) commits in the transaction of
  ``roost.workflows.runs.start_run``.
* **roost-queue-wN**: the same graph with ``tool`` nodes calling the built-in
  ``current_time`` (Roost has no no-op calling node; this is the cheapest real call, and
  each call also writes a ``tool_runs`` row and an audit record: an upper bound on the
  engine's own overhead).  They execute as ``workflows.node`` queue jobs on an in-process
  ``roost.tasks.worker.Worker`` (queue ``agents``, N job slots); the run is over when its
  ``end:`` notification arrives on ``roost_runs`` (LISTEN).
* **langgraph-sync / langgraph-async**: a ``StateGraph`` of the same topology (START ->
  start -> fan -> 10 branches of 9 -> ``add_edge([10 last nodes], "join")`` -> tail of 6 ->
  end -> END), each node an ``async`` function returning ``{"count": 1}`` into an
  ``operator.add`` reducer, compiled with ``AsyncPostgresSaver`` on an
  ``AsyncConnectionPool``, one thread per run; ``durability="sync"`` (each superstep's
  checkpoint written before the next: Roost's guarantee) and ``"async"`` (its default).

Roost's runs are started by ``runs.start_run`` in a transaction scoped to the user
(``apply_principal``), as the API does.  Runs go through ``C`` slots (each of
``--concurrency``), each slot one run at a time.  **Run wall**: from before the start
(Roost: the transaction's begin; LangGraph: ``ainvoke``) to the end (Roost: the commit
for inline runs, the ``end:`` notification for queued ones; LangGraph: ``ainvoke``
returning).  The database's own ``runs.completed_at - runs.created_at`` is kept too.
**Overhead per node** = run wall / 100 (every node is a no-op); p50/p99 over the runs.
**Nodes/s** = 100 x runs / the phase's wall time.  **CPU ms per node**: user + system
CPU of this process (driver, engine, in-process worker) and of the PostgreSQL server
(postmaster and backends) during the phase, over the nodes.  **DB bytes per run**: the
sum of ``pg_total_relation_size`` over the system's database, after - before the phase,
after a ``VACUUM FULL`` (live) and as written (allocated); **write transactions per
run**: transaction ids assigned during the phase.

Every run is checked: Roost's ``completed`` with 100 ``completed`` steps (SQL);
LangGraph's final state ``count == 100``.  ``--profile-runs`` more sequential runs
with every statement counted (Roost: asyncpg, ``bench/overhead/breakdown.py``'s
``Recorder``; LangGraph: psycopg cursor calls).  Prints a table and writes
bench/results/workflows.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import operator
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypedDict

import asyncpg

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results" / "workflows.json"
for extra in (str(ROOT), str(ROOT / "bench" / "overhead")):
    if extra not in sys.path:
        sys.path.append(extra)  # tests.support (make_user), breakdown.Recorder

from breakdown import pct, statement_kind, write_json  # noqa: E402 - bench/overhead, on sys.path above

BRANCHES = 10
DEPTH = 9
TAIL = 6
NODES = 1 + 1 + BRANCHES * DEPTH + 1 + TAIL + 1  # start, parallel, branches, join, tail, end
assert NODES == 100
ORDER = ["roost-inline", "roost-queue", "langgraph-sync", "langgraph-async"]


# --- the graph ---------------------------------------------------------------------------


def branch_id(branch: int, depth: int) -> str:
    return f"b{branch}_{depth}"


def tail_id(i: int) -> str:
    return f"t{i}"


def roost_graph(kind: str) -> dict[str, Any]:
    """The 100-node graph as an XYFlow canvas saves it; the no-op nodes are ``template``
    nodes (``kind="template"``) or ``tool`` nodes calling ``current_time``."""

    def noop(node_id: str, x: float, y: float) -> dict[str, Any]:
        data: dict[str, Any] = ({"template": "ok"} if kind == "template"
                                else {"tool": "current_time", "arguments": {"timezone": "UTC"}})
        return {"id": node_id, "type": kind, "position": {"x": x, "y": y}, "data": data}

    def plain(node_id: str, type_: str, x: float, y: float, **data: Any) -> dict[str, Any]:
        return {"id": node_id, "type": type_, "position": {"x": x, "y": y}, "data": data}

    nodes = [plain("start", "start", 0, 0), plain("fan", "parallel", 150, 0)]
    edges: list[dict[str, Any]] = [{"id": "e-start-fan", "source": "start", "target": "fan"}]
    for b in range(BRANCHES):
        previous = "fan"
        for d in range(DEPTH):
            node_id = branch_id(b, d)
            nodes.append(noop(node_id, 300 + 150 * d, 100 * (b - BRANCHES / 2)))
            edges.append({"id": f"e-{previous}-{node_id}", "source": previous, "target": node_id})
            previous = node_id
        edges.append({"id": f"e-{previous}-join", "source": previous, "target": "join"})
    x = 300 + 150 * DEPTH
    nodes.append(plain("join", "join", x, 0, mode="all"))
    previous = "join"
    for i in range(TAIL):
        x += 150
        nodes.append(noop(tail_id(i), x, 0))
        edges.append({"id": f"e-{previous}-{tail_id(i)}", "source": previous, "target": tail_id(i)})
        previous = tail_id(i)
    nodes.append(plain("end", "end", x + 150, 0, output="done"))
    edges.append({"id": f"e-{previous}-end", "source": previous, "target": "end"})
    assert len(nodes) == NODES
    return {"nodes": nodes, "edges": edges, "viewport": {"x": 0, "y": 0, "zoom": 0.5}}


# --- measuring helpers ---------------------------------------------------------------------


class CpuClock:
    """CPU seconds (user + system) so far of this process (threads included) and of the
    PostgreSQL server (postmaster, its live backends and the ones that exited)."""

    def __init__(self, pgdata: Path) -> None:
        import psutil

        self.postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))

    def read(self) -> tuple[float, float]:
        import resource

        import psutil

        own = resource.getrusage(resource.RUSAGE_SELF)
        t = self.postmaster.cpu_times()
        pg = t.user + t.system + t.children_user + t.children_system
        for child in self.postmaster.children():
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                pg += c.user + c.system
        return own.ru_utime + own.ru_stime, pg


async def db_state(conn: asyncpg.Connection) -> tuple[int, int]:
    """(bytes of every table with its indexes and TOAST, next transaction id)."""
    row = await conn.fetchrow(
        "SELECT (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "        JOIN pg_namespace n ON n.oid = c.relnamespace "
        "        WHERE c.relkind IN ('r', 'm') "
        "          AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "          AND n.nspname NOT LIKE 'pg_toast%') AS bytes, "
        "       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xid")
    return int(row["bytes"]), int(row["xid"])


# --- Roost -------------------------------------------------------------------------------


class Roost:
    def __init__(self, dsn: str, data_dir: Path) -> None:
        self.dsn, self.data_dir = dsn, data_dir
        self.ended: dict[uuid.UUID, asyncio.Future[str]] = {}
        self.early: dict[uuid.UUID, str] = {}
        self.workflows: dict[str, uuid.UUID] = {}
        self.worker: Any = None
        self.worker_task: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        from cryptography.fernet import Fernet
        from tests.support.identity import make_user

        from roost import domains
        from roost.agents import jobs as agent_jobs
        from roost.agents import runner
        from roost.app import create_app
        from roost.config import Settings
        from roost.db.engine import create_database, to_async_url
        from roost.db.migrate import upgrade
        from roost.identity.tenancy import apply_principal
        from roost.keyfiles import KeyMaterial
        from roost.llm.deps import app_gateway
        from roost.principal import Principal
        from roost.security.crypto import SecretBox
        from roost.tools.config import ToolsConfig
        from roost.workflows import service
        from roost.workflows.schemas import WorkflowCreate

        domains.use_task_handlers()
        self.settings = Settings(data_dir=self.data_dir, log_json=True, log_level="warning",
                                 llm_local_model=False, knowledge_embedding_provider="hash")
        keys = KeyMaterial(
            secret_key=secrets.token_urlsafe(48), message_keys=(Fernet.generate_key().decode(),),
            secrets_key=base64.b64decode(base64.b64encode(secrets.token_bytes(32))),
            admin_token="rst_admin_" + secrets.token_urlsafe(24))
        self.database = create_database(self.settings, url=to_async_url(self.dsn))
        await upgrade(self.database.engine)
        self.app = create_app(self.settings, database=self.database, keys=keys,
                              configure_logs=True)
        self.lifespan = self.app.router.lifespan_context(self.app)
        await self.lifespan.__aenter__()
        user_id, _ = await make_user(self.database, username="workflows-bench")
        self.principal = Principal(user_id=user_id, is_admin=False, kind="api_key")
        for name, kind in (("roost-inline", "template"), ("roost-queue", "tool")):
            async with self.database.transaction() as session:
                await apply_principal(session, self.principal, app_role=self.settings.db_app_role)
                workflow = await service.create_workflow(
                    session, self.principal, WorkflowCreate(name=f"bench {kind}", **roost_graph(kind)))
                await service.publish(session, self.principal, workflow.id)
                self.workflows[name] = workflow.id
        # The jobs' environment: the app's gateway, the tools' settings, no retrieval.
        agent_jobs.env_override = runner.RunEnv(
            database=self.database, gateway=app_gateway(self.app),
            tools=ToolsConfig.from_settings(self.settings),
            box=SecretBox.from_keys(keys.secrets_key), knowledge=None)
        self.listener = await asyncpg.connect(self.dsn)
        await self.listener.add_listener("roost_runs", self._notified)

    def _notified(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        run_id, _, what = payload.partition(":")
        if not what.startswith("end:"):
            return
        key = uuid.UUID(run_id)
        future = self.ended.pop(key, None)
        if future is None:
            self.early[key] = what[4:]
        elif not future.done():
            future.set_result(what[4:])

    async def start_worker(self, concurrency: int) -> None:
        from roost.tasks.worker import Worker, WorkerConfig

        self.worker = Worker(self.database, WorkerConfig(
            concurrency=concurrency, queues=("agents",), lease_s=30, schedules=False,
            shutdown_timeout_s=5))
        self.worker_task = asyncio.create_task(self.worker.run())
        await asyncio.wait_for(self.worker.started.wait(), 30)

    async def stop_worker(self) -> None:
        if self.worker is not None and self.worker_task is not None:
            self.worker.stop()
            await asyncio.wait_for(self.worker_task, 60)
        self.worker, self.worker_task = None, None

    async def _start(self, name: str) -> tuple[uuid.UUID, str]:
        from roost.identity.tenancy import apply_principal
        from roost.workflows import runs
        from roost.workflows.schemas import WorkflowRunCreate

        async with self.database.transaction() as session:
            await apply_principal(session, self.principal, app_role=self.settings.db_app_role)
            run, _ = await runs.start_run(session, self.principal, self.workflows[name],
                                          WorkflowRunCreate(), source="bench")
            return run.id, run.status

    async def run_inline(self) -> bool:
        _, status = await self._start("roost-inline")  # the whole run commits here
        return status == "completed"

    async def run_queue(self) -> bool:
        run_id, _ = await self._start("roost-queue")
        if run_id in self.early:
            return self.early.pop(run_id) == "completed"
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.ended[run_id] = future
        return await asyncio.wait_for(future, 300) == "completed"

    def checker(self, name: str) -> Callable[[asyncpg.Connection, datetime], Awaitable[
            tuple[int, list[float]]]]:
        workflow_id = self.workflows[name]

        async def check(conn: asyncpg.Connection, since: datetime) -> tuple[int, list[float]]:
            """(runs of the phase not completed with 100 completed steps, each run's
            completed_at - created_at in ms)."""
            rows = await conn.fetch(
                "SELECT r.status, r.steps_count, "
                "       (SELECT count(*) FROM run_steps s WHERE s.run_id = r.id "
                "          AND s.status = 'completed') AS done, "
                "       extract(epoch FROM r.completed_at - r.created_at) * 1000 AS ms "
                "FROM runs r JOIN workflow_runs w ON w.run_id = r.id "
                "WHERE w.workflow_id = $1 AND r.created_at >= $2", workflow_id, since)
            self.early.clear()  # inline runs' end: notifications, nobody waits for them
            bad = sum(1 for r in rows if not (r["status"] == "completed"
                                              and r["steps_count"] == NODES and r["done"] == NODES))
            return bad, [float(r["ms"]) for r in rows if r["ms"] is not None]

        return check

    async def close(self) -> None:
        await self.stop_worker()
        await self.listener.close()
        await self.lifespan.__aexit__(None, None, None)
        await self.database.dispose()


# --- LangGraph ---------------------------------------------------------------------------


class Counted(TypedDict):
    count: Annotated[int, operator.add]


class LangGraph:
    def __init__(self, dsn: str) -> None:
        self.dsn = dsn

    async def setup(self) -> None:
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from langgraph.graph import END, START, StateGraph
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        # Roost's engine: a pool of 10 (+10 overflow); the checkpointer gets 10.
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.dsn, min_size=2, max_size=10, open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
        await self.pool.open()
        self.saver = AsyncPostgresSaver(self.pool)  # type: ignore[arg-type]
        await self.saver.setup()

        async def noop(state: Counted) -> dict[str, Any]:
            return {"count": 1}

        builder = StateGraph(Counted)
        names = ["start", "fan", *(branch_id(b, d) for b in range(BRANCHES) for d in range(DEPTH)),
                 "join", *(tail_id(i) for i in range(TAIL)), "end"]
        assert len(names) == NODES
        for name in names:
            builder.add_node(name, noop)
        builder.add_edge(START, "start")
        builder.add_edge("start", "fan")
        for b in range(BRANCHES):
            builder.add_edge("fan", branch_id(b, 0))
            for d in range(1, DEPTH):
                builder.add_edge(branch_id(b, d - 1), branch_id(b, d))
        builder.add_edge([branch_id(b, DEPTH - 1) for b in range(BRANCHES)], "join")
        previous = "join"
        for i in range(TAIL):
            builder.add_edge(previous, tail_id(i))
            previous = tail_id(i)
        builder.add_edge(previous, "end")
        builder.add_edge("end", END)
        self.graph: Any = builder.compile(checkpointer=self.saver)

    def runner(self, durability: str) -> Callable[[], Awaitable[bool]]:
        async def run() -> bool:
            config: Any = {"configurable": {"thread_id": str(uuid.uuid4())},
                           "recursion_limit": 100}
            out = await self.graph.ainvoke({"count": 0}, config, durability=durability)
            return bool(out["count"] == NODES)

        return run

    async def close(self) -> None:
        await self.pool.close()


# --- phases ------------------------------------------------------------------------------


@dataclass
class System:
    name: str
    run: Callable[[], Awaitable[bool]]
    conn: asyncpg.Connection
    before: Callable[[], Awaitable[None]] | None = None
    after: Callable[[], Awaitable[None]] | None = None
    check: Callable[[asyncpg.Connection, datetime], Awaitable[tuple[int, list[float]]]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Phase:
    system: str
    concurrency: int
    round: int
    runs: int
    nodes: int
    seconds: float
    nodes_per_s: float
    run_p50_ms: float
    run_p99_ms: float
    overhead_per_node_p50_ms: float
    overhead_per_node_p99_ms: float
    db_run_p50_ms: float | None
    bench_cpu_ms_per_node: float
    pg_cpu_ms_per_node: float
    bytes_live_per_run: float
    bytes_allocated_per_run: float
    write_xacts_per_run: float
    load_before: float
    load_after: float
    bad_runs: int = 0


async def drive(run: Callable[[], Awaitable[bool]], n: int, concurrency: int,
                ) -> tuple[float, list[float], int]:
    """n runs through ``concurrency`` slots; (seconds, each run's wall ms, failed runs)."""
    walls: list[float] = []
    failed = 0
    todo = iter(range(n))

    async def one_slot() -> None:
        nonlocal failed
        for _ in todo:
            t0 = time.perf_counter()
            try:
                ok = await run()
            except Exception as exc:
                print(f"    run failed: {type(exc).__name__}: {exc}", flush=True)
                ok = False
            walls.append((time.perf_counter() - t0) * 1000)
            failed += int(not ok)

    started = time.perf_counter()
    await asyncio.gather(*(one_slot() for _ in range(concurrency)))
    return time.perf_counter() - started, walls, failed


CPU: CpuClock  # set in main
T0 = time.perf_counter()


async def measure(system: System, n: int, concurrency: int, round_: int) -> Phase:
    conn = system.conn
    await conn.execute("VACUUM FULL")
    size0, xid0 = await db_state(conn)
    if system.before is not None:
        await system.before()
    since = await conn.fetchval("SELECT now()")
    load0 = os.getloadavg()[0]
    cpu0 = CPU.read()
    seconds, walls, failed = await drive(system.run, n, concurrency)
    cpu1 = CPU.read()
    load1 = os.getloadavg()[0]
    if system.after is not None:
        await system.after()
    size1, xid1 = await db_state(conn)
    await conn.execute("VACUUM FULL")
    size2, _ = await db_state(conn)
    db_ms: list[float] = []
    if system.check is not None:
        bad, db_ms = await system.check(conn, since)
        failed = max(failed, bad)
    nodes = n * NODES
    per_node = [w / NODES for w in walls]
    return Phase(
        system=system.name, concurrency=concurrency, round=round_, runs=n, nodes=nodes,
        seconds=round(seconds, 3), nodes_per_s=round(nodes / seconds, 1),
        run_p50_ms=round(pct(walls, 0.5), 2), run_p99_ms=round(pct(walls, 0.99), 2),
        overhead_per_node_p50_ms=round(pct(per_node, 0.5), 3),
        overhead_per_node_p99_ms=round(pct(per_node, 0.99), 3),
        db_run_p50_ms=round(pct(db_ms, 0.5), 2) if db_ms else None,
        bench_cpu_ms_per_node=round((cpu1[0] - cpu0[0]) * 1000 / nodes, 3),
        pg_cpu_ms_per_node=round((cpu1[1] - cpu0[1]) * 1000 / nodes, 3),
        bytes_live_per_run=round((size2 - size0) / n),
        bytes_allocated_per_run=round((size1 - size0) / n),
        write_xacts_per_run=round((xid1 - xid0) / n, 1),
        load_before=round(load0, 2), load_after=round(load1, 2), bad_runs=failed)


# --- profiles ----------------------------------------------------------------------------


async def profile_roost(system: System, runs: int) -> dict[str, Any]:
    """Every asyncpg statement of ``runs`` sequential runs (the worker's included)."""
    from breakdown import Recorder

    recorder = Recorder()
    recorder.install()
    if system.before is not None:
        await system.before()
    per_run: list[dict[str, float]] = []
    kinds: Counter[str] = Counter()
    kind_ms: Counter[str] = Counter()
    try:
        for _ in range(runs):
            recorder.sent = []
            recorder.on = True
            wall, _, failed = await drive(system.run, 1, 1)
            recorder.on = False
            assert failed == 0
            sent = list(recorder.sent)
            per_run.append({
                "wall_ms": wall * 1000, "db_ms": sum(e for _, e in sent) * 1000,
                "statements": len(sent),
                "transactions": sum(1 for sql, _ in sent if sql.upper().startswith("BEGIN"))})
            kinds.update(statement_kind(sql) for sql, _ in sent)
            for sql, elapsed in sent:
                kind_ms[statement_kind(sql)] += elapsed * 1000
    finally:
        if system.after is not None:
            await system.after()
    med = {k: statistics.median(r[k] for r in per_run) for k in per_run[0]}
    return {
        "runs": runs,
        "per_node": {
            "wall_ms": round(med["wall_ms"] / NODES, 3),
            "db_ms": round(med["db_ms"] / NODES, 3),
            "python_and_wait_ms": round((med["wall_ms"] - med["db_ms"]) / NODES, 3),
            "statements": round(med["statements"] / NODES, 2),
            "transactions": round(med["transactions"] / NODES, 2),
        },
        "statements_per_run_by_kind": {k: round(v / runs, 1) for k, v in kinds.most_common()},
        "db_ms_per_run_by_kind": {k: round(v / runs, 1) for k, v in kind_ms.most_common()},
    }


async def profile_langgraph(graph: LangGraph, runs: int, durability: str) -> dict[str, Any]:
    """Statements LangGraph's checkpointer sends (psycopg cursor calls; an
    ``executemany`` counts one per row) over ``runs`` sequential runs."""
    from psycopg import AsyncCursor

    kinds: Counter[str] = Counter()
    execute, executemany = AsyncCursor.execute, AsyncCursor.executemany

    async def counted_execute(cur: Any, query: Any, params: Any = None, **kw: Any) -> Any:
        kinds[statement_kind(str(query))] += 1
        return await execute(cur, query, params, **kw)

    async def counted_executemany(cur: Any, query: Any, params_seq: Any, **kw: Any) -> Any:
        rows = list(params_seq)
        kinds[statement_kind(str(query))] += len(rows)
        return await executemany(cur, query, rows, **kw)

    AsyncCursor.execute = counted_execute  # type: ignore[method-assign,assignment]
    AsyncCursor.executemany = counted_executemany  # type: ignore[method-assign,assignment]
    try:
        wall, _, failed = await drive(graph.runner(durability), runs, 1)
    finally:
        AsyncCursor.execute = execute  # type: ignore[method-assign]
        AsyncCursor.executemany = executemany  # type: ignore[method-assign]
    assert failed == 0
    return {"runs": runs, "durability": durability,
            "per_node": {"wall_ms": round(wall * 1000 / (runs * NODES), 3),
                         "statements": round(sum(kinds.values()) / (runs * NODES), 2)},
            "statements_per_run_by_kind": {k: round(v / runs, 1) for k, v in kinds.most_common()}}


# --- summary -----------------------------------------------------------------------------


def _rank(system: str) -> int:
    base = "roost-queue" if system.startswith("roost-queue") else system
    return ORDER.index(base) if base in ORDER else 99


def summarise(phases: list[Phase]) -> list[dict[str, Any]]:
    """Median over rounds per (system, concurrency)."""
    out: list[dict[str, Any]] = []
    keys = sorted({(p.concurrency, p.system) for p in phases},
                  key=lambda k: (k[0], _rank(k[1]), k[1]))
    for concurrency, system in keys:
        series = [asdict(p) for p in phases if (p.concurrency, p.system) == (concurrency, system)]
        row: dict[str, Any] = {"system": system, "concurrency": concurrency,
                               "rounds": len(series)}
        for key in series[0]:
            if key in row or key == "round":
                continue
            values = [s[key] for s in series if isinstance(s[key], int | float)]
            if values:
                row[key] = round(statistics.median(values), 3)
        row["bad_runs"] = sum(s["bad_runs"] for s in series)
        row["runs"] = sum(s["runs"] for s in series)
        out.append(row)
    return out


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Roost's rows against LangGraph's (sync: the same durability; async: its default)."""
    out = []
    by = {(r["system"], r["concurrency"]): r for r in rows}
    for (system, concurrency), r in by.items():
        if not system.startswith("roost"):
            continue
        for peer in ("langgraph-sync", "langgraph-async"):
            p = by.get((peer, concurrency))
            if p is None:
                continue
            out.append({
                "roost": system, "vs": peer, "concurrency": concurrency,
                "nodes_per_s": round(r["nodes_per_s"] / p["nodes_per_s"], 2),
                "overhead_p50": round(r["overhead_per_node_p50_ms"]
                                      / p["overhead_per_node_p50_ms"], 2),
                "overhead_p99": round(r["overhead_per_node_p99_ms"]
                                      / p["overhead_per_node_p99_ms"], 2),
                "cpu_total": round((r["bench_cpu_ms_per_node"] + r["pg_cpu_ms_per_node"])
                                   / (p["bench_cpu_ms_per_node"] + p["pg_cpu_ms_per_node"]), 2),
                "bytes_live": round(r["bytes_live_per_run"] / p["bytes_live_per_run"], 2)
                if p["bytes_live_per_run"] else None})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| system | runs in flight | nodes/s | overhead/node p50 / p99 ms | run p50 / p99 ms | "
             "CPU ms/node: process / PostgreSQL | DB bytes/run live (allocated) | "
             "write xacts/run | bad runs |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['concurrency']} | {r['nodes_per_s']:,.0f} | "
            f"{r['overhead_per_node_p50_ms']:.2f} / {r['overhead_per_node_p99_ms']:.2f} | "
            f"{r['run_p50_ms']:.0f} / {r['run_p99_ms']:.0f} | "
            f"{r['bench_cpu_ms_per_node']:.2f} / {r['pg_cpu_ms_per_node']:.2f} | "
            f"{r['bytes_live_per_run']:,.0f} ({r['bytes_allocated_per_run']:,.0f}) | "
            f"{r['write_xacts_per_run']:.0f} | {r['bad_runs']}/{r['runs']} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    global CPU
    from importlib.metadata import version

    from roost.db.embedded import start_embedded
    from roost.db.engine import ensure_database_exists

    phases: list[Phase] = []
    profile: dict[str, Any] = {}
    load_start = os.getloadavg()
    started_at = datetime.now(UTC)
    with tempfile.TemporaryDirectory(prefix="roost-bench-workflows-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        CPU = CpuClock(tmp / "pg")
        roost: Roost | None = None
        graph: LangGraph | None = None
        conns: list[asyncpg.Connection] = []
        try:
            for name in ("bench_roost", "bench_langgraph"):
                ensure_database_exists(server, name)
            admin = await asyncpg.connect(server.libpq_url("postgres"))
            pg_version = await admin.fetchval("SHOW server_version")
            await admin.close()
            roost = Roost(server.libpq_url("bench_roost"), tmp / "roost-data")
            await roost.setup()
            graph = LangGraph(server.libpq_url("bench_langgraph"))
            await graph.setup()
            roost_conn = await asyncpg.connect(server.libpq_url("bench_roost"))
            graph_conn = await asyncpg.connect(server.libpq_url("bench_langgraph"))
            conns += [roost_conn, graph_conn]
            r = roost

            def worker(n: int) -> tuple[Callable[[], Awaitable[None]],
                                        Callable[[], Awaitable[None]]]:
                async def before() -> None:
                    await r.start_worker(n)

                return before, r.stop_worker

            wanted: list[System] = []
            for name in ORDER:
                if name not in args.systems:
                    continue
                if name == "roost-inline":
                    wanted.append(System(name, r.run_inline, roost_conn,
                                         check=r.checker("roost-inline")))
                elif name == "roost-queue":
                    for n in args.worker_concurrency:
                        before, after = worker(n)
                        wanted.append(System(f"roost-queue-w{n}", r.run_queue, roost_conn,
                                             before=before, after=after,
                                             check=r.checker("roost-queue"),
                                             extra={"worker_concurrency": n}))
                else:
                    wanted.append(System(name, graph.runner(name.split("-")[1]), graph_conn))

            print(f"warm-up: {args.warmup} runs each", flush=True)
            for system in wanted:
                if system.before is not None:
                    await system.before()
                _, _, failed = await drive(system.run, args.warmup * max(args.concurrency),
                                           max(args.concurrency))
                if system.after is not None:
                    await system.after()
                assert failed == 0, f"{system.name}: {failed} warm-up runs failed"

            for round_ in range(args.rounds):
                order = wanted[round_ % len(wanted):] + wanted[:round_ % len(wanted)]
                for concurrency in args.concurrency:
                    for system in order:
                        phase = await measure(system, args.runs, concurrency, round_)
                        phases.append(phase)
                        print(f"  round {round_} x{concurrency} {system.name:<16} "
                              f"{phase.nodes_per_s:>7.0f} nodes/s  overhead/node p50 "
                              f"{phase.overhead_per_node_p50_ms:>6.2f} p99 "
                              f"{phase.overhead_per_node_p99_ms:>6.2f} ms  CPU "
                              f"{phase.bench_cpu_ms_per_node:>5.2f} + "
                              f"{phase.pg_cpu_ms_per_node:>5.2f} ms/node  live "
                              f"{phase.bytes_live_per_run:>8,.0f} B/run  bad {phase.bad_runs}  "
                              f"load {phase.load_before:.1f}  "
                              f"({time.perf_counter() - T0:.0f} s)", flush=True)

            if args.profile_runs:
                print("profile: every statement of a few sequential runs", flush=True)
                for system in wanted:
                    if system.name.startswith("roost"):
                        profile[system.name] = await profile_roost(system, args.profile_runs)
                    elif system.name == "langgraph-sync":
                        profile[system.name] = await profile_langgraph(graph, args.profile_runs,
                                                                       "sync")
        finally:
            for conn in conns:
                await conn.close()
            if graph is not None:
                await graph.close()
            if roost is not None:
                await roost.close()
            server.stop()

    rows = summarise(phases)
    compared = ratios(rows)
    print()
    print(table(rows))
    print("\nRoost / LangGraph (nodes/s: higher is better; the rest: lower is better)")
    for c in compared:
        print(f"  {c['roost']:<15} / {c['vs']:<15} x{c['concurrency']}: nodes/s "
              f"{c['nodes_per_s']:.2f}, overhead p50 {c['overhead_p50']:.2f} p99 "
              f"{c['overhead_p99']:.2f}, CPU {c['cpu_total']:.2f}, live bytes {c['bytes_live']}")
    if profile:
        print("\nper node (profile, sequential):")
        for name, p in profile.items():
            print(f"  {name}: {p['per_node']}")
            for kind, count in list(p["statements_per_run_by_kind"].items())[:14]:
                ms = p.get("db_ms_per_run_by_kind", {}).get(kind, float("nan"))
                print(f"      {count:>7.1f} / run  {ms:>7.1f} ms / run  {kind}")
    out = write_json(Path(args.out), {
        "benchmark": "workflows",
        "started_at": started_at.isoformat(timespec="seconds"),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "postgres": pg_version,
                    "load_average_at_start": load_start,
                    "load_average_at_end": os.getloadavg()},
        "versions": {name: version(name) for name in (
            "roost", "langgraph", "langgraph-checkpoint-postgres", "langchain-core", "psycopg",
            "psycopg-pool", "sqlalchemy", "asyncpg")},
        "args": vars(args),
        "graph": {"nodes": NODES, "branches": BRANCHES, "branch_depth": DEPTH, "tail": TAIL,
                  "shape": "start -> parallel -> 10 x 9 no-op nodes -> join (all) -> 6 no-op "
                           "nodes -> end"},
        "definitions": {
            "roost-inline": "the 96 no-op nodes are template nodes, computed in the "
                            "transaction of runs.start_run (the whole run commits there)",
            "roost-queue-wN": "the 96 no-op nodes are tool nodes calling the built-in "
                              "current_time (a tool_runs row and an audit record each: an "
                              "upper bound), executed as workflows.node jobs by an in-process "
                              "Worker with N job slots",
            "langgraph-sync/async": "StateGraph of the same topology, async no-op nodes adding 1 "
                                    "to an operator.add counter, AsyncPostgresSaver on a psycopg "
                                    "pool of 10, one thread per run",
            "run_ms": "client wall time of a run: start (transaction begin / ainvoke) to end "
                      "(commit / end: notification / ainvoke returning)",
            "db_run_p50_ms": "Roost only: runs.completed_at - runs.created_at",
            "overhead_per_node_ms": "run_ms / 100 (every node is a no-op); p50/p99 over runs",
            "nodes_per_s": "100 x runs / the phase's wall time",
            "cpu_ms_per_node": "user + system CPU of this process and of PostgreSQL during "
                               "the phase / nodes",
            "bytes_live_per_run": "sum of pg_total_relation_size over the system's tables "
                                  "after VACUUM FULL, after - before, / runs",
            "bytes_allocated_per_run": "same before VACUUM FULL (dead row versions included)",
            "write_xacts_per_run": "transaction ids assigned during the phase / runs",
            "summary": "median over rounds of each phase's figures; bad_runs and runs summed",
        },
        "summary": rows, "roost_vs_langgraph": compared, "phases": [asdict(p) for p in phases],
        "profile": profile,
    })
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per phase")
    parser.add_argument("--warmup", type=int, default=3, help="warm-up runs per system")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds (the systems' order rotates each round)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1],
                        help="runs in flight (e.g. 1 4)")
    parser.add_argument("--worker-concurrency", type=int, nargs="+", default=[8, 2],
                        help="job slots of the in-process worker (roost-queue)")
    parser.add_argument("--systems", nargs="+", default=ORDER)
    parser.add_argument("--profile-runs", type=int, default=3)
    parser.add_argument("--out", default=str(RESULTS), help="the results JSON")
    asyncio.run(main(parser.parse_args()))
