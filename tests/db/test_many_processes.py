"""Many processes (docs/scale.md, "Many processes"): ``roost serve --workers N`` and
``roost worker`` processes sharing one database through a real PgBouncer in transaction
mode, driven with mixed traffic; PgBouncer restarted under load; an API process killed
with SIGKILL in the middle of writes; on the embedded PostgreSQL, the supervisor's
children share the server, a dead child is replaced and SIGTERM stops everything."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from sqlalchemy import text
from tests.support.cli import ROOST
from tests.support.openai_stub import StubServer
from tests.support.pg import PgTestServer
from tests.support.pgbouncer import Bouncer, running_bouncer
from tests.support.server import free_port, roost_server, wait_healthy
from tests.support.workers import WorkerProcess, child_env

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial

PASSWORD = "plum-Quartz-river-7-kettle"


@pytest.fixture
def restartable_bouncer(pg_server: PgTestServer) -> Iterator[Bouncer]:
    with running_bouncer(pg_server) as bouncer:
        yield bouncer


def _key_env(keys: KeyMaterial) -> dict[str, str]:
    """Every process of one install must share its keys."""
    return {"ROOST_ADMIN_TOKEN": keys.admin_token, "ROOST_SECRET_KEY": keys.secret_key,
            "ROOST_MESSAGE_KEYS": ",".join(keys.message_keys),
            "ROOST_SECRETS_KEY": base64.b64encode(keys.secrets_key).decode()}


def _api_children(supervisor_pid: int) -> list[psutil.Process]:
    """The API processes a ``--workers`` supervisor runs (not multiprocessing's tracker)."""
    found = []
    for child in psutil.Process(supervisor_pid).children():
        try:
            if child.status() != psutil.STATUS_ZOMBIE and "spawn_main" in " ".join(child.cmdline()):
                found.append(child)
        except psutil.Error:  # exited (or a zombie awaiting the supervisor) meanwhile
            continue
    return found


@contextlib.contextmanager
def _logged(tmp_path: Path, name: str) -> Iterator[list[Any]]:
    """Whatever the server printed, in ``tmp_path/<name>.log`` once it has stopped."""
    servers: list[Any] = []
    try:
        yield servers
    finally:
        for server in servers:
            (tmp_path / f"{name}.log").write_text(server.output)


def _replaced(supervisor_pid: int, victim: int) -> bool:
    """The supervisor runs two API processes again, the killed one not among them."""
    pids = {c.pid for c in _api_children(supervisor_pid)}
    return len(pids) == 2 and victim not in pids


def _until(check: Any, what: str, timeout_s: float = 60) -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got:
            return got
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


async def test_api_processes_and_workers_behind_pgbouncer_share_one_roost(
    restartable_bouncer: Bouncer, pg_server: PgTestServer, db_name: str, database: Database,
    tmp_path: Path, test_keys: KeyMaterial, stub: StubServer,
) -> None:
    bouncer = restartable_bouncer
    url = f"postgresql://postgres@127.0.0.1:{bouncer.port}/{db_name}"
    env = {"ROOST_DATABASE_URL": url, "ROOST_PGBOUNCER": "true", "ROOST_LLM_LOCAL_MODEL": "false",
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash", "ROOST_WORKER_SCHEDULES": "false",
           "ROOST_DB_POOL_SIZE": "4", "ROOST_DB_MAX_OVERFLOW": "4", "ROOST_LOG_LEVEL": "warning",
           **_key_env(test_keys)}
    admin = {"Authorization": f"Bearer {test_keys.admin_token}"}
    workers = [WorkerProcess(child_env(**env, ROOST_DATA_DIR=str(tmp_path / f"w{i}")),
                             tmp_path / f"worker{i}.log") for i in range(2)]

    def run() -> dict[str, Any]:
        facts: dict[str, Any] = {}
        # A: a supervisor with two API processes; B: a single `roost serve`.
        with _logged(tmp_path, "a") as log_a, _logged(tmp_path, "b") as log_b, \
                roost_server({**env, "ROOST_DATA_DIR": str(tmp_path / "a")},
                             args=("--workers", "2", "--no-worker"), timeout_s=120) as a, \
                roost_server({**env, "ROOST_DATA_DIR": str(tmp_path / "b")},
                             args=("--no-migrate",), timeout_s=120) as b:
            log_a.append(a)
            log_b.append(b)
            assert len(_until(lambda: len(_api_children(a.process.pid)) == 2 and
                              _api_children(a.process.pid), "two API processes")) == 2
            with httpx.Client(base_url=a.base_url, timeout=30) as ca, \
                    httpx.Client(base_url=b.base_url, timeout=30) as cb:
                facts.update(_mixed_traffic(ca, cb, a.base_url, admin, stub))
                facts.update(_pgbouncer_restart(a.base_url, b.base_url, facts["users"], bouncer))
                facts.update(_sigkill_mid_write(a.base_url, a.process.pid, facts["users"]))
        return facts

    try:
        facts = await asyncio.to_thread(run)
    finally:
        for worker in workers:
            worker.kill()

    # Ingestion ran in the `roost worker` processes (the API processes run none).
    async with database.transaction() as session:
        ran_by = set((await session.execute(text(
            "SELECT worker_id FROM background_tasks WHERE task_type = 'knowledge.ingest' "
            "AND status = 'completed'"))).scalars())
    pids = {str(w.proc.pid) for w in workers}
    assert ran_by and {w.split(":")[1] for w in ran_by} <= pids

    # SIGKILL mid-write: every answered write is there, and every stored message is whole
    # (its audit record committed with it, the session's positions without a gap).
    async with database.transaction() as session:
        rows = (await session.execute(text(
            "SELECT m.id, m.session_id, m.seq, "
            "       EXISTS (SELECT 1 FROM audit_logs l WHERE l.action = 'chat.message.create' "
            "               AND l.resource_id = m.id::text) AS audited "
            "FROM chat_messages m WHERE m.session_id = ANY(:s)"),
            {"s": [uuid.UUID(s) for s in facts["kill_sessions"]]})).all()
        orphans = (await session.execute(text(
            "SELECT count(*) FROM audit_logs l WHERE l.action = 'chat.message.create' "
            "AND l.metadata->>'reply' = 'false' AND NOT EXISTS "
            "(SELECT 1 FROM chat_messages m WHERE m.id::text = l.resource_id)"))).scalar_one()
    stored = {str(r.id) for r in rows}
    assert set(facts["answered"]) <= stored
    assert len(stored) <= facts["attempted"]
    assert all(r.audited for r in rows) and orphans == 0
    for sid in facts["kill_sessions"]:
        seqs = sorted(r.seq for r in rows if str(r.session_id) == sid)
        assert seqs == list(range(1, len(seqs) + 1))


def _register(client: httpx.Client, name: str) -> httpx.Response:
    return client.post("/api/v1/auth/register", json={
        "username": name, "email": f"{name}@example.test", "password": PASSWORD})


def _mixed_traffic(ca: httpx.Client, cb: httpx.Client, a_url: str, admin: dict[str, str],
                   stub: StubServer) -> dict[str, Any]:
    # A settings change through one process is applied by the other.
    assert _register(cb, "root").status_code == 201  # the first account: the administrator
    assert _register(cb, "early").json()["status"] == "pending_approval"
    put = ca.put("/api/v1/admin/settings/open_registration", json={"value": True}, headers=admin)
    assert put.status_code == 200, put.text
    counter = iter(range(1000))
    _until(lambda: _register(cb, f"probe{next(counter)}").json()["status"] == "active",
           "B to apply open_registration", timeout_s=10)

    # Sign-up through one process, log in through the other.
    users: list[dict[str, str]] = []
    for i in range(4):
        signup, login = (ca, cb) if i % 2 else (cb, ca)
        reg = _register(signup, f"user{i}")
        assert reg.status_code == 201 and reg.json()["status"] == "active", reg.text
        tokens = login.post("/api/v1/auth/login", json={"login": f"user{i}", "password": PASSWORD})
        assert tokens.status_code == 200, tokens.text
        users.append({"Authorization": f"Bearer {tokens.json()['access_token']}"})

    # An LLM provider added through A answers a chat post made through B.
    provider = ca.post("/api/v1/llm/providers", headers=admin, json={
        "name": "stub", "type": "openai", "base_url": stub.base_url, "model": "stub-model"})
    assert provider.status_code == 201, provider.text
    sessions = []
    for i, headers in enumerate(users):
        sid = ca.post("/api/v1/chat/sessions", json={}, headers=headers).json()["id"]
        sessions.append(sid)
        plain = cb.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                        json={"content": f"note {i}", "reply": False})
        assert plain.status_code == 201, plain.text
        answered = cb.post(f"/api/v1/chat/sessions/{sid}/messages", headers=headers,
                           json={"content": f"hello {i}"})
        assert answered.status_code == 201, answered.text
        assert answered.json()["assistant_message"]["content"] == f"echo: hello {i} (model stub-model)"
    for sid, headers in zip(sessions, users, strict=True):
        page = ca.get(f"/api/v1/chat/sessions/{sid}/messages", headers=headers)
        assert sorted(m["seq"] for m in page.json()["items"]) == [1, 2, 3]
    assert ca.get(f"/api/v1/chat/sessions/{sessions[0]}", headers=users[1]).status_code == 404

    # Uploads through A, ingested by the `roost worker` processes, ready when read through B.
    docs = []
    for i, headers in enumerate(users):
        up = ca.post("/api/v1/knowledge/documents", headers=headers, files={
            "file": (f"notes{i}.txt", f"kestrel migration notes number {i}".encode(), "text/plain")})
        assert up.status_code == 202, up.text
        docs.append((up.json()["document"]["id"], headers))
    for doc_id, headers in docs:
        _until(lambda d=doc_id, h=headers: cb.get(f"/api/v1/knowledge/documents/{d}",
                                                  headers=h).json()["status"] == "ready",
               f"document {doc_id} to be ingested")
    hits = ca.post("/api/v1/knowledge/search", headers=users[0],
                   json={"query": "kestrel", "k": 5, "mode": "text"})
    assert hits.status_code == 200, hits.text
    assert {h["document_id"] for h in hits.json()["results"]} == {docs[0][0]}

    # /metrics on A adds up both API processes: 20 requests on fresh connections (spread
    # by the kernel), 20 more counted, whichever process answers the scrape.
    def health_count() -> float:
        for line in httpx.get(f"{a_url}/metrics", timeout=10).text.splitlines():
            if line.startswith('roost_http_requests_total{method="GET",route="/health",status="200"}'):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = health_count()
    for _ in range(20):
        assert httpx.get(f"{a_url}/health", timeout=10).status_code == 200
    assert health_count() - before == 20
    return {"users": users}


