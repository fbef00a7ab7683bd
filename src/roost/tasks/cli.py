"""``roost worker`` and ``roost tasks ls|show|retry|cancel|pause|resume|stats|dead-letters``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from roost.clitools import (
    MAX_LIST,
    MAX_SECONDS,
    add_text_row,
    fail,
    id_table,
    open_database,
    print_table,
    resolve_id,
    run_in_transaction,
)
from roost.process import freeze_startup_heap

if TYPE_CHECKING:
    from roost.config import Settings
    from roost.tasks.config import WorkerSettings
    from roost.tasks.worker import WorkerConfig

T = TypeVar("T")

JOB_ID_HELP = "Job id as `roost tasks ls` prints it, or a unique start of it."
tasks_app = typer.Typer(help="The background task queue.", no_args_is_help=True)
console = Console()
err = Console(stderr=True)


_run = run_in_transaction


def _fmt_time(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


@tasks_app.command("ls")
def tasks_ls(
    status: Annotated[str | None, typer.Option(help="pending, running, failed, ...")] = None,
    priority: Annotated[str | None, typer.Option(help="critical, high, normal, ...")] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="Task type.")] = None,
    queue: Annotated[str | None, typer.Option(help="Queue name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST)] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line.")] = False,
) -> None:
    """List jobs, newest first."""
    from roost.principal import OPERATOR
    from roost.tasks import service
    from roost.tasks.models import TaskPriority, TaskStatus
    from roost.tasks.schemas import TaskOut

    try:
        filters = service.TaskFilter(
            status=TaskStatus(status) if status else None,
            priority=TaskPriority(priority) if priority else None,
            task_type=task_type, queue=queue,
        )
    except ValueError as exc:
        raise fail("invalid filter", exc, code=2) from exc

    async def run(session: Any) -> list[TaskOut]:
        rows, _ = await service.list_tasks(session, OPERATOR, filters, limit=limit)
        return [TaskOut.model_validate(r) for r in rows]

    rows = _run(run)
    if as_json:
        for row in rows:  # one line each (print_json would indent), for jq and grep;
            # ASCII only, as `tasks show`: stored text may hold C1 controls or bidi overrides
            typer.echo(json.dumps(row.model_dump(mode="json"), ensure_ascii=True))
        return
    table = id_table("id", "type", "queue", "status", "priority", "tries", "scheduled", "error",
                     wrap=("error",))
    for r in rows:
        add_text_row(table, str(r.id), r.task_type, r.queue, r.status.value,
                     r.priority.value, f"{r.retry_count}/{r.max_retries}",
                     _fmt_time(r.scheduled_at), (r.error_message or "")[:60])
    print_table(console, table)


@tasks_app.command("show")
def tasks_show(task_id: Annotated[str, typer.Argument(help=JOB_ID_HELP)]) -> None:
    """One job with its payload, result and retry history (JSON)."""
    from roost.principal import OPERATOR
    from roost.tasks import service
    from roost.tasks.models import BackgroundTask as Task
    from roost.tasks.schemas import TaskDetailOut

    async def run(session: Any) -> TaskDetailOut:
        ident = await resolve_id(session, Task.id, task_id, "job")
        return TaskDetailOut.model_validate(await service.get_task(session, OPERATOR, ident))

    # ASCII only: stored text (an error, a result) may hold C1 controls or bidi overrides
    console.print_json(_run(run).model_dump_json(), ensure_ascii=True)


@tasks_app.command("cancel")
def tasks_cancel(task_id: Annotated[str, typer.Argument(help=JOB_ID_HELP)]) -> None:
    """Cancel a waiting, paused or running job."""
    _change("cancel_task", task_id)


@tasks_app.command("pause")
def tasks_pause(task_id: Annotated[str, typer.Argument(help=JOB_ID_HELP)]) -> None:
    """Hold a waiting job until it is resumed."""
    _change("pause_task", task_id)


@tasks_app.command("resume")
def tasks_resume(task_id: Annotated[str, typer.Argument(help=JOB_ID_HELP)]) -> None:
    """Put a paused job back in the queue."""
    _change("resume_task", task_id)


def _change(action: str, task_id: str) -> None:
    from roost.principal import OPERATOR
    from roost.tasks import service
    from roost.tasks.models import BackgroundTask as Task

    async def run(session: Any) -> tuple[uuid.UUID, str]:
        ident = await resolve_id(session, Task.id, task_id, "job")
        task = await getattr(service, action)(session, OPERATOR, ident)
        return ident, str(task.status.value)

    ident, status = _run(run)
    console.print(f"task {ident}: {status}", markup=False)


@tasks_app.command("retry")
def tasks_retry(
    ident: Annotated[str, typer.Argument(
        help="Dead letter id, or the dead job's id (or a unique start of either).")],
) -> None:
    """Run a dead letter again with a fresh set of retries."""
    from sqlalchemy import select

    from roost.db.lookup import id_starts_with
    from roost.errors import BadRequest, NotFound
    from roost.principal import OPERATOR
    from roost.tasks import service
    from roost.tasks.models import DeadLetter

    async def newest_letter_of(session: Any, job_id: uuid.UUID) -> uuid.UUID | None:
        found = (await session.scalars(
            select(DeadLetter.id).where(DeadLetter.original_task_id == job_id)
            .order_by(DeadLetter.moved_at.desc()).limit(1))).first()
        return uuid.UUID(str(found)) if found is not None else None

    async def run(session: Any) -> uuid.UUID:
        # Both readings of the text (a letter's id, the dead job's id: what `tasks ls`
        # shows): ids made within a minute share their first characters, and the first
        # reading that matched once requeued another job than the one meant.
        several_letters: BadRequest | None = None
        try:
            letter_id: uuid.UUID | None = await resolve_id(session, DeadLetter.id, ident,
                                                           "dead letter")
        except NotFound:
            letter_id = None
        except BadRequest as exc:  # the start of several letters' ids: maybe one job's
            letter_id, several_letters = None, exc
        if letter_id is not None and await session.get(DeadLetter, letter_id) is None:
            letter_id = None
        try:
            job_id = await resolve_id(session, DeadLetter.original_task_id, ident, "dead job")
            job_letter = await newest_letter_of(session, job_id)
        except NotFound:
            job_letter = None
        if several_letters is not None:
            # A job dead-lettered twice within a minute: its letters' ids share the start
            # its own id has.  Its newest letter, when every letter so named is that job's.
            others = None if job_letter is None else await session.scalar(
                select(DeadLetter.id).where(id_starts_with(DeadLetter.id, ident),
                                            DeadLetter.original_task_id.is_distinct_from(job_id))
                .limit(1))
            if job_letter is None or others is not None:
                raise several_letters
        if letter_id is None and job_letter is None:
            raise NotFound(f"no dead letter or dead job id starts with {ident!r}")
        if letter_id is not None and job_letter is not None:
            letter = await session.get(DeadLetter, letter_id)
            if letter.original_task_id != job_id:
                raise BadRequest(f"{ident!r} is the start of dead letter {letter_id} and of "
                                 f"dead job {job_id} (another job's): give more characters")
        chosen = letter_id or job_letter
        assert chosen is not None
        task = await service.retry_dead_letter(session, OPERATOR, chosen)
        return uuid.UUID(str(task.id))

    console.print(f"requeued as task {_run(run)}")


@tasks_app.command("dead-letters")
def tasks_dead_letters(
    task_type: Annotated[str | None, typer.Option("--type", help="Task type.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include retried ones.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=MAX_LIST)] = 50,
) -> None:
    """List dead letters waiting for a decision (newest first)."""
    from roost.principal import OPERATOR
    from roost.tasks import service
    from roost.tasks.schemas import DeadLetterOut

    async def run(session: Any) -> list[DeadLetterOut]:
        rows, _ = await service.list_dead_letters(
            session, OPERATOR,
            service.DeadLetterFilter(task_type=task_type, retried=None if all_ else False),
            limit=limit)
        return [DeadLetterOut.model_validate(r) for r in rows]

    table = id_table("id", "task", "type", "moved", "retried", "error", wrap=("error",))
    for r in _run(run):
        add_text_row(table, str(r.id), str(r.original_task_id or "-"), r.task_type,
                     _fmt_time(r.moved_at), _fmt_time(r.retried_at), r.error_message[:70])
    print_table(console, table)


@tasks_app.command("stats")
def tasks_stats(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Counts by status and priority, recent throughput, the oldest waiting job."""
    from dataclasses import asdict

    from roost.principal import OPERATOR
    from roost.tasks import service

    async def run(session: Any) -> service.QueueStats:
        return await service.stats(session, OPERATOR)

    s = _run(run)
    if as_json:
        data = asdict(s)
        for t, raw in zip(s.throughput, data["throughput"], strict=True):
            raw["per_second"] = round(t.per_second, 3)
        console.print_json(json.dumps(data, default=str), ensure_ascii=True)
        return
    from roost.tasks.models import TaskPriority, TaskStatus

    table = Table("status", *[p.value for p in TaskPriority], "total")
    for st in TaskStatus:
        row = s.by_status_and_priority.get(st.value, {})
        table.add_row(st.value, *[str(row.get(p.value, 0)) for p in TaskPriority],
                      str(s.by_status[st.value]))
    console.print(table)
    for t in s.throughput:
        console.print(f"last {t.minutes:>2} min: {t.completed} completed "
                      f"({t.per_second:.2f}/s), {t.dead_lettered} dead-lettered")
    age = "none waiting" if s.oldest_ready_age_s is None else (
        f"{s.oldest_ready_age_s:.1f} s (task {s.oldest_ready_task_id})")
    console.print(f"oldest runnable job: {age}")
    console.print(f"dead letters waiting: {s.dead_letters_waiting}")


