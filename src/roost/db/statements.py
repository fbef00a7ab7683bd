"""Statements built once and run with named parameters, for hot write paths.

Building a Core statement per call costs SQLAlchemy's coercions (~0.5 ms for a three-table
insert, bench/tools/overhead.py), and an ORM flush more again; a statement built once from
the models' tables, with a bound parameter per column, costs only its execution.  Values
are passed under a prefix per table (``r_id``, ``e_id`` ...), so several tables' inserts
can share one statement as CTEs."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

from sqlalchemy import Insert, bindparam, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.transaction import driver_args, driver_connection, driver_fetch, driver_statement


def bound_insert(model: Any, prefix: str, keys: Mapping[str, Any] | tuple[str, ...]) -> Insert:
    """``INSERT INTO <model's table>`` of ``keys`` (attribute names), each value the bound
    parameter ``prefix + key``, typed by its column."""
    columns = model.__mapper__.columns
    return insert(model.__table__).values({columns[key]: bindparam(prefix + key) for key in keys})


def bound_insert_from(model: Any, prefix: str, keys: Mapping[str, Any] | tuple[str, ...],
                      source: Any) -> Insert:
    """:func:`bound_insert` as ``INSERT ... SELECT <the parameters> FROM source``: a row for
    each row of ``source``, a CTE of the same statement, so the row is written only when
    that CTE's own write happened (not after an ``ON CONFLICT DO NOTHING``, nor for an
    ``UPDATE`` that matched nothing)."""
    columns = model.__mapper__.columns
    values = [bindparam(prefix + key, type_=columns[key].type) for key in keys]
    # Only ``keys``: the columns' Python-side defaults are the caller's (``with_defaults``).
    return insert(model.__table__).from_select(
        [columns[key] for key in keys], select(*values).select_from(source),
        include_defaults=False)


def prefixed(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as the parameters of :func:`bound_insert` (``prefix + key``)."""
    return {prefix + key: value for key, value in values.items()}


def with_defaults(model: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` and, for the columns not given, the model's Python-side defaults (what an
    ORM flush would add: ``uuid7`` ids, ``utcnow`` times, scalar defaults)."""
    row = dict(values)
    for key, column in model.__mapper__.columns.items():
        default = column.default
        if key in row or default is None:
            continue
        if default.is_scalar:
            row[key] = default.arg
        elif default.is_callable:
            row[key] = default.arg(None)  # SQLAlchemy wraps it to take an execution context
    return row


def row_json(model: Any, values: Mapping[str, Any]) -> str:
    """``values`` (attribute names of ``model``) as one JSON object keyed by column names:
    a row for ``jsonb_populate_record(NULL::<table>, ...)`` in a SQL function that writes
    it (``roost_record_tool_call``).  UUIDs and times are written as PostgreSQL reads
    them; JSON columns keep their value (``None`` is SQL NULL there, not JSON ``null``)."""
    names = _COLUMN_NAMES.get(model)
    if names is None:
        names = _COLUMN_NAMES[model] = {
            key: column.name for key, column in model.__mapper__.columns.items()}
    return json.dumps({names[key]: value for key, value in values.items()},
                      default=_json_scalar, separators=(",", ":"))


_COLUMN_NAMES: dict[Any, dict[str, str]] = {}


def _json_scalar(value: Any) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, date):  # datetimes too: ISO 8601 with their offset
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


async def flush_pending(session: AsyncSession) -> None:
    """Flush what the session holds unwritten, as an autoflush would: before a statement
    sent on the driver connection (which autoflushes nothing) that may refer to it."""
    if session.new or session.dirty or session.deleted:
        await session.flush()


_INSERTS: dict[tuple[Any, tuple[str, ...]], Insert] = {}


def _insert_for(model: Any, keys: tuple[str, ...]) -> Insert:
    statement = _INSERTS.get((model, keys))
    if statement is None:
        statement = _INSERTS[(model, keys)] = bound_insert(model, "", keys)
    return statement


async def insert_row(session: AsyncSession, model: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """Insert one row of ``model`` now, on the transaction's driver connection, by a
    statement built once per set of columns; returns the values written (defaults filled
    in).  No ORM object is made and nothing pending in the session is flushed first: the
    caller flushes when the row refers to rows it has only added."""
    row = with_defaults(model, values)
    await driver_fetch(session, _insert_for(model, tuple(row)), row)
    return row


async def insert_rows(session: AsyncSession, model: Any,
                      rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """:func:`insert_row` for several rows with the same columns, in one round trip."""
    if not rows:
        return []
    full = [with_defaults(model, r) for r in rows]
    statement = _insert_for(model, tuple(full[0]))
    sql, names, processors = driver_statement(statement)
    driver = await driver_connection(session)
    await driver.executemany(sql, [driver_args(names, processors, r) for r in full])
    return full
