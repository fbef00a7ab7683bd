"""The owner of an ingestion run deleted before its queued job runs or while it
ingests: the job ends with a summary (no exception for the queue to retry), and nothing
is left half-written."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

from roost.db.engine import Database
from roost.identity.accounts import delete_user
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.ingest import run_ingestion
from roost.principal import OPERATOR
from tests.knowledge.support import PARAGRAPH, principal, start_run
from tests.support.identity import make_user
from tests.support.sql import scalar


async def _delete(database: Database, user_id: uuid.UUID) -> None:
    async with database.transaction() as session:
        await delete_user(session, OPERATOR, user_id)


async def test_an_ingestion_whose_owner_was_deleted_before_it_ran_is_skipped(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    user_id, _ = await make_user(database)
    (ingest_root / "a.txt").write_text(PARAGRAPH * 3)
    run_id = await start_run(database, principal(user_id), kcfg, str(ingest_root / "a.txt"))
    await _delete(database, user_id)
    summary = await run_ingestion(database, run_id, kcfg)
    assert "skipped" in summary, summary
    assert await scalar(database, "SELECT count(*) FROM documents") == 0


async def test_an_ingestion_whose_owner_is_deleted_while_it_runs_ends_quietly(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    user_id, _ = await make_user(database)
    folder = ingest_root / "many"
    folder.mkdir()
    for i in range(120):
        (folder / f"f{i:03}.txt").write_text(f"file {i}. " + PARAGRAPH * 4)
    run_id = await start_run(database, principal(user_id), kcfg, str(folder), recursive=True)
    ingesting = asyncio.ensure_future(run_ingestion(database, run_id, kcfg))
    deadline = asyncio.get_running_loop().time() + 30
    while await scalar(database, "SELECT count(*) FROM documents") < 3:
        assert not ingesting.done(), ingesting.result()
        assert asyncio.get_running_loop().time() < deadline, "the ingestion never began"
        await asyncio.sleep(0.02)
    await _delete(database, user_id)
    # What the job does with it: it ends, rather than raising for the queue to retry.
    summary = await asyncio.wait_for(ingesting, 60)
    assert summary == {"run_id": str(run_id),
                       "skipped": "the ingestion run was deleted while it ran"}, summary
    assert await scalar(database, "SELECT count(*) FROM documents") == 0
    assert await scalar(database, "SELECT count(*) FROM document_chunks") == 0
