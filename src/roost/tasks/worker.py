"""The worker: claims ready jobs, runs their handlers, records the outcome.

One asyncio loop per process runs these cooperating loops:

* **dispatch** claims up to the number of free slots with one
  ``UPDATE ... FROM (SELECT ... ORDER BY priority, scheduled_at FOR UPDATE SKIP LOCKED)``,
  so concurrent workers never take the same row, then waits for a NOTIFY (the insert
  trigger), a freed slot, a retry timer or the poll interval, whichever comes first;
* **heartbeat** renews the lease of every in-flight job in one statement every third of
  the lease; a job missing from the answer was cancelled or reclaimed, so its handler is
  cancelled here (and every write about a job is fenced on ``attempts`` and the worker id,
  so a worker that lost a job can no longer change it);
* **flush** writes completions in batches (one ``UPDATE ... FROM unnest(...)``);
* **reaper** turns running jobs whose lease expired (their worker died) into ``stuck``
  ones, retried at once, or into dead letters when they are out of retries;
* **schedules** fires periodic jobs (see :mod:`roost.tasks.schedules`);
* **listen** keeps a LISTEN connection, reconnecting when it drops (polling covers the gap).

The hot path (claim, heartbeat, completion, retry) uses a small asyncpg pool directly;
rare paths that must also write an audit record (dead letters) use the ORM session.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import secrets
import socket
import time
import traceback
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import asyncpg
import structlog
from pydantic import ValidationError
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from roost import tracing
from roost.audit.chainer import run_chainer
from roost.context import RequestContext, reset_context, set_context
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.tasks import schedules as schedules_mod
from roost.tasks import service
from roost.tasks.handlers import (
    MAX_RESULT_BYTES,
    PermanentError,
    TaskContext,
    TaskType,
    discover,
    get_task_type,
    task_types,
    worker_shutdown_hooks,
)
from roost.tasks.models import READY_PREDICATE
from roost.tasks.payloads import PayloadError, dump_json_object, storable_text

log = structlog.get_logger("roost.tasks.worker")

MAX_ERROR_CHARS = 4000
MAX_STACK_CHARS = 32_000
HISTORY_STACK_CHARS = 4000
# The longest delay before a retry, whatever the task type's backoff: PostgreSQL's
# interval arithmetic stops a little past 290,000 years, and a failed retry write would
# leave the job running until its lease expired (then retried at once).
MAX_BACKOFF_S = 100 * 365 * 86_400.0
FLUSH_BATCH = 500
# A finished job frees a slot, so the dispatcher usually acknowledges it with its next
# claim; the flush loop writes what is still unacknowledged after this long.
FLUSH_DELAY_S = 0.02
# Each shutdown hook of a domain (stopping child processes...) gets this long.
SHUTDOWN_HOOK_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class WorkerConfig:
    concurrency: int = 8
    queues: tuple[str, ...] | None = None  # None: every queue
    lease_s: float = 30.0
    poll_interval_s: float = 1.0
    shutdown_timeout_s: float = 30.0
    schedules: bool = True
    listen: bool = True  # off behind PgBouncer in transaction mode (LISTEN needs a session)
    # Behind PgBouncer in transaction mode: no prepared-statement cache and no startup
    # parameters (session settings would leak between its clients).
    pgbouncer: bool = False
    worker_id: str | None = None
    # How often this worker's audit chainer runs (roost.audit.chainer); None: no chainer.
    audit_chain_interval_s: float | None = 0.2

    @property
    def heartbeat_s(self) -> float:
        return self.lease_s / 3

    @property
    def reap_interval_s(self) -> float:
        return max(0.2, min(self.lease_s / 2, 10.0))


def default_worker_id() -> str:
    return f"{socket.gethostname()[:200]}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(eq=False)
class ClaimedJob:
    id: uuid.UUID
    task_type: str
    payload: dict[str, Any]
    priority: str
    queue: str
    attempts: int
    retry_count: int
    max_retries: int
    scheduled_at: datetime
    started_at: datetime
    task: asyncio.Task[None] | None = None
    lost: bool = False  # cancelled by an operator or reclaimed: write nothing more
    releasing: bool = False  # shutdown: put it back in the queue


_PRIORITY_RANK = {p: i for i, p in enumerate(
    ("critical", "high", "normal", "low", "background"))}

# Claim: up to $2 ready jobs, in priority order, skipping rows other workers hold.  The
# "done" CTE acknowledges this worker's finished jobs in the same statement (and commit),
# so a busy worker spends one round trip per batch, not two.  Its rows are running ones,
# never ready ones, so the two updates cannot touch the same row.
_CLAIM_SQL = """
WITH done AS (
  UPDATE background_tasks AS t
  SET status = 'completed', completed_at = v.finished_at, result = v.result::jsonb,
      error_message = NULL, lease_expires_at = NULL
  FROM unnest($5::uuid[], $6::int[], $7::text[], $8::timestamptz[])
       AS v(id, attempts, result, finished_at)
  WHERE t.id = v.id AND t.attempts = v.attempts AND t.status = 'running' AND t.worker_id = $3
), next AS (
  SELECT id FROM background_tasks
  WHERE {ready} AND scheduled_at <= now() AND task_type = ANY($1::text[]) {queue_filter}
  ORDER BY priority, scheduled_at, id
  LIMIT $2
  FOR UPDATE SKIP LOCKED
)
UPDATE background_tasks AS t
SET status = 'running', worker_id = $3, started_at = now(), heartbeat_at = now(),
    lease_expires_at = now() + make_interval(secs => $4), attempts = t.attempts + 1
