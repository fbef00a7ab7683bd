"""Agent-loop benchmark: Roost's durable run loop beside LangGraph + its Postgres checkpointer.

    .venv/bin/python bench/agents/run.py [--runs 30] [--rounds 4] [--concurrency 1 8]
                                         [--systems roost-worker roost-direct langgraph-sync
                                          langgraph-async] [--profile-runs 5]

The same 10-step tool loop, in one process, against the same instant model: the tests'
OpenAI-compatible stub (``tests/support/openai_stub``, a separate process) scripted so
that every run gets 9 answers that each call one tool (``current_time``) and a final
answer: 10 model calls and 9 tool calls a run.

* **roost-worker**: ``roost.agents.runs.create_run`` in a transaction scoped to the user,
  executed by an in-process ``roost.tasks.worker.Worker`` (what users get); the run is
  over when its ``end:`` notification arrives on ``roost_runs`` (LISTEN).
* **roost-direct**: the same run executed by calling ``roost.agents.runner.execute``
  (no queue; the job that ``create_run`` enqueued is cancelled afterwards).
* **langgraph-sync / langgraph-async**: a ``StateGraph`` over ``MessagesState``, a
  ``ChatOpenAI`` node bound to an equivalent Python ``current_time`` tool, a ``ToolNode``
  and ``tools_condition``, compiled with ``AsyncPostgresSaver`` (on an
  ``AsyncConnectionPool``), one thread per run; ``durability="sync"`` (each checkpoint
  written before the next step: Roost's guarantee) and ``"async"`` (LangGraph's default).

Runs go through ``C`` slots (C = each ``--concurrency``), each slot one run at a time with
its own model name (the stub's script is per model, so runs in flight never take each
other's answers) and its own time zone (so tool calls are attributed to the slot).

**Step** = one model call and the tool call it asked for.  Each tool call records
``time.perf_counter()`` as it starts (Roost: ``roost.tools.builtins.current_time`` wrapped;
LangGraph: the tool itself), so a run's 10 steps are: start → tool 1, tool 1 → tool 2, ...,
tool 9 → end (the first holds the run's creation and start, the last its finish).
**Stub latency**: the very requests each system sent (read back from the stub) are
replayed with a plain ``httpx.AsyncClient`` in the same round, at the same concurrency,
streamed like Roost's or not like LangGraph's.  **Overhead per step** = step wall time -
that stub latency's median (one model call per step).  **Database bytes per step**: the
sum of ``pg_total_relation_size`` over every table of the system's database (indexes and
TOAST included), after - before the phase (``allocated``: as written, dead row versions
included) and after a ``VACUUM FULL`` (``live``), over the steps; **write transactions
per step**: transaction ids assigned during the phase (``pg_current_snapshot``), over the
steps; WAL bytes per step (``pg_current_wal_insert_lsn`` difference) go to the JSON only:
full-page images, timed checkpoints and autovacuum make them too noisy to compare.

Both systems run in one process whose start-up heap (modules, both systems' objects after
the warm-up) is frozen out of the garbage collector, as ``roost worker`` freezes its own
(``roost.process.freeze_startup_heap``): full collections otherwise took 100-420 ms each
and landed on random steps of either system.

**CPU ms per step**: user + system CPU of this process (Roost or LangGraph, the driver
and the in-process worker) and of the PostgreSQL server during the phase, over the steps.

``--profile-runs`` more sequential runs with every statement counted: Roost's asyncpg
statements timed (``bench/overhead/breakdown.py``'s ``Recorder``: transactions,
statements, database and Python time per step), LangGraph's psycopg cursor calls counted.
Prints a table and writes bench/results/agents.json.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import itertools
import json
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
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RESULTS = ROOT / "bench" / "results" / "agents.json"
for extra in (str(ROOT), str(ROOT / "bench" / "overhead")):
    if extra not in sys.path:
        sys.path.append(extra)  # tests.support (the stub), breakdown.Recorder

from breakdown import pct, statement_kind, write_json  # noqa: E402 - bench/overhead, on sys.path above

STEPS_PER_RUN = 10  # model calls; 9 of them ask for one tool call each
TOOL_CALLS = STEPS_PER_RUN - 1
SYSTEM_PROMPT = "You are a careful helper."
INPUT = "What time is it in my time zone? Check the clock before you answer."
FINAL = "It is late; time to stop."
ZONES = ("UTC", "Europe/Paris", "Asia/Tokyo", "America/New_York", "Europe/Lisbon",
         "Australia/Sydney", "America/Sao_Paulo", "Africa/Nairobi", "Asia/Kolkata",
         "Europe/Berlin", "Pacific/Auckland", "America/Chicago", "Asia/Seoul",
         "Europe/Madrid", "America/Denver", "Asia/Singapore")
TOOL_DESCRIPTION = ("The current date and time in UTC and in a time zone (an IANA name, "
                    "default UTC).")
# Tool calls seen, by time zone (= slot): perf_counter() as each call starts.
MARKS: dict[str, list[float]] = {}


def mark(zone: str | None) -> None:
    MARKS.setdefault(zone or "UTC", []).append(time.perf_counter())


def time_in(zone_name: str) -> dict[str, Any]:
    """What Roost's built-in answers (roost.tools.builtins.current_time)."""
    now = datetime.now(UTC)
    local = now.astimezone(ZoneInfo(zone_name))
    return {"utc": now.isoformat(), "timezone": zone_name, "local": local.isoformat(),
            "unix": now.timestamp()}


