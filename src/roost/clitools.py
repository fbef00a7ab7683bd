"""Helpers every ``roost`` sub-command shares (kept apart from ``roost.cli`` so domain
CLI modules can import them without importing the whole command tree)."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text
from sqlalchemy import String, cast, select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.config import Settings, get_settings
from roost.context import RequestContext, set_context
from roost.db.engine import Database, create_database
from roost.errors import BadRequest, NotFound, RoostError

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
        raise fail(exc.title, exc.detail) from exc


def fail(title: str, message: object, *, code: int = 1) -> typer.Exit:
    """Print ``title: message`` on stderr (the message verbatim: rich markup would eat
    ``[local]`` in ``roost[local]``) and return the exit to raise."""
    # soft_wrap: long messages (ids to copy) are left to the terminal, not cut into lines.
    err.print(Text.assemble((title, "red"), ": ", str(message)), soft_wrap=True)
    return typer.Exit(code)


def id_table(*columns: str, wrap: Sequence[str] = ()) -> Table:
    """A table that loses nothing: ids, times and names are never cut or ellipsed; only
    the free-text ``wrap`` columns wrap (folding long words) to fit (see print_table)."""
    table = Table()
    for name in columns:
        if name in wrap:
            table.add_column(name, overflow="fold")
        else:
            table.add_column(name, no_wrap=True, overflow="ignore")
    return table


def print_table(console: Console, table: Table) -> None:
    """Print ``table``; when it does not fit the terminal, only its wrapping columns shrink
    and, if that is not enough, the lines are printed wider than the terminal."""
    # Measured without the terminal's limit: the narrowest the table can be with every
    # no-wrap cell whole and no word cut, wider than the terminal if it must.
    unlimited = console.options.update_width(10_000)
    for column in table.columns:
        if column.no_wrap:
            column.min_width = max(Measurement.get(console, unlimited, cell).maximum
                                   for cell in [column.header, *column.cells])
    needed = Measurement.get(console, unlimited, table).minimum
    if needed <= console.width:
        console.print(table)
        return
    width = console.width
    console.width = needed  # print(width=) is capped at the console's width
    try:
        console.print(table, crop=False)
    finally:
        console.width = width


_ID_PREFIX = re.compile(r"^[0-9a-fA-F-]{1,36}$")


async def resolve_id(session: AsyncSession, column: Any, text: str, what: str) -> uuid.UUID:
    """The id in ``column`` that ``text`` (a full id or a unique prefix of one, as the
    tables print them) names; a clear error when none or several do."""
    try:
        return uuid.UUID(text)
    except ValueError:
        pass
    if not _ID_PREFIX.match(text):
        raise BadRequest(f"{text!r} is not an id or the start of one (hex digits and dashes)")
    rows: Sequence[Any] = (await session.scalars(
        select(column).where(cast(column, String).like(text.lower() + "%")).order_by(column).limit(6)
    )).all()
    if not rows:
        raise NotFound(f"no {what} id starts with {text!r}")
    if len(rows) > 1:
        shown = ", ".join(str(r) for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise BadRequest(f"{text!r} is the start of several {what} ids ({shown}); "
                         "give more characters")
    return uuid.UUID(str(rows[0]))


M = TypeVar("M", bound=BaseModel)


def parse_input(model: type[M], values: dict[str, Any]) -> M:
    """The options given (None: not given) validated by the API's own body model, so the
    CLI refuses what the API refuses; the first problems as one red line, exit code 1."""
    try:
        return model.model_validate({k: v for k, v in values.items() if v is not None})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
                             for e in exc.errors()[:5])
        raise fail("Invalid input", problems) from None


def when(value: datetime | None, *, seconds: bool = False) -> str:
    """A stored time for a table, in UTC ("-" for none)."""
    if value is None:
        return "-"
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")
