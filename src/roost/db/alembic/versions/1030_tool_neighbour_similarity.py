"""tool_neighbour_similarity: ``tools.neighbour_similarity``, each embedded tool's mean
cosine similarity to its 10 nearest tools among those its owner sees, which semantic tool
search subtracts from its score (docs/benchmarks.md "Tool search": tools that sit close
to a whole family of look-alikes stop crowding out the one a query describes).  Filled
by the embedding job.

Revision ID: 1030
Revises: 1020
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1030"
down_revision: str | Sequence[str] | None = "1020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tools", sa.Column("neighbour_similarity", sa.Double(), nullable=True))


def downgrade() -> None:
    op.drop_column("tools", "neighbour_similarity")