@dataclass(frozen=True)
class Slot:
    index: int
    model: str
    zone: str


def slots(n: int) -> list[Slot]:
    if n > len(ZONES):
        raise SystemExit(f"at most {len(ZONES)} concurrent runs")
    return [Slot(i, f"bench-slot-{i}", ZONES[i]) for i in range(n)]


def script_for(slot: Slot) -> list[Any]:
    from tests.support.openai_stub.script import Call, Reply, ToolCalls

    calls = [ToolCalls(Call("current_time", {"timezone": slot.zone},
                            id=f"call_{slot.index}_{i}_{uuid.uuid4().hex[:8]}"), model=slot.model)
             for i in range(TOOL_CALLS)]
    return [*calls, Reply(FINAL, model=slot.model)]


@dataclass
class RunSample:
    start: float
    marks: list[float]
    end: float

    def steps_ms(self) -> list[float]:
        points = [self.start, *self.marks, self.end]
        return [(b - a) * 1000 for a, b in itertools.pairwise(points)]


@dataclass
class Phase:
    system: str
    concurrency: int
    round: int
    runs: int
    steps: int
    seconds: float
    steps_per_s: float
    step_p50_ms: float
    step_p99_ms: float
    stub_p50_ms: float
    overhead_p50_ms: float
    overhead_p99_ms: float
    bytes_allocated_per_step: float
    bytes_live_per_step: float
    write_xacts_per_step: float
    wal_bytes_per_step: float
    bench_cpu_ms_per_step: float
    pg_cpu_ms_per_step: float
    stub_cpu_ms_per_step: float
    bad_runs: int = 0
    bytes_live_by_table: dict[str, float] = field(default_factory=dict)


class CpuClock:
    """CPU seconds (user + system) so far of this process (threads included), of the
    PostgreSQL server (postmaster, its live backends and the ones that exited) and of the
    stub process."""

    def __init__(self, pgdata: Path, stub_pid: int) -> None:
        import psutil

        self.postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
        self.stub = psutil.Process(stub_pid)

    def read(self) -> tuple[float, float, float]:
        import resource

        import psutil

        own = resource.getrusage(resource.RUSAGE_SELF)
        t = self.postmaster.cpu_times()
        pg = t.user + t.system + t.children_user + t.children_system
        for child in self.postmaster.children():
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                pg += c.user + c.system
        s = self.stub.cpu_times()
        return own.ru_utime + own.ru_stime, pg, s.user + s.system


# --- the stub ------------------------------------------------------------------------------


class Stub:
    def __init__(self) -> None:
        from tests.support.openai_stub import start_stub

        self.server = start_stub()
        self.base_url = self.server.base_url
        self.http = httpx.AsyncClient(timeout=30)

    async def script(self, steps: list[Any]) -> None:
        resp = await self.http.post(f"{self.server.root_url}/_script",
                                    json=[s.to_json() for s in steps])
        resp.raise_for_status()

    async def close(self) -> None:
        await self.http.aclose()
        self.server.stop()


async def replay(stub: Stub, bodies: list[dict[str, Any]], runs: int, concurrency: int) -> list[float]:
    """The requests one run sent, replayed ``runs`` times from ``concurrency`` slots (each
    scripted as a run is): latency of each request in ms."""
    url = f"{stub.base_url}/chat/completions"
    latencies: list[float] = []
    todo = iter(range(runs))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        async def one_slot(slot: Slot) -> None:
            for _ in todo:
                await stub.script(script_for(slot))
                for body in bodies:
                    body = {**body, "model": slot.model}
                    t0 = time.perf_counter()
                    if body.get("stream"):
                        async with client.stream("POST", url, json=body) as resp:
                            async for _chunk in resp.aiter_raw():
                                pass
                    else:
                        (await client.post(url, json=body)).raise_for_status()
                    latencies.append((time.perf_counter() - t0) * 1000)

        await asyncio.gather(*(one_slot(s) for s in slots(concurrency)))
    return latencies


