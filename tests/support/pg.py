"""The test run's PostgreSQL: one server per run, one fresh database per test.

``ROOST_TEST_DATABASE_URL`` (a superuser URL, e.g. ``postgresql://postgres@127.0.0.1/postgres``)
points the suite at an external server; otherwise an embedded server is started in a
temporary directory and deleted at the end of the run.  A template database is migrated
once; each test's database is ``CREATE DATABASE ... TEMPLATE`` of it.
"""

from __future__ import annotations

import os
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


def external_url() -> URL | None:
    raw = os.environ.get("ROOST_TEST_DATABASE_URL")
    return to_async_url(raw) if raw else None


def unique_db_name(prefix: str = "t") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


__all__ = ["TEMPLATE_DB", "PgTestServer", "external_url", "make_url", "unique_db_name"]
