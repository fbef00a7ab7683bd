"""An ingestion run with ``prune``: once the directory's files are ingested, the owner's
documents of files under it that no longer exist are deleted (their chunks, and their ids
in agents' document_ids, with them); everything else stays."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.knowledge.support import drain_jobs, upload
from tests.support.identity import make_user
from tests.support.sql import fetch, scalar

API = "/api/v1/knowledge"
Headers = dict[str, str]


async def _ingest(client: httpx.AsyncClient, headers: Headers, database: Database,
                  cfg: KnowledgeConfig, target: Path, **options: Any) -> dict[str, Any]:
    started = await client.post(f"{API}/ingestion-runs", headers=headers,
                                json={"target": str(target), **options})
    assert started.status_code == 202, started.text
    await drain_jobs(database, cfg)
    run = await client.get(f"{API}/ingestion-runs/{started.json()['id']}", headers=headers)
    return dict(run.json())


async def _names(client: httpx.AsyncClient, headers: Headers) -> set[str]:
    listed = await client.get(f"{API}/documents", headers=headers, params={"limit": 100})
    return {d["name"] for d in listed.json()["items"]}


async def _paths(database: Database) -> list[str]:
    rows = await fetch(database, "SELECT path FROM documents ORDER BY path")
    return [r.path for r in rows]


def _raw(folder: Path, name: bytes) -> Path:
    return Path(os.fsdecode(os.path.join(os.fsencode(folder), name)))


async def test_a_pruning_run_deletes_the_documents_of_deleted_files_only(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """Files deleted since the last ingestion lose their documents and chunks; files still
    there (changed or not, in a sub-directory a non-recursive run does not walk, hidden
    but ingested on their own), uploads and another user's documents stay. A run without
    prune deletes nothing."""
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    docs = ingest_root / "docs"
    (docs / "sub").mkdir(parents=True)
    for name in ("keep.txt", "gone.txt", "sub/deep.txt", ".hidden.txt", "100%_sure.txt"):
        (docs / name).write_text(f"notes about {name} and herons")
    first = await _ingest(kclient, alice, database, kcfg, docs, recursive=True)
    assert first["status"] == "success" and first["totals_files"] == 4, first
    hidden = await _ingest(kclient, alice, database, kcfg, docs / ".hidden.txt")
    assert hidden["status"] == "success", hidden
    await _ingest(kclient, bob, database, kcfg, docs, recursive=True)
    assert (await upload(kclient, alice, "gone.txt", b"an upload of the same name")
            ).status_code == 202
    await drain_jobs(database, kcfg)
    before = await _names(kclient, alice)
    assert before == {"keep.txt", "gone.txt", "deep.txt", ".hidden.txt", "100%_sure.txt"}

    (docs / "gone.txt").unlink()
    (docs / "100%_sure.txt").unlink()
    (docs / "sub" / "deep.txt").unlink()
    plain = await _ingest(kclient, alice, database, kcfg, docs)
    assert plain["totals_pruned"] == 0 and await _names(kclient, alice) == before

    shallow = await _ingest(kclient, alice, database, kcfg, docs, prune=True)
    assert shallow["status"] == "success" and shallow["prune"] is True, shallow
    assert shallow["totals_pruned"] == 2, shallow  # gone.txt and 100%_sure.txt, not sub/
    # The upload named gone.txt stays: only files' documents are pruned.
    assert await _names(kclient, alice) == {"keep.txt", "gone.txt", "deep.txt", ".hidden.txt"}
    deep = await _ingest(kclient, alice, database, kcfg, docs, prune=True, recursive=True)
    assert deep["totals_pruned"] == 1, deep
    assert await _names(kclient, alice) == {"keep.txt", "gone.txt", ".hidden.txt"}
    assert await _names(kclient, bob) == {"keep.txt", "gone.txt", "deep.txt", "100%_sure.txt"}
    orphans = await scalar(database, "SELECT count(*) FROM document_chunks c WHERE NOT EXISTS "
                           "(SELECT 1 FROM documents d WHERE d.id = c.document_id)")
    assert orphans == 0
    audited = await scalar(database, "SELECT count(*) FROM audit_logs WHERE action = "
                           "'knowledge.documents.pruned'")
    assert audited == 2


async def test_a_directory_whose_name_is_another_s_prefix_is_pruned_alone(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """Pruning `notes` leaves the documents of `notes-old` (a longer name with the same
    start) alone, and a directory the walk cannot read keeps its files' documents."""
    _, alice = await make_user(database)
    for directory in ("notes", "notes-old", "notes/locked"):
        (ingest_root / directory).mkdir()
        (ingest_root / directory / f"{directory.replace('/', '-')}.txt").write_text("herons")
    await _ingest(kclient, alice, database, kcfg, ingest_root / "notes-old")
    await _ingest(kclient, alice, database, kcfg, ingest_root / "notes", recursive=True)
    (ingest_root / "notes-old" / "notes-old.txt").unlink()
    locked = ingest_root / "notes" / "locked"
    locked.chmod(0)
    try:
        run = await _ingest(kclient, alice, database, kcfg, ingest_root / "notes",
                            recursive=True, prune=True)
    finally:
        locked.chmod(0o755)
    assert run["totals_pruned"] == 0, run
    if os.geteuid() != 0:  # root reads the directory anyway
        assert run["status"] == "partial", run
    assert await _names(kclient, alice) == {"notes.txt", "notes-old.txt", "notes-locked.txt"}