# --- Roost ---------------------------------------------------------------------------------


class Roost:
    def __init__(self, dsn: str, data_dir: Path, stub: Stub) -> None:
        self.dsn, self.data_dir, self.stub = dsn, data_dir, stub
        self.ended: dict[uuid.UUID, asyncio.Future[str]] = {}
        self.early: dict[uuid.UUID, str] = {}
        self.agents: dict[str, Any] = {}
        self.worker: Any = None
        self.worker_task: asyncio.Task[None] | None = None

    async def setup(self) -> None:
        from cryptography.fernet import Fernet
        from tests.support.identity import make_user
        from tests.support.openai_stub.script import Models

        from roost import domains
        from roost.agents import jobs as agent_jobs
        from roost.agents import runner
        from roost.agents.models import Agent
        from roost.app import create_app
        from roost.config import Settings
        from roost.db.engine import create_database, to_async_url
        from roost.db.migrate import upgrade
        from roost.keyfiles import KeyMaterial
        from roost.llm import jobs as llm_jobs
        from roost.llm.deps import app_gateway
        from roost.principal import Principal
        from roost.security.crypto import SecretBox
        from roost.tools import builtins
        from roost.tools.config import ToolsConfig

        domains.use_task_handlers()
        self.settings = Settings(data_dir=self.data_dir, log_json=True, log_level="warning",
                                 llm_local_model=False, llm_timeout_s=30.0,
                                 knowledge_embedding_provider="hash")
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
        admin = {"Authorization": f"Bearer {keys.admin_token}"}
        transport = httpx.ASGITransport(app=self.app, client=("127.0.0.1", 50002))
        async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
            all_slots = slots(len(ZONES))
            resp = await client.post("/api/v1/llm/providers", headers=admin, json={
                "name": "stub", "type": "openai", "base_url": self.stub.base_url,
                "model": all_slots[0].model})
            assert resp.status_code == 201, resp.text
            await self.stub.script([Models(ids=[s.model for s in all_slots])])
            synced = await client.post(f"/api/v1/llm/providers/{resp.json()['id']}/sync-models",
                                       headers=admin)
            assert synced.status_code == 200, synced.text
        user_id, _ = await make_user(self.database, username="agents-bench")
        self.principal = Principal(user_id=user_id, is_admin=False, kind="api_key")
        async with self.database.transaction() as session:
            for slot in all_slots:
                agent = Agent(user_id=user_id, name=f"Bench {slot.index}",
                              slug=f"bench-{slot.index}", system_prompt=SYSTEM_PROMPT,
                              preferred_model=slot.model, tool_permissions=["current_time"],
                              config={})
                session.add(agent)
                self.agents[slot.model] = agent
            await session.flush()
            for agent in self.agents.values():
                await session.refresh(agent)
        gateway = app_gateway(self.app)
        self.env = runner.RunEnv(database=self.database, gateway=gateway,
                                 tools=ToolsConfig.from_settings(self.settings),
                                 box=SecretBox.from_keys(keys.secrets_key), knowledge=None)
        agent_jobs.env_override, llm_jobs.gateway_override = self.env, gateway
        original = builtins.current_time

        async def marked(arguments: dict[str, Any]) -> dict[str, Any]:
            mark(arguments.get("timezone"))
            return await original(arguments)

        builtins.current_time = marked  # type: ignore[assignment]
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
            concurrency=concurrency, lease_s=30, schedules=False, shutdown_timeout_s=5))
        self.worker_task = asyncio.create_task(self.worker.run())
        await asyncio.wait_for(self.worker.started.wait(), 30)

    async def stop_worker(self) -> None:
        if self.worker is not None and self.worker_task is not None:
            self.worker.stop()
            await asyncio.wait_for(self.worker_task, 60)
        self.worker, self.worker_task = None, None

    async def _create(self, slot: Slot) -> uuid.UUID:
        from roost.agents.runs import create_run
        from roost.agents.schemas import RunCreate
        from roost.identity.tenancy import apply_principal

        async with self.database.transaction() as session:
            await apply_principal(session, self.principal, app_role=self.settings.db_app_role)
            run, _ = await create_run(session, self.principal, self.agents[slot.model],
                                      RunCreate(input=INPUT))
        return run.id

    async def run_worker(self, slot: Slot) -> bool:
        run_id = await self._create(slot)
        if run_id in self.early:
            return self.early.pop(run_id) == "completed"
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self.ended[run_id] = future
        return await asyncio.wait_for(future, 120) == "completed"

    async def run_direct(self, slot: Slot) -> bool:
        from roost.agents import runner

        run_id = await self._create(slot)
        return await runner.execute(self.env, run_id) == "completed"

    async def after_direct(self, conn: asyncpg.Connection) -> None:
        await conn.execute("UPDATE background_tasks SET status = 'cancelled' "
                           "WHERE task_type = 'agents.run' AND status = 'pending'")

    async def check(self, conn: asyncpg.Connection, since: datetime) -> int:
        """Runs created since ``since`` that did not end as the script says."""
        return int(await conn.fetchval(
            "SELECT count(*) FROM runs WHERE created_at >= $1 AND NOT (status = 'completed' "
            "AND stop_reason = 'final' AND steps_count = $2 AND output = $3)",
            since, STEPS_PER_RUN + TOOL_CALLS, FINAL))

    async def close(self) -> None:
        await self.stop_worker()
        await self.listener.close()
        await self.lifespan.__aexit__(None, None, None)
        await self.database.dispose()


