"""Knowledge tables: documents, ingestion runs, chunks, embedding models, pending uploads.

One ``documents`` table and one ``document_chunks`` table unite the seeds' documents
and chunks (``docs/seed-map.toml`` says where each column lives).

Chunks carry copies of their document's owner, effective sharing group, persona,
collection and tags so filtered vector search and row-level security read one row
per candidate instead of joining ``documents`` for each: the service rewrites them in
the same transaction whenever the document's own values change, and migration 1190's
triggers clear a deleted group's or persona's id from them (and a persona's from
documents and ingestion runs, which have no foreign key to it).

``embedding`` is a ``vector`` without a fixed dimension; ``embedding_model`` and
``embedding_dim`` say what produced it.  Each model gets a partial HNSW index on
``(embedding::vector(<dim>))`` restricted to its rows (see :mod:`roost.knowledge.index`),
so one table holds 384-, 768- and 1536-dimensional vectors and a query is only ever
compared with vectors of its own model.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Computed,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.dialects.postgresql import UUID as PG_UUID
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey
from roost.db.vector import VectorType
from roost.workspace import models as _workspace_models  # noqa: F401 - "projects"

DOCUMENT_SOURCES: Final = ("upload", "file", "web")
DOCUMENT_STATUSES: Final = ("pending", "processing", "ready", "error")
RUN_STATUSES: Final = ("pending", "running", "success", "partial", "failed")
MAX_TAGS_BYTES: Final = 5 * 1024
TEXT_SEARCH_CONFIG: Final = "english"

DEFAULT_MODEL: Final = "all-MiniLM-L6-v2"
DEFAULT_DIMENSIONS: Final = 384
DEFAULT_INDEX: Final = "ix_document_chunks_embedding_all_minilm_l6_v2"
HNSW_M: Final = 16
HNSW_EF_CONSTRUCTION: Final = 64


class Document(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "documents"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    # Shared with this group's members unless is_private.
    group_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("groups.id", ondelete="SET NULL")
    )
    is_private: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    # Personas belong to a later domain: a plain id.  Projects (roost.workspace) group it.
    persona_id: Mapped[uuid.UUID | None]
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id",
                                                                    ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    uri: Mapped[str | None] = mapped_column(Text)
    path: Mapped[str | None] = mapped_column(Text)
    mime: Mapped[str | None] = mapped_column(String(128))
    bytes_size: Mapped[int | None]
    source: Mapped[str] = mapped_column(String(32))
    tags: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"), default=list)
    collection: Mapped[str | None] = mapped_column(String(128))
    # SHA-256 of the source identity (upload name, real path or URL): re-ingesting the
    # same source updates this row.
    path_hash: Mapped[str] = mapped_column(String(64))
    # SHA-256 of the bytes last ingested: an unchanged source is not re-embedded.
    content_hash: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), server_default=text("'pending'"),
                                        default="pending")
    error_message: Mapped[str | None] = mapped_column(Text)
    chunk_count: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    embedding_model: Mapped[str | None] = mapped_column(String(128))
    ingestion_run_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("ingestion_runs.id", ondelete="SET NULL")
    )
    last_ingested_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("source IN ('upload', 'file', 'web')", name="source"),
        CheckConstraint("status IN ('pending', 'processing', 'ready', 'error')", name="status"),
        CheckConstraint("jsonb_typeof(tags) = 'array' AND octet_length(tags::text) <= 5120",
                        name="tags_size"),
        CheckConstraint("chunk_count >= 0", name="chunk_count_nonnegative"),
        Index("uq_documents_user_path_hash", "user_id", "path_hash", unique=True),
        Index("ix_documents_user_created", "user_id", "created_at"),
        Index("ix_documents_collection_created", "collection", "created_at"),
        Index("ix_documents_group_private", "group_id", "is_private"),
        Index("ix_documents_path_hash", "path_hash"),
        Index("ix_documents_persona_id", "persona_id"),
        Index("ix_documents_project_id", "project_id"),
        Index("ix_documents_user_status", "user_id", "status"),
        Index("ix_documents_ingestion_run_id", "ingestion_run_id"),
    )


class IngestionRun(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "ingestion_runs"

    user_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("users.id", ondelete="CASCADE"), nullable=False
    )
    target: Mapped[str] = mapped_column(Text)
    source: Mapped[str] = mapped_column(String(32))
    from_web: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    recursive: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    # Once the files are ingested, delete the owner's documents of files under the
    # directory that no longer exist (roost.knowledge.ingest._prune).
    prune: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    tags: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"), default=list)
    collection: Mapped[str | None] = mapped_column(String(128))
    group_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("groups.id", ondelete="SET NULL")
    )
    is_private: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    persona_id: Mapped[uuid.UUID | None]
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id",
                                                                    ondelete="SET NULL"))
    embedding_model: Mapped[str] = mapped_column(String(128))
    task_id: Mapped[uuid.UUID | None]
    totals_files: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    totals_chunks: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    totals_pruned: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    # One entry per file that failed: {"path", "path_hash", "error", "type"}.  A file
    # is done for this run when it is listed here or its document carries this run's id
    # and the ingested content's hash: that is how a resumed run skips finished files.
    errors: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"),
                                              default=list)
    status: Mapped[str] = mapped_column(String(32), server_default=text("'pending'"),
                                        default="pending")
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("status IN ('pending', 'running', 'success', 'partial', 'failed')",
                        name="status"),
        CheckConstraint("source IN ('upload', 'file', 'web')", name="source"),
        CheckConstraint("totals_files >= 0", name="totals_files_nonnegative"),
        CheckConstraint("totals_chunks >= 0", name="totals_chunks_nonnegative"),
        CheckConstraint("jsonb_typeof(tags) = 'array' AND octet_length(tags::text) <= 5120",
                        name="tags_size"),
        Index("ix_ingestion_runs_user_created", "user_id", "created_at"),
        Index("ix_ingestion_runs_status", "status"),
    )


class DocumentChunk(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "document_chunks"

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), nullable=False
    )
    # Copies of the document's scope (see the module docstring).  group_id is the
    # *effective* sharing group: NULL when the document is private.
    user_id: Mapped[uuid.UUID] = mapped_column(PG_UUID(as_uuid=True), nullable=False)
    group_id: Mapped[uuid.UUID | None]
    persona_id: Mapped[uuid.UUID | None]
    collection: Mapped[str | None] = mapped_column(String(128))
    tags: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"), default=list)
    chunk_index: Mapped[int] = mapped_column(Integer)
    content: Mapped[str] = mapped_column(Text)
    token_count: Mapped[int | None] = mapped_column(Integer)
    embedding: Mapped[Any] = mapped_column(VectorType())
    embedding_model: Mapped[str] = mapped_column(String(128))
    embedding_dim: Mapped[int] = mapped_column(Integer)
    is_curated: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    source_chunk_ids: Mapped[list[uuid.UUID] | None] = mapped_column(
        ARRAY(PG_UUID(as_uuid=True))
    )
    # {"page": 3, "heading": "Guide > Install", "char_start": 0, "char_end": 812}
    chunk_metadata: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb"), default=dict
    )
    content_tsv: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(f"to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, content)",
                           persisted=True)
    )

    __table_args__ = (
        CheckConstraint("embedding_dim > 0 AND vector_dims(embedding) = embedding_dim",
                        name="embedding_dim"),
        CheckConstraint("chunk_index >= 0", name="chunk_index_nonnegative"),
        Index("uq_document_chunks_document_index", "document_id", "chunk_index", unique=True,
              postgresql_where=text("NOT is_curated")),
        Index("uq_document_chunks_document_curated_index", "document_id", "chunk_index",
              unique=True, postgresql_where=text("is_curated")),
        Index("ix_document_chunks_user_id", "user_id"),
        Index("ix_document_chunks_group_id", "group_id"),
        Index("ix_document_chunks_persona_id", "persona_id"),
        Index("ix_document_chunks_content_tsv", "content_tsv", postgresql_using="gin"),
        # The default model's HNSW index (migration 0400); other models' indexes are made
        # at run time by roost.knowledge.index with the same expression and options.
        Index(
            DEFAULT_INDEX,
            literal_column(f"(embedding::vector({DEFAULT_DIMENSIONS}))").label("embedding_vector"),
            postgresql_ops={"embedding_vector": "vector_cosine_ops"},
            postgresql_using="hnsw",
            postgresql_with={"m": HNSW_M, "ef_construction": HNSW_EF_CONSTRUCTION},
            postgresql_where=text(f"embedding_model = '{DEFAULT_MODEL}'"),
        ),
    )


class EmbeddingModel(Base):
    """Every embedding model that has (had) chunks, with its dimension and HNSW index."""

    __tablename__ = "embedding_models"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    dimensions: Mapped[int] = mapped_column(Integer)
    provider: Mapped[str] = mapped_column(String(32))
    index_name: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"), nullable=False)

    __table_args__ = (
        CheckConstraint("dimensions > 0 AND dimensions <= 16000", name="dimensions"),
    )


class DocumentUpload(Base):
    """Bytes of an upload waiting for its ingestion job (deleted once ingested)."""

    __tablename__ = "document_uploads"

    document_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str | None] = mapped_column(String(255))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"), nullable=False)
