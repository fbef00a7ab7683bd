"""Reading the test database with plain SQL, each call in a transaction of its own."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import text

from roost.db.engine import Database


async def fetch(database: Database, sql: str, **params: Any) -> list[Any]:
    async with database.transaction() as session:
        return list((await session.execute(text(sql), params)).all())


async def scalar(database: Database, sql: str, **params: Any) -> Any:
    async with database.transaction() as session:
        return (await session.execute(text(sql), params)).scalar()


async def function_inserts(database: Database, function: str) -> dict[str, set[str]]:
    """The column list of each ``INSERT INTO table (...)`` in a SQL function's body, by
    table: what a test compares with the model a function writes rows of."""
    body = await scalar(database, "SELECT prosrc FROM pg_proc WHERE proname = :name",
                        name=function)
    return {table: {c.strip().strip('"') for c in columns.split(",")}
            for table, columns in re.findall(r"INSERT INTO (\w+) \(([^)]*)\)", body)}


async def run_and_usage(database: Database, run_id: str) -> tuple[Any, Any]:
    """A run row's status, tokens and cost, and the sums (tin, tout, credits) of the usage
    records of its model calls: what a run reports against what the ledger billed."""
    [run] = await fetch(database, "SELECT status, tokens_in, tokens_out, cost FROM runs "
                        "WHERE id = :r", r=run_id)
    [usage] = await fetch(database, "SELECT coalesce(sum(tokens_input), 0) AS tin, "
                          "coalesce(sum(tokens_output), 0) AS tout, "
                          "coalesce(sum(credits_used), 0) AS credits FROM usage_records "
                          "WHERE run_id = :r AND request_type <> 'tool_call' "
                          "AND llm_request_id IS NOT NULL", r=run_id)
    return run, usage
