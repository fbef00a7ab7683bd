"""event_plans: events.recurrence_plan, the integers a range query needs of an event
(roost.calendar.batch.plan_of), derived at every write like recurrence_end, so that a
query does no per-event parsing.  Rows written before stay NULL and are compiled at
query time, as before; each gets its plan at its next write.

Revision ID: 0960
Revises: 0950
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0960"
down_revision: str | Sequence[str] | None = "0950"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("events", sa.Column("recurrence_plan", postgresql.ARRAY(sa.BigInteger()),
                                      nullable=True))


def downgrade() -> None:
    op.drop_column("events", "recurrence_plan")