FROM next WHERE t.id = next.id
RETURNING t.id, t.task_type, t.payload, t.priority::text, t.queue, t.attempts,
          t.retry_count, t.max_retries, t.scheduled_at, t.started_at
"""

_COMPLETE_SQL = """
UPDATE background_tasks AS t
SET status = 'completed', completed_at = v.finished_at, result = v.result::jsonb,
    error_message = NULL, lease_expires_at = NULL
FROM unnest($1::uuid[], $2::int[], $3::text[], $4::timestamptz[])
     AS v(id, attempts, result, finished_at)
WHERE t.id = v.id AND t.attempts = v.attempts AND t.status = 'running' AND t.worker_id = $5
"""

_HEARTBEAT_SQL = """
UPDATE background_tasks AS t
SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => $4)
FROM unnest($1::uuid[], $2::int[]) AS v(id, attempts)
WHERE t.id = v.id AND t.attempts = v.attempts AND t.status = 'running' AND t.worker_id = $3
RETURNING t.id
"""

_RETRY_SQL = """
UPDATE background_tasks
SET status = 'failed', retry_count = $4, error_message = $5,
    scheduled_at = now() + make_interval(secs => $6), lease_expires_at = NULL,
    retry_history = retry_history || jsonb_build_array($7::jsonb)
WHERE id = $1 AND attempts = $2 AND status = 'running' AND worker_id = $3
"""

_RELEASE_SQL = """
WITH released AS (
  UPDATE background_tasks
  SET status = 'queued', scheduled_at = now(), lease_expires_at = NULL,
      retry_history = retry_history || jsonb_build_array($4::jsonb)
  WHERE id = $1 AND attempts = $2 AND status = 'running' AND worker_id = $3
  RETURNING queue
)
SELECT pg_notify('roost_tasks', queue) FROM released
"""

_REAP_SQL = text(
    """
    SELECT id, attempts, worker_id, retry_count, max_retries, started_at, queue
    FROM background_tasks
    WHERE status = 'running' AND lease_expires_at < now()
    ORDER BY lease_expires_at
    LIMIT 100
    FOR UPDATE SKIP LOCKED
    """
)

_STUCK_SQL = text(
    """
    UPDATE background_tasks
    SET status = 'stuck', retry_count = :retry_count, error_message = :error,
        scheduled_at = now(), lease_expires_at = NULL,
        retry_history = retry_history || jsonb_build_array(CAST(:entry AS jsonb))
    WHERE id = :id AND attempts = :attempts AND status = 'running'
    """
)


def backoff_delay(tt: TaskType, retry_count: int) -> float:
    """Exponential backoff with "equal jitter": half fixed, half random, so retries of
    jobs that failed together (a provider outage) spread out instead of stampeding."""
    ceiling = min(tt.backoff_max_s, MAX_BACKOFF_S,
                  tt.backoff_base_s * 2.0 ** max(0, retry_count - 1))
    return float(ceiling / 2 + random.uniform(0, ceiling / 2))  # noqa: S311 - jitter, not security


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat()


def _message(exc: BaseException) -> str | None:
    """``str(exc)``, or None when the exception's ``__str__`` itself fails."""
    try:
        return str(exc)
    except Exception:
        return None


