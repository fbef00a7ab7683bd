"""A provider's name fits wherever it is named: 128 characters, as registered.

An administrator registers a provider under a name of up to 128 characters
(``roost.llm.schemas.NAME_PATTERN``), but a persona's ``default_provider`` and an
agent's ``preferred_provider`` held 64 (and their API refused more): a provider with a
longer name could not be named by either.  Both columns now hold
``roost.llm.schemas.MAX_PROVIDER_NAME`` characters.

Revision ID: 1450
Revises: 1440
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1450"
down_revision: str | Sequence[str] | None = "1440"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (("personas", "default_provider"), ("agents", "preferred_provider"))


def upgrade() -> None:
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.String(128), existing_type=sa.String(64))


def downgrade() -> None:
    for table, column in COLUMNS:
        op.alter_column(table, column, type_=sa.String(64), existing_type=sa.String(128),
                        postgresql_using=f"left({column}, 64)")
