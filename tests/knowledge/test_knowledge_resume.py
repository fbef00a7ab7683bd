"""Kill a real worker process mid-run; another worker resumes the run: no duplicate
documents or chunks, every file counted and audited exactly once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.knowledge.support import PARAGRAPH, principal, start_run
from tests.support.identity import make_user
from tests.support.sql import fetch, scalar
from tests.support.workers import WorkerProcess, child_env

FILES = 24


@pytest.fixture
def workers(pg_server: Any, db_name: str, ingest_root: Path, tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []
    env = child_env(
        ROOST_DATABASE_URL=pg_server.libpq_url(db_name), ROOST_DATA_DIR=str(tmp_path / "w"),
        ROOST_LOG_JSON="true", ROOST_KNOWLEDGE_EMBEDDING_PROVIDER="hash",
        ROOST_KNOWLEDGE_INGEST_ROOTS=str(ingest_root), ROOST_KNOWLEDGE_CHUNK_TOKENS="64",
        ROOST_KNOWLEDGE_CHUNK_OVERLAP_TOKENS="8", ROOST_TEST_EMBED_DELAY_S="0.3",
    )

    def start() -> WorkerProcess:
        worker = WorkerProcess(env, tmp_path / f"worker{len(started)}.log",
                               "--import", "tests.knowledge.slow_worker")
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


async def _wait(what: str, check: Any, within: float) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_killed_worker_leaves_no_duplicates_and_the_run_resumes(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path, workers: Any
) -> None:
    for i in range(FILES):
        (ingest_root / f"file{i:02d}.txt").write_text(f"File number {i}. " + PARAGRAPH * 4)
    user_id, _ = await make_user(database)
    run_id = await start_run(database, principal(user_id), kcfg, str(ingest_root))

    async def progress() -> int:
        return int(await scalar(database, "SELECT totals_files FROM ingestion_runs WHERE id = :id",
                                id=run_id))

    first = workers()
    await _wait("the first files", lambda: _at_least(progress, 4), within=60)
    first.kill()  # SIGKILL mid-run: no graceful shutdown, a file may be half-embedded
    done_before = await progress()
    assert 4 <= done_before < FILES
    assert await scalar(database, "SELECT status FROM ingestion_runs WHERE id = :id", id=run_id) == "running"

    workers()  # the job's lease expires; the second worker reclaims and resumes it
    async def finished() -> bool:
        status = await scalar(database, "SELECT status FROM ingestion_runs WHERE id = :id", id=run_id)
        return status in ("success", "partial", "failed")

    await _wait("the resumed run to finish", finished, within=90)
    run = (await fetch(database, "SELECT * FROM ingestion_runs WHERE id = :id", id=run_id))[0]
    assert (run.status, run.totals_files, run.errors) == ("success", FILES, [])
    assert await scalar(database, "SELECT count(*) FROM documents") == FILES
    chunks = await scalar(database, "SELECT count(*) FROM document_chunks")
    assert chunks == run.totals_chunks == await scalar(database, "SELECT sum(chunk_count) FROM documents")
    dupes = await scalar(database, "SELECT count(*) FROM (SELECT document_id, chunk_index "
                                   "FROM document_chunks GROUP BY 1, 2 HAVING count(*) > 1) d")
    assert dupes == 0
    audited = await scalar(database, "SELECT count(*) FROM audit_logs "
                                     "WHERE action = 'knowledge.document.ingested'")
    assert audited == FILES  # each file committed exactly once
    attempts = await scalar(database, "SELECT attempts FROM background_tasks WHERE task_type = "
                                      "'knowledge.ingest'")
    assert attempts >= 2


async def _at_least(progress: Any, n: int) -> bool:
    return bool(await progress() >= n)


async def test_a_run_whose_job_was_cancelled_or_dead_lettered_ends_failed(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """An ingestion whose job an administrator cancelled (or whose last worker died with
    no retries left) ends failed with the reason at the next sweep, with its waiting
    documents: it stayed "pending" for ever.  A run whose job is alive, or waits for its
    retry, is left alone."""
    from roost.knowledge.jobs import STRANDED_WHY, sweep

    (ingest_root / "a.txt").write_text(PARAGRAPH)
    user_id, _ = await make_user(database)
    runs = [await start_run(database, principal(user_id), kcfg, str(ingest_root))
            for _ in range(3)]
    cancelled, dead, retrying = runs
    async with database.transaction() as s:
        for run_id, status in ((cancelled, "cancelled"), (dead, "dead_letter"),
                               (retrying, "failed")):
            await s.execute(text(
                "UPDATE background_tasks SET status = :status WHERE id = "
                "(SELECT task_id FROM ingestion_runs WHERE id = :r)"),
                {"status": status, "r": run_id})
        await s.execute(text("UPDATE ingestion_runs SET created_at = now() - interval "
                             "'1 minute'"))
    assert sorted(await sweep(database, kcfg)) == sorted([cancelled, dead])
    rows = {row.id: row for row in await fetch(
        database, "SELECT id, status, errors, finished_at FROM ingestion_runs")}
    for run_id in (cancelled, dead):
        assert rows[run_id].status == "failed" and rows[run_id].finished_at is not None
        assert rows[run_id].errors[-1]["error"] == STRANDED_WHY, rows[run_id].errors
    assert rows[retrying].status == "pending"
    assert await sweep(database, kcfg) == []  # ended once