def _error_text(exc: BaseException) -> str:
    """``Type: message`` as PostgreSQL can store it (an exception's message may hold a NUL
    or a lone surrogate: text read from a binary file, an undecodable file name)."""
    message = _message(exc)
    if message is None:
        text = f"{type(exc).__name__} (message unavailable)"
    else:
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
    return storable_text(text)[:MAX_ERROR_CHARS]


def _ascii(text: str) -> str:
    return text.encode("ascii", "backslashreplace").decode("ascii")


def _connection_lost(exc: BaseException) -> bool:
    """The database could not be reached (as opposed to refusing what was written)."""
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        exc = exc.orig if isinstance(exc.orig, BaseException) else exc
    # OperatorInterventionError: the server shuts down or cancelled the statement.
    return isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError
                      | asyncpg.PostgresConnectionError | asyncpg.OperatorInterventionError)


def _result_json(result: Any) -> str | None:
    """The handler's answer as jsonb text; never fails the job (its work is done)."""
    if result is None:
        return None
    if not isinstance(result, dict):
        result = {"value": result}
    try:
        raw = dump_json_object(result, what="result")
    except (PayloadError, RecursionError) as exc:
        log.warning("task_result_not_json", error=str(exc))
        return json.dumps({"error": f"result was not storable JSON: {exc}"})
    if len(raw.encode("utf-8")) > MAX_RESULT_BYTES:
        return json.dumps({"error": f"result exceeded {MAX_RESULT_BYTES} bytes",
                           "bytes": len(raw.encode("utf-8"))})
    return raw