def _pgbouncer_restart(a_url: str, b_url: str, users: list[dict[str, str]],
                       bouncer: Bouncer) -> dict[str, Any]:
    """Requests while PgBouncer is down answer 503 (never 500, never a hang); once it is
    back, both servers answer again without a restart."""
    statuses: list[int] = []
    stop = False

    def load(base: str, headers: dict[str, str]) -> None:
        with httpx.Client(base_url=base, timeout=30) as client:
            while not stop:
                statuses.append(client.get("/api/v1/chat/sessions", headers=headers).status_code)

    async def drive() -> None:
        nonlocal stop
        tasks = [asyncio.create_task(asyncio.to_thread(load, base, users[i]))
                 for i, base in enumerate((a_url, b_url, a_url, b_url))]
        try:
            await asyncio.sleep(0.5)
            bouncer.stop()
            down = []
            for base in (a_url, b_url):
                reply = await asyncio.to_thread(httpx.get, f"{base}/api/v1/chat/sessions",
                                                headers=users[0], timeout=30)
                down.append((reply.status_code, reply.headers.get("content-type")))
            bouncer.start()
            for base in (a_url, b_url):
                await asyncio.to_thread(_until, lambda b=base: httpx.get(
                    f"{b}/api/v1/chat/sessions", headers=users[0], timeout=30).status_code == 200,
                    f"{base} to recover")
            await asyncio.sleep(0.5)
        finally:
            stop = True
            await asyncio.gather(*tasks)
        assert down == [(503, "application/problem+json")] * 2

    asyncio.run(drive())
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    assert 200 in statuses
    return {}


