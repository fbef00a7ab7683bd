"""JSON and JSONB values a service passes with ids, amounts and timestamps in them are
stored as the strings JSON carries those in (json.dumps alone raised, and the request
answered 500); anything else that JSON cannot carry is still an error."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import StatementError

from roost.db.engine import Database

_ECHO = text("SELECT CAST(:value AS jsonb)").bindparams(bindparam("value", type_=JSONB))


async def test_ids_amounts_and_timestamps_are_stored_as_json_strings(database: Database) -> None:
    some_id, at = uuid.uuid4(), datetime(2027, 1, 2, 3, 4, 5, tzinfo=UTC)
    value = {"id": some_id, "at": at, "day": date(2027, 1, 2), "amount": Decimal("1.50"),
             "nested": [{"ids": [some_id]}]}
    async with database.transaction() as session:
        stored = (await session.execute(_ECHO, {"value": value})).scalar_one()
    assert stored == {"id": str(some_id), "at": "2027-01-02T03:04:05+00:00",
                      "day": "2027-01-02", "amount": "1.50",
                      "nested": [{"ids": [str(some_id)]}]}


async def test_what_json_cannot_carry_is_still_refused(database: Database) -> None:
    with pytest.raises(StatementError, match="not JSON serializable"):
        async with database.transaction() as session:
            await session.execute(_ECHO, {"value": {"x": object()}})