# --- LangGraph -----------------------------------------------------------------------------


class LangGraph:
    def __init__(self, dsn: str, stub: Stub) -> None:
        self.dsn, self.stub = dsn, stub

    async def setup(self) -> None:
        from langchain_core.runnables import RunnableConfig
        from langchain_core.tools import tool
        from langchain_openai import ChatOpenAI
        from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
        from langgraph.graph import START, MessagesState, StateGraph
        from langgraph.prebuilt import ToolNode, tools_condition
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        @tool(description=TOOL_DESCRIPTION)
        async def current_time(timezone: str = "UTC") -> str:
            mark(timezone)
            return json.dumps(time_in(timezone), ensure_ascii=False)

        # Roost's engine: a pool of 10 (+10 overflow); the checkpointer gets 10.
        self.pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
            self.dsn, min_size=2, max_size=10, open=False,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row})
        await self.pool.open()
        self.saver = AsyncPostgresSaver(self.pool)  # type: ignore[arg-type]
        await self.saver.setup()
        models = {s.model: ChatOpenAI(model=s.model, base_url=self.stub.base_url,
                                      api_key="bench", max_retries=0, timeout=30)  # type: ignore[arg-type]
                  .bind_tools([current_time]) for s in slots(len(ZONES))}

        async def agent(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
            model = models[config["configurable"]["model"]]
            return {"messages": [await model.ainvoke(state["messages"], config)]}

        builder = StateGraph(MessagesState)
        builder.add_node("agent", agent)
        builder.add_node("tools", ToolNode([current_time]))
        builder.add_edge(START, "agent")
        builder.add_conditional_edges("agent", tools_condition)
        builder.add_edge("tools", "agent")
        self.graph = builder.compile(checkpointer=self.saver)

    def runner(self, durability: str) -> Callable[[Slot], Awaitable[bool]]:
        from langchain_core.messages import HumanMessage, SystemMessage

        async def run(slot: Slot) -> bool:
            config: Any = {"configurable": {"thread_id": str(uuid.uuid4()), "model": slot.model},
                           "recursion_limit": 4 * STEPS_PER_RUN}
            out = await self.graph.ainvoke(
                {"messages": [SystemMessage(SYSTEM_PROMPT), HumanMessage(INPUT)]}, config,
                durability=durability)  # type: ignore[arg-type]
            messages = out["messages"]
            return len(messages) == 2 + STEPS_PER_RUN + TOOL_CALLS and messages[-1].content == FINAL

        return run

    async def close(self) -> None:
        await self.pool.close()


# --- measuring ----------------------------------------------------------------------------


async def db_state(conn: asyncpg.Connection) -> tuple[int, int, int]:
    """(bytes of every table with its indexes and TOAST, next transaction id, WAL insert
    position)."""
    row = await conn.fetchrow(
        "SELECT (SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c "
        "        JOIN pg_namespace n ON n.oid = c.relnamespace "
        "        WHERE c.relkind IN ('r', 'm') "
        "          AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "          AND n.nspname NOT LIKE 'pg_toast%') AS bytes, "
        "       pg_snapshot_xmax(pg_current_snapshot())::text::bigint AS xid, "
        "       pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')::bigint AS wal")
    return int(row["bytes"]), int(row["xid"]), int(row["wal"])