def _sigkill_mid_write(a_url: str, supervisor_pid: int,
                       users: list[dict[str, str]]) -> dict[str, Any]:
    """Writers post messages through A while one of its API processes is killed with
    SIGKILL; the supervisor replaces it and the writers carry on."""
    sessions = [httpx.post(f"{a_url}/api/v1/chat/sessions", json={}, headers=h, timeout=30)
                .json()["id"] for h in users]
    answered: list[str] = []
    attempted = 0
    failures: list[str] = []
    victim = _api_children(supervisor_pid)[0]
    stop = False

    def write(sid: str, headers: dict[str, str], n: int) -> None:
        nonlocal attempted
        while not stop:
            attempted += 1
            n += 1
            try:  # a fresh connection each time: the kernel spreads them over both processes
                reply = httpx.post(f"{a_url}/api/v1/chat/sessions/{sid}/messages",
                                   headers=headers, timeout=30,
                                   json={"content": f"write {n}", "reply": False})
            except httpx.TransportError as exc:
                failures.append(type(exc).__name__)
                continue
            if reply.status_code == 201:
                answered.append(reply.json()["user_message"]["id"])
            else:
                failures.append(f"{reply.status_code} {reply.text[:200]}")

    async def drive() -> None:
        nonlocal stop
        tasks = [asyncio.create_task(asyncio.to_thread(write, sid, h, 0))
                 for sid, h in zip(sessions, users, strict=True)]
        try:
            await asyncio.to_thread(_until, lambda: len(answered) >= 20, "writes before the kill")
            victim.send_signal(signal.SIGKILL)
            await asyncio.to_thread(_until, lambda: _replaced(supervisor_pid, victim.pid),
                                    "a replacement process")
            seen = len(answered)
            await asyncio.to_thread(_until, lambda: len(answered) >= seen + 20,
                                    f"writes after the kill (failures: {failures[-5:]})")
        finally:
            stop = True
            await asyncio.gather(*tasks)

    asyncio.run(drive())
    return {"answered": answered, "attempted": attempted, "kill_sessions": sessions}


