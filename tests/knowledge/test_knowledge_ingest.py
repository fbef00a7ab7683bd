"""Ingestion runs against the real database: totals, per-file errors, re-ingestion."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import uuid
from pathlib import Path

import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.knowledge.config import EmbedderSpec, KnowledgeConfig
from roost.knowledge.index import _LOCK_KEY
from roost.knowledge.ingest import run_ingestion
from roost.knowledge.paths import MAX_WALK_DEPTH
from tests.knowledge.support import PARAGRAPH, ingest, mixed_directory, principal, start_run
from tests.support.identity import make_user
from tests.support.sql import fetch, scalar


async def test_a_mixed_directory_is_ingested_with_totals_and_per_file_errors(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path, tmp_path: Path
) -> None:
    user_id, _ = await make_user(database)
    mixed_directory(ingest_root)
    outside = tmp_path / "outside.txt"
    outside.write_text("secret outside the root")
    os.symlink(outside, ingest_root / "link.txt")

    run = await ingest(database, principal(user_id), kcfg, str(ingest_root), recursive=True,
                       collection="manuals", tags=["docs"])

    assert run["status"] == "partial"
    assert run["totals_files"] == 5  # txt, md, html, pdf, nested txt
    by_path = {Path(e["path"]).name: e["type"] for e in run["errors"]}
    assert by_path == {"image.png": "unsupported-document", "broken.pdf": "corrupt-document"}
    assert run["finished_at"] is not None and run["started_at"] is not None

    docs = await fetch(database, "SELECT name, status, chunk_count, collection, tags, mime "
                                "FROM documents ORDER BY name")
    assert [d.name for d in docs] == ["guide.md", "nested.txt", "notes.txt", "page.html",
                                      "report.pdf"]
    assert all(d.status == "ready" and d.collection == "manuals" and d.tags == ["docs"]
               for d in docs)
    total = await scalar(database, "SELECT count(*) FROM document_chunks")
    assert total == run["totals_chunks"] == sum(d.chunk_count for d in docs)
    # Source attribution: pages for PDFs, heading paths for Markdown.
    pages = await fetch(database, "SELECT c.metadata->>'page' AS page, c.content FROM document_chunks c "
                                 "JOIN documents d ON d.id = c.document_id WHERE d.name = 'report.pdf' "
                                 "ORDER BY c.chunk_index")
    assert [(p.page, "forty" in p.content) for p in pages] == [("1", False), ("2", True)]
    sections = {r[0] for r in await fetch(
        database, "SELECT c.metadata->>'section' FROM document_chunks c JOIN documents d "
                  "ON d.id = c.document_id WHERE d.name = 'guide.md'")}
    assert "Install guide > Linux" in sections and "Install guide > Windows" in sections
    # Nothing from outside the root, nothing hidden.
    assert await scalar(database, "SELECT count(*) FROM document_chunks "
                                  "WHERE content LIKE '%secret%' OR content LIKE '%never%'") == 0
    audited = await scalar(database, "SELECT count(*) FROM audit_logs "
                                     "WHERE action = 'knowledge.document.ingested'")
    assert audited == 5


async def test_reingesting_a_changed_file_replaces_its_chunks_without_duplicates(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path
) -> None:
    user_id, _ = await make_user(database)
    files = mixed_directory(ingest_root)
    who = principal(user_id)
    await ingest(database, who, kcfg, str(ingest_root), recursive=True)
    before = {r.id for r in await fetch(database, "SELECT id FROM document_chunks")}
    docs_before = await scalar(database, "SELECT count(*) FROM documents")

    # Unchanged: nothing is re-embedded, every file still counts.
    again = await ingest(database, who, kcfg, str(ingest_root), recursive=True)
    assert again["totals_files"] == 5 and again["totals_chunks"] == 0
    assert {r.id for r in await fetch(database, "SELECT id FROM document_chunks")} == before

    files["notes.txt"].write_text("Completely new notes about tomatoes and basil.")
    changed = await ingest(database, who, kcfg, str(ingest_root), recursive=True)
    assert changed["totals_files"] == 5 and changed["totals_chunks"] == 1
    assert await scalar(database, "SELECT count(*) FROM documents") == docs_before
    notes = await fetch(database, "SELECT c.id, c.content, c.chunk_index FROM document_chunks c "
                                 "JOIN documents d ON d.id = c.document_id WHERE d.name = 'notes.txt'")
    assert [n.content for n in notes] == ["Completely new notes about tomatoes and basil."]
    assert notes[0].id not in before
    dupes = await scalar(database, "SELECT count(*) FROM (SELECT document_id, chunk_index FROM "
                                   "document_chunks GROUP BY 1, 2 HAVING count(*) > 1) x")
    assert dupes == 0
    assert await scalar(database, "SELECT chunk_count FROM documents WHERE name = 'notes.txt'") == 1

    # A single file as the target updates the same document (same path hash).
    files["notes.txt"].write_text("Third version of the notes.")
    single = await ingest(database, who, kcfg, str(files["notes.txt"]))
    assert single["status"] == "success" and single["totals_files"] == 1
    assert await scalar(database, "SELECT count(*) FROM documents") == docs_before


async def test_a_recursive_run_over_a_very_deep_tree_ends_with_the_deep_part_an_error(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path
) -> None:
    """A 1,200-level tree (deeper than Python's recursion limit) is walked without
    recursion: below MAX_WALK_DEPTH levels it is one error entry, the rest is ingested
    and the run ends (partial), never raising with the run left "running"."""
    user_id, _ = await make_user(database)
    (ingest_root / "top.txt").write_text("Herons wade in shallow water.")
    deep = ingest_root / "deep"
    deep.mkdir()
    levels = 1200
    cur = os.open(deep, os.O_RDONLY)  # by directory fd: the path grows too long to repeat
    for _ in range(levels):
        os.mkdir("a", dir_fd=cur)
        nxt = os.open("a", os.O_RDONLY, dir_fd=cur)
        os.close(cur)
        cur = nxt
    leaf = os.open("leaf.txt", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=cur)
    os.write(leaf, b"too deep to be read")
    os.close(leaf)
    os.close(cur)
    try:
        run = await ingest(database, principal(user_id), kcfg, ".", recursive=True)
    finally:  # iteratively: pytest's own (recursive) clean-up cannot remove this tree
        paths = [deep / Path(*["a"] * n) for n in range(levels + 1)]
        (paths[-1] / "leaf.txt").unlink()
        for level in reversed(paths):
            level.rmdir()
    assert (run["status"], run["totals_files"]) == ("partial", 1), run
    [error] = run["errors"]
    assert f"more than {MAX_WALK_DEPTH} levels" in error["error"], error
    assert [d.name for d in await fetch(database, "SELECT name FROM documents")] == ["top.txt"]


async def test_an_unexpected_error_mid_run_fails_the_run_instead_of_leaving_it_running(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug (any exception) on the last attempt ends the run failed with the reason;
    on an earlier attempt it is raised, so the queue retries the run."""
    import roost.knowledge.ingest as ingest_mod

    user_id, _ = await make_user(database)
    (ingest_root / "a.txt").write_text("Some text.")

    def broken(*args: object, **kwargs: object) -> list[Path]:
        raise ValueError("a bug in the walk")

    monkeypatch.setattr(ingest_mod, "iter_files", broken)
    run_id = await start_run(database, principal(user_id), kcfg, ".")
    with pytest.raises(ValueError, match="a bug in the walk"):
        await run_ingestion(database, run_id, kcfg, final_attempt=False)
    summary = await run_ingestion(database, run_id, kcfg, final_attempt=True)
    assert "a bug in the walk" in summary["fatal"]
    [run] = await fetch(database, "SELECT status, errors FROM ingestion_runs")
    assert run.status == "failed" and "ValueError: a bug in the walk" in run.errors[0]["error"]


async def test_a_database_error_mid_run_is_reported_without_its_statement(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's ``errors`` (read by its owner) name a database error's SQLSTATE class,
    never the statement and parameters the driver's message repeats."""
    import roost.knowledge.ingest as ingest_mod

    user_id, _ = await make_user(database)
    (ingest_root / "a.txt").write_text(PARAGRAPH)

    async def failing(session: object, rows: object) -> None:
        await session.execute(text("SELECT CAST(:v AS integer)"),  # type: ignore[attr-defined]
                              {"v": "secret-parameter"})

    monkeypatch.setattr(ingest_mod, "insert_chunks", failing)
    run_id = await start_run(database, principal(user_id), kcfg, "a.txt")
    summary = await run_ingestion(database, run_id, kcfg, final_attempt=True)
    [run] = await fetch(database, "SELECT status, errors FROM ingestion_runs")
    [error] = run.errors
    assert run.status == "failed" and "SQLSTATE class 22" in error["error"], (summary, error)
    assert "secret-parameter" not in str(error) and "CAST" not in str(error), error


async def test_first_ingestions_of_a_new_model_at_once_do_not_deadlock(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """Two runs of a model with no index yet wait together for ``ensure_model``'s lock:
    the one that gets it builds the index CONCURRENTLY, which waits for every statement
    open in the database; the other must not be waiting inside one (both succeed)."""
    user_id, _ = await make_user(database)
    names = ["aardvark.txt", "bison.txt"]
    for name in names:
        (ingest_root / name).write_text(name + " " + PARAGRAPH)
    cfg = dataclasses.replace(kcfg, embedder=EmbedderSpec("hash", f"new-{uuid.uuid4().hex[:6]}",
                                                          384))
    runs = [await start_run(database, principal(user_id), cfg, name) for name in names]
    # Both runs reach the lock while something else holds it (as a third worker building
    # another model's index would); then it is released.
    async with database.engine.connect() as conn:
        holder = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await holder.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _LOCK_KEY})
        tasks = [asyncio.create_task(run_ingestion(database, r, cfg)) for r in runs]
        for _ in range(200):  # both runs begun (then at the lock: polling or blocked on it)
            running = (await holder.execute(text(
                "SELECT count(*) FROM ingestion_runs WHERE status = 'running'"))).scalar_one()
            if running == len(runs):
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.5)
        await holder.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _LOCK_KEY})
        await asyncio.wait_for(asyncio.gather(*tasks), 60)
    statuses = await fetch(database, "SELECT status, errors FROM ingestion_runs")
    assert [x.status for x in statuses] == ["success"] * len(names), [
        (x.status, str(x.errors)[:300]) for x in statuses]