async def table_sizes(conn: asyncpg.Connection) -> dict[str, int]:
    """``pg_total_relation_size`` of each table of the database (indexes, TOAST)."""
    rows = await conn.fetch(
        "SELECT c.relname, pg_total_relation_size(c.oid) AS bytes FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind IN ('r', 'm') "
        "AND n.nspname NOT IN ('pg_catalog', 'information_schema') "
        "AND n.nspname NOT LIKE 'pg_toast%'")
    return {r["relname"]: int(r["bytes"]) for r in rows}


async def drive(run: Callable[[Slot], Awaitable[bool]], n: int, concurrency: int
                ) -> tuple[float, list[RunSample], int]:
    """n runs through ``concurrency`` slots; (seconds, samples, failed runs)."""

    samples: list[RunSample] = []
    failed = 0
    todo = iter(range(n))

    async def one_slot(slot: Slot) -> None:
        nonlocal failed
        for _ in todo:
            await STUB.script(script_for(slot))
            MARKS[slot.zone] = []
            start = time.perf_counter()
            ok = await run(slot)
            end = time.perf_counter()
            marks = MARKS.pop(slot.zone, [])
            if not ok or len(marks) != TOOL_CALLS:
                failed += 1
            samples.append(RunSample(start, marks, end))

    started = time.perf_counter()
    await asyncio.gather(*(one_slot(s) for s in slots(concurrency)))
    return time.perf_counter() - started, samples, failed


STUB: Stub  # set in main
CPU: CpuClock  # set in main
T0 = time.perf_counter()


@dataclass
class System:
    name: str
    run: Callable[[Slot], Awaitable[bool]]
    conn: asyncpg.Connection
    kind: str  # whose requests: "roost" (streamed) or "langgraph"
    before: Callable[[int], Awaitable[None]] | None = None
    after: Callable[[], Awaitable[None]] | None = None
    check: Callable[[datetime], Awaitable[int]] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


async def measure(system: System, n: int, concurrency: int, round_: int,
                  stub_p50: float) -> Phase:
    conn = system.conn
    await conn.execute("VACUUM FULL")
    await conn.execute("CHECKPOINT")
    size0, xid0, wal0 = await db_state(conn)
    tables0 = await table_sizes(conn)
    since = datetime.now(UTC)
    if system.before is not None:
        await system.before(concurrency)
    cpu0 = CPU.read()
    seconds, samples, failed = await drive(system.run, n, concurrency)
    cpu1 = CPU.read()
    if system.after is not None:
        await system.after()
    size1, xid1, wal1 = await db_state(conn)
    await conn.execute("VACUUM FULL")
    size2, _, _ = await db_state(conn)
    tables2 = await table_sizes(conn)
    if system.check is not None:
        failed = max(failed, await system.check(since))
    steps = n * STEPS_PER_RUN
    step_ms = [s for sample in samples for s in sample.steps_ms()]
    overhead = [s - stub_p50 for s in step_ms]
    return Phase(
        system=system.name, concurrency=concurrency, round=round_, runs=n, steps=steps,
        seconds=round(seconds, 3), steps_per_s=round(steps / seconds, 1),
        step_p50_ms=round(pct(step_ms, 0.5), 2), step_p99_ms=round(pct(step_ms, 0.99), 2),
        stub_p50_ms=round(stub_p50, 2), overhead_p50_ms=round(pct(overhead, 0.5), 2),
        overhead_p99_ms=round(pct(overhead, 0.99), 2),
        bytes_allocated_per_step=round((size1 - size0) / steps),
        bytes_live_per_step=round((size2 - size0) / steps),
        write_xacts_per_step=round((xid1 - xid0) / steps, 2),
        wal_bytes_per_step=round((wal1 - wal0) / steps),
        bench_cpu_ms_per_step=round((cpu1[0] - cpu0[0]) * 1000 / steps, 2),
        pg_cpu_ms_per_step=round((cpu1[1] - cpu0[1]) * 1000 / steps, 2),
        stub_cpu_ms_per_step=round((cpu1[2] - cpu0[2]) * 1000 / steps, 2), bad_runs=failed,
        bytes_live_by_table=dict(sorted(
            ((t, round((b - tables0.get(t, 0)) / steps)) for t, b in tables2.items()
             if b != tables0.get(t, 0)), key=lambda kv: -kv[1])))


async def capture(run: Callable[[Slot], Awaitable[bool]]) -> list[dict[str, Any]]:
    """The chat requests one run sends to the stub."""
    await asyncio.to_thread(STUB.server.reset)
    _, _, failed = await drive(run, 1, 1)
    assert failed == 0, "the capture run did not go as scripted"
    seen = await asyncio.to_thread(STUB.server.requests, "/v1/chat/completions")
    assert len(seen) == STEPS_PER_RUN, len(seen)
    await asyncio.to_thread(STUB.server.reset)
    return [s.body for s in seen]


