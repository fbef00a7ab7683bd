"""calendar_overrides: changed occurrences of a recurring event (RFC 5545 RECURRENCE-ID)
are ``events`` rows with ``recurrence_id`` (the original start of the occurrence they
replace, UTC) and the series' (calendar_id, uid): the UID is unique per calendar among
series, and (uid, recurrence_id) among overrides.

Revision ID: 0920
Revises: 0910
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0920"
down_revision: str | Sequence[str] | None = "0910"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SERIES = sa.text("recurrence_id IS NULL")
OVERRIDES = sa.text("recurrence_id IS NOT NULL")


def upgrade() -> None:
    op.add_column("events", sa.Column("recurrence_id", sa.DateTime(timezone=True),
                                      nullable=True))
    op.drop_index("uq_events_calendar_uid", table_name="events")
    op.create_index("uq_events_calendar_uid", "events", ["calendar_id", "uid"], unique=True,
                    postgresql_where=SERIES)
    op.create_index("uq_events_calendar_uid_recurrence", "events",
                    ["calendar_id", "uid", "recurrence_id"], unique=True,
                    postgresql_where=OVERRIDES)
    op.create_index("ix_events_user_recurrence", "events", ["user_id", "recurrence_id"],
                    unique=False, postgresql_where=OVERRIDES)


def downgrade() -> None:
    op.execute("DELETE FROM events WHERE recurrence_id IS NOT NULL")
    op.drop_index("ix_events_user_recurrence", table_name="events")
    op.drop_index("uq_events_calendar_uid_recurrence", table_name="events")
    op.drop_index("uq_events_calendar_uid", table_name="events")
    op.create_index("uq_events_calendar_uid", "events", ["calendar_id", "uid"], unique=True)
    op.drop_column("events", "recurrence_id")
