"""Forgetting: current memories neither recalled nor changed for
``ROOST_MEMORY_ARCHIVE_AFTER_DAYS`` days are archived (``status = 'archived'``,
``archived_at``, an ``archive`` event in their history), not deleted.

Archived memories are no longer recalled or listed by default (``status=archived``
lists them); a point-in-time search (``as_of`` before the archiving) still finds them.
Past facts (``valid_to`` set) are history and are left alone.  Runs as system work
(the periodic ``memory.decay`` job, ``roost memory decay``) over every user, in batches
that each commit on their own and skip rows another transaction holds.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Final

from sqlalchemy import func, select, update

from roost.audit.service import record
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.memory.models import Memory, MemoryHistory

BATCH: Final = 1000


@dataclass
class DecayReport:
    archived: int = 0
    users: set[uuid.UUID] = field(default_factory=set)
    cutoff: datetime | None = None


async def archive_unaccessed(database: Database, *, days: int, now: datetime | None = None,
                             user_id: uuid.UUID | None = None, batch: int = BATCH) -> DecayReport:
    """Archive the current, active memories whose last recall (or, never recalled, their
    creation), last change and start (``valid_from``) are all older than ``days`` days."""
    cutoff = (now or utcnow()) - timedelta(days=days)
    report = DecayReport(cutoff=cutoff)
    reason = f"not recalled or changed for {days} days"
    while True:
        async with database.transaction() as session:
            stmt = (select(Memory.id, Memory.user_id, Memory.content, Memory.persona_id)
                    .where(Memory.status == "active", Memory.valid_to.is_(None),
                           func.coalesce(Memory.last_accessed, Memory.created_at) < cutoff,
                           # A fact not true yet cannot be recalled, so cannot escape decay
                           # by a recall: its clock starts when it becomes true.
                           Memory.valid_from < cutoff,
                           Memory.updated_at < cutoff)
                    .order_by(Memory.id).limit(batch).with_for_update(skip_locked=True))
            if user_id is not None:
                stmt = stmt.where(Memory.user_id == user_id)
            rows = (await session.execute(stmt)).all()
            if not rows:
                return report
            at = utcnow()
            await session.execute(
                update(Memory).where(Memory.id.in_([r.id for r in rows]))
                # updated_at kept: archiving is no change of the fact, and recall ages a
                # memory from its last change (an as_of search before the archiving
                # scored it as new).
                .values(status="archived", archived_at=at, updated_at=Memory.updated_at),
                execution_options={"synchronize_session": False})
            session.add_all([MemoryHistory(memory_id=r.id, user_id=r.user_id, event="archive",
                                           old_content=r.content, reason=reason)
                             for r in rows])
            await session.flush()
            users = {r.user_id for r in rows}
            await record(session, "memory.decay", category="system", resource_type="memory",
                         metadata={"archived": len(rows), "users": len(users),
                                   "archive_after_days": days})
        report.archived += len(rows)
        report.users |= users
        if len(rows) < batch:
            return report