def worker_command(
    concurrency: Annotated[int | None, typer.Option(
        "--concurrency", "-c", min=1, max=1000,
        help="Jobs run at once (ROOST_WORKER_CONCURRENCY, default 8).")] = None,
    queues: Annotated[list[str] | None, typer.Option(
        "--queues", "-q", help="Queues to take jobs from, comma-separated or repeated "
        "(default: every queue).")] = None,
    imports: Annotated[list[str] | None, typer.Option(
        "--import", "-i", help="Import this module first (it registers handlers); "
        "repeatable.")] = None,
    lease: Annotated[float | None, typer.Option(
        "--lease", min=0.5, max=MAX_SECONDS,
        help="Lease in seconds (ROOST_WORKER_LEASE_S, default 30).")] = None,
    poll_interval: Annotated[float | None, typer.Option(
        "--poll-interval", min=0.01, max=3600,
        help="Polling fallback in seconds (default 1).")] = None,
    shutdown_timeout: Annotated[float | None, typer.Option(
        "--shutdown-timeout", min=0, max=MAX_SECONDS, help="On SIGTERM, seconds in-flight "
        "jobs may finish before they are released (default 30).")] = None,
    schedules: Annotated[bool | None, typer.Option(
        "--schedules/--no-schedules", help="Fire periodic jobs from this worker.")] = None,
) -> None:
    """Run a queue worker until SIGTERM or Ctrl-C (a second one stops at once)."""
    from roost.config import get_settings
    from roost.logging import configure_logging
    from roost.tasks.config import WorkerSettings
    from roost.tasks.handlers import (
        discover,
        import_modules,
        valid_queue_name,
        worker_services,
    )
    from roost.tasks.worker import Worker, parse_queues

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    ws = WorkerSettings()
    discover()
    try:
        import_modules(list(imports or []))
    except ImportError as exc:
        raise fail("cannot import", exc, code=2) from exc
    # Queues given that name none ("", ","; an empty ROOST_WORKER_QUEUES is unset) must
    # not turn into a worker of every queue; nor may a name no job could carry.
    given = queues if queues is not None else ws.queues
    picked = parse_queues(given)
    if given is not None and picked is None:
        raise fail("no queue names given", "--queues or ROOST_WORKER_QUEUES names no queue; "
                   "leave both unset to take jobs from every queue", code=2)
    bad = [q for q in picked or () if not valid_queue_name(q)]
    if bad:
        raise fail("invalid queue name", f"{bad[0]!r}: a queue name is 1-64 characters "
                   "without NUL characters", code=2)
    base = worker_config(settings, ws)
    config = replace(
        base,
        concurrency=concurrency or base.concurrency,
        queues=picked,
        lease_s=lease or base.lease_s,
        poll_interval_s=poll_interval or base.poll_interval_s,
        shutdown_timeout_s=base.shutdown_timeout_s if shutdown_timeout is None else shutdown_timeout,
        schedules=base.schedules if schedules is None else schedules,
    )

    async def run() -> None:
        db = await open_database(settings)  # one that cannot be used: one line, not a loop
        worker = Worker(db, config, statement_timeout_ms=settings.db_statement_timeout_ms)
        loop = asyncio.get_running_loop()
        signals_seen = 0

        def on_signal() -> None:
            nonlocal signals_seen
            signals_seen += 1
            worker.stop(force=signals_seen > 1)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, on_signal)
        try:
            async with contextlib.AsyncExitStack() as services:
                # The domains' worker services (e.g. the LISTEN connection that keeps the
                # process's caches current), exited after the last job has stopped.
                for service in worker_services():
                    await services.enter_async_context(service(db, settings))
                freeze_startup_heap()  # quick exit after SIGTERM (roost.process)
                await worker.run()
        finally:
            await db.dispose()

    try:
        asyncio.run(run())
    except RuntimeError as exc:
        raise fail("worker stopped", exc) from exc


def worker_config(settings: Settings, ws: WorkerSettings | None = None) -> WorkerConfig:
    """The worker's configuration from ROOST_WORKER_* (``roost worker`` and the worker that
    ``roost serve`` runs in its own process)."""
    from roost.tasks.config import WorkerSettings
    from roost.tasks.worker import WorkerConfig, parse_queues

    ws = ws or WorkerSettings()
    return WorkerConfig(
        concurrency=ws.concurrency, queues=parse_queues(ws.queues), lease_s=ws.lease_s,
        poll_interval_s=ws.poll_interval_s, shutdown_timeout_s=ws.shutdown_timeout_s,
        schedules=ws.schedules, listen=not settings.pgbouncer, pgbouncer=settings.pgbouncer,
        audit_chain_interval_s=settings.audit_chain_interval_ms / 1000,
    )


def register(app: typer.Typer) -> None:
    """Add ``roost tasks`` and ``roost worker`` (``roost.domains`` calls this)."""
    app.add_typer(tasks_app, name="tasks")
    app.command("worker")(worker_command)
