"""Knowledge: documents, ingestion runs, document chunks with pgvector HNSW, embedding
models, pending uploads; row-level security for all of them.

Revision ID: 0400
Revises: 0300
Create Date: 2026-11-26

``document_chunks.embedding`` is a ``vector`` without a dimension.  Each embedding model
gets a partial expression index, ``USING hnsw ((embedding::vector(<dim>))
vector_cosine_ops) WITH (m = 16, ef_construction = 64) WHERE embedding_model = '<name>'``;
this migration creates the one for the default local model (all-MiniLM-L6-v2, 384
dimensions) and ``roost.knowledge.index`` creates the others when a model is first used.
"""

from __future__ import annotations

from collections.abc import Sequence

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0400"
down_revision: str | Sequence[str] | None = "0300"
branch_labels: str | Sequence[str] | None = None
# No depends_on "0100": nothing here references the task tables (ingestion_runs.task_id
# is a plain id because finished jobs are pruned), and a dependency would merge the
# tasks branch into this one.
depends_on: str | Sequence[str] | None = None

DEFAULT_INDEX = """
CREATE INDEX ix_document_chunks_embedding_all_minilm_l6_v2 ON document_chunks
  USING hnsw ((embedding::vector(384)) vector_cosine_ops) WITH (m = 16, ef_construction = 64)
  WHERE embedding_model = 'all-MiniLM-L6-v2'
"""

TAGS_CHECK = "jsonb_typeof(tags) = 'array' AND octet_length(tags::text) <= 5120"

POLICIES = (
    # Documents: the owner, administrators, and members of the group it is shared with
    # (not private) read it; only the owner and administrators change it.
    """CREATE POLICY documents_select ON documents FOR SELECT USING (
         roost_row_visible(user_id, CASE WHEN is_private THEN NULL ELSE group_id END))""",
    "CREATE POLICY documents_insert ON documents FOR INSERT WITH CHECK (roost_row_visible(user_id))",
    """CREATE POLICY documents_update ON documents FOR UPDATE USING (roost_row_visible(user_id))
         WITH CHECK (roost_row_visible(user_id))""",
    "CREATE POLICY documents_delete ON documents FOR DELETE USING (roost_row_visible(user_id))",
    # Chunks carry the effective sharing group (NULL when private) themselves.
    """CREATE POLICY document_chunks_select ON document_chunks FOR SELECT
         USING (roost_row_visible(user_id, group_id))""",
    """CREATE POLICY document_chunks_insert ON document_chunks FOR INSERT
         WITH CHECK (roost_row_visible(user_id))""",
    """CREATE POLICY document_chunks_update ON document_chunks FOR UPDATE
         USING (roost_row_visible(user_id)) WITH CHECK (roost_row_visible(user_id))""",
    """CREATE POLICY document_chunks_delete ON document_chunks FOR DELETE
         USING (roost_row_visible(user_id))""",
    """CREATE POLICY ingestion_runs_owner ON ingestion_runs USING (roost_row_visible(user_id))
         WITH CHECK (roost_row_visible(user_id))""",
    """CREATE POLICY document_uploads_owner ON document_uploads USING (
         EXISTS (SELECT 1 FROM documents d WHERE d.id = document_uploads.document_id
                 AND roost_row_visible(d.user_id)))
       WITH CHECK (EXISTS (SELECT 1 FROM documents d WHERE d.id = document_uploads.document_id
                 AND roost_row_visible(d.user_id)))""",
)
RLS_TABLES = ("documents", "document_chunks", "ingestion_runs", "document_uploads")


