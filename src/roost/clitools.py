"""Helpers every ``roost`` sub-command shares (kept apart from ``roost.cli`` so domain
CLI modules can import them without importing the whole command tree)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

import typer
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncSession

from roost.config import Settings, get_settings
from roost.context import RequestContext, set_context
from roost.db.engine import Database, create_database
from roost.errors import RoostError

T = TypeVar("T")
err = Console(stderr=True)


def with_database(fn: Callable[[Database], Awaitable[T]], settings: Settings | None = None) -> T:
    """Open the configured database (starting the embedded one if needed), run ``fn``."""

    async def run() -> T:
        db = create_database(settings or get_settings())
        try:
            return await fn(db)
        finally:
            await db.dispose()

    return asyncio.run(run())


def run_in_transaction(fn: Callable[[AsyncSession], Awaitable[T]]) -> T:
    """``fn(session)`` in one transaction, as the operator, with a CLI correlation id;
    a domain error becomes one red line and exit code 1."""

    async def in_tx(db: Database) -> T:
        set_context(RequestContext(request_id=f"cli-{uuid.uuid4().hex[:12]}",
                                   user_agent="roost-cli"))
        async with db.transaction() as session:
            return await fn(session)

    try:
        return with_database(in_tx)
    except RoostError as exc:
        err.print(f"[red]{exc.title}[/red]: {exc.detail}")
        raise typer.Exit(1) from exc
