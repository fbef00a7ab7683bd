"""Memory tables.

``memories`` is HelixAgent's ``cognee_memories`` (every column) grown into a temporal fact
store: each row is one fact in one *scope* (a user, optionally narrowed to a persona, an
agent or a chat session), valid from ``valid_from`` until ``valid_to`` (NULL: true now).
A contradicted fact is closed (``valid_to``, ``invalidated_by_id``), never deleted; an
updated fact keeps its earlier versions in ``memory_history``.  ``entities`` and
``relationships`` keep the seed's JSONB as extracted; the graph proper is
``memory_entities`` and ``memory_relations`` (rows, each relation with its own validity),
queried by recursive CTEs.  ``embedding`` is a ``vector`` of any dimension tagged with
its model, as document chunks are.

``distributed_memory`` (HelixAgent) is the sharded store: hash-partitioned by
``shard_key`` (migration 0700; docs/scale.md shows the same table as a Citus distributed
table).  Its partitions are not declared here: the ORM sees the parent table.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import (
    CheckConstraint,
    Computed,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    PrimaryKeyConstraint,
    String,
    Text,
    literal_column,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, TSVECTOR
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey, utcnow, uuid7
from roost.db.vector import VectorType

MEMORY_TYPES: Final = ("fact", "preference", "event", "relationship", "skill", "goal", "other")
MEMORY_STATUSES: Final = ("active", "archived")
SOURCE_TYPES: Final = ("manual", "chat_session", "run", "document", "agent")
HISTORY_EVENTS: Final = ("add", "update", "invalidate", "archive", "restore", "delete")
TEXT_SEARCH_CONFIG: Final = "english"
MAX_CONTENT_CHARS: Final = 4000
DEFAULT_MODEL: Final = "all-MiniLM-L6-v2"
DEFAULT_DIMENSIONS: Final = 384
DEFAULT_INDEX: Final = "ix_memories_embedding_all_minilm_l6_v2"
USER_VECTORS_INDEX: Final = "ix_memories_user_minilm"
#: Memories whose full-text vector ``ix_memories_user_text`` carries (at most 1,200 bytes
#: as text: an index entry must fit a B-tree page); recall repeats the two predicates.
SHORT_TEXT: Final = "octet_length(content_tsv::text) <= 1200"
LONG_TEXT: Final = "octet_length(content_tsv::text) > 1200"
_SCOPE_AND_TIME: Final = ["id", "status", "valid_from", "valid_to", "archived_at", "persona_id",
                          "agent_id", "session_id"]


class Memory(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "memories"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    persona_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("personas.id", ondelete="CASCADE"))
    agent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("agents.id", ondelete="CASCADE"))
    # The seed's session_id: the conversation the fact belongs to (a chat session).
    session_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("chat_sessions.id", ondelete="CASCADE"))
    content: Mapped[str] = mapped_column(Text)
    memory_type: Mapped[str] = mapped_column(String(50), server_default=text("'fact'"), default="fact")
    entities: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"), default=list)
    relationships: Mapped[list[Any]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list)
    # The normalised names ``entities`` and ``relationships`` use (graph.names, written
    # with them): what the entity clean-up after a deletion compares (migration 1210).
    entity_names: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]"), default=list)
    confidence: Mapped[Decimal] = mapped_column(
        Numeric(5, 4), server_default=text("0.8"), default=Decimal("0.8"))
    access_count: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    last_accessed: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(String(16), server_default=text("'active'"), default="active")
    valid_from: Mapped[datetime] = mapped_column(server_default=text("now()"), default=utcnow)
    valid_to: Mapped[datetime | None]
    invalidated_by_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("memories.id", ondelete="SET NULL"))
    archived_at: Mapped[datetime | None]
    source_type: Mapped[str] = mapped_column(String(32), server_default=text("'manual'"),
                                             default="manual")
    source_id: Mapped[uuid.UUID | None]
    run_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("runs.id", ondelete="SET NULL"))
    content_sha256: Mapped[str] = mapped_column(String(64))
    embedding: Mapped[Any | None] = mapped_column(VectorType())
    embedding_model: Mapped[str | None] = mapped_column(String(128))
    embedding_dim: Mapped[int | None] = mapped_column(Integer)
    memory_metadata: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb"), default=dict)
    content_tsv: Mapped[Any] = mapped_column(
        TSVECTOR, Computed(f"to_tsvector('{TEXT_SEARCH_CONFIG}'::regconfig, content)", persisted=True))

    __table_args__ = (
        CheckConstraint(f"memory_type IN {MEMORY_TYPES}", name="memory_type"),
        CheckConstraint(f"status IN {MEMORY_STATUSES}", name="status"),
        CheckConstraint(f"source_type IN {SOURCE_TYPES}", name="source_type"),
        CheckConstraint("confidence >= 0 AND confidence <= 1", name="confidence_range"),
        CheckConstraint(f"length(content) BETWEEN 1 AND {MAX_CONTENT_CHARS}", name="content_length"),
        CheckConstraint("valid_to IS NULL OR valid_to >= valid_from", name="validity"),
        CheckConstraint("jsonb_typeof(entities) = 'array' AND jsonb_typeof(relationships) = 'array'",
                        name="graph_json_arrays"),
        CheckConstraint("(embedding IS NULL) = (embedding_model IS NULL) AND "
                        "(embedding IS NULL OR vector_dims(embedding) = embedding_dim)",
                        name="embedding_dim"),
        Index("ix_memories_user_id", "user_id"),
        Index("ix_memories_scope", "user_id", "persona_id", "agent_id", "session_id"),
        Index("ix_memories_persona_id", "persona_id"),
        Index("ix_memories_agent_id", "agent_id"),
        Index("ix_memories_session_id", "session_id"),
        Index("ix_memories_run_id", "run_id"),
        Index("ix_memories_invalidated_by_id", "invalidated_by_id"),
        Index("ix_memories_source", "user_id", "source_type", "source_id"),
        Index("ix_memories_current", "user_id", "valid_to", "status"),
        Index("ix_memories_content_tsv", "content_tsv", postgresql_using="gin"),
        Index("ix_memories_entity_names", "entity_names", postgresql_using="gin"),
        # One user's entries together, with what recall filters on, for index-only scans
        # of that user under row-level security too (migration 0830): the full-text
        # vectors of short memories (bounded so an entry always fits a B-tree page), the
        # longer ones' rows, and the default model's embeddings.
        Index("ix_memories_user_text", "user_id",
              postgresql_include=[*_SCOPE_AND_TIME, "created_at", "content_tsv"],
              postgresql_where=text(SHORT_TEXT)),
        Index("ix_memories_user_long_text", "user_id", postgresql_where=text(LONG_TEXT)),
        Index(USER_VECTORS_INDEX, "user_id",
              postgresql_include=[*_SCOPE_AND_TIME, "embedding_dim", "embedding"],
              postgresql_where=text(f"embedding_model = '{DEFAULT_MODEL}'")),
        # The default embedding model's HNSW index, as document chunks have (migration 0700).
        Index(
            DEFAULT_INDEX,
            literal_column(f"(embedding::vector({DEFAULT_DIMENSIONS}))").label("embedding_vector"),
            postgresql_ops={"embedding_vector": "vector_cosine_ops"},
            postgresql_using="hnsw",
            postgresql_with={"m": 16, "ef_construction": 64},
            postgresql_where=text(f"embedding_model = '{DEFAULT_MODEL}'"),
        ),
    )


class MemoryHistory(UUIDPrimaryKey, CreatedAt, Base):
    """Every change of a memory (the reconciliation's decisions and people's edits)."""

    __tablename__ = "memory_history"

    memory_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("memories.id", ondelete="CASCADE"))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    event: Mapped[str] = mapped_column(String(16))
    old_content: Mapped[str | None] = mapped_column(Text)
    new_content: Mapped[str | None] = mapped_column(Text)
    old_confidence: Mapped[Decimal | None] = mapped_column(Numeric(5, 4))
    new_confidence: Mapped[Decimal | None] = mapped_column(Numeric(5, 4))
    reason: Mapped[str | None] = mapped_column(Text)
    actor_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    related_memory_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("memories.id", ondelete="SET NULL"))

    __table_args__ = (
        CheckConstraint(f"event IN {HISTORY_EVENTS}", name="event"),
        Index("ix_memory_history_memory_id", "memory_id", "created_at"),
        Index("ix_memory_history_user_id", "user_id"),
        Index("ix_memory_history_actor_id", "actor_id"),
        Index("ix_memory_history_related_memory_id", "related_memory_id"),
    )


class MemoryEntity(UUIDPrimaryKey, Timestamps, Base):
    """A thing facts are about, once per scope owner (``normalized_name``: graph.normalize's,
    composed (NFC), case-folded, spaces collapsed)."""

    __tablename__ = "memory_entities"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    persona_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("personas.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    normalized_name: Mapped[str] = mapped_column(String(255))
    entity_type: Mapped[str] = mapped_column(String(64), server_default=text("'thing'"),
                                             default="thing")

    __table_args__ = (
        CheckConstraint("length(btrim(name)) > 0", name="name_not_blank"),
        Index("uq_memory_entities_owner_name", "user_id",
              text("coalesce(persona_id, '00000000-0000-0000-0000-000000000000'::uuid)"),
              "normalized_name", unique=True),
        Index("ix_memory_entities_persona_id", "persona_id"),
    )


class MemoryRelation(UUIDPrimaryKey, CreatedAt, Base):
    """``source --relation--> target``, asserted by a memory, true from ``valid_from`` until
    ``valid_to`` (NULL: now)."""

    __tablename__ = "memory_relations"

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    persona_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("personas.id", ondelete="CASCADE"))
    source_entity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("memory_entities.id", ondelete="CASCADE"))
    target_entity_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("memory_entities.id", ondelete="CASCADE"))
    relation: Mapped[str] = mapped_column(String(128))
    memory_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("memories.id", ondelete="CASCADE"))
    valid_from: Mapped[datetime] = mapped_column(server_default=text("now()"), default=utcnow)
    valid_to: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint("length(btrim(relation)) > 0", name="relation_not_blank"),
        CheckConstraint("valid_to IS NULL OR valid_to >= valid_from", name="validity"),
        Index("ix_memory_relations_source", "source_entity_id", "valid_to"),
        Index("ix_memory_relations_target", "target_entity_id", "valid_to"),
        Index("ix_memory_relations_user_id", "user_id"),
        Index("ix_memory_relations_persona_id", "persona_id"),
        Index("ix_memory_relations_memory_id", "memory_id"),
    )


class DistributedMemory(Base):
    """HelixAgent's sharded memory: hash-partitioned by ``shard_key`` (the primary key
    includes it, as PostgreSQL and Citus require of a partitioned or distributed table)."""

    __tablename__ = "distributed_memory"

    id: Mapped[uuid.UUID] = mapped_column(default=uuid7)
    shard_key: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # The persona of a "<user>:<persona>" key (migration 1320): its rows go with it, as
    # the persona's other memory does.
    persona_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("personas.id", ondelete="CASCADE"), nullable=True)
    content: Mapped[str] = mapped_column(Text)
    embedding: Mapped[Any | None] = mapped_column(VectorType())
    memory_metadata: Mapped[dict[str, Any]] = mapped_column(
        "metadata", JSONB, server_default=text("'{}'::jsonb"), default=dict)
    node_id: Mapped[str] = mapped_column(String(255))
    replicated_to: Mapped[list[Any]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list)
    created_at: Mapped[datetime] = mapped_column(server_default=text("now()"), default=utcnow)

    __table_args__ = (
        PrimaryKeyConstraint("shard_key", "id", name="pk_distributed_memory"),
        CheckConstraint("length(shard_key) > 0", name="shard_key_not_blank"),
        CheckConstraint("jsonb_typeof(replicated_to) = 'array'", name="replicated_to_array"),
        Index("ix_distributed_memory_user_id", "user_id"),
        Index("ix_distributed_memory_persona_id", "persona_id"),
        {"postgresql_partition_by": "HASH (shard_key)"},
    )
