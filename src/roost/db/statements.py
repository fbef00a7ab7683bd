"""Statements built once and run with named parameters, for hot write paths.

Building a Core statement per call costs SQLAlchemy's coercions (~0.5 ms for a three-table
insert, bench/tools/overhead.py), and an ORM flush more again; a statement built once from
the models' tables, with a bound parameter per column, costs only its execution.  Values
are passed under a prefix per table (``r_id``, ``e_id`` ...), so several tables' inserts
can share one statement as CTEs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Insert, bindparam, insert


def bound_insert(model: Any, prefix: str, keys: Mapping[str, Any] | tuple[str, ...]) -> Insert:
    """``INSERT INTO <model's table>`` of ``keys`` (attribute names), each value the bound
    parameter ``prefix + key``, typed by its column."""
    columns = model.__mapper__.columns
    return insert(model.__table__).values({columns[key]: bindparam(prefix + key) for key in keys})


def prefixed(prefix: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` as the parameters of :func:`bound_insert` (``prefix + key``)."""
    return {prefix + key: value for key, value in values.items()}