def asyncpg_dsn(database: Database) -> str:
    return database.url.set(drivername="postgresql").render_as_string(hide_password=False)


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Pool release without asyncpg's default reset query (``RESET ALL``, ``UNLISTEN *``,
    ...): these connections hold no session state to clear, and that query would cost a
    round trip after every claim and batch.  An open transaction is still rolled back."""


async def _init_connection(conn: asyncpg.Connection) -> None:
    await conn.set_type_codec("jsonb", schema="pg_catalog", encoder=lambda v: v,
                              decoder=json.loads, format="text")


class Worker:
    """A queue worker in the current event loop; ``roost worker`` runs one per process."""

    def __init__(
        self, database: Database, config: WorkerConfig | None = None, *,
        statement_timeout_ms: int | None = None,
    ) -> None:
        self.database = database
        self.config = config or WorkerConfig()
        self.worker_id = self.config.worker_id or default_worker_id()
        self.started = asyncio.Event()
        self._statement_timeout_ms = statement_timeout_ms
        self._pool: asyncpg.Pool | None = None
        self._inflight: dict[uuid.UUID, ClaimedJob] = {}
        self._wake = asyncio.Event()
        self._stopping = False
        self._force = asyncio.Event()
        self._done: list[tuple[uuid.UUID, int, str | None, datetime]] = []
        self._done_event = asyncio.Event()
        self._flush_closing = False
        self._background: list[asyncio.Task[None]] = []
        queues = self.config.queues
        self._queue_set = frozenset(queues) if queues else None
        self._claim_sql = _CLAIM_SQL.format(
            ready=READY_PREDICATE,
            queue_filter="AND queue = ANY($9::text[])" if queues else "",
        )
        self.jobs_started = 0
        self.jobs_completed = 0
        self.jobs_failed = 0

    # --- lifecycle ---------------------------------------------------------------------

    def stop(self, *, force: bool = False) -> None:
        """Stop taking work; in-flight jobs get ``shutdown_timeout_s`` to finish (none if
        ``force``), then are released back to the queue."""
        self._stopping = True
        self._wake.set()
        if force:
            self._force.set()

    @property
    def inflight(self) -> int:
        return len(self._inflight)

    async def run(self) -> None:
        cfg = self.config
        # Every domain's job types, whoever started this worker: `roost serve`'s own
        # worker never ran a job type no request of its process had imported yet (an
        # agent run started by the CLI or another process stayed pending).
        discover()
        # The worker's own bookkeeping (claim, heartbeat, completion, retry, release) does
        # not wait for its WAL flush: after a PostgreSQL crash the last moments of it may
        # be lost, and the jobs concerned simply run again, which at-least-once delivery
        # allows anyway.  Enqueues (the caller's transaction) and dead letters (the ORM
        # session) stay fully durable.  This takes an fsync off every claim and batch.
        server_settings = {"application_name": "roost-worker"}
        if not cfg.pgbouncer:
            server_settings["synchronous_commit"] = "off"
            if self._statement_timeout_ms is not None:
                server_settings["statement_timeout"] = str(self._statement_timeout_ms)
        self._pool = await asyncpg.create_pool(
            asyncpg_dsn(self.database), min_size=1, max_size=4 + min(cfg.concurrency, 4),
            statement_cache_size=0 if cfg.pgbouncer else 100,
            server_settings=server_settings, init=_init_connection, reset=_keep_session,
        )
        try:
            await self._check_schema()
            flusher = asyncio.create_task(self._flush_loop(), name="roost-flush")
            self._background = [
                asyncio.create_task(self._heartbeat_loop(), name="roost-heartbeat"),
                asyncio.create_task(self._reaper_loop(), name="roost-reaper"),
            ]
            if cfg.listen:
                self._background.append(
                    asyncio.create_task(self._listen_loop(), name="roost-listen"))
            if cfg.schedules:
                self._background.append(
                    asyncio.create_task(self._schedule_loop(), name="roost-schedules"))
            if cfg.audit_chain_interval_s is not None:
                # Cancelled with the other background loops at shutdown.
                self._background.append(asyncio.create_task(
                    run_chainer(self._link_audit, cfg.audit_chain_interval_s, asyncio.Event()),
                    name="roost-audit-chainer"))
            log.info("worker_started", worker_id=self.worker_id, concurrency=cfg.concurrency,
                     queues=list(cfg.queues) if cfg.queues else "all",
                     task_types=sorted(task_types()), lease_s=cfg.lease_s)
            self.started.set()
            await self._dispatch_loop()
            await self._drain()
            self._flush_closing = True
            self._done_event.set()
            await flusher
        finally:
            for task in self._background:
                task.cancel()
            for task in self._background:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
            await self._run_shutdown_hooks()
            await self._pool.close()
            log.info("worker_stopped", worker_id=self.worker_id, started=self.jobs_started,
                     completed=self.jobs_completed, failed=self.jobs_failed)

    async def _link_audit(self, limit: int) -> int:
        assert self._pool is not None
        async with self._pool.acquire() as conn, conn.transaction():
            linked: int = await conn.fetchval("SELECT roost_audit_link($1, false)", limit)
            return linked

    async def _run_shutdown_hooks(self) -> None:
        """The domains' ``on_worker_shutdown`` hooks, each bounded; one failing never
        keeps the others from running."""
        for hook in worker_shutdown_hooks():
            try:
                async with asyncio.timeout(SHUTDOWN_HOOK_TIMEOUT_S):
                    await hook()
            except Exception as exc:
                log.warning("worker_shutdown_hook_failed", hook=getattr(hook, "__qualname__", "?"),
                            error=_error_text(exc))

    async def _check_schema(self) -> None:
        assert self._pool is not None
        present = await self._pool.fetchval("SELECT to_regclass('background_tasks')")
        if present is None:
            raise RuntimeError("the task tables are missing: run 'roost db upgrade' first")

    # --- dispatch ----------------------------------------------------------------------

    async def _dispatch_loop(self) -> None:
        cfg = self.config
        failure_pause = 0.1
        while not self._stopping:
            self._wake.clear()
            free = cfg.concurrency - len(self._inflight)
            if free > 0:
                try:
                    jobs = await self._claim(free)
                    failure_pause = 0.1
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                        TimeoutError) as exc:
                    # The database is unreachable or restarting: wait, never die.
                    log.warning("claim_failed", error=_error_text(exc), retry_in_s=failure_pause)
                    await self._sleep_unless_stopping(failure_pause)
                    failure_pause = min(failure_pause * 2, 5.0)
                    continue
                for job in jobs:
                    self._start(job)
                if jobs and len(jobs) == free:
                    continue  # there may be more ready: claim again right away
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), cfg.poll_interval_s)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)

    async def _claim(self, limit: int) -> list[ClaimedJob]:
        assert self._pool is not None
        names = sorted(task_types())
        if not names:
            return []
        acks, self._done = self._done[:FLUSH_BATCH], self._done[FLUSH_BATCH:]
        args: list[Any] = [
            names, limit, self.worker_id, self.config.lease_s,
            [a[0] for a in acks], [a[1] for a in acks], [a[2] for a in acks],
            [a[3] for a in acks],
        ]
        if self.config.queues:
            args.append(list(self.config.queues))
        try:
            rows = await self._pool.fetch(self._claim_sql, *args)
        except BaseException:
            self._done[:0] = acks  # not acknowledged: the flush loop or next claim retries
            raise
        jobs = [
            ClaimedJob(
                id=r[0], task_type=r[1], payload=r[2], priority=r[3], queue=r[4],
                attempts=r[5], retry_count=r[6], max_retries=r[7], scheduled_at=r[8],
                started_at=r[9],
            )
            for r in rows
        ]
        # UPDATE ... RETURNING has no order: start them in the order they were chosen.
        jobs.sort(key=lambda j: (_PRIORITY_RANK.get(j.priority, 9), j.scheduled_at))
        return jobs

    def _start(self, job: ClaimedJob) -> None:
        old = self._inflight.get(job.id)
        if old is not None:  # its lease was taken over and this worker claimed it again
            self._lose(old, "claimed again after its lease was taken over")
        self._inflight[job.id] = job
        self.jobs_started += 1
        job.task = asyncio.create_task(self._execute(job), name=f"roost-task-{job.id}")

    async def _execute(self, job: ClaimedJob) -> None:
        try:
            with tracing.NOOP if not tracing.enabled() else tracing.span(
                    f"job {job.task_type}", kind="consumer", attributes={
                        "roost.task.id": str(job.id), "roost.task.type": job.task_type,
                        "roost.task.queue": job.queue, "roost.task.attempt": job.attempts,
                        "roost.task.priority": job.priority, "roost.worker.id": self.worker_id}):
                await self._run_job(job)
        except asyncio.CancelledError:
            pass  # the job was lost or released; nothing else to do here
        except Exception as exc:  # bookkeeping failed: the lease will expire and it retries
            log.error("task_bookkeeping_failed", task_id=str(job.id), error=_error_text(exc))
        finally:
            # Only this attempt's entry: the job may have been claimed again meanwhile.
            if self._inflight.get(job.id) is job:
                del self._inflight[job.id]
            self._wake.set()

    async def _run_job(self, job: ClaimedJob) -> None:
        tt = get_task_type(job.task_type)
        if tt is None:  # unreachable: the claim only takes registered types
            await self._fail(job, None, RuntimeError(f"no handler for {job.task_type!r}"),
                             outcome="no_handler", permanent=True)
            return
        ctx = TaskContext(
            task_id=job.id, task_type=job.task_type, queue=job.queue, priority=job.priority,
            attempt=job.attempts, retry_count=job.retry_count, max_retries=job.max_retries,
            scheduled_at=job.scheduled_at, worker_id=self.worker_id, database=self.database,
        )
        token = set_context(RequestContext(request_id=f"task-{job.id}"))
        try:
            payload: Any = job.payload
            if tt.payload_model is not None:
                # Only here is a ValidationError permanent: a payload enqueued before its
                # model changed never fits.  One the handler raises itself (a malformed
                # upstream answer) is an ordinary failure, retried like any other.
                try:
                    payload = tt.payload_model.model_validate(job.payload)
                except ValidationError as exc:
                    await self._fail(job, tt, exc, outcome="permanent_error", permanent=True)
                    return
            await self._call(job, tt, ctx, payload)
        finally:
            reset_context(token)

    async def _call(self, job: ClaimedJob, tt: TaskType, ctx: TaskContext, payload: Any) -> None:
        """Run the handler and record how the attempt ended."""
        started = time.monotonic()
        try:
            if tt.is_async:
                call = tt.handler(ctx, payload)
            else:
                call = asyncio.to_thread(tt.handler, ctx, payload)
            if tt.timeout_s is not None:
                async with asyncio.timeout(tt.timeout_s):
                    result = await call
            else:
                result = await call
        except asyncio.CancelledError as exc:
            if job.releasing and not job.lost:
                await self._release(job)
                return
            if job.lost:
                return
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # cancelled from outside (the event loop is closing)
            # Nobody cancelled this job: the handler's own code raised it (it awaited an
            # inner task that was cancelled).  A failure like any other, recorded now
            # rather than left running until its lease expires.
            await self._fail(job, tt, exc, outcome="error")
            return
        except PermanentError as exc:
            await self._fail(job, tt, exc, outcome="permanent_error", permanent=True)
            return
        except TimeoutError as exc:
            timed_out = tt.timeout_s is not None and time.monotonic() - started >= tt.timeout_s
            await self._fail(job, tt, exc, outcome="timeout" if timed_out else "error",
                             message=f"timed out after {tt.timeout_s} s" if timed_out else None)
            return
        except BaseException as exc:  # a handler must never kill the worker
            await self._fail(job, tt, exc, outcome="error")
            return
        self._complete(job, result)

    # --- outcomes ----------------------------------------------------------------------

    def _complete(self, job: ClaimedJob, result: Any) -> None:
        self.jobs_completed += 1
        tracing.current().set("roost.task.outcome", "completed")
        self._done.append((job.id, job.attempts, _result_json(result), utcnow()))
        self._done_event.set()

    async def _flush_loop(self) -> None:
        """Writes completions the dispatcher did not carry with a claim: when every slot
        is busy with long jobs, when claims fail, and at shutdown."""
        assert self._pool is not None
        while True:
            await self._done_event.wait()
            self._done_event.clear()
            if not self._flush_closing:
                await asyncio.sleep(FLUSH_DELAY_S)
            while self._done:
                batch, self._done = self._done[:FLUSH_BATCH], self._done[FLUSH_BATCH:]
                try:
                    await self._pool.execute(
                        _COMPLETE_SQL, [b[0] for b in batch], [b[1] for b in batch],
                        [b[2] for b in batch], [b[3] for b in batch], self.worker_id,
                    )
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                        TimeoutError) as exc:
                    log.warning("completion_flush_failed", error=_error_text(exc),
                                jobs=len(batch))
                    self._done[:0] = batch
                    if self._flush_closing and self._force.is_set():
                        return  # leases will expire; the jobs run again (at-least-once)
                    await asyncio.sleep(0.5)
            if self._flush_closing and not self._done:
                return

    def _history_entry(
        self, job: ClaimedJob, outcome: str, error: str | None, stack: str | None
    ) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "attempt": job.attempts, "worker_id": self.worker_id,
            "started_at": _iso(job.started_at), "ended_at": _iso(utcnow()),
            "outcome": outcome,
        }
        if error is not None:
            entry["error"] = error
        if stack is not None:
            entry["stack"] = stack[-HISTORY_STACK_CHARS:]
        return entry

    async def _fail(
        self, job: ClaimedJob, tt: TaskType | None, exc: BaseException, *, outcome: str,
        permanent: bool = False, message: str | None = None,
    ) -> None:
        self.jobs_failed += 1
        error = storable_text(message) if message is not None else _error_text(exc)
        span = tracing.current()  # the job's (roost.tracing)
        span.set("roost.task.outcome", outcome)
        span.fail(exc if message is None and _message(exc) is not None else error)
        stack = storable_text("".join(traceback.format_exception(exc))[-MAX_STACK_CHARS:])
        log.warning("task_failed", task_id=str(job.id), task_type=job.task_type,
                    attempt=job.attempts, error=error)
        dead = permanent or tt is None or job.retry_count + 1 > job.max_retries
        try:
            await self._record_failure(job, tt if not dead else None, outcome, error, stack)
        except Exception as write_exc:
            if _connection_lost(write_exc):
                raise  # the lease expires and the job runs again, as after a crash
            # Still record the attempt's end (else the job stays running until its lease
            # expires and runs again): with text that cannot be what failed.
            log.error("task_bookkeeping_failed", task_id=str(job.id), error=_error_text(write_exc),
                      retrying_with="generic error text")
            generic = (f"{_ascii(type(exc).__name__)} (its error could not be recorded: "
                       f"{_ascii(type(write_exc).__name__)})")
            await self._record_failure(job, tt if not dead else None, outcome, generic, None)

    async def _record_failure(
        self, job: ClaimedJob, retry_with: TaskType | None, outcome: str, error: str,
        stack: str | None,
    ) -> None:
        """Write a failed attempt: a retry after ``retry_with``'s backoff, or (None) the
        dead letters."""
        retry_count = job.retry_count + 1
        entry = self._history_entry(job, outcome, error, stack)
        if retry_with is None:
            async with self.database.transaction() as session:
                letter = await service.move_to_dead_letter(
                    session, job.id, attempts=job.attempts, worker_id=self.worker_id,
                    retry_count=retry_count, error_message=error, error_stack=stack,
                    history_entry=entry,
                )
            if letter is not None:
                log.error("task_dead_lettered", task_id=str(job.id), task_type=job.task_type,
                          dead_letter_id=str(letter.id))
            return
        delay = backoff_delay(retry_with, retry_count)
        entry["next_attempt_in_s"] = round(delay, 3)
        assert self._pool is not None
        await self._pool.execute(
            _RETRY_SQL, job.id, job.attempts, self.worker_id, retry_count, error, delay,
            json.dumps(entry),
        )
        # Wake this worker when the retry is due rather than at the next poll.
        asyncio.get_running_loop().call_later(delay, self._wake.set)

    async def _release(self, job: ClaimedJob) -> None:
        assert self._pool is not None
        entry = self._history_entry(job, "released", "worker shut down before the job ended",
                                    None)
        await self._pool.execute(_RELEASE_SQL, job.id, job.attempts, self.worker_id,
                                 json.dumps(entry))
        log.info("task_released", task_id=str(job.id), task_type=job.task_type)

    def _lose(self, job: ClaimedJob, reason: str) -> None:
        if job.lost or job.task is None:
            return
        job.lost = True
        log.warning("task_lost", task_id=str(job.id), reason=reason)
        job.task.cancel()

    # --- heartbeats and leases ---------------------------------------------------------

    async def _heartbeat_loop(self) -> None:
        assert self._pool is not None
        loop = asyncio.get_running_loop()
        last_ok = loop.time()
        while True:
            await asyncio.sleep(self.config.heartbeat_s)
            jobs = [j for j in self._inflight.values() if not j.lost]
            if not jobs:
                last_ok = loop.time()
                continue
            try:
                rows = await self._pool.fetch(
                    _HEARTBEAT_SQL, [j.id for j in jobs], [j.attempts for j in jobs],
                    self.worker_id, self.config.lease_s,
                )
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError,
                    TimeoutError) as exc:
                log.warning("heartbeat_failed", error=_error_text(exc))
                # Past most of the lease another worker may take these jobs: stop them
                # here first, so two workers never run one job.
                if loop.time() - last_ok > self.config.lease_s * 0.8:
                    for job in jobs:
                        self._lose(job, "heartbeats failed for most of the lease")
                continue
            last_ok = loop.time()
            alive = {r[0] for r in rows}
            for job in jobs:
                if job.id not in alive and job.id in self._inflight:
                    self._lose(job, "cancelled, or its lease was taken over")

    async def _reaper_loop(self) -> None:
        while True:
            try:
                reaped = await reap_expired(self.database)
                if reaped:
                    self._wake.set()
            except Exception as exc:  # the next round retries
                log.warning("reap_failed", error=_error_text(exc))
            await asyncio.sleep(self.config.reap_interval_s)

    # --- notifications and schedules ---------------------------------------------------

    def _on_notify(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        if self._queue_set is None or payload in self._queue_set:
            self._wake.set()

    async def _listen_loop(self) -> None:
        pause = 0.5
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(
                    asyncpg_dsn(self.database),
                    server_settings={"application_name": "roost-worker-listen"},
                )
                closed = asyncio.Event()
                conn.add_termination_listener(lambda _c, ev=closed: ev.set())
                await conn.add_listener(service.NOTIFY_CHANNEL, self._on_notify)
                pause = 0.5
                self._wake.set()  # anything announced while we were not listening
                await closed.wait()
                log.warning("listen_connection_lost")
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("listen_failed", error=_error_text(exc), retry_in_s=pause)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.close(), 2)
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)

    async def _schedule_loop(self) -> None:
        # A stopping worker fires nothing more: a job it enqueued now would wait for
        # another worker (or the next start) while it drains.
        # Schedules whose row could not be written (None: all, not tried yet) are tried
        # again every FIRE_RETRY until they are.
        unsynced: list[str] | None = None
        next_sync = 0.0
        while not self._stopping:
            wait = 5.0
            try:
                if unsynced != [] and time.monotonic() >= next_sync:
                    unsynced = await schedules_mod.sync_schedules(self.database, unsynced)
                    next_sync = time.monotonic() + schedules_mod.FIRE_RETRY.total_seconds()
                wait = await schedules_mod.fire_due(self.database)
            except Exception as exc:
                log.warning("schedules_failed", error=_error_text(exc))
            if unsynced != [] and next_sync > time.monotonic():  # else the 5 s of a failure
                wait = min(wait, next_sync - time.monotonic())
            await asyncio.sleep(min(max(wait, 0.05), 30.0))

    # --- shutdown ----------------------------------------------------------------------

    async def _drain(self) -> None:
        """Let in-flight jobs finish for up to ``shutdown_timeout_s``, then release them."""
        pending = {j.task for j in self._inflight.values() if j.task is not None}
        if pending:
            log.info("worker_draining", jobs=len(pending),
                     timeout_s=self.config.shutdown_timeout_s)
            force = asyncio.create_task(self._force.wait())
            await asyncio.wait({*pending, force}, timeout=self.config.shutdown_timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)
            deadline = time.monotonic() + self.config.shutdown_timeout_s
            while not self._force.is_set() and time.monotonic() < deadline:
                pending = {j.task for j in self._inflight.values() if j.task is not None}
                if not pending:
                    break
                await asyncio.wait({*pending, force}, timeout=deadline - time.monotonic(),
                                   return_when=asyncio.FIRST_COMPLETED)
            force.cancel()
        remaining = [j for j in self._inflight.values() if j.task is not None]
        for job in remaining:
            job.releasing = True
            assert job.task is not None
            job.task.cancel()
        if remaining:
            await asyncio.wait({j.task for j in remaining if j.task is not None}, timeout=10)


async def reap_expired(database: Database) -> int:
    """Running jobs whose lease ran out become ``stuck`` (retried at once, the lost
    attempt counted) or dead letters when out of retries.  Returns how many were reaped."""
    async with database.transaction() as session:
        rows = (await session.execute(_REAP_SQL)).all()
        if not rows:
            return 0
        now = utcnow()
        stuck_queues: set[str] = set()
        for row in rows:
            error = (f"lease expired: worker {row.worker_id} stopped heartbeating "
                     "(it died, hung or lost the database)")
            entry = {
                "attempt": row.attempts, "worker_id": row.worker_id,
                "started_at": _iso(row.started_at) if row.started_at else None,
                "ended_at": _iso(now), "outcome": "lease_expired", "error": error,
            }
            retry_count = row.retry_count + 1
            if retry_count > row.max_retries:
                await service.move_to_dead_letter(
                    session, row.id, attempts=row.attempts, worker_id=row.worker_id,
                    retry_count=retry_count, error_message=error, error_stack=None,
                    history_entry=entry,
                )
            else:
                await session.execute(_STUCK_SQL, {
                    "id": row.id, "attempts": row.attempts, "retry_count": retry_count,
                    "error": error, "entry": json.dumps(entry),
                })
                stuck_queues.add(row.queue)
        for queue in stuck_queues:
            await service.notify(session, queue)
        log.warning("tasks_reaped", count=len(rows))
        return len(rows)


def parse_queues(raw: str | list[str] | None) -> tuple[str, ...] | None:
    if raw is None:
        return None
    parts = raw.split(",") if isinstance(raw, str) else [p for q in raw for p in q.split(",")]
    names = tuple(dict.fromkeys(p.strip() for p in parts if p.strip()))
    return names or None


__all__ = ["ClaimedJob", "Worker", "WorkerConfig", "backoff_delay", "parse_queues", "reap_expired"]
