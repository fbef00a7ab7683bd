"""Ingestion runs that prune: documents of files deleted from the directory go too.

Re-ingesting a directory updated the documents of its files and added new ones, but a
file deleted since stayed a document (searched, retrieved by agents) for ever.  A run
with ``prune`` deletes, once its files are ingested, its owner's documents of files under
the directory (its direct children unless ``recursive``) that no longer exist;
``totals_pruned`` counts them.

Revision ID: 1410
Revises: 1400
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "1410"
down_revision: str | Sequence[str] | None = "1400"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("ingestion_runs", sa.Column("prune", sa.Boolean(), nullable=False,
                                              server_default=sa.text("false")))
    op.add_column("ingestion_runs", sa.Column("totals_pruned", sa.Integer(), nullable=False,
                                              server_default=sa.text("0")))


def downgrade() -> None:
    op.drop_column("ingestion_runs", "totals_pruned")
    op.drop_column("ingestion_runs", "prune")