def test_workers_share_the_embedded_server_and_sigterm_stops_it(
    open_tmp: Path, test_keys: KeyMaterial,
) -> None:
    """On the embedded PostgreSQL: two API processes (each with its queue worker) attach
    to the one server; a child killed with SIGKILL is replaced; SIGTERM stops every
    process, exit code 0, and PostgreSQL with the last of them."""
    data = open_tmp / "data"
    port = free_port()
    env = child_env(ROOST_DATA_DIR=str(data), ROOST_LLM_LOCAL_MODEL="false",
                    ROOST_WORKER_SCHEDULES="false", ROOST_LOG_LEVEL="warning",
                    **_key_env(test_keys))
    proc = subprocess.Popen([ROOST, "serve", "--port", str(port), "--workers", "2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    base = f"http://127.0.0.1:{port}"
    admin = {"Authorization": f"Bearer {test_keys.admin_token}"}
    postmaster = data / "pg" / "postmaster.pid"
    children: list[psutil.Process] = []
    try:
        wait_healthy(base, proc, timeout_s=120)
        children = _until(lambda: len(_api_children(proc.pid)) == 2 and _api_children(proc.pid),
                          "two API processes")
        # Each API process runs a queue worker: a job enqueued through A completes.
        task = httpx.post(f"{base}/api/v1/tasks", headers=admin, timeout=10,
                          json={"task_type": "tasks.prune", "payload": {}})
        assert task.status_code == 201, task.text
        _until(lambda: httpx.get(f"{base}/api/v1/tasks/{task.json()['id']}", headers=admin,
                                 timeout=10).json()["status"] == "completed", "the job")
        victim = children[0]
        victim.send_signal(signal.SIGKILL)
        _until(lambda: _replaced(proc.pid, victim.pid), "a replacement process")
        wait_healthy(base, proc, timeout_s=60)
        assert postmaster.exists()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    assert not postmaster.exists(), "the embedded PostgreSQL outlived the server"
    assert all(not psutil.pid_exists(c.pid) or c.status() == psutil.STATUS_ZOMBIE
               for c in children)


def app_that_cannot_start() -> Any:
    """An app factory for the test below: its lifespan fails, as the app's does when its
    database cannot be used (uvicorn then exits STARTUP_FAILURE)."""
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> Any:
        raise RuntimeError("this app cannot start")
        yield

    return FastAPI(lifespan=lifespan)


def test_a_supervisor_whose_processes_cannot_start_exits_3() -> None:
    """`roost serve --workers 2` whose API processes all fail at start-up exits 3, as a
    single `roost serve` does, never 0: a service manager would take exit 0 for a clean
    stop and neither restart nor alert."""
    import typer
    import uvicorn

    from roost.serving import Supervisor, listening_socket

    port = free_port()
    config = uvicorn.Config(f"{__name__}:app_that_cannot_start", factory=True,
                            host="127.0.0.1", port=port, workers=2, log_config=None,
                            lifespan="on")
    handlers = {sig: signal.getsignal(sig) for sig in signal.Signals
                if sig not in (signal.SIGKILL, signal.SIGSTOP)}
    sock = listening_socket("127.0.0.1", port)
    try:
        with pytest.raises(typer.Exit) as exited:
            Supervisor(config, sockets=[sock]).run()
    finally:
        sock.close()
        for sig, handler in handlers.items():  # the supervisor's own are not pytest's
            if handler is not None:
                with contextlib.suppress(OSError, ValueError):
                    signal.signal(sig, handler)
    assert exited.value.exit_code == 3