async def profile_roost(roost: Roost, runs: int, worker: bool) -> dict[str, Any]:
    """Every asyncpg statement of ``runs`` sequential Roost runs: per step."""
    from breakdown import Recorder

    recorder = Recorder()
    recorder.install()
    if worker:
        await roost.start_worker(10)
    per_run: list[dict[str, float]] = []
    kinds: Counter[str] = Counter()
    kind_ms: Counter[str] = Counter()
    try:
        for _ in range(runs):
            recorder.sent = []
            recorder.on = True
            wall, _, failed = await drive(roost.run_worker if worker else roost.run_direct,
                                                1, 1)
            recorder.on = False
            assert failed == 0
            sent = list(recorder.sent)
            begins = sum(1 for sql, _ in sent if sql.upper().startswith("BEGIN"))
            db = sum(e for _, e in sent)
            per_run.append({"wall_ms": wall * 1000, "db_ms": db * 1000,
                            "statements": len(sent), "transactions": begins})
            kinds.update(statement_kind(sql) for sql, _ in sent)
            for sql, elapsed in sent:
                kind_ms[statement_kind(sql)] += elapsed * 1000
    finally:
        if worker:
            await roost.stop_worker()
    med = {k: statistics.median(r[k] for r in per_run) for k in per_run[0]}
    return {
        "runs": runs,
        "per_step": {
            "wall_ms": round(med["wall_ms"] / STEPS_PER_RUN, 2),
            "db_ms": round(med["db_ms"] / STEPS_PER_RUN, 2),
            "python_and_wait_ms": round((med["wall_ms"] - med["db_ms"]) / STEPS_PER_RUN, 2),
            "statements": round(med["statements"] / STEPS_PER_RUN, 1),
            "transactions": round(med["transactions"] / STEPS_PER_RUN, 1),
        },
        "statements_per_run_by_kind": {k: round(v / runs, 1) for k, v in kinds.most_common()},
        "db_ms_per_run_by_kind": {k: round(v / runs, 1) for k, v in kind_ms.most_common()},
    }


async def profile_langgraph(graph: LangGraph, runs: int, durability: str) -> dict[str, Any]:
    """Statements LangGraph's checkpointer sends (psycopg cursor calls; an
    ``executemany`` counts one per row), per step, over ``runs`` sequential runs."""
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

    AsyncCursor.execute = counted_execute  # type: ignore[method-assign]
    AsyncCursor.executemany = counted_executemany  # type: ignore[method-assign]
    try:
        wall, _, failed = await drive(graph.runner(durability), runs, 1)
    finally:
        AsyncCursor.execute = execute  # type: ignore[method-assign]
        AsyncCursor.executemany = executemany  # type: ignore[method-assign]
    assert failed == 0
    steps = runs * STEPS_PER_RUN
    return {"runs": runs, "durability": durability,
            "per_step": {"wall_ms": round(wall * 1000 / steps, 2),
                         "statements": round(sum(kinds.values()) / steps, 1)},
            "statements_per_run_by_kind": {k: round(v / runs, 1) for k, v in kinds.most_common()}}


def summarise(phases: list[Phase]) -> list[dict[str, Any]]:
    """Median over rounds per (system, concurrency)."""
    out: list[dict[str, Any]] = []
    keys = sorted({(p.concurrency, p.system) for p in phases},
                  key=lambda k: (k[0], ORDER.index(k[1]) if k[1] in ORDER else 99))
    for concurrency, system in keys:
        series = [asdict(p) for p in phases if (p.concurrency, p.system) == (concurrency, system)]
        row: dict[str, Any] = {"system": system, "concurrency": concurrency,
                               "rounds": len(series)}
        for key, value in series[0].items():
            if key in row or key == "round":
                continue
            if isinstance(value, int | float):
                row[key] = round(statistics.median(s[key] for s in series), 2)
            elif isinstance(value, dict):  # per table: the median of each over the rounds
                names = {n for s in series for n in s[key]}
                row[key] = dict(sorted(
                    ((n, statistics.median(s[key].get(n, 0) for s in series)) for n in names),
                    key=lambda kv: -kv[1]))
        out.append(row)
    return out


