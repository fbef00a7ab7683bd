"""What a new user trips over: a job that cannot do its work fails visibly (document,
run and task end failed with the reason, the worker logs an error), and the API refuses
up front what it can tell will fail."""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.knowledge import index, service
from roost.knowledge.config import EmbedderSpec, KnowledgeConfig
from roost.knowledge.embeddings import LOCAL_MODEL_DIMENSIONS, LOCAL_MODEL_NAME
from tests.knowledge.support import drain_jobs, principal, start_run, upload
from tests.support.identity import make_user
from tests.support.sql import fetch
from tests.tasks.support import WorkerProcess, wait_until

API = "/api/v1/knowledge"
LOCAL = EmbedderSpec("local", LOCAL_MODEL_NAME, LOCAL_MODEL_DIMENSIONS)


@pytest.fixture
def worker_without_extra_nor_roots(
    pg_server: Any, db_name: str, tmp_path: Path
) -> Iterator[WorkerProcess]:
    """A real ``roost worker``: local embeddings without the extra, no ingest roots."""
    env = {"ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "local", "ROOST_KNOWLEDGE_INGEST_ROOTS": ""}
    worker = WorkerProcess(pg_server.libpq_url(db_name), tmp_path / "w", tmp_path / "worker.log",
                           "--import", "tests.knowledge.no_local_extra", "--no-schedules", env=env)
    try:
        yield worker
    finally:
        worker.close()


async def _task(database: Database, task_id: uuid.UUID) -> Any:
    found = await fetch(database, "SELECT status, error_message FROM background_tasks "
                                 "WHERE id = :id", id=task_id)
    return found[0]


@pytest.mark.needs_local  # the API process has the extra; the worker pretends not to
async def test_worker_without_the_local_extra_or_the_ingest_roots_fails_the_run_visibly(
    database: Database, ingest_root: Path, worker_without_extra_nor_roots: WorkerProcess,
) -> None:
    user_id, _ = await make_user(database)
    who = principal(user_id)
    # The API process has both (checked by the API); the worker has neither.
    api_cfg = KnowledgeConfig(ingest_roots=(ingest_root,), embedder=LOCAL)
    async with database.transaction() as s:
        doc, upload_run = await service.create_upload(
            s, who, api_cfg, filename="notes.txt", content_type="text/plain",
            data=b"Some notes that will never be embedded.")
        doc_id, upload_run_id, upload_task = doc.id, upload_run.id, upload_run.task_id
    (ingest_root / "a.txt").write_text("a file the worker may not read")
    file_run_id = await start_run(database, who, api_cfg, "a.txt")
    file_task = (await fetch(database, "SELECT task_id FROM ingestion_runs WHERE id = :id",
                            id=file_run_id))[0].task_id
    worker = worker_without_extra_nor_roots
    await worker.wait_started()

    async def dead() -> bool:
        statuses = [(await _task(database, t)).status for t in (upload_task, file_task)]
        return statuses == ["dead_letter", "dead_letter"]

    await wait_until(dead, within=60, interval=0.2, what="both tasks dead-lettered")

    [document] = await fetch(database, "SELECT status, error_message FROM documents WHERE id = :id",
                            id=doc_id)
    assert document.status == "error"
    assert "roost[local]" in document.error_message and "sentence-transformers" in document.error_message
    runs = {r.id: r for r in await fetch(database, "SELECT id, status, errors FROM ingestion_runs")}
    assert runs[upload_run_id].status == "failed"
    assert "roost[local]" in runs[upload_run_id].errors[-1]["error"]
    assert runs[file_run_id].status == "failed"
    reason = runs[file_run_id].errors[-1]["error"]
    assert "ROOST_KNOWLEDGE_INGEST_ROOTS is empty" in reason and "roost worker" in reason
    assert "roost[local]" in (await _task(database, upload_task)).error_message
    assert "ROOST_KNOWLEDGE_INGEST_ROOTS" in (await _task(database, file_task)).error_message

    logged = [json.loads(line) for line in worker.output().splitlines() if line.startswith("{")]
    errors = {(e.get("event"), e.get("level")) for e in logged}
    assert ("ingest_run_failed", "error") in errors and ("task_dead_lettered", "error") in errors


@pytest.fixture
def no_local_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process as if the roost[local] extra were not installed."""
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)


async def test_the_api_refuses_uploads_and_runs_when_no_embedder_can_work(
    database: Database, tmp_path: Path, ingest_root: Path, test_keys: KeyMaterial,
    no_local_extra: None,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", knowledge_embedding_provider="local",
                        knowledge_ingest_roots=str(ingest_root))
    app = create_app(settings, database=database, keys=test_keys, configure_logs=False)
    _, headers = await make_user(database)
    (ingest_root / "a.txt").write_text("text")
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
        upload = await client.post(f"{API}/documents", headers=headers,
                                   files={"file": ("a.txt", b"hello", "text/plain")})
        run = await client.post(f"{API}/ingestion-runs", headers=headers, json={"target": "a.txt"})
    for resp in (upload, run):
        assert resp.status_code == 409, resp.text
        problem = resp.json()
        assert problem["type"].endswith("embedder-unavailable")
        assert "roost[local]" in problem["detail"] and "pip install" in problem["detail"]
    # Nothing was stored or queued.
    assert await fetch(database, "SELECT id FROM documents") == []
    assert await fetch(database, "SELECT id FROM background_tasks") == []


async def test_file_ingestion_without_roots_names_the_setting_in_the_api(
    database: Database, tmp_path: Path, test_keys: KeyMaterial,
) -> None:
    settings = Settings(data_dir=tmp_path / "data", knowledge_embedding_provider="hash")
    app = create_app(settings, database=database, keys=test_keys, configure_logs=False)
    _, headers = await make_user(database)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
        run = await client.post(f"{API}/ingestion-runs", headers=headers,
                                json={"target": os.fspath(tmp_path)})
    assert run.status_code == 403 and "ROOST_KNOWLEDGE_INGEST_ROOTS" in run.json()["detail"]


async def test_search_with_a_model_registered_at_other_dimensions_is_409(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ksettings: Settings,
    test_keys: KeyMaterial, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A server configured with a model name already registered at other dimensions
    answers vector and hybrid searches with the same 409 as its ingestions, naming the
    conflict (not the vector cast's generic 400); text search has no vectors and works."""
    _, alice = await make_user(database)
    r = await upload(kclient, alice, "a.txt", b"otter river notes otter swimming")
    assert r.status_code == 202, r.text
    await drain_jobs(database, kcfg)
    model = kcfg.embedder.model
    settings = ksettings.model_copy(update={"knowledge_embedding_dimensions": 256,
                                            "knowledge_embedding_model": model})
    app = create_app(settings, database=database, keys=test_keys, configure_logs=False)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as c:
        for mode in ("vector", "hybrid", "text", "vector"):
            if mode == "text":  # then as a process that has not met the model yet
                monkeypatch.setattr(index, "_registered", {})
            r = await c.post(f"{API}/search", headers=alice, json={"query": "otter", "mode": mode})
            if mode == "text":
                assert r.status_code == 200 and len(r.json()["results"]) == 1, r.text
                continue
            assert r.status_code == 409, (mode, r.status_code, r.text[:300])
            assert f"registered with {kcfg.embedder.dimensions} dimensions, not 256" in \
                r.json()["detail"], r.text
