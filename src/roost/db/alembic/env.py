"""Alembic environment.

Roost runs migrations programmatically (``roost.db.migrate``) on a connection it passes
in ``config.attributes["connection"]``; the fallback path builds an async engine from
``sqlalchemy.url`` so plain ``alembic`` invocations work too.

This script is an entry point, like the CLI: it may read the app layer's list of
domains (``roost.domains.import_models``) for the complete ``target_metadata``.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from roost.db.migrate import skip_partitions
from roost.domains import import_models

config = context.config
target_metadata = import_models()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        compare_type=True,
        include_object=skip_partitions(target_metadata),
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(config.get_main_option("sqlalchemy.url") or "")
    async with engine.connect() as connection:
        await connection.run_sync(do_run_migrations)
        await connection.commit()
    await engine.dispose()


if context.is_offline_mode():
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata,
                      literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())
