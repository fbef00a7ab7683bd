"""The embedded server as a user meets it: first start, reuse across restarts, clean stop."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import asyncpg
import httpx
import psutil
import pytest
from sqlalchemy import text
from tests.support.cli import ROOST, run_roost
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.server import free_port, roost_server, wait_healthy

from roost.db.engine import Database


def _postgres_running_on(pgdata: Path) -> bool:
    for proc in psutil.process_iter(attrs=["name", "cmdline"]):
        cmdline = proc.info.get("cmdline") or []
        if proc.info.get("name") == "postgres" and any(str(pgdata) in part for part in cmdline):
            return True
    return False


def test_serve_on_an_empty_data_dir_then_reuse_it(open_tmp: Path) -> None:
    data_dir = open_tmp / "data"
    with roost_server({"ROOST_DATA_DIR": str(data_dir), "ROOST_LOG_JSON": "true"}) as server:
        body = httpx.get(f"{server.base_url}/health", timeout=5).json()
        assert body == {"status": "ok", "database": "ok", "migrations": "head"}
    output = server.output
    assert server.process.returncode == 0, output
    pgdata = data_dir / "pg"
    assert (pgdata / "PG_VERSION").read_text().strip() == "18"
    assert not _postgres_running_on(pgdata), "the embedded server outlived roost serve"

    # keys were generated on first run, private to the owner, and never printed
    keys = sorted(p.name for p in (data_dir / "keys").iterdir())
    assert keys == ["admin_token", "message_keys", "secret_key", "secrets_key"]
    for key_file in (data_dir / "keys").iterdir():
        assert key_file.stat().st_mode & 0o777 == 0o600
        assert key_file.read_text().strip() not in output

    # a second start reuses the data dir: same cluster, schema already at head
    initialised_at = (pgdata / "PG_VERSION").stat().st_mtime_ns
    again = run_roost("db", "current", env={"ROOST_DATA_DIR": str(data_dir)})
    assert again.returncode == 0, again.stderr
    assert "head" in again.stdout and "behind" not in again.stdout
    assert (pgdata / "PG_VERSION").stat().st_mtime_ns == initialised_at, "data dir was re-created"
    assert not _postgres_running_on(pgdata)


def test_external_database_url_is_used_instead_of_the_embedded_server(
    tmp_path: Path, pg_server: PgTestServer
) -> None:
    import asyncio

    name = unique_db_name("ext")
    asyncio.run(pg_server.create_database(name))
    try:
        env = {"ROOST_DATA_DIR": str(tmp_path / "data"),
               "ROOST_DATABASE_URL": pg_server.libpq_url(name)}
        upgraded = run_roost("db", "upgrade", env=env)
        assert upgraded.returncode == 0, upgraded.stderr
        doctor = run_roost("doctor", env=env)
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        assert "external PostgreSQL 18" in doctor.stdout
        assert "at head" in doctor.stdout
        assert not (tmp_path / "data" / "pg").exists(), "an embedded server was started anyway"
    finally:
        asyncio.run(pg_server.drop_database(name))


def test_doctor_reports_an_unreachable_database(tmp_path: Path) -> None:
    env = {"ROOST_DATA_DIR": str(tmp_path / "data"),
           "ROOST_DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
           "ROOST_DB_CONNECT_TIMEOUT_S": "2"}
    doctor = run_roost("doctor", env=env, timeout=60)
    assert doctor.returncode == 1
    assert "unreachable" in doctor.stdout


def test_version() -> None:
    import roost

    out = run_roost("--version", env={})
    assert out.returncode == 0 and out.stdout.strip() == f"roost {roost.__version__}"


async def test_pooled_connections_the_server_closed_are_replaced_at_checkout(
    database: Database,
) -> None:
    """No pre-ping round trip: a connection the server terminated (restart, idle kill,
    pg_terminate_backend) is dropped at checkout and the transaction runs on a new one."""
    async with database.transaction() as s:
        first_pid = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()
    # Idle in the pool now; terminated from outside it.
    outside = await asyncpg.connect(
        database.url.set(drivername="postgresql").render_as_string(hide_password=False))
    assert await outside.fetchval("SELECT pg_terminate_backend($1)", first_pid) is True
    await outside.close()
    await asyncio.sleep(0.2)  # the event loop reads the server's goodbye
    for _ in range(3):
        async with database.transaction() as s:
            pid = (await s.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        assert pid != first_pid


@pytest.mark.parametrize("killed", ["serve", "worker"])
def test_the_last_survivor_stops_postgres_after_another_process_was_killed(
    open_tmp: Path, killed: str
) -> None:
    """serve and a worker share one embedded server; one dies by SIGKILL (its pid stays
    in the wheel's handle list), the other stops with SIGTERM: PostgreSQL stops too."""
    data_dir = open_tmp / "data"
    pgdata = data_dir / "pg"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ROOST_")}
    env.update({"ROOST_DATA_DIR": str(data_dir), "ROOST_LOG_JSON": "true",
                "ROOST_LOG_LEVEL": "info"})
    port = free_port()
    serve = subprocess.Popen([ROOST, "serve", "--port", str(port)], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    log_path = open_tmp / "worker.log"
    worker: subprocess.Popen[bytes] | None = None
    try:
        wait_healthy(f"http://127.0.0.1:{port}", serve)  # migrated: the worker may start
        with log_path.open("wb") as log:
            worker = subprocess.Popen(
                [ROOST, "worker", "--no-schedules", "--poll-interval", "0.2",
                 "--shutdown-timeout", "2"], env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while "worker_started" not in log_path.read_text(errors="replace"):
            assert worker.poll() is None, log_path.read_text(errors="replace")
            assert time.monotonic() < deadline, "the worker did not start"
            time.sleep(0.1)
        assert _postgres_running_on(pgdata)
        handles = json.loads((pgdata / ".handle_pids.json").read_text())
        assert {serve.pid, worker.pid} <= set(handles)

        victim, survivor = (serve, worker) if killed == "serve" else (worker, serve)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=10)
        assert _postgres_running_on(pgdata)  # the survivor still uses it
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=60) == 0
        deadline = time.monotonic() + 20
        while _postgres_running_on(pgdata) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _postgres_running_on(pgdata), "PostgreSQL outlived every Roost process"
        assert json.loads((pgdata / ".handle_pids.json").read_text()) == []
    finally:
        for proc in (serve, worker):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)
        if _postgres_running_on(pgdata):  # do not leak a server into the next tests
            subprocess.run([ROOST, "db", "current"], env=env, capture_output=True, timeout=60)


