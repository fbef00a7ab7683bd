"""Child process for test_export: one export pass and a usage query through the
configured sink (ROOST_* environment), printed as JSON.  Run as
``python -m tests.analytics.export_child``: a process of its own, because chDB (also
behind clickhouse-connect's ``chdb://`` backend) holds one engine per process."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

from roost.analytics.export import export_pass
from roost.analytics.queries import events_from_clickhouse, usage_from_clickhouse
from roost.config import Settings
from roost.db.base import utcnow
from roost.db.engine import create_database


async def main() -> None:
    settings = Settings()
    database = create_database(settings)
    try:
        result = await export_pass(database, settings)
        now = utcnow()
        usage = await usage_from_clickhouse(settings, "model", now - timedelta(days=1),
                                            now + timedelta(minutes=1), None)
        events = await events_from_clickhouse(settings, "event_type", now - timedelta(days=1),
                                              now + timedelta(minutes=1))
    finally:
        await database.dispose()
    print(json.dumps({"pass": result.as_dict(), "usage": usage, "events": events}, default=str))


if __name__ == "__main__":
    asyncio.run(main())
