"""A prompt version's usage counters are bigint.

``system_prompts.usage_count`` (and ``outcome_count``, ``rating_count``) were int4: a
factory version every chat reply uses reaches 2,147,483,647 uses, and from then on
``roost_prompt_used`` failed with "integer out of range", failing every chat reply of
every user of that version.  The three counters become bigint; the functions that
update them (``roost_prompt_used``, ``_outcome``, ``_rated``, ``roost_session_rated``)
are SQL over the columns and need no change.  The downgrade caps a counter beyond int4.

Revision ID: 1270
Revises: 1260
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1270"
down_revision: str | Sequence[str] | None = "1260"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COUNTERS = ("usage_count", "outcome_count", "rating_count")


def upgrade() -> None:
    for column in COUNTERS:
        op.alter_column("system_prompts", column, type_=sa.BigInteger(),
                        existing_type=sa.Integer(), existing_nullable=False,
                        existing_server_default=sa.text("0"))


def downgrade() -> None:
    for column in COUNTERS:
        op.alter_column("system_prompts", column, type_=sa.Integer(),
                        existing_type=sa.BigInteger(), existing_nullable=False,
                        existing_server_default=sa.text("0"),
                        postgresql_using=f"LEAST({column}, 2147483647)::integer")