def test_dead_and_zombie_pids_are_pruned_from_the_handle_list(tmp_path: Path) -> None:
    from roost.db.embedded import HANDLE_PIDS_FILE, pid_alive, prune_dead_handles

    zombie = subprocess.Popen(["true"])
    deadline = time.monotonic() + 10
    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    gone = subprocess.Popen(["true"])
    gone.wait()
    pgdata = tmp_path / "pg"
    pgdata.mkdir()
    (pgdata / HANDLE_PIDS_FILE).write_text(json.dumps([zombie.pid, gone.pid, os.getpid()]))
    assert not pid_alive(zombie.pid) and not pid_alive(gone.pid) and pid_alive(os.getpid())
    assert prune_dead_handles(pgdata) == [os.getpid()]
    assert json.loads((pgdata / HANDLE_PIDS_FILE).read_text()) == [os.getpid()]
    zombie.wait()


def test_a_data_dir_with_a_space_in_its_path_works(open_tmp: Path) -> None:
    """ROOST_DATA_DIR=/srv/my data: the wheel passes the socket directory to postgres
    unquoted, so the socket goes to a directory without spaces; the server starts."""
    env = {"ROOST_DATA_DIR": str(open_tmp / "my data")}
    out = run_roost("users", "list", env=env, timeout=180)
    assert out.returncode == 0, f"rc={out.returncode}\n{out.stderr[-3000:]}"
    assert not _postgres_running_on(open_tmp / "my data" / "pg")


def test_a_data_dir_whose_pg_is_a_file_is_one_line(tmp_path: Path) -> None:
    """DATA_DIR/pg that is a file, not PostgreSQL's directory: one line naming it, not
    initdb's CalledProcessError traceback."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "pg").write_text("not a cluster")
    out = run_roost("users", "list", env={"ROOST_DATA_DIR": str(data)}, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr[-3000:]
    assert out.stderr.strip() == (f"cannot start the embedded database: {data / 'pg'} is not "
                                  "a directory (the embedded PostgreSQL keeps its files "
                                  "there): move it away, or set another ROOST_DATA_DIR")
