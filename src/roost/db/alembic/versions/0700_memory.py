"""Memory: facts (``memories``, HelixAgent's ``cognee_memories`` made temporal), their
history, the entity graph (``memory_entities``, ``memory_relations`` with validity), and
the sharded store ``distributed_memory``, hash-partitioned by ``shard_key`` into
``ROOST_MEMORY_SHARDS`` partitions (default 8; docs/scale.md).

Row-level security: a user's memories, entities, relations and history are theirs (and
administrators'); the sharded store likewise by ``user_id``.

Revision ID: 0700
Revises: 0600
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import pgvector.sqlalchemy
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0700"
down_revision: str | Sequence[str] | None = "0600"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The default embedding model's HNSW index (roost.knowledge.index makes other models').
DEFAULT_INDEX = """
CREATE INDEX ix_memories_embedding_all_minilm_l6_v2 ON memories
  USING hnsw ((embedding::vector(384)) vector_cosine_ops) WITH (m = 16, ef_construction = 64)
  WHERE embedding_model = 'all-MiniLM-L6-v2'
"""

TABLES = ("memories", "memory_history", "memory_entities", "memory_relations", "distributed_memory")
OWNED = "roost_row_visible(user_id)"


def shard_count() -> int:
    """Partitions of distributed_memory, fixed when this migration runs (docs/scale.md):
    ROOST_MEMORY_SHARDS, from the environment or .env like every setting."""
    from roost.config import get_settings

    return get_settings().memory_shards


def upgrade() -> None:
    op.create_table(
        "distributed_memory",
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("shard_key", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("embedding", pgvector.sqlalchemy.Vector(), nullable=True),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("node_id", sa.String(length=255), nullable=False),
        sa.Column(
            "replicated_to",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "jsonb_typeof(replicated_to) = 'array'", name=op.f("ck_distributed_memory_replicated_to_array")
        ),
        sa.CheckConstraint("length(shard_key) > 0", name=op.f("ck_distributed_memory_shard_key_not_blank")),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_distributed_memory_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("shard_key", "id", name="pk_distributed_memory"),
        postgresql_partition_by="HASH (shard_key)",
    )
    op.create_index("ix_distributed_memory_user_id", "distributed_memory", ["user_id"], unique=False)
    op.create_table(
        "memory_entities",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("persona_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("normalized_name", sa.String(length=255), nullable=False),
        sa.Column("entity_type", sa.String(length=64), server_default=sa.text("'thing'"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("length(btrim(name)) > 0", name=op.f("ck_memory_entities_name_not_blank")),
        sa.ForeignKeyConstraint(
            ["persona_id"],
            ["personas.id"],
            name=op.f("fk_memory_entities_persona_id_personas"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memory_entities_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_entities")),
    )
    op.create_index("ix_memory_entities_persona_id", "memory_entities", ["persona_id"], unique=False)
    op.create_index(
        "uq_memory_entities_owner_name",
        "memory_entities",
        [
            "user_id",
            sa.literal_column("coalesce(persona_id, '00000000-0000-0000-0000-000000000000'::uuid)"),
            "normalized_name",
        ],
        unique=True,
    )
    op.create_table(
        "memories",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("persona_id", sa.UUID(), nullable=True),
        sa.Column("agent_id", sa.UUID(), nullable=True),
        sa.Column("session_id", sa.UUID(), nullable=True),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("memory_type", sa.String(length=50), server_default=sa.text("'fact'"), nullable=False),
        sa.Column(
            "entities",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "relationships",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "confidence", sa.Numeric(precision=5, scale=4), server_default=sa.text("0.8"), nullable=False
        ),
        sa.Column("access_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_accessed", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(length=16), server_default=sa.text("'active'"), nullable=False),
        sa.Column("valid_from", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("invalidated_by_id", sa.UUID(), nullable=True),
        sa.Column("archived_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source_type", sa.String(length=32), server_default=sa.text("'manual'"), nullable=False),
        sa.Column("source_id", sa.UUID(), nullable=True),
        sa.Column("run_id", sa.UUID(), nullable=True),
        sa.Column("content_sha256", sa.String(length=64), nullable=False),
        sa.Column("embedding", pgvector.sqlalchemy.Vector(), nullable=True),
        sa.Column("embedding_model", sa.String(length=128), nullable=True),
        sa.Column("embedding_dim", sa.Integer(), nullable=True),
        sa.Column(
            "metadata",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "content_tsv",
            postgresql.TSVECTOR(),
            sa.Computed("to_tsvector('english'::regconfig, content)", persisted=True),
            nullable=False,
        ),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "jsonb_typeof(entities) = 'array' AND jsonb_typeof(relationships) = 'array'",
            name=op.f("ck_memories_graph_json_arrays"),
        ),
        sa.CheckConstraint(
            "memory_type IN ('fact', 'preference', 'event', 'relationship', 'skill', 'goal', 'other')",
            name=op.f("ck_memories_memory_type"),
        ),
        sa.CheckConstraint(
            "source_type IN ('manual', 'chat_session', 'run', 'document', 'agent')",
            name=op.f("ck_memories_source_type"),
        ),
        sa.CheckConstraint("status IN ('active', 'archived')", name=op.f("ck_memories_status")),
        sa.CheckConstraint(
            "(embedding IS NULL) = (embedding_model IS NULL) AND "
            "(embedding IS NULL OR vector_dims(embedding) = embedding_dim)",
            name=op.f("ck_memories_embedding_dim"),
        ),
        sa.CheckConstraint("confidence >= 0 AND confidence <= 1", name=op.f("ck_memories_confidence_range")),
        sa.CheckConstraint("length(content) BETWEEN 1 AND 4000", name=op.f("ck_memories_content_length")),
        sa.CheckConstraint("valid_to IS NULL OR valid_to >= valid_from", name=op.f("ck_memories_validity")),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_memories_agent_id_agents"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["invalidated_by_id"],
            ["memories.id"],
            name=op.f("fk_memories_invalidated_by_id_memories"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["persona_id"], ["personas.id"], name=op.f("fk_memories_persona_id_personas"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_memories_run_id_runs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["chat_sessions.id"],
            name=op.f("fk_memories_session_id_chat_sessions"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memories_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memories")),
    )
    op.create_index("ix_memories_agent_id", "memories", ["agent_id"], unique=False)
    op.create_index(
        "ix_memories_content_tsv", "memories", ["content_tsv"], unique=False, postgresql_using="gin"
    )
    op.create_index("ix_memories_current", "memories", ["user_id", "valid_to", "status"], unique=False)
    op.create_index("ix_memories_invalidated_by_id", "memories", ["invalidated_by_id"], unique=False)
    op.create_index("ix_memories_persona_id", "memories", ["persona_id"], unique=False)
    op.create_index("ix_memories_run_id", "memories", ["run_id"], unique=False)
    op.create_index(
        "ix_memories_scope", "memories", ["user_id", "persona_id", "agent_id", "session_id"], unique=False
    )
    op.create_index("ix_memories_session_id", "memories", ["session_id"], unique=False)
    op.create_index("ix_memories_source", "memories", ["user_id", "source_type", "source_id"], unique=False)
    op.create_index("ix_memories_user_id", "memories", ["user_id"], unique=False)
    op.create_table(
        "memory_history",
        sa.Column("memory_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("old_content", sa.Text(), nullable=True),
        sa.Column("new_content", sa.Text(), nullable=True),
        sa.Column("old_confidence", sa.Numeric(precision=5, scale=4), nullable=True),
        sa.Column("new_confidence", sa.Numeric(precision=5, scale=4), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("actor_id", sa.UUID(), nullable=True),
        sa.Column("related_memory_id", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "event IN ('add', 'update', 'invalidate', 'archive', 'restore', 'delete')",
            name=op.f("ck_memory_history_event"),
        ),
        sa.ForeignKeyConstraint(
            ["actor_id"], ["users.id"], name=op.f("fk_memory_history_actor_id_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["memory_id"],
            ["memories.id"],
            name=op.f("fk_memory_history_memory_id_memories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["related_memory_id"],
            ["memories.id"],
            name=op.f("fk_memory_history_related_memory_id_memories"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memory_history_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_history")),
    )
    op.create_index("ix_memory_history_actor_id", "memory_history", ["actor_id"], unique=False)
    op.create_index(
        "ix_memory_history_memory_id", "memory_history", ["memory_id", "created_at"], unique=False
    )
    op.create_index(
        "ix_memory_history_related_memory_id", "memory_history", ["related_memory_id"], unique=False
    )
    op.create_index("ix_memory_history_user_id", "memory_history", ["user_id"], unique=False)
    op.create_table(
        "memory_relations",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("persona_id", sa.UUID(), nullable=True),
        sa.Column("source_entity_id", sa.UUID(), nullable=False),
        sa.Column("target_entity_id", sa.UUID(), nullable=False),
        sa.Column("relation", sa.String(length=128), nullable=False),
        sa.Column("memory_id", sa.UUID(), nullable=True),
        sa.Column("valid_from", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("valid_to", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "length(btrim(relation)) > 0", name=op.f("ck_memory_relations_relation_not_blank")
        ),
        sa.CheckConstraint(
            "valid_to IS NULL OR valid_to >= valid_from", name=op.f("ck_memory_relations_validity")
        ),
        sa.ForeignKeyConstraint(
            ["memory_id"],
            ["memories.id"],
            name=op.f("fk_memory_relations_memory_id_memories"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["persona_id"],
            ["personas.id"],
            name=op.f("fk_memory_relations_persona_id_personas"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["source_entity_id"],
            ["memory_entities.id"],
            name=op.f("fk_memory_relations_source_entity_id_memory_entities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_entity_id"],
            ["memory_entities.id"],
            name=op.f("fk_memory_relations_target_entity_id_memory_entities"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_memory_relations_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_memory_relations")),
    )
    op.create_index("ix_memory_relations_memory_id", "memory_relations", ["memory_id"], unique=False)
    op.create_index("ix_memory_relations_persona_id", "memory_relations", ["persona_id"], unique=False)
    op.create_index(
        "ix_memory_relations_source", "memory_relations", ["source_entity_id", "valid_to"], unique=False
    )
    op.create_index(
        "ix_memory_relations_target", "memory_relations", ["target_entity_id", "valid_to"], unique=False
    )
    op.create_index("ix_memory_relations_user_id", "memory_relations", ["user_id"], unique=False)
    op.execute(DEFAULT_INDEX)
    # Recall bumps access_count/last_accessed of what it returns: with room left on each
    # page the update stays on the page (HOT) and skips the HNSW and text indexes
    # (measured: 35 ms a search at 100k facts on full pages, 4 ms at fillfactor 80).
    op.execute("ALTER TABLE memories SET (fillfactor = 80)")
    shards = shard_count()
    for n in range(shards):
        op.execute(
            f"CREATE TABLE distributed_memory_p{n} PARTITION OF distributed_memory "
            f"FOR VALUES WITH (MODULUS {shards}, REMAINDER {n})"
        )
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {table}_owner ON {table} FOR ALL USING ({OWNED}) WITH CHECK ({OWNED})")


def downgrade() -> None:
    op.execute("DROP INDEX ix_memories_embedding_all_minilm_l6_v2")
    op.drop_index("ix_memory_relations_user_id", table_name="memory_relations")
    op.drop_index("ix_memory_relations_target", table_name="memory_relations")
    op.drop_index("ix_memory_relations_source", table_name="memory_relations")
    op.drop_index("ix_memory_relations_persona_id", table_name="memory_relations")
    op.drop_index("ix_memory_relations_memory_id", table_name="memory_relations")
    op.drop_table("memory_relations")
    op.drop_index("ix_memory_history_user_id", table_name="memory_history")
    op.drop_index("ix_memory_history_related_memory_id", table_name="memory_history")
    op.drop_index("ix_memory_history_memory_id", table_name="memory_history")
    op.drop_index("ix_memory_history_actor_id", table_name="memory_history")
    op.drop_table("memory_history")
    op.drop_index("ix_memories_user_id", table_name="memories")
    op.drop_index("ix_memories_source", table_name="memories")
    op.drop_index("ix_memories_session_id", table_name="memories")
    op.drop_index("ix_memories_scope", table_name="memories")
    op.drop_index("ix_memories_run_id", table_name="memories")
    op.drop_index("ix_memories_persona_id", table_name="memories")
    op.drop_index("ix_memories_invalidated_by_id", table_name="memories")
    op.drop_index("ix_memories_current", table_name="memories")
    op.drop_index("ix_memories_content_tsv", table_name="memories", postgresql_using="gin")
    op.drop_index("ix_memories_agent_id", table_name="memories")
    op.drop_table("memories")
    op.drop_index("uq_memory_entities_owner_name", table_name="memory_entities")
    op.drop_index("ix_memory_entities_persona_id", table_name="memory_entities")
    op.drop_table("memory_entities")
    op.drop_index("ix_distributed_memory_user_id", table_name="distributed_memory")
    op.drop_table("distributed_memory")