def upgrade() -> None:
    op.create_table(
        "ingestion_runs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("from_web", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("recursive", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("tags", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("collection", sa.String(length=128), nullable=True),
        sa.Column("group_id", sa.Uuid(), nullable=True),
        sa.Column("is_private", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("persona_id", sa.Uuid(), nullable=True),
        sa.Column("project_id", sa.Uuid(), nullable=True),
        sa.Column("embedding_model", sa.String(length=128), nullable=False),
        sa.Column("task_id", sa.Uuid(), nullable=True),
        sa.Column("totals_files", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("totals_chunks", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("errors", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("status", sa.String(length=32), server_default=sa.text("'pending'"),
                  nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("status IN ('pending', 'running', 'success', 'partial', 'failed')",
                           name=op.f("ck_ingestion_runs_status")),
        sa.CheckConstraint("source IN ('upload', 'file', 'web')",
                           name=op.f("ck_ingestion_runs_source")),
        sa.CheckConstraint("totals_files >= 0", name=op.f("ck_ingestion_runs_totals_files_nonnegative")),
        sa.CheckConstraint("totals_chunks >= 0",
                           name=op.f("ck_ingestion_runs_totals_chunks_nonnegative")),
        sa.CheckConstraint(TAGS_CHECK, name=op.f("ck_ingestion_runs_tags_size")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_ingestion_runs_user_id_users")),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="SET NULL",
                                name=op.f("fk_ingestion_runs_group_id_groups")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ingestion_runs")),
    )
    op.create_index("ix_ingestion_runs_user_created", "ingestion_runs", ["user_id", "created_at"])
    op.create_index("ix_ingestion_runs_status", "ingestion_runs", ["status"])

    op.create_table(
        "documents",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=True),
        sa.Column("is_private", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("persona_id", sa.Uuid(), nullable=True),
        sa.Column("project_id", sa.Uuid(), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("uri", sa.Text(), nullable=True),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("mime", sa.String(length=128), nullable=True),
        sa.Column("bytes_size", sa.BigInteger(), nullable=True),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("tags", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("collection", sa.String(length=128), nullable=True),
        sa.Column("path_hash", sa.String(length=64), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=True),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'pending'"),
                  nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("chunk_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("embedding_model", sa.String(length=128), nullable=True),
        sa.Column("ingestion_run_id", sa.Uuid(), nullable=True),
        sa.Column("last_ingested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("source IN ('upload', 'file', 'web')", name=op.f("ck_documents_source")),
        sa.CheckConstraint("status IN ('pending', 'processing', 'ready', 'error')",
                           name=op.f("ck_documents_status")),
        sa.CheckConstraint(TAGS_CHECK, name=op.f("ck_documents_tags_size")),
        sa.CheckConstraint("chunk_count >= 0", name=op.f("ck_documents_chunk_count_nonnegative")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE",
                                name=op.f("fk_documents_user_id_users")),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"], ondelete="SET NULL",
                                name=op.f("fk_documents_group_id_groups")),
        sa.ForeignKeyConstraint(["ingestion_run_id"], ["ingestion_runs.id"], ondelete="SET NULL",
                                name=op.f("fk_documents_ingestion_run_id_ingestion_runs")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_documents")),
    )
    op.create_index("uq_documents_user_path_hash", "documents", ["user_id", "path_hash"],
                    unique=True)
    op.create_index("ix_documents_user_created", "documents", ["user_id", "created_at"])
    op.create_index("ix_documents_collection_created", "documents", ["collection", "created_at"])
    op.create_index("ix_documents_group_private", "documents", ["group_id", "is_private"])
    op.create_index("ix_documents_path_hash", "documents", ["path_hash"])
    op.create_index("ix_documents_persona_id", "documents", ["persona_id"])
    op.create_index("ix_documents_user_status", "documents", ["user_id", "status"])
    op.create_index("ix_documents_ingestion_run_id", "documents", ["ingestion_run_id"])

    op.create_table(
        "document_chunks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.Uuid(), nullable=False),
        sa.Column("group_id", sa.Uuid(), nullable=True),
        sa.Column("persona_id", sa.Uuid(), nullable=True),
        sa.Column("collection", sa.String(length=128), nullable=True),
        sa.Column("tags", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("chunk_index", sa.Integer(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("token_count", sa.Integer(), nullable=True),
        sa.Column("embedding", pgvector.sqlalchemy.Vector(), nullable=False),
        sa.Column("embedding_model", sa.String(length=128), nullable=False),
        sa.Column("embedding_dim", sa.Integer(), nullable=False),
        sa.Column("is_curated", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("source_chunk_ids", postgresql.ARRAY(sa.Uuid()), nullable=True),
        sa.Column("metadata", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("content_tsv", postgresql.TSVECTOR(),
                  sa.Computed("to_tsvector('english'::regconfig, content)", persisted=True),
                  nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("embedding_dim > 0 AND vector_dims(embedding) = embedding_dim",
                           name=op.f("ck_document_chunks_embedding_dim")),
        sa.CheckConstraint("chunk_index >= 0", name=op.f("ck_document_chunks_chunk_index_nonnegative")),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="CASCADE",
                                name=op.f("fk_document_chunks_document_id_documents")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_document_chunks")),
    )
    op.create_index("uq_document_chunks_document_index", "document_chunks",
                    ["document_id", "chunk_index"], unique=True,
                    postgresql_where=sa.text("NOT is_curated"))
    op.create_index("uq_document_chunks_document_curated_index", "document_chunks",
                    ["document_id", "chunk_index"], unique=True,
                    postgresql_where=sa.text("is_curated"))
    op.create_index("ix_document_chunks_user_id", "document_chunks", ["user_id"])
    op.create_index("ix_document_chunks_group_id", "document_chunks", ["group_id"])
    op.create_index("ix_document_chunks_persona_id", "document_chunks", ["persona_id"])
    op.create_index("ix_document_chunks_content_tsv", "document_chunks", ["content_tsv"],
                    postgresql_using="gin")
    op.execute(DEFAULT_INDEX)

    op.create_table(
        "embedding_models",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("dimensions", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=32), nullable=False),
        sa.Column("index_name", sa.String(length=63), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("dimensions > 0 AND dimensions <= 16000",
                           name=op.f("ck_embedding_models_dimensions")),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_embedding_models")),
    )
    op.execute(
        "INSERT INTO embedding_models (name, dimensions, provider, index_name) VALUES "
        "('all-MiniLM-L6-v2', 384, 'local', 'ix_document_chunks_embedding_all_minilm_l6_v2')"
    )

    op.create_table(
        "document_uploads",
        sa.Column("document_id", sa.Uuid(), nullable=False),
        sa.Column("filename", sa.String(length=255), nullable=False),
        sa.Column("content_type", sa.String(length=255), nullable=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["document_id"], ["documents.id"], ondelete="CASCADE",
                                name=op.f("fk_document_uploads_document_id_documents")),
        sa.PrimaryKeyConstraint("document_id", name=op.f("pk_document_uploads")),
    )

    for table in RLS_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for policy in POLICIES:
        op.execute(policy)


def downgrade() -> None:
    op.drop_table("document_uploads")
    op.drop_table("embedding_models")
    op.drop_table("document_chunks")
    op.drop_table("documents")
    op.drop_table("ingestion_runs")
