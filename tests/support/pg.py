"""The test run's PostgreSQL: one server per run, one fresh database per test.

``ROOST_TEST_DATABASE_URL`` (a superuser URL, e.g. ``postgresql://postgres@127.0.0.1/postgres``)
points the suite at an external server; otherwise an embedded server is started in a
temporary directory and deleted at the end of the run.  A template database is migrated
once; each test's database is ``CREATE DATABASE ... TEMPLATE`` of it.
"""

from __future__ import annotations

import asyncio
import os
import queue
import threading
import uuid
from dataclasses import dataclass

import asyncpg
from sqlalchemy.engine import URL, make_url

from roost.db.engine import to_async_url

TEMPLATE_DB = "roost_test_template"


@dataclass
class PgTestServer:
    admin_url: URL  # asyncpg-flavoured SQLAlchemy URL to the maintenance database

    def url_for(self, database: str) -> URL:
        return self.admin_url.set(database=database)

    def libpq_url(self, database: str) -> str:
        """A plain ``postgresql://`` URL, as a user would put in ROOST_DATABASE_URL."""
        return (
            self.url_for(database).set(drivername="postgresql").render_as_string(hide_password=False)
        )

    async def connect_admin(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.libpq_url(self.admin_url.database or "postgres"))

    async def create_database(self, name: str, template: str | None = None) -> None:
        conn = await self.connect_admin()
        try:
            tmpl = f' TEMPLATE "{template}"' if template else ""
            await conn.execute(f'CREATE DATABASE "{name}"{tmpl}')
        finally:
            await conn.close()

    async def drop_database(self, name: str) -> None:
        conn = await self.connect_admin()
        try:
            await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await conn.close()


class DatabaseSupply:
    """Test databases cloned from the template ahead of the tests that take them.

    ``CREATE DATABASE ... TEMPLATE`` of the migrated schema (about 800 relations) takes
    about 0.1 s on a cluster in memory (conftest's ``memory_backed_dir``) and 0.4-1 s on
    a VM's disk.  A thread of this test process keeps the next database ready while the
    current test runs and drops the used ones, in the order they come: a test gets a
    fresh database as before, without waiting for it.
    """

    def __init__(self, server: PgTestServer, template: str, ready: int = 1) -> None:
        self._server, self._template, self._depth = server, template, ready
        self._ready: queue.Queue[str | BaseException] = queue.Queue()
        self._jobs: queue.Queue[str | None] = queue.Queue()  # "" creates, a name drops
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def take(self) -> str:
        """A fresh database's name (blocking until one is ready); another is started."""
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name="test-db-supply",
                                                daemon=True)
                self._thread.start()
                for _ in range(self._depth):
                    self._jobs.put("")
        got = self._ready.get()
        self._jobs.put("")
        if isinstance(got, BaseException):
            raise got
        return got

    def give_back(self, name: str) -> None:
        """Drop ``name`` in the background (before the next database is made)."""
        self._jobs.put(name)

    def close(self) -> None:
        """Drop what was made and not taken; wait for the queued drops."""
        if self._thread is None:
            return
        self._jobs.put(None)
        self._thread.join()
        leftovers = []
        while not self._ready.empty():
            got = self._ready.get()
            if isinstance(got, str):
                leftovers.append(got)
        for name in leftovers:
            asyncio.run(self._server.drop_database(name))

    def _work(self) -> None:
        loop = asyncio.new_event_loop()
        try:
            while (job := self._jobs.get()) is not None:
                if job:
                    try:
                        loop.run_until_complete(self._server.drop_database(job))
                    except Exception:  # noqa: S110 - a leftover, deleted with the cluster
                        pass
                    continue
                name = unique_db_name()
                try:
                    loop.run_until_complete(
                        self._server.create_database(name, template=self._template))
                except Exception as exc:  # the test that takes it fails with the reason
                    self._ready.put(exc)
                else:
                    self._ready.put(name)
        finally:
            loop.close()


def external_url() -> URL | None:
    raw = os.environ.get("ROOST_TEST_DATABASE_URL")
    return to_async_url(raw) if raw else None


def unique_db_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


__all__ = ["TEMPLATE_DB", "DatabaseSupply", "PgTestServer", "external_url", "make_url", "unique_db_name"]
