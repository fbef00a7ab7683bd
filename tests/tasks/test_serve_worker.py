"""`roost serve` runs a queue worker in its own process by default, so one command gives a
server whose jobs (ingestion, agent runs, schedules) run; `--no-worker` turns it off."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from roost.keyfiles import KeyMaterial
from tests.support.pg import PgTestServer
from tests.support.server import roost_server


def _enqueue_and_wait(base: str, token: str, *, within_s: float) -> str:
    headers = {"Authorization": f"Bearer {token}"}
    created = httpx.post(f"{base}/api/v1/tasks", headers=headers,
                         json={"task_type": "tasks.prune", "payload": {}}, timeout=10)
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    deadline = time.monotonic() + within_s
    while True:
        state = httpx.get(f"{base}/api/v1/tasks/{task_id}", headers=headers, timeout=10).json()["status"]
        if state not in ("pending", "running") or time.monotonic() > deadline:
            return str(state)
        time.sleep(0.2)


async def test_serve_runs_jobs_itself_unless_told_not_to(
    pg_server: PgTestServer, db_name: str, tmp_path: Path, test_keys: KeyMaterial,
) -> None:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_ADMIN_TOKEN": test_keys.admin_token, "ROOST_LLM_LOCAL_MODEL": "false",
           "ROOST_WORKER_SCHEDULES": "false"}

    def run() -> tuple[str, str]:
        with roost_server({**env, "ROOST_SERVE_WORKER": "true"}) as server:
            with_worker = _enqueue_and_wait(server.base_url, test_keys.admin_token, within_s=20)
        with roost_server(env, args=("--no-worker",)) as server:
            without = _enqueue_and_wait(server.base_url, test_keys.admin_token, within_s=2)
        return with_worker, without

    with_worker, without = await asyncio.to_thread(run)
    assert with_worker == "completed"
    assert without == "pending"
