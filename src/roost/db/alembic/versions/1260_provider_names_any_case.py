"""LLM provider names are unique whatever their case, also for creates at once.

The registry checked names case-insensitively (``P1`` after ``p1`` is a 409) before
inserting, but the unique constraint ``uq_llm_providers_name`` was on the exact name:
two creates (or renames) at once named ``race`` and ``RACE`` both succeeded.  The
constraint becomes the unique index ``uq_llm_providers_lower_name`` on ``lower(name)``.

An install that already holds names differing only in case keeps its oldest provider
of each name (by ``created_at``, then id) as it is; each later one is renamed
``<name>-<its id>`` (unique, and within the column) so the index can be built.  The
downgrade leaves the renamed providers as they are.

Revision ID: 1260
Revises: 1250
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1260"
down_revision: str | Sequence[str] | None = "1250"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_RENAME_LATER_DUPLICATES = """
UPDATE llm_providers p SET name = p.name || '-' || p.id::text
  FROM (SELECT id, row_number() OVER (PARTITION BY lower(name)
                                      ORDER BY created_at, id) AS n
          FROM llm_providers) d
 WHERE d.id = p.id AND d.n > 1
"""


def upgrade() -> None:
    op.execute(_RENAME_LATER_DUPLICATES)
    op.drop_constraint("uq_llm_providers_name", "llm_providers", type_="unique")
    op.create_index("uq_llm_providers_lower_name", "llm_providers",
                    [sa.literal_column("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_llm_providers_lower_name", table_name="llm_providers")
    op.create_unique_constraint("uq_llm_providers_name", "llm_providers", ["name"])
