"""Semantic tool search (issue 12): what made ``tools.description_embedding``, and its index.

``description_embedding`` stays a ``vector`` of any dimension (the configured knowledge
embedder decides it); ``embedding_model`` names the model that made it and
``embedding_text_sha256`` the text it was made from (a changed description is embedded
again).  The default model, all-MiniLM-L6-v2 (384 dimensions), gets a partial HNSW
expression index with the knowledge domain's options (m = 16, ef_construction = 64).

Revision ID: 0510
Revises: 0500
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0510"
down_revision: str | Sequence[str] | None = "0500"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("tools", sa.Column("embedding_model", sa.String(128), nullable=True))
    op.add_column("tools", sa.Column("embedding_text_sha256", sa.String(64), nullable=True))
    # Nothing filled the column before; drop whatever was there rather than guess its model.
    op.execute("UPDATE tools SET description_embedding = NULL")
    op.create_check_constraint(
        op.f("ck_tools_embedding_has_model"), "tools",
        "(description_embedding IS NULL) = (embedding_model IS NULL)",
    )
    op.execute(
        "CREATE INDEX ix_tools_description_embedding_all_minilm_l6_v2 ON tools "
        "USING hnsw ((description_embedding::vector(384)) vector_cosine_ops) "
        "WITH (m = 16, ef_construction = 64) WHERE embedding_model = 'all-MiniLM-L6-v2'"
    )


def downgrade() -> None:
    op.drop_index("ix_tools_description_embedding_all_minilm_l6_v2", table_name="tools")
    op.drop_constraint(op.f("ck_tools_embedding_has_model"), "tools", type_="check")
    op.drop_column("tools", "embedding_text_sha256")
    op.drop_column("tools", "embedding_model")
