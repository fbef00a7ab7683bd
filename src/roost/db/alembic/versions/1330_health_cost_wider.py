"""A persona health sample's ``estimated_cost`` holds any window's credits.

``persona_health_metrics.estimated_cost`` was ``numeric(10, 4)`` (at most 999,999.9999)
while one usage record may hold up to 2**31 - 1 credits: a persona spending a million
credits in one window made the sampling pass fail with a numeric overflow, and as the
pass writes every persona's sample in one statement, no persona was sampled while that
spending stayed in the window.  The column becomes ``numeric(20, 4)``
(``roost.agents.health`` also caps the sum at the column's largest value).  The downgrade
caps stored values at the old maximum.

Revision ID: 1330
Revises: 1320
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1330"
down_revision: str | Sequence[str] | None = "1320"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column("persona_health_metrics", "estimated_cost",
                    type_=sa.Numeric(20, 4), existing_type=sa.Numeric(10, 4),
                    existing_nullable=True)


def downgrade() -> None:
    op.alter_column("persona_health_metrics", "estimated_cost",
                    type_=sa.Numeric(10, 4), existing_type=sa.Numeric(20, 4),
                    existing_nullable=True,
                    postgresql_using="least(estimated_cost, 999999.9999)")
