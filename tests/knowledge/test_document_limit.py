"""A plan's ``max_documents`` caps the documents a user owns however they are created:
uploads and ingestion runs alike.  A run past the limit records each new document it
could not keep as a ``limit-reached`` error and goes on; re-ingesting a document the
user already owns replaces it and is not counted."""

from __future__ import annotations

from pathlib import Path

import httpx

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.billing.metered import subscribe
from tests.knowledge.support import drain_jobs, upload
from tests.support.identity import make_user
from tests.support.sql import fetch, scalar

API = "/api/v1/knowledge"


async def test_max_documents_also_holds_for_ingestion_runs(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
    admin_headers: dict[str, str], ingest_root: Path,
) -> None:
    user_id, headers = await make_user(database)
    await subscribe(kclient, admin_headers, user_id, 1000, max_documents=2)
    first = await upload(kclient, headers, "one.txt", b"otter one")
    assert first.status_code == 202, first.text
    folder = ingest_root / "many"
    folder.mkdir()
    for i in range(5):
        (folder / f"f{i}.txt").write_text(f"otter file number {i} " * 5)
    r = await kclient.post(f"{API}/ingestion-runs", headers=headers, json={"target": str(folder)})
    assert r.status_code == 202, r.text
    await drain_jobs(database, kcfg)
    owned = await scalar(database, "SELECT count(*) FROM documents WHERE user_id = :u", u=user_id)
    assert owned == 2
    run = (await kclient.get(f"{API}/ingestion-runs/{r.json()['id']}", headers=headers)).json()
    assert [e["type"] for e in run["errors"]] == ["limit-reached"] * 4, run
    assert all("allows 2 documents" in e["error"] for e in run["errors"]), run["errors"]
    # The folder's one document the plan allowed is ingested again, not refused.
    kept = await scalar(database, "SELECT path FROM documents WHERE user_id = :u AND "
                                  "source = 'file'", u=user_id)
    for path in folder.iterdir():
        if str(path) == kept:
            path.write_text("otter file changed " * 5)
        else:
            path.unlink()
    again = await kclient.post(f"{API}/ingestion-runs", headers=headers,
                               json={"target": str(folder)})
    await drain_jobs(database, kcfg)
    rows = await fetch(database, "SELECT status, errors, totals_files FROM ingestion_runs "
                                 "WHERE id = :r", r=again.json()["id"])
    assert (rows[0].status, rows[0].errors, rows[0].totals_files) == ("success", [], 1), rows