ORDER = ["roost-worker", "roost-direct", "langgraph-sync", "langgraph-async"]


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
                "steps_per_s": round(r["steps_per_s"] / p["steps_per_s"], 2),
                "overhead_p50": round(r["overhead_p50_ms"] / p["overhead_p50_ms"], 2),
                "overhead_p99": round(r["overhead_p99_ms"] / p["overhead_p99_ms"], 2),
                "bytes_live": round(r["bytes_live_per_step"] / p["bytes_live_per_step"], 2),
                "bytes_allocated": round(r["bytes_allocated_per_step"]
                                         / p["bytes_allocated_per_step"], 2),
                "wal_bytes": round(r["wal_bytes_per_step"] / p["wal_bytes_per_step"], 2)})
    return out


def table(rows: list[dict[str, Any]]) -> str:
    lines = ["| system | runs in flight | steps/s | step p50 / p99 ms | stub p50 ms | "
             "overhead/step p50 / p99 ms | CPU ms/step: process / PostgreSQL | "
             "DB bytes/step live (allocated) | write xacts/step |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(
            f"| {r['system']} | {r['concurrency']} | {r['steps_per_s']:,.1f} | "
            f"{r['step_p50_ms']:.1f} / {r['step_p99_ms']:.1f} | {r['stub_p50_ms']:.2f} | "
            f"{r['overhead_p50_ms']:.1f} / {r['overhead_p99_ms']:.1f} | "
            f"{r['bench_cpu_ms_per_step']:.1f} / {r['pg_cpu_ms_per_step']:.1f} | "
            f"{r['bytes_live_per_step']:,.0f} ({r['bytes_allocated_per_step']:,.0f}) | "
            f"{r['write_xacts_per_step']:.1f} |")
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> None:
    global STUB, CPU
    from importlib.metadata import version

    from roost.db.embedded import start_embedded
    from roost.db.engine import ensure_database_exists
    from roost.process import freeze_startup_heap

    phases: list[Phase] = []
    stub_latency: list[dict[str, Any]] = []
    profile: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="roost-bench-agents-") as tmp_dir:
        tmp = Path(tmp_dir)
        server = start_embedded(tmp / "pg", delete_on_exit=True)
        STUB = Stub()
        CPU = CpuClock(tmp / "pg", STUB.server.process.pid)
        roost: Roost | None = None
        graph: LangGraph | None = None
        conns: list[asyncpg.Connection] = []
        try:
            for name in ("bench_roost", "bench_langgraph"):
                ensure_database_exists(server, name)
            admin = await asyncpg.connect(server.libpq_url("postgres"))
            pg_version = await admin.fetchval("SHOW server_version")
            await admin.close()
            roost = Roost(server.libpq_url("bench_roost"), tmp / "roost-data", STUB)
            await roost.setup()
            graph = LangGraph(server.libpq_url("bench_langgraph"), STUB)
            await graph.setup()
            roost_conn = await asyncpg.connect(server.libpq_url("bench_roost"))
            graph_conn = await asyncpg.connect(server.libpq_url("bench_langgraph"))
            conns += [roost_conn, graph_conn]
            r = roost

            async def start_worker(concurrency: int) -> None:
                await r.start_worker(max(10, concurrency))

            async def cancel_jobs() -> None:
                await r.after_direct(roost_conn)

            async def check_roost(since: datetime) -> int:
                return await r.check(roost_conn, since)

            systems = {
                "roost-worker": System("roost-worker", r.run_worker, roost_conn, "roost",
                                       before=start_worker, after=r.stop_worker,
                                       check=check_roost),
                "roost-direct": System("roost-direct", r.run_direct, roost_conn, "roost",
                                       after=cancel_jobs, check=check_roost),
                "langgraph-sync": System("langgraph-sync", graph.runner("sync"), graph_conn,
                                         "langgraph"),
                "langgraph-async": System("langgraph-async", graph.runner("async"), graph_conn,
                                          "langgraph"),
            }
            wanted = [systems[name] for name in ORDER if name in args.systems]

            print("warm-up and the requests each system sends", flush=True)
            bodies = {"roost": await capture(r.run_direct),
                      "langgraph": await capture(graph.runner("sync"))}
            await cancel_jobs()
            for system in wanted:
                if system.before is not None:
                    await system.before(max(args.concurrency))
                await drive(system.run, 2 * max(args.concurrency), max(args.concurrency))
                if system.after is not None:
                    await system.after()
            # What `roost worker` does once started (roost.process): without it, full
            # collections of 100-420 ms (9 in a two-round run) landed on random steps of
            # either system and decided the p99s.  One process: both systems get it.
            freeze_startup_heap()

            for round_ in range(args.rounds):
                order = wanted[round_ % len(wanted):] + wanted[:round_ % len(wanted)]
                for concurrency in args.concurrency:
                    stub_p50: dict[str, float] = {}
                    for kind, sent in bodies.items():
                        lat = await replay(STUB, sent, args.runs, concurrency)
                        stub_p50[kind] = statistics.median(lat)
                        stub_latency.append({
                            "round": round_, "concurrency": concurrency, "requests_of": kind,
                            "requests": len(lat), "p50_ms": round(stub_p50[kind], 3),
                            "p99_ms": round(pct(lat, 0.99), 3)})
                    for system in order:
                        phase = await measure(system, args.runs, concurrency, round_,
                                              stub_p50[system.kind])
                        phases.append(phase)
                        print(f"  round {round_} x{concurrency} {system.name:<16} "
                              f"{phase.steps_per_s:>7.1f} steps/s  step p50 "
                              f"{phase.step_p50_ms:>6.1f} ms  overhead p50 "
                              f"{phase.overhead_p50_ms:>6.1f} ms  live "
                              f"{phase.bytes_live_per_step:>6,.0f} B/step  "
                              f"CPU {phase.bench_cpu_ms_per_step:>5.1f} + "
                              f"{phase.pg_cpu_ms_per_step:>5.1f} ms/step  "
                              f"bad {phase.bad_runs}  ({time.perf_counter() - T0:.0f} s)",
                              flush=True)

            if args.profile_runs and any(s.name.startswith("roost") for s in wanted):
                print("profile: every statement of Roost's runs", flush=True)
                profile = {"direct": await profile_roost(r, args.profile_runs, worker=False)}
                await cancel_jobs()
                profile["worker"] = await profile_roost(r, args.profile_runs, worker=True)
            if args.profile_runs and any(s.name.startswith("langgraph") for s in wanted):
                profile["langgraph-sync"] = await profile_langgraph(graph, args.profile_runs,
                                                                    "sync")
        finally:
            for conn in conns:
                await conn.close()
            if graph is not None:
                await graph.close()
            if roost is not None:
                await roost.close()
            await STUB.close()
            server.stop()

    rows = summarise(phases)
    compared = ratios(rows)
    print()
    print(table(rows))
    print("\nRoost / LangGraph (steps/s: higher is better; the rest: lower is better)")
    for c in compared:
        print(f"  {c['roost']:<13} / {c['vs']:<15} x{c['concurrency']}: steps/s "
              f"{c['steps_per_s']:.2f}, overhead p50 {c['overhead_p50']:.2f} p99 "
              f"{c['overhead_p99']:.2f}, live bytes {c['bytes_live']:.2f}, allocated "
              f"{c['bytes_allocated']:.2f}")
    if profile:
        print("\nper step (profile, sequential):")
        for mode, p in profile.items():
            print(f"  {mode}: {p['per_step']}")
            for kind, count in list(p["statements_per_run_by_kind"].items())[:16]:
                ms = p.get("db_ms_per_run_by_kind", {}).get(kind, float("nan"))
                print(f"      {count:>6.1f} / run  {ms:>7.1f} ms / run  {kind}")
    out = write_json(Path(args.out), {
        "benchmark": "agents",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(),
                    "platform": platform.platform(), "postgres": pg_version,
                    "load_average_at_end": os.getloadavg()},
        "versions": {name: version(name) for name in (
            "langgraph", "langgraph-checkpoint-postgres", "langchain-openai",
            "langchain-core", "psycopg", "sqlalchemy", "asyncpg")},
        "args": vars(args),
        "definitions": {
            "step": "one model call and the one tool call it asked for (10 per run)",
            "step_ms": "between consecutive tool-call starts (first: run start; last: run end)",
            "stub_p50_ms": "median latency of the same requests replayed with httpx, same "
                           "round and concurrency",
            "overhead_ms": "step_ms - stub_p50_ms",
            "bytes_live_per_step": "sum of pg_total_relation_size over the system's tables "
                                   "after VACUUM FULL, after - before, / steps",
            "bytes_allocated_per_step": "same before VACUUM FULL (dead row versions included)",
            "write_xacts_per_step": "transaction ids assigned during the phase / steps",
            "wal_bytes_per_step": "WAL insert position difference / steps; includes full-page "
                                  "images after the phase's CHECKPOINT, timed checkpoints and "
                                  "autovacuum: noisy, not comparable between phases",
        },
        "summary": rows, "roost_vs_langgraph": compared, "phases": [asdict(p) for p in phases],
        "stub_latency": stub_latency, "profile": profile,
    })
    print(f"\nwrote {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs per phase")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--systems", nargs="+", default=ORDER)
    parser.add_argument("--profile-runs", type=int, default=5)
    parser.add_argument("--out", default=str(RESULTS), help="the results JSON")
    asyncio.run(main(parser.parse_args()))
