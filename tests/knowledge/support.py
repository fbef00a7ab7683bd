"""Helpers for the database-backed knowledge tests."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.knowledge import service
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.ingest import run_ingestion
from roost.knowledge.schemas import IngestionRunCreate
from roost.principal import Principal
from tests.knowledge.helpers import make_pdf
from tests.support.sql import fetch

PARAGRAPH = (
    "Roost keeps every conversation, tool call and document of an agent in PostgreSQL. "
    "Each document is parsed, split into overlapping chunks and embedded for search. "
)


def principal(user_id: uuid.UUID, *groups: uuid.UUID, admin: bool = False) -> Principal:
    return Principal(user_id=user_id, is_admin=admin, kind="api_key", group_ids=frozenset(groups))


async def start_run(
    database: Database, who: Principal, cfg: KnowledgeConfig, target: str, **options: Any
) -> uuid.UUID:
    async with database.transaction() as s:
        run = await service.start_run(s, who, cfg, IngestionRunCreate(target=target, **options))
        return run.id


async def ingest(
    database: Database, who: Principal, cfg: KnowledgeConfig, target: str, **options: Any
) -> dict[str, Any]:
    """Start a run and execute its job here (no worker): returns the run's row."""
    force = bool(options.pop("force", False))
    run_id = await start_run(database, who, cfg, target, force=force, **options)
    await run_ingestion(database, run_id, cfg, force=force)
    found = await fetch(database, "SELECT * FROM ingestion_runs WHERE id = :id", id=run_id)
    return dict(found[0]._mapping)


def mixed_directory(root: Path) -> dict[str, Path]:
    """Text, Markdown, HTML, PDF, a nested file; an image, a corrupt PDF, a hidden file."""
    files = {
        "notes.txt": root / "notes.txt",
        "guide.md": root / "guide.md",
        "page.html": root / "page.html",
        "report.pdf": root / "report.pdf",
        "nested.txt": root / "sub" / "nested.txt",
        "image.png": root / "image.png",
        "broken.pdf": root / "broken.pdf",
    }
    files["nested.txt"].parent.mkdir()
    files["notes.txt"].write_text("Plain notes about the garden.\n\n" + PARAGRAPH * 3)
    files["guide.md"].write_text(
        "# Install guide\n\nIntro text.\n\n## Linux\n\nRun the installer with apt and then "
        "start the service. " * 2 + "\n\n## Windows\n\nUse the MSI package from the release page.\n"
    )
    files["page.html"].write_text(
        "<html><head><title>Page</title></head><body><nav>menu</nav><main><h1>Pricing</h1>"
        "<p>The team plan costs twelve dollars per seat.</p></main></body></html>"
    )
    files["report.pdf"].write_bytes(make_pdf(["Quarterly report page one.",
                                              "Revenue grew by forty percent on page two."]))
    files["nested.txt"].write_text("A nested file about penguins in Antarctica.")
    files["image.png"].write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4)
    files["broken.pdf"].write_bytes(b"%PDF-1.4\n1 0 obj << /Type /Catalog >> garbage trailer")
    (root / ".hidden.txt").write_text("never ingested")
    return files


async def drain_jobs(database: Database, cfg: KnowledgeConfig) -> int:
    """Run the queued knowledge.ingest jobs here, as a worker would (config: ``cfg``)."""
    from roost.knowledge.jobs import INGEST_TASK

    jobs = await fetch(database, "SELECT id, payload FROM background_tasks WHERE task_type = :t "
                                "AND status = 'pending' ORDER BY id", t=INGEST_TASK)
    for job in jobs:
        payload = job.payload
        doc = payload.get("document_id")
        await run_ingestion(database, uuid.UUID(payload["run_id"]), cfg,
                            force=bool(payload.get("force")),
                            document_id=uuid.UUID(doc) if doc else None)
        async with database.transaction() as s:
            await s.execute(text("UPDATE background_tasks SET status = 'completed' WHERE id = :id"),
                            {"id": job.id})
    return len(jobs)


async def make_group(database: Database, name: str, *members: uuid.UUID) -> uuid.UUID:
    from roost.identity.models import Group, UserGroupMembership

    async with database.transaction() as s:
        group = Group(name=name, created_by=members[0] if members else None)
        s.add(group)
        await s.flush()
        for member in members:
            s.add(UserGroupMembership(user_id=member, group_id=group.id))
        return group.id


async def upload_outcome(client: httpx.AsyncClient, headers: dict[str, str],
                         answer: httpx.Response
                         ) -> tuple[dict[str, Any], dict[str, Any], list[dict[str, Any]]]:
    """An upload's document, its ingestion run and its chunks, as the API shows them."""
    body = answer.json()
    api = "/api/v1/knowledge"
    doc = (await client.get(f"{api}/documents/{body['document']['id']}", headers=headers)).json()
    run = (await client.get(f"{api}/ingestion-runs/{body['ingestion_run']['id']}",
                            headers=headers)).json()
    chunks = (await client.get(f"{api}/documents/{body['document']['id']}/chunks",
                               headers=headers)).json()
    return doc, run, chunks


async def upload(client: httpx.AsyncClient, headers: dict[str, str], name: str, data: bytes,
                 content_type: str = "text/plain", **form: str) -> httpx.Response:
    """``POST /api/v1/knowledge/documents`` of ``data`` as the file ``name`` (``form``: the
    other fields, such as collection or tags)."""
    return await client.post("/api/v1/knowledge/documents", headers=headers,
                             files={"file": (name, data, content_type)}, data=form)