async def test_prune_is_refused_for_a_url(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """prune applies to a directory on the server: asked for a URL it is a 422 naming it."""
    _, alice = await make_user(database)
    answer = await kclient.post(f"{API}/ingestion-runs", headers=alice,
                                json={"target": "https://example.com/", "prune": True})
    assert answer.status_code == 422 and answer.json()["field"] == "prune", answer.text


async def test_hidden_folder_file_with_a_non_utf8_name_survives_a_prune(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """A hidden folder ingested on its own holds a file whose (Latin-1) name is not UTF-8:
    pruning the parent keeps its document (the file is there, the walk skips hidden
    entries); it was deleted, its stored name, repaired to U+FFFD, naming no file."""
    _, alice = await make_user(database)
    top = ingest_root / "top"
    archive = top / ".archive"
    archive.mkdir(parents=True)
    (top / "visible.txt").write_text("herons in the reeds")
    _raw(archive, b"caf\xe9.txt").write_text("a note about cafe herons")
    (archive / "plain.txt").write_text("a plain note about herons")
    hidden = await _ingest(kclient, alice, database, kcfg, archive)
    assert hidden["status"] == "success" and hidden["totals_files"] == 2, hidden
    await _ingest(kclient, alice, database, kcfg, top, recursive=True)
    before = await _paths(database)
    assert len(before) == 3, before

    run = await _ingest(kclient, alice, database, kcfg, top, recursive=True, prune=True)
    assert run["status"] == "success", run
    assert (run["totals_pruned"], await _paths(database)) == (0, before), run


async def test_a_file_replaced_by_a_directory_loses_its_document(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """A file deleted and a directory of its name made in its place: no file is there, so
    a pruning run deletes its document (it was kept: the name existed)."""
    _, alice = await make_user(database)
    notes = ingest_root / "notes"
    notes.mkdir()
    (notes / "plan.txt").write_text("the old plan about herons")
    await _ingest(kclient, alice, database, kcfg, notes, recursive=True)
    (notes / "plan.txt").unlink()
    (notes / "plan.txt").mkdir()
    (notes / "plan.txt" / "part1.txt").write_text("the new plan, part one, herons")
    run = await _ingest(kclient, alice, database, kcfg, notes, recursive=True, prune=True)
    assert run["status"] == "success", run
    assert await _paths(database) == [str(notes / "plan.txt" / "part1.txt")], run


async def test_a_file_replaced_by_a_dangling_symlink_loses_its_document(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """A file deleted and a dangling symlink left under its name: no file to read, so a
    pruning run deletes its document (it was kept: the link existed)."""
    _, alice = await make_user(database)
    notes = ingest_root / "notes"
    notes.mkdir()
    (notes / "gone.txt").write_text("herons that flew away")
    (notes / "keep.txt").write_text("herons that stayed")
    await _ingest(kclient, alice, database, kcfg, notes)
    (notes / "gone.txt").unlink()
    (notes / "gone.txt").symlink_to(notes / "nowhere.txt")
    run = await _ingest(kclient, alice, database, kcfg, notes, prune=True)
    assert await _paths(database) == [str(notes / "keep.txt")], run
